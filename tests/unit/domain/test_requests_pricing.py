"""Pricing by requests: pods priced by vCPU, memory and volumes per storage class.

Checks the exact monthly cost at live prices (instances x (vCPU + memory) x 730 + volumes
per storage class, the default class under None), that live pricing gives up (None) on a
book without requests prices or with a storage class it does not know, that conservative
pricing takes the highest known prices x margin with an unknown class at the dearest known
one and gives None with no requests prices at all, that highest-known merges requests
prices per storage class across books and keeps claim pricing's "None without an instance
class", and, as hypothesis properties, that more of anything never costs less and that a
conservative price is never below the live one when the history covers the latest book.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import billing, pricing

BOOK = billing.PriceBook(
    instance_hourly={"db.r6g.large": 0.5},
    storage_gib_month=0.115,
    observed_at=100.0,
    vcpu_hourly=0.04,
    memory_gib_hourly=0.005,
    storage_class_gib_month={None: 0.1, "standard": 0.04, "premium-rwo": 0.17},
)
"""3 instances of 2 vCPU / 8 GiB with 100 GiB default + 20 GiB premium-rwo cost
3 x ((2 x 0.04 + 8 x 0.005) x 730 + 100 x 0.1 + 20 x 0.17) = 3 x (87.6 + 13.4) = 303."""

OLD_PROVIDER = billing.PriceBook(
    instance_hourly={"db.r6g.large": 0.5}, storage_gib_month=0.115, observed_at=50.0
)


def test_live_requests_cost_is_exact() -> None:
    cost = pricing.requests_cost(
        instances=3,
        cpu=2,
        memory_gib=8,
        volumes=[(None, 100), ("premium-rwo", 20)],
        prices=BOOK,
    )
    assert cost == pytest.approx(303.0)
    no_volumes = pricing.requests_cost(instances=1, cpu=0.5, memory_gib=1, volumes=[], prices=BOOK)
    assert no_volumes == pytest.approx((0.5 * 0.04 + 0.005) * 730)


def test_live_pricing_gives_up_on_what_the_book_does_not_know() -> None:
    live = functools.partial(pricing.requests_cost, instances=1, cpu=1.0, memory_gib=1.0)
    assert live(volumes=[], prices=OLD_PROVIDER) is None
    assert live(volumes=[("gp3", 10)], prices=BOOK) is None
    no_default = billing.PriceBook(
        instance_hourly={},
        storage_gib_month=0.1,
        observed_at=0.0,
        vcpu_hourly=0.04,
        memory_gib_hourly=0.005,
        storage_class_gib_month={"standard": 0.04},
    )
    assert live(volumes=[(None, 10)], prices=no_default) is None


def test_conservative_requests_cost_is_highest_known_times_margin() -> None:
    cost = pricing.conservative_requests_cost(
        instances=3,
        cpu=2,
        memory_gib=8,
        volumes=[(None, 100), ("premium-rwo", 20)],
        highest=BOOK,
        margin=1.2,
    )
    assert cost == pytest.approx(303.0 * 1.2)


def test_an_unknown_storage_class_costs_as_the_dearest_known() -> None:
    cost = pricing.conservative_requests_cost(
        instances=2, cpu=0, memory_gib=0, volumes=[("gp3", 10)], highest=BOOK, margin=1.0
    )
    assert cost == pytest.approx(2 * 10 * 0.17)
    no_default = billing.PriceBook(
        instance_hourly={},
        storage_gib_month=0.1,
        observed_at=0.0,
        vcpu_hourly=0.04,
        memory_gib_hourly=0.005,
        storage_class_gib_month={"standard": 0.04, "gp3": 0.08},
    )
    default_volume = pricing.conservative_requests_cost(
        instances=1, cpu=0, memory_gib=0, volumes=[(None, 10)], highest=no_default, margin=1.0
    )
    assert default_volume == pytest.approx(0.8)


def test_no_requests_prices_means_no_conservative_price() -> None:
    assert (
        pricing.conservative_requests_cost(
            instances=1, cpu=1, memory_gib=1, volumes=[], highest=OLD_PROVIDER, margin=1.2
        )
        is None
    )
    compute_only = billing.PriceBook(
        instance_hourly={},
        storage_gib_month=0.1,
        observed_at=0.0,
        vcpu_hourly=0.04,
        memory_gib_hourly=0.005,
    )
    assert (
        pricing.conservative_requests_cost(
            instances=1, cpu=1, memory_gib=1, volumes=[(None, 1)], highest=compute_only, margin=1
        )
        is None
    )
    assert pricing.conservative_requests_cost(
        instances=1, cpu=1, memory_gib=1, volumes=[], highest=compute_only, margin=1
    ) == pytest.approx(0.045 * 730)


def test_highest_known_merges_requests_prices_per_storage_class() -> None:
    history = billing.PriceBook(
        instance_hourly={"db.r6g.large": 0.6},
        storage_gib_month=0.1,
        observed_at=10.0,
        vcpu_hourly=0.05,
        memory_gib_hourly=0.004,
        storage_class_gib_month={None: 0.12, "standard": 0.03, "gp3": 0.09},
    )
    merged = pricing.highest_known(history, None, BOOK)
    assert merged is not None
    assert (merged.vcpu_hourly, merged.memory_gib_hourly) == (0.05, 0.005)
    assert dict(merged.storage_class_gib_month) == {
        None: 0.12,
        "standard": 0.04,
        "premium-rwo": 0.17,
        "gp3": 0.09,
    }
    assert dict(merged.instance_hourly) == {"db.r6g.large": 0.6}
    assert merged.observed_at == 100.0
    assert pricing.highest_known_requests(history, BOOK) == merged


def test_claim_and_requests_pricing_each_need_their_own_prices() -> None:
    requests_only = billing.PriceBook(
        instance_hourly={},
        storage_gib_month=0.0,
        observed_at=1.0,
        vcpu_hourly=0.04,
        memory_gib_hourly=0.005,
    )
    # Claims are priced by class: a book with no class is no price for them (as before) …
    assert pricing.highest_known(requests_only) is None
    # … while requests pricing uses it, and needs vCPU and memory prices.
    assert pricing.highest_known_requests(requests_only) == requests_only
    assert pricing.highest_known_requests(OLD_PROVIDER, None) is None
    assert pricing.highest_known_requests() is None
    merged = pricing.highest_known(OLD_PROVIDER, requests_only)
    assert merged is not None
    assert merged.vcpu_hourly == 0.04


_gib = st.floats(min_value=0, max_value=65536, allow_nan=False)
_classes = st.sampled_from([None, "standard", "premium-rwo", "gp3"])
_volumes = st.lists(st.tuples(_classes, _gib), max_size=4)


@given(
    instances=st.integers(min_value=0, max_value=20),
    cpu=st.floats(min_value=0, max_value=128),
    memory=st.floats(min_value=0, max_value=1024),
    volumes=_volumes,
    more_cpu=st.floats(min_value=0, max_value=8),
    extra=st.tuples(_classes, _gib),
)
def test_more_of_anything_never_costs_less(
    instances: int,
    cpu: float,
    memory: float,
    volumes: list[tuple[str | None, float]],
    more_cpu: float,
    extra: tuple[str | None, float],
) -> None:
    def cost(n: int, c: float, vols: list[tuple[str | None, float]]) -> float:
        got = pricing.conservative_requests_cost(
            instances=n, cpu=c, memory_gib=memory, volumes=vols, highest=BOOK, margin=1.2
        )
        assert got is not None
        return got

    base = cost(instances, cpu, volumes)
    assert cost(instances + 1, cpu, volumes) >= base
    assert cost(instances, cpu + more_cpu, volumes) >= base
    assert cost(instances, cpu, [*volumes, extra]) >= base


@given(
    instances=st.integers(min_value=0, max_value=20),
    cpu=st.floats(min_value=0, max_value=128),
    memory=st.floats(min_value=0, max_value=1024),
    volumes=_volumes,
    rise=st.floats(min_value=0, max_value=1),
    margin=st.floats(min_value=1, max_value=3),
)
def test_conservative_is_never_below_live(
    instances: int,
    cpu: float,
    memory: float,
    volumes: list[tuple[str | None, float]],
    rise: float,
    margin: float,
) -> None:
    history = billing.PriceBook(
        instance_hourly={},
        storage_gib_month=0.0,
        observed_at=0.0,
        vcpu_hourly=0.04 * (1 + rise),
        memory_gib_hourly=0.005,
        storage_class_gib_month={"standard": 0.04 * (1 + rise)},
    )
    highest = pricing.highest_known_requests(history, BOOK)
    assert highest is not None
    conservative = pricing.conservative_requests_cost(
        instances=instances,
        cpu=cpu,
        memory_gib=memory,
        volumes=volumes,
        highest=highest,
        margin=margin,
    )
    live = pricing.requests_cost(
        instances=instances, cpu=cpu, memory_gib=memory, volumes=volumes, prices=BOOK
    )
    assert conservative is not None
    if live is not None:
        assert conservative >= live * (1 - 1e-12)
