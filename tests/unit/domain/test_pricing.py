"""Pricing: live cost, conservative cost, highest known prices and the growth of updates.

Checks exact monthly costs (hourly x 730 x replicas + GiB x GiB-month price), that an
unknown class has no live price but a conservative one at the dearest known class, that
highest-known merges history with the current catalog (only books in the currency of the
newest that names one, or naming none: 9 EUR is no higher than 1.5 USD), that an UPDATE's
growth is new - old and never below zero, and, as hypothesis properties, that more
storage or replicas never cost less and that pricing at higher unit prices never makes a
claim or update cheaper.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbquota.domain import billing, claims, pricing
from tests.unit.domain import samples


def test_project_cost_at_live_prices() -> None:
    claim = samples.claim("db.r6g.large", storage_gib=100, replicas=1)
    assert pricing.project_cost(claim=claim, prices=samples.PRICES) == pytest.approx(410.40)
    three = replace(claim, replicas=3)
    assert pricing.project_cost(claim=three, prices=samples.PRICES) == pytest.approx(
        0.5 * 730 * 3 + 45.4
    )


def test_unknown_class_has_no_live_price() -> None:
    claim = samples.claim(samples.UNKNOWN_CLASS)
    assert pricing.project_cost(claim=claim, prices=samples.PRICES) is None


def test_conservative_cost_is_highest_known_times_margin() -> None:
    claim = samples.claim("db.r6g.large", storage_gib=100)
    cost = pricing.conservative_cost(claim=claim, highest=samples.HIGHEST, margin=1.2)
    assert cost == pytest.approx(0.6 * 1.2 * 730 + 100 * 0.5 * 1.2)  # 585.60


def test_unknown_class_is_priced_as_the_dearest_known_class() -> None:
    claim = samples.claim(samples.UNKNOWN_CLASS, storage_gib=10, replicas=2)
    cost = pricing.conservative_cost(claim=claim, highest=samples.HIGHEST, margin=1.5)
    assert cost == pytest.approx(1.0 * 1.5 * 730 * 2 + 10 * 0.5 * 1.5)


def test_highest_known_merges_history_and_current_catalog() -> None:
    history = billing.PriceBook(
        instance_hourly={"a": 1.0, "b": 2.0}, storage_gib_month=0.1, observed_at=1.0
    )
    current = billing.PriceBook(
        instance_hourly={"a": 1.5, "c": 0.5}, storage_gib_month=0.05, observed_at=2.0
    )
    merged = pricing.highest_known(history, None, current)
    assert merged is not None
    assert dict(merged.instance_hourly) == {"a": 1.5, "b": 2.0, "c": 0.5}
    assert merged.storage_gib_month == 0.1
    assert merged.currency is None  # neither named one
    named = pricing.highest_known(
        replace(history, currency="EUR"), replace(current, currency="USD")
    )
    assert named is not None
    assert named.currency == "USD"  # the newest catalog's
    assert pricing.highest_known(None, None) is None
    empty = billing.PriceBook(instance_hourly={}, storage_gib_month=1.0, observed_at=0.0)
    assert pricing.highest_known(empty) is None


def test_highest_known_compares_prices_in_the_newest_catalogs_currency_only() -> None:
    """A provider switched from EUR to USD (or was misconfigured for a while): 9 EUR is not
    a higher price than 1.5 USD, it is another unit. The highest is taken over the books
    in the currency of the newest that names one, and over those naming none (unknown:
    catalogs cached before currencies were stored)."""
    euros = billing.PriceBook(
        instance_hourly={"a": 9.0, "b": 2.0},
        storage_gib_month=3.0,
        observed_at=1.0,
        vcpu_hourly=0.9,
        memory_gib_hourly=0.09,
        currency="EUR",
    )
    unknown = billing.PriceBook(instance_hourly={"d": 0.7}, storage_gib_month=0.01, observed_at=1.5)
    dollars = billing.PriceBook(
        instance_hourly={"a": 1.5, "c": 0.5},
        storage_gib_month=0.05,
        observed_at=2.0,
        vcpu_hourly=0.03,
        memory_gib_hourly=0.004,
        currency="USD",
    )
    for merged in (
        pricing.highest_known(euros, unknown, dollars),
        pricing.highest_known_requests(euros, unknown, dollars),
        pricing.ceiling(billing.BillingSnapshot(highest=euros, prices=dollars)),
    ):
        assert merged is not None
        assert merged.currency == "USD"
        assert merged.instance_hourly["a"] == 1.5
        assert "b" not in merged.instance_hourly
        assert merged.storage_gib_month == 0.05  # not 3.0 EUR
        assert (merged.vcpu_hourly, merged.memory_gib_hourly) == (0.03, 0.004)
    both = pricing.highest_known(euros, unknown, dollars)
    assert both is not None
    assert dict(both.instance_hourly) == {"a": 1.5, "c": 0.5, "d": 0.7}
    # The newest names no currency: the newest one named still sets the unit.
    later = replace(unknown, observed_at=3.0)
    merged = pricing.highest_known(euros, dollars, later)
    assert merged is not None
    assert merged.currency == "USD"
    assert dict(merged.instance_hourly) == {"a": 1.5, "c": 0.5, "d": 0.7}


def test_update_growth_is_new_minus_old_never_negative() -> None:
    live = pricing.UnitPrices(instance_hourly=0.5, storage_gib_month=0.454)
    old = samples.claim(storage_gib=100, replicas=1)
    bigger = replace(old, storage_gib=150, replicas=2)
    growth = pricing.growth_cost(claim=bigger, old_claim=old, high=live, low=live)
    assert growth == pytest.approx(0.5 * 730 + 50 * 0.454)
    smaller = replace(old, storage_gib=50)
    assert pricing.growth_cost(claim=smaller, old_claim=old, high=live, low=live) == 0.0


def test_update_growth_prices_increases_high_and_decreases_low() -> None:
    high = pricing.UnitPrices(instance_hourly=1.0, storage_gib_month=1.0)
    low = pricing.UnitPrices(instance_hourly=0.5, storage_gib_month=0.25)
    old = samples.claim(storage_gib=100, replicas=1)
    # one more replica at the high price, 40 GiB less at the low price
    new = replace(old, storage_gib=60, replicas=2)
    assert pricing.growth_cost(claim=new, old_claim=old, high=high, low=low) == pytest.approx(
        730 * 1.0 - 40 * 0.25
    )


def test_update_across_classes_prices_new_high_and_old_low() -> None:
    high = pricing.UnitPrices(instance_hourly=1.0, storage_gib_month=0.5)
    low = pricing.UnitPrices(instance_hourly=0.25, storage_gib_month=0.5)
    old = samples.claim("db.r6g.large", storage_gib=100, replicas=2)
    new = samples.claim("db.r6g.xlarge", storage_gib=100, replicas=1)
    assert pricing.growth_cost(claim=new, old_claim=old, high=high, low=low) == pytest.approx(
        730 * 1.0 - 730 * 2 * 0.25
    )


def test_create_growth_is_the_whole_cost() -> None:
    unit = pricing.UnitPrices(instance_hourly=0.5, storage_gib_month=0.454)
    claim = samples.claim(storage_gib=100)
    assert pricing.growth_cost(
        claim=claim, old_claim=None, high=unit, low=pricing.ZERO
    ) == pricing.monthly_cost(claim=claim, unit=unit)


units = st.builds(
    pricing.UnitPrices, instance_hourly=samples.price, storage_gib_month=samples.storage_price
)


@settings(deadline=None)
@given(
    claim=samples.claim_specs(),
    unit=units,
    more_storage=st.integers(min_value=0, max_value=10_000),
    more_replicas=st.integers(min_value=0, max_value=15),
)
def test_more_storage_or_replicas_never_costs_less(
    claim: claims.ClaimSpec, unit: pricing.UnitPrices, more_storage: int, more_replicas: int
) -> None:
    bigger = replace(
        claim, storage_gib=claim.storage_gib + more_storage, replicas=claim.replicas + more_replicas
    )
    assert pricing.monthly_cost(claim=bigger, unit=unit) >= pricing.monthly_cost(
        claim=claim, unit=unit
    )
    books = samples.PRICES, samples.HIGHEST
    for book in books:
        live_small = pricing.project_cost(claim=claim, prices=book)
        live_big = pricing.project_cost(claim=bigger, prices=book)
        assert (live_small is None) == (live_big is None)
        if live_small is not None and live_big is not None:
            assert live_big >= live_small
        assert pricing.conservative_cost(
            claim=bigger, highest=book, margin=1.2
        ) >= pricing.conservative_cost(claim=claim, highest=book, margin=1.2)


@settings(deadline=None)
@given(
    change=samples.updates(),
    low=units,
    extra=units,
    cheaper=units,
)
def test_higher_unit_prices_never_make_a_claim_or_update_cheaper(
    change: tuple[claims.ClaimSpec, claims.ClaimSpec | None],
    low: pricing.UnitPrices,
    extra: pricing.UnitPrices,
    cheaper: pricing.UnitPrices,
) -> None:
    claim, old = change
    high = pricing.UnitPrices(
        instance_hourly=low.instance_hourly + extra.instance_hourly,
        storage_gib_month=low.storage_gib_month + extra.storage_gib_month,
    )
    lower = pricing.UnitPrices(
        instance_hourly=min(cheaper.instance_hourly, low.instance_hourly),
        storage_gib_month=min(cheaper.storage_gib_month, low.storage_gib_month),
    )
    exact = pricing.growth_cost(claim=claim, old_claim=old, high=low, low=low)
    wary = pricing.growth_cost(claim=claim, old_claim=old, high=high, low=lower)
    assert exact >= 0.0
    assert wary >= exact
