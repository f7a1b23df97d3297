"""Kubernetes resource quantities (``500m``, ``4Gi``, ``1.5Ti``, ``1e3``), parsed exactly.

:func:`parse` accepts what apimachinery's ``resource.ParseQuantity`` (k8s.io/apimachinery
v0.36.3, ``pkg/api/resource/quantity.go`` and ``suffix.go``) accepts, with the value it
gives, as an exact :class:`fractions.Fraction`::

    <quantity>  ::= <sign>? <number> <suffix>
    <number>    ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>    ::= Ki | Mi | Gi | Ti | Pi | Ei          (binary: 2^10 … 2^60)
                  | n | u | m | "" | k | M | G | T | P | E   (decimal: 10^-9 … 10^18)
                  | e<sign>?<digits> | E<sign>?<digits>  (decimal exponent)

and apimachinery's quirks with it: a non-zero magnitude is rounded *up* to a whole
nano (``0.1n`` is ``1n``), a binary quantity is capped at 2^63-1, an exponent is read as
an int64 and then truncated to int32 as Go does, and a number with no digits is zero where
apimachinery's fast path takes it (``k``, ``-``, ``.Ki`` are 0) and an error where its
slow path does (``.Pi``, ``e-10``). Anything it refuses (``1K``, ``0.1mi``, ``1.1.M``,
``" 1"``, ``""``, non-strings) raises :class:`ValueError` naming the text. Integers are
accepted too, as a CRD's ``x-kubernetes-int-or-string`` field may hold one (``cpu: 2``).

Two deliberate limits apimachinery does not have, since no resource comes near them and
the exact arithmetic would otherwise take unbounded time and memory: more than
:data:`MAX_DIGITS` digits, or a magnitude of 10^:data:`MAX_DECIMAL_EXPONENT` or more, is
refused with a ``ValueError`` that says so.

:func:`cores` and :func:`gib` turn a quantity into a float the way apimachinery's
``MilliValue()`` and ``Value()`` round a positive quantity (up, to a whole milli-core or
byte). Those are int64s, which overflow beyond 2^63-1: Kubernetes cannot count more
milli-cores or bytes than that (:data:`MAX_INT64`; a binary quantity is capped there, so
``9999999999999999999Ei`` is 8 EiB), and neither can the int64 status fields dbquota
writes them into. A quantity beyond it raises ``ValueError`` saying so, rather than
becoming a float that overflows an int64 field, or infinity once multiplied by
instances. Pure; used by the kind readers in :mod:`dbquota.domain.kinds`.

Why not a library: the ``kubernetes`` client's ``kubernetes.utils.quantity.parse_quantity``
would pull in the whole synchronous client for one function, and it accepts what
apimachinery refuses (``1K``, ``NaN``, ``1_000``, surrounding blanks) and skips the
rounding; lightkube's version ships with its own client, accepts ``Z``/``Y`` suffixes and
rounds to milli-units. No small, maintained package parses quantities as apimachinery
does, so this module follows quantity.go line by line, and its tests replay
apimachinery's own table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Format = Literal["DecimalSI", "BinarySI", "DecimalExponent"]

MAX_DIGITS = 1000
"""Most digits a quantity's number may have here (apimachinery has no limit)."""
MAX_DECIMAL_EXPONENT = 1000
"""Quantities of 10^1000 or more are refused here (apimachinery keeps them)."""
MAX_INT64 = 2**63 - 1
"""The most milli-cores (``MilliValue()``) and bytes (``Value()``) Kubernetes counts."""
MAX_GIB = 2**33
"""8 EiB in GiB, the most storage one object may ask for in all
(:func:`dbquota.domain.claims.of_demand`): the largest quantity, 2^63-1 bytes, is one byte
less, which :func:`gib`'s float cannot tell apart."""

