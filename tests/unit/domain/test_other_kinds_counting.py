"""Another operator's object, from admission to billing: counted from its spec, with no
entry on the quota once it exists.

Checks: the object is named by kind and counts in its tenant namespace; its reservation
ends once the object exists at the reservation's generation, and the recount prices it
from its spec at the current catalog; a reservation for a newer generation (an UPDATE in
flight) stays, and the object counts at its old spec plus the growth held, until the grace
shows the UPDATE never reached the object (``NeverApplied``); while billing
is degraded for the quota it counts at the highest known prices x the safety margin, in
the degraded totals (StrictCap's allowance); once billing shows its cluster it counts at
its billed cost; deleting it first releases its reservation (``ClaimDeleted``); it is
never adopted; reservations of earlier releases marked ``standing`` end too; and a
thousand such objects leave a quota with no reservation at all (its size does not grow
with them).
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path

import pytest
import yaml

from dbquota.domain import billing, reservations, statuses, usage
from dbquota.domain.kinds import registry
from dbquota.domain.resources import Reservation
from dbquota.kits import steps, timestamps
from tests.unit.domain import samples

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "cnpg-cluster.yaml"
NOW = samples.NOW
CHARGED = NOW - 100
REQUESTS = samples.REQUESTS
HIGHEST = samples.REQUESTS_HIGHEST
LIVE = 3 * (2 * 0.03 + 8 * 0.004) * 730 + 3 * (120 * 0.17 + 50 * 0.04)
"""examples/cnpg-cluster.yaml at REQUESTS: 3 x (2 vCPU, 8 GiB) and 3 x (120 + 50 GiB)."""
HIGH = 3 * (2 * 0.04 + 8 * 0.005) * 730 + 3 * (120 * 0.2 + 50 * 0.05)
"""The same at HIGHEST (x a safety margin of 1)."""


def just_seen(key: Hashable) -> float:
    """The reconciler's ages (``reservations.Ages``): everything seen for the first time now."""
    del key
    return 0.0


def ref(uid: str = "u1", generation: int = 1, name: str = "orders-pg") -> reservations.ClaimRef:
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"].update(uid=uid, generation=generation, name=name)
    found = reservations.deriver(registry.KINDS["cnpg"])(obj)
    assert found is not None
    return found


def held(uid: str = "u1", generation: int = 1, cost: float = 300.0) -> Reservation:
    return reservations.hold(
        claim_name="Cluster/orders-pg",
        uid=uid,
        generation=generation,
        charged=0.0,
        cost=cost,
        storage_gib=510,
        pricing="Live",
        degraded=False,
        new_claim=generation == 1,
        holder="r1",
        now=CHARGED,
    )


def estimate(*, degraded: bool = False) -> usage.Estimate:
    snapshot = samples.healthy(prices=REQUESTS, highest=HIGHEST)
    return statuses.price_foreign(
        snapshot, samples.quota(degradation={"safetyMargin": 1.0}), degraded=degraded
    )


def cost(at: float) -> dict[str, billing.ClusterCost]:
    return {
        "team-a/orders-pg": billing.ClusterCost(
            cluster_id="team-a/orders-pg", compute=250.0, storage=40.0, observed_at=at
        )
    }


def test_the_object_is_named_by_kind_and_counts_in_its_namespace() -> None:
    found = ref()
    assert (found.name, found.namespace, found.owned) == ("Cluster/orders-pg", "team-a", False)
    assert found.cluster_id == "team-a/orders-pg"
    assert found.cost is None


def test_its_reservation_ends_once_it_exists_and_the_recount_prices_its_spec() -> None:
    kept, confirmed, released = reservations.settle(
        held=[held()], claims={"u1": ref()}, now=NOW, grace=5, ages=just_seen
    )
    assert (kept, len(confirmed), released) == ([], 1, [])
    counted = steps.finish(
        usage.recount(claims=[ref()], held=kept, costs={}, estimate=estimate())
    ).usage
    assert counted.reserved == pytest.approx(LIVE)
    assert (counted.observed, counted.claims, counted.storage_gib) == (0.0, 1, 510)
    assert (counted.degraded_claims, counted.degraded_storage_gib) == (0, 0)


