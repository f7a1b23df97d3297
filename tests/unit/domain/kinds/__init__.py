"""Tests of the kind readers: shared helpers to load the examples and edit them by path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"


def example(name: str) -> dict[str, Any]:
    """The object in ``examples/<name>.yaml``."""
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return loaded


def edited(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with the field at ``path`` (``spec.storage.size``, ``spec.x[0].y``)
    set to ``value``, or removed when ``value`` is ``DELETE``."""
    result = copy.deepcopy(obj)
    *parents, last = _keys(path)
    node: Any = result
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return result


DELETE = object()


def _keys(path: str) -> list[str | int]:
    keys: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        keys.append(name)
        if index:
            keys.append(int(index.rstrip("]")))
    return keys
