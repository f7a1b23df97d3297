"""kubectl-style cells and tables: figures with separators, %, ages, ``-`` for unknown."""

from __future__ import annotations

import json

import pytest
import yaml

from dbquota.plugin import tables


def test_columns_are_as_wide_as_their_widest_cell_three_spaces_apart() -> None:
    got = tables.table(("name", "used"), [["a", "99.0%"], ["longer-name", "-"]])
    assert got.splitlines() == [
        "NAME          USED",
        "a             99.0%",
        "longer-name   -",
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(5210.4, "5,210.40"), (0.0, "0.00"), (-12.345, "-12.35"), (None, "-"), (float("nan"), "-")],
)
def test_money(value: float | None, text: str) -> None:
    assert tables.money(value) == text


def test_percent_flag_and_text() -> None:
    assert tables.percent(104.25) == "104.2%"
    assert tables.percent(None) == "-"
    assert (tables.flag(True), tables.flag(False), tables.flag(None)) == ("true", "false", "-")
    assert (tables.text(""), tables.text(None), tables.text(3)) == ("-", "-", "3")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (42, "42s"),
        (119, "119s"),
        (312, "5m12s"),
        (300, "5m"),
        (1020, "17m"),
        (3 * 3600 + 300, "3h5m"),
        (9 * 3600 + 59, "9h"),
        (2 * 86400 + 4 * 3600, "2d4h"),
        (12 * 86400, "12d"),
        (None, "-"),
    ],
)
def test_age_as_kubectl_prints_it(seconds: float | None, text: str) -> None:
    assert tables.age(seconds) == text


def test_dump_keeps_the_order_built() -> None:
    doc = {"kind": "QuotaTop", "apiVersion": "v1", "items": [{"b": 1, "a": None}]}
    assert list(json.loads(tables.dump(doc, "json"))) == ["kind", "apiVersion", "items"]
    text = tables.dump(doc, "yaml")
    assert text.splitlines()[0] == "kind: QuotaTop"
    assert yaml.safe_load(text) == doc
