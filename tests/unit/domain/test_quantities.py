"""Kubernetes quantities: the same values and refusals as apimachinery's ParseQuantity.

Checks apimachinery v0.36.3's own table (``TestQuantityParse`` in quantity_test.go: every
input with its exact value and format, then each again with ``-`` and ``+`` in front, and
its list of invalid inputs), the quirks that table does not show (a number without digits,
int32 exponents, the binary cap), that every refusal is a ValueError naming the text, that
:func:`cores` and :func:`gib` round up as ``MilliValue()`` and ``Value()`` do and refuse
what their int64s cannot hold (the binary cap, 2^63-1 bytes, still counts), and, as
hypothesis properties, that a value written in any notation parses back to itself and that
no text at all makes the parser raise anything but ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import quantities
from dbquota.domain.quantities import Format


def dec(mantissa: int, exponent: int) -> Fraction:
    """apimachinery's ``decQuantity(i, exponent, …)``: ``i * 10^exponent``."""
    return Fraction(mantissa) * Fraction(10) ** exponent


MAX = Fraction(2**63 - 1)

# TestQuantityParse's table, in its order: (input, value, format).
APIMACHINERY: list[tuple[str, Fraction, Format]] = [
    ("0", dec(0, 0), "DecimalSI"),
    ("0n", dec(0, 0), "DecimalSI"),
    ("0u", dec(0, 0), "DecimalSI"),
    ("0m", dec(0, 0), "DecimalSI"),
    ("0Ki", dec(0, 0), "BinarySI"),
    ("0k", dec(0, 0), "DecimalSI"),
    ("0Mi", dec(0, 0), "BinarySI"),
    ("0M", dec(0, 0), "DecimalSI"),
    ("0Gi", dec(0, 0), "BinarySI"),
    ("0G", dec(0, 0), "DecimalSI"),
    ("0Ti", dec(0, 0), "BinarySI"),
    ("0T", dec(0, 0), "DecimalSI"),
    # Quantity less numbers are allowed
    ("1", dec(1, 0), "DecimalSI"),
    # Binary suffixes
    ("1Ki", dec(1024, 0), "BinarySI"),
    ("8Ki", dec(8 * 1024, 0), "BinarySI"),
    ("7Mi", dec(7 * 1024**2, 0), "BinarySI"),
    ("6Gi", dec(6 * 1024**3, 0), "BinarySI"),
    ("5Ti", dec(5 * 1024**4, 0), "BinarySI"),
    ("4Pi", dec(4 * 1024**5, 0), "BinarySI"),
    ("3Ei", dec(3 * 1024**6, 0), "BinarySI"),
    ("10Ti", dec(10 * 1024**4, 0), "BinarySI"),
    ("100Ti", dec(100 * 1024**4, 0), "BinarySI"),
    # Decimal suffixes
    ("5n", dec(5, -9), "DecimalSI"),
    ("4u", dec(4, -6), "DecimalSI"),
    ("3m", dec(3, -3), "DecimalSI"),
    ("9", dec(9, 0), "DecimalSI"),
    ("8k", dec(8, 3), "DecimalSI"),
    ("50k", dec(5, 4), "DecimalSI"),
    ("7M", dec(7, 6), "DecimalSI"),
    ("6G", dec(6, 9), "DecimalSI"),
    ("5T", dec(5, 12), "DecimalSI"),
    ("40T", dec(4, 13), "DecimalSI"),
    ("300T", dec(3, 14), "DecimalSI"),
    ("2P", dec(2, 15), "DecimalSI"),
    ("1E", dec(1, 18), "DecimalSI"),
    # Decimal exponents
    ("1E-3", dec(1, -3), "DecimalExponent"),
    ("1e3", dec(1, 3), "DecimalExponent"),
    ("1E6", dec(1, 6), "DecimalExponent"),
    ("1e9", dec(1, 9), "DecimalExponent"),
    ("1E12", dec(1, 12), "DecimalExponent"),
    ("1e15", dec(1, 15), "DecimalExponent"),
    ("1E18", dec(1, 18), "DecimalExponent"),
    # Nonstandard but still parsable
    ("1e14", dec(1, 14), "DecimalExponent"),
    ("1e13", dec(1, 13), "DecimalExponent"),
    ("1e3", dec(1, 3), "DecimalExponent"),
    ("100.035k", dec(100035, 0), "DecimalSI"),
    # Things that look like floating point
    ("0.001", dec(1, -3), "DecimalSI"),
    ("0.0005k", dec(5, -1), "DecimalSI"),
    ("0.005", dec(5, -3), "DecimalSI"),
    ("0.05", dec(5, -2), "DecimalSI"),
    ("0.5", dec(5, -1), "DecimalSI"),
    ("0.00050k", dec(5, -1), "DecimalSI"),
    ("0.00500", dec(5, -3), "DecimalSI"),
    ("0.05000", dec(5, -2), "DecimalSI"),
    ("0.50000", dec(5, -1), "DecimalSI"),
    ("0.5e0", dec(5, -1), "DecimalExponent"),
    ("0.5e-1", dec(5, -2), "DecimalExponent"),
    ("0.5e-2", dec(5, -3), "DecimalExponent"),
    ("0.5e0", dec(5, -1), "DecimalExponent"),
    ("10.035M", dec(10035, 3), "DecimalSI"),
    ("1.2e3", dec(12, 2), "DecimalExponent"),
    ("1.3E+6", dec(13, 5), "DecimalExponent"),
    ("1.40e9", dec(14, 8), "DecimalExponent"),
    ("1.53E12", dec(153, 10), "DecimalExponent"),
    ("1.6e15", dec(16, 14), "DecimalExponent"),
    ("1.7E18", dec(17, 17), "DecimalExponent"),
    ("9.01", dec(901, -2), "DecimalSI"),
    ("8.1k", dec(81, 2), "DecimalSI"),
    ("7.123456M", dec(7123456, 0), "DecimalSI"),
    ("6.987654321G", dec(6987654321, 0), "DecimalSI"),
    ("5.444T", dec(5444, 9), "DecimalSI"),
    ("40.1T", dec(401, 11), "DecimalSI"),
    ("300.2T", dec(3002, 11), "DecimalSI"),
    ("2.5P", dec(25, 14), "DecimalSI"),
    ("1.01E", dec(101, 16), "DecimalSI"),
    # Things that saturate/round
    ("3.001n", dec(4, -9), "DecimalSI"),
    ("1.1E-9", dec(2, -9), "DecimalExponent"),
    ("0.0000000001", dec(1, -9), "DecimalSI"),
    ("0.0000000005", dec(1, -9), "DecimalSI"),
    ("0.00000000050", dec(1, -9), "DecimalSI"),
    ("0.5e-9", dec(1, -9), "DecimalExponent"),
    ("0.9n", dec(1, -9), "DecimalSI"),
    ("0.00000012345", dec(124, -9), "DecimalSI"),
    ("0.00000012354", dec(124, -9), "DecimalSI"),
    ("9Ei", MAX, "BinarySI"),
    ("9223372036854775807Ki", MAX, "BinarySI"),
    ("12E", dec(12, 18), "DecimalSI"),
    # We'll accept fractional binary stuff, too.
    ("100.035Ki", dec(10243584, -2), "BinarySI"),
    ("0.5Mi", dec(int(0.5 * 1024 * 1024), 0), "BinarySI"),
    ("0.05Gi", dec(536870912, -1), "BinarySI"),
    ("0.025Ti", dec(274877906944, -1), "BinarySI"),
    # Things written by trolls
    ("0.000000000001Ki", dec(2, -9), "DecimalSI"),  # rounds up, changes format
    (".001", dec(1, -3), "DecimalSI"),
    (".0001k", dec(100, -3), "DecimalSI"),
    ("1.", dec(1, 0), "DecimalSI"),
    ("1.G", dec(1, 9), "DecimalSI"),
]

