"""Named Kafka Connect clusters ("contexts"), like kubectl's, in a small YAML file.

    # ~/.config/ecst/contexts.yaml  (or $ECST_CONTEXTS)
    current: local
    contexts:
      local: {url: "http://127.0.0.1:18083"}
      prod:  {url: "https://connect.prod:8083", username: ops, password: "${CONNECT_PASSWORD}"}

`--connect-url` wins over `--context`, which wins over `ECST_CONTEXT`, then `current`, then the
local stack's URL. Passwords come from the environment (`${VAR}`), never from the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ecst.connectors.definition import interpolate
from ecst.exceptions import ConfigError, DefinitionError
from ecst.settings import Secret
from ecst.yamlfile import read_yaml


@dataclass(frozen=True)
class Context:
    """Where one Connect cluster is, and how to authenticate to it."""

    name: str
    url: str
    username: str | None = None
    password: Secret | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return (self.username, self.password.reveal() if self.password else "")


def contexts_file() -> Path:
    return Path(os.environ.get("ECST_CONTEXTS", "~/.config/ecst/contexts.yaml")).expanduser()


def resolve(connect_url: str | None, context: str | None, default_url: str,
            user: str | None = None) -> Context:
    """The cluster a command talks to (see the module docstring for the order)."""
    password = os.environ.get("ECST_CONNECT_PASSWORD")
    if connect_url:
        return Context("(--connect-url)", connect_url.rstrip("/"), user,
                       Secret(password) if password is not None else None)
    path = contexts_file()
    name = context or os.environ.get("ECST_CONTEXT")
    if name is None and not path.exists():
        return Context("(local stack)", default_url, user, Secret(password) if password else None)
    doc = read_yaml(path, ConfigError) if path.exists() else {}
    if not isinstance(doc, dict) or not isinstance(doc.get("contexts", {}), dict):
        raise ConfigError(f"{path}: expected keys current and contexts (a mapping of name to url)")
    name = name or doc.get("current")
    if name is None:
        return Context("(local stack)", default_url, user, Secret(password) if password else None)
    entry = doc.get("contexts", {}).get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        known = ", ".join(sorted(doc.get("contexts", {}))) or "none"
        raise ConfigError(f"{path}: no context {name!r} with a url (known: {known})")
    try:
        pw = entry.get("password")
        pw = interpolate(str(pw), os.environ, f"{path}: contexts.{name}.password") if pw else password
    except DefinitionError as exc:
        raise ConfigError(str(exc)) from exc
    return Context(name, entry["url"].rstrip("/"), user or entry.get("username"),
                   Secret(pw) if pw is not None else None)
