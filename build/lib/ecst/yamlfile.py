"""Reading a YAML file with errors that name the file and the line (shared by every loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ecst.exceptions import EcstError


def read_yaml(path: Path, error: type[EcstError]) -> Any:
    """The parsed document; `error` (a ConfigError, DefinitionError…) names the file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise error(f"{path}: YAML syntax error at {at}: {problem}") from exc