# TestQuantityParse's invalid inputs, and the empty string it checks first.
APIMACHINERY_INVALID = [
    "",
    "1.1.M",
    "1+1.0M",
    "0.1mi",
    "0.1am",
    "aoeu",
    ".5i",
    "1i",
    "-3.01i",
    "-3.01e-",
    " 1",
    "1 ",
]


@pytest.mark.parametrize(("text", "value", "fmt"), APIMACHINERY)
def test_apimachinery_table(text: str, value: Fraction, fmt: Format) -> None:
    parsed = quantities.parse(text)
    assert (parsed.value, parsed.format) == (value, fmt)
    assert quantities.parse("+" + text).value == value
    negative = quantities.parse("-" + text)
    assert (negative.value, negative.format) == (-value, fmt)


@pytest.mark.parametrize("text", APIMACHINERY_INVALID)
def test_apimachinery_refusals_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity") as caught:
        quantities.parse(text)
    assert f'"{text}"' in str(caught.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # The values the pricing readers meet.
        ("500m", dec(5, -1)),
        ("2", dec(2, 0)),
        ("4Gi", Fraction(4 * 2**30)),
        ("6G", dec(6, 9)),
        ("1.5Ti", Fraction(3 * 2**39)),
        ("0.5", dec(5, -1)),
        # apimachinery's fast path reads a number without digits as zero …
        ("k", Fraction(0)),
        ("-", Fraction(0)),
        (".", Fraction(0)),
        ("-.", Fraction(0)),
        (".Ki", Fraction(0)),
        (".Ti", Fraction(0)),
        ("e3", Fraction(0)),
        # … exponents are int64 text truncated to int32, as Go converts them …
        ("1e4294967296", Fraction(1)),  # int32(2^32) == 0
        ("1e+0000000000000000000003", dec(1, 3)),
        ("1e4294967286", dec(1, -9)),  # int32 -10: 10^-10 rounds up to a nano
        # … and far below a nano still rounds up to one.
        ("1e-999999999", dec(1, -9)),
        ("-1e-999999999", dec(-1, -9)),
    ],
)
def test_quirks_beyond_the_table(text: str, value: Fraction) -> None:
    assert quantities.parse(text).value == value


