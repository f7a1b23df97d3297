"""Readers of untyped Kubernetes objects by field path, for the kind modules beside this one.

Each reader takes the parent object, a key and the parent's path, and returns the value
in the type asked for, or raises ``ValueError`` whose message starts with the field's path
(``spec.instances: must be an integer, got "three"``). Absent and ``null`` are the same
(a field left out). Pure; used by :mod:`.cnpg`, :mod:`.zalando` and :mod:`.rds`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from dbquota.domain import quantities

EMPTY: Mapping[str, object] = {}
INT32_MAX = 2**31 - 1
"""The largest replica count the operators' Go types (int32) hold."""


def join(path: str, key: str | int) -> str:
    """``spec`` + ``storage`` -> ``spec.storage``; an index -> ``spec.tablespaces[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not path:
        return key
    if "." in key or "/" in key:  # label keys
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}"


def show(value: object) -> str:
    """A short description of a bad value for a message (``"ten gigs"``, ``an array``)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + '..."'
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return (
            str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
        )
    if isinstance(value, float):
        return repr(value)
    return "an object" if isinstance(value, Mapping) else "an array"


def _bad(path: str, expected: str, value: object) -> ValueError:
    return ValueError(f"{path}: must be {expected}, got {show(value)}")


def as_mapping(value: object, *, path: str) -> Mapping[str, object]:
    """``value``, which must be a JSON object (the whole object, an array's element)."""
    if not isinstance(value, Mapping):
        raise _bad(path, "an object", value)
    return cast("Mapping[str, object]", value)


def root(obj: object) -> Mapping[str, object]:
    """The whole object, which must be a JSON object."""
    return as_mapping(obj, path="object")


def mapping(parent: Mapping[str, object], key: str, *, path: str) -> Mapping[str, object]:
    """An object field; an empty one when absent."""
    value = parent.get(key)
    if value is None:
        return EMPTY
    if not isinstance(value, Mapping):
        raise _bad(join(path, key), "an object", value)
    return cast("Mapping[str, object]", value)


def optional_mapping(
    parent: Mapping[str, object], key: str, *, path: str
) -> Mapping[str, object] | None:
    """An object field, or None when absent (to tell absent from empty)."""
    return None if parent.get(key) is None else mapping(parent, key, path=path)


def array(parent: Mapping[str, object], key: str, *, path: str) -> Sequence[object]:
    """An array field; an empty one when absent."""
    value = parent.get(key)
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _bad(join(path, key), "an array", value)
    return value


def integer(
    parent: Mapping[str, object],
    key: str,
    *,
    path: str,
    default: int | None,
    minimum: int = 0,
) -> int:
    """A whole number from ``minimum`` to :data:`INT32_MAX` (a float with no fraction is
    one); ``default`` when absent, which is an error when ``default`` is None."""
    value = parent.get(key)
    where = join(path, key)
    if value is None:
        if default is None:
            raise ValueError(f"{where}: required")
        return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, "an integer", value)
    if not minimum <= value <= INT32_MAX:
        raise _bad(where, f"an integer from {minimum} to {INT32_MAX}", value)
    return value


def number(parent: Mapping[str, object], key: str, *, path: str) -> float | None:
    """A finite number of at least 0, or None when absent."""
    value = parent.get(key)
    if value is None:
        return None
    where = join(path, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(where, "a number", value)
    try:
        result = float(value)
    except OverflowError:
        raise _bad(where, "a finite number", value) from None
    if not math.isfinite(result) or result < 0:
        raise _bad(where, "a finite number of at least 0", value)
    return result


def boolean(parent: Mapping[str, object], key: str, *, path: str) -> bool | None:
    """true or false, or None when absent."""
    value = parent.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _bad(join(path, key), "true or false", value)


def string(parent: Mapping[str, object], key: str, *, path: str) -> str | None:
    """A string, or None when absent."""
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _bad(join(path, key), "a string", value)


def quantity(
    parent: Mapping[str, object],
    key: str,
    *,
    path: str,
    unit: Callable[[quantities.Quantity], float],
) -> float | None:
    """A Kubernetes quantity of at least 0 in ``unit`` (:func:`~dbquota.domain.quantities.
    cores` or :func:`~dbquota.domain.quantities.gib`), or None when absent."""
    value = parent.get(key)
    if value is None:
        return None
    where = join(path, key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad(where, "a quantity (a string such as 4Gi, or a number)", value)
    try:
        parsed = quantities.parse(value)
        amount = unit(parsed)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if parsed.value < 0:
        raise _bad(where, "a quantity of at least 0", value)
    return amount


def requests(
    resources: Mapping[str, object], *, path: str, defaults: tuple[float, float] = (0.0, 0.0)
) -> tuple[float, float]:
    """(vCPU, memory GiB) of a ``resources`` object: each its request, else its limit
    (Kubernetes defaults a missing request to the limit), else its ``defaults``."""
    asked = mapping(resources, "requests", path=path)
    limits = mapping(resources, "limits", path=path)
    found: list[float] = []
    for name, unit, default in (
        ("cpu", quantities.cores, defaults[0]),
        ("memory", quantities.gib, defaults[1]),
    ):
        request = quantity(asked, name, path=join(path, "requests"), unit=unit)
        limit = quantity(limits, name, path=join(path, "limits"), unit=unit)
        found.append(request if request is not None else limit if limit is not None else default)
    return found[0], found[1]
