"""The simulator's data and fault decisions, without a server.

Checks that the same seed gives the same clusters and prices, that prices change from one
price period to the next (and never with a period of 0), that fault JSON is validated
with a reason, that faults expire after their ``seconds``, that ``flap`` alternates up
and down by request count, that a fault limited to some endpoints leaves the others
alone, and that ``partial`` always drops the same clusters.
"""

from __future__ import annotations

import argparse

import pytest

from dbquota import simulator
from dbquota.simulator import catalog, faults


def test_same_seed_same_data_and_prices_move_between_periods() -> None:
    a = catalog.Catalog(clusters=50, seed=3, price_period=60)
    b = catalog.Catalog(clusters=50, seed=3, price_period=60)
    assert a.clusters == b.clusters
    assert a.prices(30).instance_hourly == b.prices(30).instance_hourly
    assert a.prices(30).instance_hourly != a.prices(90).instance_hourly
    assert catalog.Catalog(clusters=50, seed=4, price_period=60).clusters != a.clusters
    compute, storage = a.cost(a.clusters[0], 30)
    assert compute > 0
    assert storage > 0


def test_a_price_period_of_zero_keeps_prices_still_and_a_negative_one_is_refused() -> None:
    still = catalog.Catalog(clusters=5, seed=3, price_period=0)
    assert still.prices(30) == still.prices(1e9)
    parser = argparse.ArgumentParser(exit_on_error=False)
    simulator.add_arguments(parser)
    assert parser.parse_args(["--price-period=0"]).price_period == 0
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(argparse.ArgumentError, match="must be 0 or more seconds"):
            parser.parse_args([f"--price-period={bad}"])


def test_extra_cluster_ids_are_served() -> None:
    c = catalog.Catalog(clusters=2, seed=1, extra_ids=("team-a/orders-db",), price_period=60)
    assert "team-a/orders-db" in c.by_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"mode": "meteor"}, "mode must be one of"),
        ({"mode": "outage", "style": "fire"}, "outage style"),
        ({"mode": "latency", "latency": -1}, "latency must be a number"),
        ({"mode": "rate_limit", "probability": 2}, "probability"),
        ({"mode": "none", "endpoints": ["billing"]}, "endpoints"),
        ([], "JSON object"),
    ],
)
def test_bad_faults_are_refused_with_a_reason(body: object, reason: str) -> None:
    with pytest.raises(faults.BadFault, match=reason):
        faults.parse(body)


def test_a_fault_expires_after_its_seconds() -> None:
    state = faults.FaultState(seed=1)
    state.set(faults.parse({"mode": "outage", "seconds": 10}), now=100)
    assert state.decide("pricing", now=105).action == "fail_503"
    assert state.decide("pricing", now=110).action == "serve"
    assert state.fault.mode == "none"


def test_flap_alternates_by_request_count() -> None:
    state = faults.FaultState(seed=1)
    state.set(faults.parse({"mode": "flap", "up": 2, "down": 1}), now=0)
    actions = [state.decide("cluster", now=0).action for _ in range(6)]
    assert actions == ["serve", "serve", "fail_503"] * 2


def test_a_fault_on_some_endpoints_leaves_the_others_alone() -> None:
    state = faults.FaultState(seed=1)
    state.set(faults.parse({"mode": "rate_limit", "endpoints": ["pricing"]}), now=0)
    assert state.decide("pricing", now=0).action == "rate_limit"
    assert state.decide("cluster", now=0).action == "serve"


def test_partial_drops_the_same_clusters_every_time() -> None:
    state = faults.FaultState(seed=1)
    state.set(faults.parse({"mode": "partial", "drop": 0.5}), now=0)
    ids = [f"cluster-{i:05d}" for i in range(200)]
    first = [i for i in ids if state.dropped(i)]
    assert first == [i for i in ids if state.dropped(i)]
    assert 60 < len(first) < 140


def test_requests_prices_are_seeded_move_between_periods_and_stay_near_their_base() -> None:
    a = catalog.Catalog(clusters=5, seed=3, price_period=60)
    b = catalog.Catalog(clusters=5, seed=3, price_period=60)
    now, later = a.prices(30), a.prices(90)
    assert now == b.prices(30)
    assert (now.vcpu_hourly, now.storage_class_gib_month) != (
        later.vcpu_hourly,
        later.storage_class_gib_month,
    )
    assert sorted(now.storage_class_gib_month) == ["gp3", "premium-rwo", "standard"]
    for price, base in [
        (now.vcpu_hourly, catalog.BASE_VCPU_HOURLY),
        (now.memory_gib_hourly, catalog.BASE_MEMORY_GIB_HOURLY),
        (now.default_storage_class_gib_month, catalog.BASE_DEFAULT_STORAGE_CLASS_GIB_MONTH),
        *[
            (now.storage_class_gib_month[name], base)
            for name, base in catalog.BASE_STORAGE_CLASS_GIB_MONTH.items()
        ],
    ]:
        assert 0.85 * base <= price <= 1.15 * base


def test_a_malformed_fault_can_target_one_pricing_field() -> None:
    fault = faults.parse({"mode": "malformed", "style": "negative", "field": "vcpu_hourly"})
    assert fault.pricing_field == "vcpu_hourly"
    for body in (
        {"mode": "malformed", "field": "colour"},
        {"mode": "outage", "field": "vcpu_hourly"},
    ):
        with pytest.raises(faults.BadFault, match="field is for malformed pricing"):
            faults.parse(body)
