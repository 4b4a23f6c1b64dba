"""Packaging facts a release depends on: one version, and the license file the metadata names."""

import tomllib
from importlib.metadata import metadata
from pathlib import Path

import pytest

import ecst

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_version_is_written_once_in_the_package():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "ecst.__version__"}
    assert metadata("ecst")["Version"] == ecst.__version__  # what pip installed agrees


def test_the_license_file_is_the_license_pyproject_names():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    head = (ROOT / "LICENSE").read_text().split()
    assert head[:3] == ["Apache", "License", "Version"] and head[3] == "2.0,"
