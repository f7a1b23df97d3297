"""Readers of fields in objects the API returned: a junk or absent value reads as unknown.

Each returns ``None`` (or an empty mapping/list) for a value of the wrong type, so a report
prints ``-`` for it rather than failing or printing a zero that was never written. Pure;
called by :mod:`dbquota.plugin.reports` and :mod:`dbquota.plugin.statuses`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def number(value: object) -> float | None:
    """A finite int or float (not a bool) as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def integer(value: object) -> int | None:
    """:func:`number`, truncated to an int."""
    value = number(value)
    return None if value is None else int(value)


def string(value: object) -> str | None:
    """A non-empty string."""
    return value if isinstance(value, str) and value else None


def boolean(value: object) -> bool | None:
    """A bool."""
    return value if isinstance(value, bool) else None


def mapping(value: object) -> Mapping[str, Any]:
    """A mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def mappings(value: object) -> list[Mapping[str, Any]]:
    """The mappings in a list, else an empty list."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
