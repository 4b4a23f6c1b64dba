"""A small reader of consumer/Dockerfile and .dockerignore for the unit tests (no Docker engine here):
instructions with their continuation lines joined, stages, and the exec-form arguments."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # the rest of the line, continuations joined

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK ... CMD."""
        text = self.args.split(" CMD ", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value

    def flags(self) -> dict[str, str]:
        """`--name=value` options before the arguments (HEALTHCHECK, COPY)."""
        out = {}
        for word in self.args.split():
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out


def parse(path: Path) -> list[Instruction]:
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the last instruction ends with a continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each stage, each list starting with its FROM."""
    out: list[list[Instruction]] = []
    for i in instructions:
        if i.keyword == "FROM":
            out.append([])
        assert out, "the first instruction is not FROM"
        out[-1].append(i)
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore `patterns` leave `path` (relative to the context) out: the last
    matching pattern decides, and a pattern that matches a folder matches everything under it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in patterns:
        include = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        if any(_matches(prefix, pattern) for prefix in prefixes):
            result = not include
    return result


def _matches(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):  # at any depth, the top included
        rest = pattern.removeprefix("**/")
        return fnmatch.fnmatchcase(path, rest) or fnmatch.fnmatchcase(path, "*/" + rest)
    return fnmatch.fnmatchcase(path, pattern)


def dockerignore(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]
