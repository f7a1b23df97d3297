"""Readers for the untyped fields of Kubernetes payloads, with errors that name the field.

The API server has already validated objects against the CRD schema, but the domain does
not trust that blindly: a field of the wrong type raises ``ValueError`` naming its path
(``spec.degradation.safetyMargin must be a number, got 'x'``) instead of failing somewhere
later. Whatever JSON value a field holds, the message describes it in a few words
(:func:`describe`: ``null``, ``true``, ``an object``, a string cut to 40 characters), so a
message stays short, and never carries another exception's text, however odd the input.
Used by the parsers in :mod:`dbquota.domain.quotas` and :mod:`dbquota.domain.claims`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

EMPTY: Mapping[str, object] = {}

_INT64 = 2**63
"""Integers are refused from this magnitude on, as the apiserver's int64 would."""
_SHOWN_CHARACTERS = 40
"""A string longer than this is shown cut, with its length."""


def describe(value: object) -> str:
    """A JSON value in a few words, for messages: ``null``, ``true``, ``42``, ``'abc'``,
    ``an object``, ``a list``; never longer than about 60 characters."""
    match value:
        case None:
            text = "null"
        case bool():
            text = "true" if value else "false"
        case int():
            text = str(value) if value.bit_length() <= 64 else "a number of more than 19 digits"
        case float():
            text = repr(value)
        case str() if len(value) <= _SHOWN_CHARACTERS:
            text = repr(value)
        case str():
            text = f"{value[:_SHOWN_CHARACTERS]!r}... ({len(value)} characters)"
        case Mapping():
            text = "an object"
        case list() | tuple():
            text = "a list"
        case _:
            text = f"a {type(value).__name__}"
    return text


def _invalid(where: str, key: str, expected: str, value: object) -> ValueError:
    # ValueError, not TypeError: callers handle one error type for every invalid field.
    return ValueError(f"{where}.{key} must be {expected}, got {describe(value)}")


def as_object(value: object, *, where: str) -> Mapping[str, object]:
    """``value`` itself as a mapping, or ``ValueError``: ``<where> must be an object, got ...``."""
    if not isinstance(value, Mapping):  # ValueError: one error type for every invalid field
        raise ValueError(f"{where} must be an object, got {describe(value)}")  # noqa: TRY004
    return cast("Mapping[str, object]", value)


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
    if isinstance(value, float) and value.is_integer() and abs(value) < _INT64:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= _INT64:
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
    return as_object(value, where=f"{where}.{key}")