@pytest.mark.parametrize(
    "text",
    [
        "1K",  # upper-case K is not a suffix (1k or 1Ki)
        "ten gigs",
        "1Gib",
        "1e",
        "1E+",
        "1e99999999999999999999",  # not an int64
        "1ee3",
        "NaN",
        "inf",
        "1_000",
        ".Pi",  # no digits where apimachinery's slow path parses: an error there
        ".Ei",
        "e-10",
        "\uff11",  # a full-width digit one is not a digit to Go
    ],
)
def test_refused_like_apimachinery(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        quantities.parse(text)


def test_numbers_parse_as_their_json_text() -> None:
    assert quantities.parse(2).value == 2
    assert quantities.parse(-3).value == -3
    assert quantities.parse(1.5).value == Fraction(3, 2)
    assert quantities.parse(2.0).value == 2
    bad: object
    for bad in (float("nan"), float("inf"), True, None, [], {"cpu": 1}):
        with pytest.raises(ValueError, match="invalid quantity"):
            quantities.parse(bad)  # type: ignore[arg-type]


def test_absurd_sizes_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="beyond any resource"):
        quantities.parse("1e1000")
    assert quantities.parse("1e999").value == dec(1, 999)
    with pytest.raises(ValueError, match="digits"):
        quantities.parse("1" * 1001)
    with pytest.raises(ValueError, match="digits"):
        quantities.parse(10**1000)


def test_cores_and_gib_round_up_like_milli_value_and_value() -> None:
    assert quantities.cores(quantities.parse("500m")) == 0.5
    assert quantities.cores(quantities.parse("2")) == 2.0
    assert quantities.cores(quantities.parse("1500u")) == 0.002  # 1.5m rounds up to 2m
    assert quantities.gib(quantities.parse("4Gi")) == 4.0
    assert quantities.gib(quantities.parse("1.5Ti")) == 1536.0
    assert quantities.gib(quantities.parse("512Mi")) == 0.5
    assert quantities.gib(quantities.parse("6G")) == pytest.approx(5.587935447692871)
    assert quantities.gib(quantities.parse("0.5")) == 1 / 2**30  # half a byte: one byte
    with pytest.raises(ValueError, match="too large"):
        quantities.cores(quantities.parse("1e400"))


