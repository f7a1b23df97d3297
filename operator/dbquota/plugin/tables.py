"""How ``kubectl dbquota`` prints: kubectl-style tables, figures, ages, JSON and YAML.

:func:`table` lays rows out as ``kubectl get`` does (upper-case headers, columns left
aligned and three spaces apart, no trailing blanks); :func:`money`, :func:`percent` and
:func:`age` format cells, ``-`` standing for "not known"; :func:`dump` writes a document
as ``-o json`` or ``-o yaml``. Pure; called by :mod:`dbquota.plugin.reports`,
:mod:`dbquota.plugin.explanations` and :mod:`dbquota.plugin.main`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import yaml

Output = Literal["table", "json", "yaml"]
OUTPUTS: tuple[Output, ...] = ("table", "json", "yaml")
NONE = "-"
"""What a cell shows when the value is not known (no status yet, no lease, ...)."""
GAP = "   "


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` under ``headers``, every column as wide as its widest cell."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        GAP.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (tuple(h.upper() for h in headers), *rows)
    ]
    return "\n".join(lines)


def money(value: float | None) -> str:
    """``5,210.40``; ``-`` when unknown."""
    return NONE if value is None or not math.isfinite(value) else f"{value:,.2f}"


def percent(value: float | None) -> str:
    """``96.4%``; ``-`` when unknown."""
    return NONE if value is None or not math.isfinite(value) else f"{value:.1f}%"


def flag(value: bool | None) -> str:
    """``true``/``false`` as kubectl prints booleans; ``-`` when unknown."""
    return NONE if value is None else str(value).lower()


def text(value: object) -> str:
    """A cell for a plain value; ``-`` for None or an empty string."""
    return NONE if value is None or value == "" else str(value)


_AGE_STEPS = (
    # (below this many seconds, the larger unit, the smaller unit or None)
    (600, 60, 1),  # 5m12s
    (3 * 3600, 60, None),  # 17m
    (8 * 3600, 3600, 60),  # 3h5m
    (2 * 86400, 3600, None),  # 9h
    (8 * 86400, 86400, 3600),  # 2d4h
)
_UNITS = {1: "s", 60: "m", 3600: "h", 86400: "d"}


def age(seconds: float | None) -> str:
    """A duration as ``kubectl get`` prints ages: ``42s``, ``5m12s``, ``17m``, ``3h5m``, ``9h``,
    ``2d4h``, ``12d``; ``-`` when unknown (negative ages, from clock skew, read as 0s)."""
    if seconds is None or not math.isfinite(seconds):
        return NONE
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    for below, unit, smaller in _AGE_STEPS:
        if s < below:
            text = f"{s // unit}{_UNITS[unit]}"
            if smaller is not None and (rest := s % unit // smaller):
                text += f"{rest}{_UNITS[smaller]}"
            return text
    return f"{s // 86400}d"


def dump(document: Mapping[str, object], output: Literal["json", "yaml"]) -> str:
    """``document`` as JSON (indented, keys in the order built) or YAML (block style)."""
    if output == "json":
        return json.dumps(document, indent=2, ensure_ascii=False)
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True).rstrip("\n")
