"""Running the `ecst` command as a user would, for the integration tests."""

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ECST = [sys.executable, "-m", "ecst"]


def ecst(*args, env=None, timeout=300):
    """`ecst <args>` in a subprocess; the CompletedProcess, with text stdout and stderr."""
    return subprocess.run([*ECST, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def write(path: Path, doc) -> Path:
    """A YAML file of `doc` (or `doc` itself when it is text)."""
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url):
    """(status, body) of a GET, or (None, "") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""