_SUFFIXES = st.sampled_from(
    [
        *[("", 10, 0), ("n", 10, -9), ("u", 10, -6), ("m", 10, -3), ("k", 10, 3)],
        *[("M", 10, 6), ("G", 10, 9), ("T", 10, 12), ("P", 10, 15), ("E", 10, 18)],
        *[("Ki", 2, 10), ("Mi", 2, 20), ("Gi", 2, 30), ("Ti", 2, 40), ("Pi", 2, 50)],
    ]
)


@given(
    whole=st.integers(min_value=0, max_value=10**12),
    fraction=st.text(alphabet="0123456789", max_size=6),
    suffix=_SUFFIXES,
    sign=st.sampled_from(["", "+", "-"]),
)
def test_decimal_text_round_trips(
    whole: int, fraction: str, suffix: tuple[str, int, int], sign: str
) -> None:
    name, base, exponent = suffix
    text = f"{sign}{whole}.{fraction}{name}" if fraction else f"{sign}{whole}{name}"
    exact = (Fraction(whole) + Fraction(int(fraction or "0"), 10 ** len(fraction))) * (
        Fraction(base) ** exponent
    )
    nanos = exact * 10**9
    expected = Fraction(-(-nanos.numerator // nanos.denominator), 10**9)  # ceil to a nano
    if base == 2:
        expected = min(expected, Fraction(2**63 - 1))
    got = quantities.parse(text)
    assert got.value == (-expected if sign == "-" else expected)


@given(nanos=st.integers(min_value=-(10**27), max_value=10**27))
def test_every_notation_of_a_value_reads_the_same(nanos: int) -> None:
    value = Fraction(nanos, 10**9)
    sign = "-" if nanos < 0 else ""
    digits = str(abs(nanos)).rjust(10, "0")
    texts = {
        f"{nanos}n",
        f"{sign}{digits[:-9]}.{digits[-9:]}",
        f"{nanos}e-9",
        f"{sign}{digits[:-9]}.{digits[-9:]}e0",
        f"{sign}0.{digits}E{len(digits) - 9}",
    }
    for text in texts:
        assert quantities.parse(text).value == value, text


@given(st.text(alphabet=".+-0123456789eEinumkKMGTP ", max_size=12) | st.text(max_size=12))
def test_any_text_gives_a_quantity_or_a_value_error(text: str) -> None:
    try:
        parsed = quantities.parse(text)
    except ValueError as exc:
        message = str(exc)
    else:
        assert (parsed.value * 10**9).denominator == 1  # a whole number of nanos
        return
    assert message.startswith("invalid quantity")


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("9223372036854775807m", quantities.cores),  # 2^63-1 milli-cores: MilliValue()'s most
        ("9223372036854775807", quantities.gib),  # 2^63-1 bytes: Value()'s most
        ("9999999999999999999Ei", quantities.gib),  # capped at 2^63-1 bytes, as apimachinery
    ],
)
def test_cores_and_gib_count_up_to_what_an_int64_holds(
    text: str, unit: Callable[[quantities.Quantity], float]
) -> None:
    assert unit(quantities.parse(text)) == (2**63 - 1) / (
        1000 if unit is quantities.cores else 2**30
    )


@pytest.mark.parametrize(
    ("text", "unit", "what"),
    [
        ("9223372036854775808m", quantities.cores, "milli-cores"),
        ("9999999999999999999Ei", quantities.cores, "milli-cores"),  # 2^63-1 cores
        ("1e308", quantities.cores, "milli-cores"),
        ("-1e308", quantities.cores, "milli-cores"),
        ("9223372036854775808", quantities.gib, "bytes"),
        ("1e28", quantities.gib, "bytes"),  # 9.3e18 GiB: no int64 status field holds it
        ("1.7e317", quantities.gib, "bytes"),
        ("17e316", quantities.gib, "bytes"),
    ],
)
def test_cores_and_gib_refuse_what_no_int64_holds(
    text: str, unit: Callable[[quantities.Quantity], float], what: str
) -> None:
    """Kubernetes counts milli-cores and bytes in int64s (``MilliValue()``, ``Value()``
    overflow beyond): a larger quantity is refused, not counted as a float that overflows
    an int64 status field or, multiplied by instances, becomes infinite."""
    with pytest.raises(ValueError, match=rf"too large: beyond 2\^63-1 {what}, more than"):
        unit(quantities.parse(text))
