"""Readers for the untyped fields of Kubernetes payloads, with errors that name the field.

The API server has already validated objects against the CRD schema, but the domain does
not trust that blindly: a field of the wrong type raises ``ValueError`` naming its path
(``spec.degradation.safetyMargin must be a number, got 'x'``) instead of failing somewhere
later. Used by the parsers in :mod:`dbquota.domain.quotas` and :mod:`dbquota.domain.claims`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

EMPTY: Mapping[str, object] = {}


def _invalid(where: str, key: str, expected: str, value: object) -> ValueError:
    # ValueError, not TypeError: callers handle one error type for every invalid field.
    return ValueError(f"{where}.{key} must be {expected}, got {value!r}")


def _present(data: Mapping[str, object], key: str) -> bool:
    return data.get(key) is not None


def number(
    data: Mapping[str, object], key: str, *, where: str, default: float | None = None
) -> float:
    """``data[key]`` as a finite float; ``default`` when absent (required when it is None)."""
    if not _present(data, key):
        if default is None:
            raise ValueError(f"{where}.{key} is required")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(where, key, "a number", value)
    result = float(value)
    if not math.isfinite(result):
        raise _invalid(where, key, "a finite number", value)
    return result


def integer(data: Mapping[str, object], key: str, *, where: str, default: int | None = None) -> int:
    """``data[key]`` as an int (a float with no fraction is accepted); ``default`` when absent."""
    if not _present(data, key):
        if default is None:
            raise ValueError(f"{where}.{key} is required")
        return default
    value = data[key]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(where, key, "an integer", value)
    return value


def optional_integer(data: Mapping[str, object], key: str, *, where: str) -> int | None:
    """``data[key]`` as an int, or None when absent."""
    if not _present(data, key):
        return None
    return integer(data, key, where=where)


def string(data: Mapping[str, object], key: str, *, where: str, default: str | None = None) -> str:
    """``data[key]`` as a non-empty string; ``default`` when absent (required when None)."""
    if not _present(data, key):
        if default is None:
            raise ValueError(f"{where}.{key} is required")
        return default
    value = data[key]
    if not isinstance(value, str) or not value:
        raise _invalid(where, key, "a non-empty string", value)
    return value


def mapping(data: Mapping[str, object], key: str, *, where: str) -> Mapping[str, object]:
    """``data[key]`` as a mapping; an empty one when absent."""
    if not _present(data, key):
        return EMPTY
    value = data[key]
    if not isinstance(value, Mapping):
        raise _invalid(where, key, "an object", value)
    return cast("Mapping[str, object]", value)
