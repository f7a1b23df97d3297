"""constraints.txt pins what pyproject.toml allows, and the environment tests run in.

Checks: every line of constraints.txt past its comment is ``name==version``, each name
once; every requirement of pyproject.toml (the runtime dependencies and every dependency
group) is pinned there, at a version its specifier accepts; and every pinned package is
installed at its pin in the environment running the tests (``make venv`` installs with
``-c constraints.txt``, and reinstalls when the file changes), so what the tests passed
with is what the image (the Dockerfile installs with the same file) runs.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not name==version: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"pinned twice: {name}"
        found[name] = Version(match.group(2))
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = list(project["project"]["dependencies"])
    for group in project["dependency-groups"].values():
        listed += [item for item in group if isinstance(item, str)]  # not include-group
    return [Requirement(text) for text in listed]


def test_every_requirement_is_pinned_where_pyproject_allows() -> None:
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in constraints.txt"
        assert pinned[name] in requirement.specifier, f"{name}=={pinned[name]} vs {requirement}"


def test_the_environment_has_what_is_pinned() -> None:
    for name, version in pins().items():
        installed = Version(importlib.metadata.version(name))
        assert installed == version, f"{name} {installed} installed, {version} pinned"