_DIGITS = frozenset("0123456789")
_SUFFIX_LETTERS = frozenset("eEinumkKMGTP")
_DECIMAL_SI: dict[str, int] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SI: dict[str, int] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_NANO = Fraction(1, 10**9)
_MAX_BINARY = Fraction(MAX_INT64)
_INT64_MIN, _INT64_MAX = -(2**63), MAX_INT64
_GIB = 2**30


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity: the text it came from, its exact value, and its format."""

    text: str
    value: Fraction
    format: Format

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Parts:
    positive: bool
    value: str  # the number as written, sign included (what the slow path parses)
    num: str  # the integer digits without leading zeros, "0" when none
    denom: str  # the fraction digits as written
    suffix: str


def _bad(text: object, reason: str) -> ValueError:
    shown = json.dumps(text, ensure_ascii=False) if isinstance(text, str) else repr(text)
    return ValueError(f"invalid quantity {shown}: {reason}")


def _scan(text: str) -> _Parts:
    """quantity.go's ``parseQuantityString``: split sign, number and suffix."""
    positive, pos, end = True, 0, len(text)
    if pos < end and text[0] in "+-":
        positive = text[0] == "+"
        pos += 1
    while pos < end and text[pos] == "0":  # leading zeros
        pos += 1
    if pos >= end:
        return _Parts(positive=positive, value="0", num="0", denom="", suffix="")
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num = text[start:pos] or "0"
    if pos >= end:
        return _Parts(positive=positive, value=text, num=num, denom="", suffix="")
    denom = ""
    if text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]
        if pos >= end:
            return _Parts(positive=positive, value=text, num=num, denom=denom, suffix="")
    value = text[:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_LETTERS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise _bad(text, f"unexpected {text[pos]!r} in the suffix {text[suffix_start:]!r}")
    return _Parts(positive=positive, value=value, num=num, denom=denom, suffix=text[suffix_start:])


def _interpret(text: str, suffix: str) -> tuple[int, int, Format]:
    """suffix.go's ``interpret``: (base, exponent, format) of a suffix."""
    if suffix in _DECIMAL_SI:
        return 10, _DECIMAL_SI[suffix], "DecimalSI"
    if suffix in _BINARY_SI:
        return 2, _BINARY_SI[suffix], "BinarySI"
    if len(suffix) > 1 and suffix[0] in "eE":
        digits = suffix[1:].lstrip("+-")
        if (
            digits
            and set(digits) <= _DIGITS
            and len(suffix[1:]) - len(digits) <= 1
            and len(digits.lstrip("0")) <= 19  # more cannot be an int64 (nor int()'d fast)
            and _INT64_MIN <= int(suffix[1:]) <= _INT64_MAX
        ):
            wrapped = (int(suffix[1:]) + 2**31) % 2**32 - 2**31  # Go's int32(int64)
            return 10, wrapped, "DecimalExponent"
    raise _bad(text, f"unknown suffix {suffix!r}")


def _fast_path(parts: _Parts, *, base: int, exponent: int) -> bool:
    """Whether apimachinery parses these parts as an int64 (no error possible there)."""
    if base == 2:
        if exponent < 0 or parts.denom:
            return False
        # Go: 15 - len(num) - int32(float32(exponent)*3/10) - 1; exact for these exponents
        precision = 15 - len(parts.num) - (exponent * 3) // 10 - 1
        return precision >= 0
    precision = 18 - (len(parts.num) + len(parts.denom))
    return precision >= 0 and exponent - len(parts.denom) >= -9


def parse(text: str | float) -> Quantity:
    """``text`` as apimachinery parses it; ValueError naming the text when it cannot.

    A number (a JSON number in an int-or-string field) is parsed from its decimal text,
    as apimachinery's ``UnmarshalJSON`` parses the raw JSON number.
    """
    text = _as_text(text)
    if text == "0":
        return Quantity(text=text, value=Fraction(0), format="DecimalSI")
    parts = _scan(text)
    base, exponent, fmt = _interpret(text, parts.suffix)
    if not any(c in _DIGITS for c in parts.value):
        if not _fast_path(parts, base=base, exponent=exponent):
            raise _bad(text, "no digits in the number")
        return Quantity(text=text, value=Fraction(0), format=fmt)
    if len(parts.num) + len(parts.denom) > MAX_DIGITS:
        raise _bad(text, f"more than {MAX_DIGITS} digits")
    amount = _magnitude(text, parts, base=base, exponent=exponent)
    if fmt == "BinarySI":
        amount = min(amount, _MAX_BINARY)
        if 0 < amount < 1:
            fmt = "DecimalSI"  # apimachinery: avoids rounding, "and hopefully confusion"
    return Quantity(text=text, value=amount if parts.positive else -amount, format=fmt)


def _as_text(text: object) -> str:
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise _bad(text, f"expected a string or a number, got {type(text).__name__}")
    if isinstance(text, int):
        if abs(text) >= 10**MAX_DIGITS:
            raise _bad(text, f"more than {MAX_DIGITS} digits")
        return str(text)
    if isinstance(text, float):
        return repr(text)  # "2.0", "1e-05", "inf" (refused later, as Go refuses it)
    if not text:
        raise _bad(text, "empty")
    return text


def _magnitude(text: str, parts: _Parts, *, base: int, exponent: int) -> Fraction:
    """The absolute value, rounded up to a whole nano (apimachinery's slow path)."""
    mantissa = int(parts.num + parts.denom)
    if mantissa == 0:
        return Fraction(0)
    if base == 10:
        # digits before the point + exponent bound the magnitude: below 10^(that)
        magnitude = len(str(mantissa)) - len(parts.denom) + exponent
        if magnitude > MAX_DECIMAL_EXPONENT:
            raise _bad(text, f"10^{MAX_DECIMAL_EXPONENT} or more, beyond any resource")
        if magnitude < -9:  # far below a nano: rounds up to one
            return _NANO
        amount = Fraction(mantissa) * Fraction(10) ** (exponent - len(parts.denom))
    else:
        amount = Fraction(mantissa * 2**exponent, 10 ** len(parts.denom))
    nanos = amount / _NANO
    return amount if nanos.denominator == 1 else math.ceil(nanos) * _NANO


def cores(quantity: Quantity) -> float:
    """CPU cores, rounded up to a whole milli-core as ``MilliValue()`` rounds."""
    return _counted(quantity, math.ceil(quantity.value * 1000), "milli-cores") / 1000


def gib(quantity: Quantity) -> float:
    """GiB (2^30 bytes) of a whole number of bytes, rounded up as ``Value()`` rounds."""
    return _counted(quantity, math.ceil(quantity.value), "bytes") / _GIB


def _counted(quantity: Quantity, count: int, what: str) -> int:
    """``count`` when an int64 holds it (module docstring); ValueError naming the text."""
    if not _INT64_MIN <= count <= _INT64_MAX:
        raise _bad(quantity.text, f"too large: beyond 2^63-1 {what}, more than Kubernetes counts")
    return count
