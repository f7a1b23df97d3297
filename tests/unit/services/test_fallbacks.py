"""The fallback hit rate that admission feeds and quota status shows.

Checks: the rate is the share of the latest DECISION_WINDOW decisions not priced live,
exported as ``dbquota_fallback_ratio`` at each decision and written into the snapshot
the quota status is computed from; putting it there changes nothing else.
"""

from __future__ import annotations

from dbquota.domain import billing
from dbquota.services import fallbacks
from tests.unit.services.billing_api import sample

SNAPSHOT = billing.BillingSnapshot(
    health=billing.BillingHealth(circuit_state="Open", last_success=10.0, last_error="503"),
    costs={"c0": billing.ClusterCost(cluster_id="c0", compute=1.0, storage=2.0, observed_at=5.0)},
)


def test_fallback_hit_rate_is_the_share_of_recent_decisions_from_cache() -> None:
    fallback = fallbacks.FallbackRate()
    assert fallback.onto(SNAPSHOT).health.fallback_hit_rate == 0.0
    for from_cache in (True, False, False, True):
        fallback.record(from_cache=from_cache)
    assert fallback.onto(SNAPSHOT).health.fallback_hit_rate == 0.5
    assert sample("dbquota_fallback_ratio") == 0.5
    for _ in range(fallbacks.DECISION_WINDOW):
        fallback.record(from_cache=False)
    assert fallback.onto(SNAPSHOT).health.fallback_hit_rate == 0.0
    assert sample("dbquota_fallback_ratio") == 0.0


def test_the_rate_is_all_it_changes_in_the_snapshot() -> None:
    fallback = fallbacks.FallbackRate()
    fallback.record(from_cache=True)
    stamped = fallback.onto(SNAPSHOT)
    assert stamped.health == billing.BillingHealth(
        circuit_state="Open", last_success=10.0, last_error="503", fallback_hit_rate=1.0
    )
    assert stamped.costs == SNAPSHOT.costs
    assert SNAPSHOT.health.fallback_hit_rate == 0.0  # a new snapshot; the old one is as it was