def test_an_update_in_flight_counts_the_old_spec_plus_the_growth_held() -> None:
    growth = held(generation=2, cost=40.0)
    kept, confirmed, _ = reservations.settle(
        held=[growth], claims={"u1": ref(generation=1)}, now=NOW, grace=5, ages=just_seen
    )
    assert (kept, confirmed) == ([growth], [])
    counted = steps.finish(
        usage.recount(claims=[ref()], held=kept, costs={}, estimate=estimate())
    ).usage
    assert counted.reserved == pytest.approx(LIVE + 40.0)
    assert counted.claims == 1
    _, confirmed, _ = reservations.settle(
        held=[growth], claims={"u1": ref(generation=2)}, now=NOW, grace=5, ages=just_seen
    )
    assert confirmed == [growth]  # at generation 2 its spec holds the growth


def test_an_update_never_applied_goes_after_the_grace_and_the_object_counts_its_spec() -> None:
    """Another webhook denied the UPDATE after dbquota admitted it: the object stays at
    generation 1 and the growth held for generation 2 counted for good. After the grace it
    is released (``NeverApplied``); the recount prices the object from its spec as ever."""
    growth = held(generation=2, cost=40.0)
    stayed = {"u1": ref(generation=1)}
    kept, _, released = reservations.settle(
        held=[growth], claims=stayed, now=NOW, grace=5, ages=lambda _: 4.0
    )
    assert (kept, released) == ([growth], [])
    kept, _, released = reservations.settle(
        held=[growth], claims=stayed, now=NOW, grace=5, ages=lambda _: 6.0
    )
    assert (kept, released) == ([], [(growth, "NeverApplied")])
    counted = steps.finish(
        usage.recount(claims=[ref()], held=kept, costs={}, estimate=estimate())
    ).usage
    assert counted.reserved == pytest.approx(LIVE)


def test_while_billing_is_degraded_it_counts_high_and_in_the_degraded_totals() -> None:
    counted = steps.finish(
        usage.recount(claims=[ref()], held=[], costs={}, estimate=estimate(degraded=True))
    ).usage
    assert counted.reserved == pytest.approx(HIGH)
    assert (counted.degraded_claims, counted.degraded_storage_gib) == (1, 510)


def test_once_billing_shows_its_cluster_it_counts_the_billed_cost() -> None:
    counted = steps.finish(
        usage.recount(claims=[ref()], held=[], costs=cost(CHARGED + 30), estimate=estimate())
    )
    assert (counted.usage.observed, counted.usage.reserved) == (290.0, 0.0)
    assert counted.billed == {"Cluster/orders-pg"}


def test_deleting_the_object_first_releases_its_reservation() -> None:
    _, _, released = reservations.settle(
        held=[held()], claims={}, deleted={"u1"}, now=NOW, grace=5, ages=just_seen
    )
    assert [why for _, why in released] == ["ClaimDeleted"]


def test_the_object_is_never_adopted() -> None:
    assert (
        reservations.orphans(held=[], claims=[ref()], now=NOW, covered=False, ages=just_seen) == []
    )


def test_a_standing_reservation_of_an_earlier_release_ends_too() -> None:
    standing = held()
    standing["standing"] = True
    kept, confirmed, _ = reservations.settle(
        held=[standing], claims={"u1": ref()}, now=NOW, grace=5, ages=just_seen
    )
    assert (kept, confirmed) == ([], [standing])


def test_a_thousand_objects_leave_no_reservation_on_the_quota() -> None:
    objects = [ref(uid=f"u{i}", name=f"pg-{i}") for i in range(1000)]
    holds = [
        {**held(uid=o.uid), "claim": o.name, "reservedAt": timestamps.to_rfc3339(CHARGED)}
        for o in objects
    ]
    quota = {
        "metadata": {"name": "team-a", "namespace": "team-a", "generation": 1},
        "spec": {"monthlyBudget": 10_000_000, "degradation": {"safetyMargin": 1.0}},
        "status": {"reservations": holds},
    }
    refresh = steps.finish(
        statuses.quota_status(
            quota=quota,  # type: ignore[arg-type]
            snapshot=samples.healthy(prices=REQUESTS, highest=HIGHEST),
            claims=objects,
            now=NOW,
            grace=10,
            ages=just_seen,
        )
    )
    status = refresh.status
    assert status["reservations"] == []
    assert status["spend"]["reserved"] == pytest.approx(1000 * LIVE, abs=0.01)
    assert status["used"]["claims"] == 1000
    assert len(json.dumps(status)) < 4096
