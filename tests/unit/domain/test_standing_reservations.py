"""Standing reservations: an object of a kind dbquota does not own, from admission to billing.

Checks: its reservation stays while the object exists and billing does not show it (it
never shows a price of ours); billing showing its cluster after the charge settles it, and
the recount then counts the object at its billed cost, once; billing from before the
charge does not; once its object exists it is marked ``standing`` and no longer counts
against ``--max-reservations``; deleting it releases it (``ClaimDeleted``); an object billed with no
reservation is counted, not adopted; one with neither is adopted at a price for its kind.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dbquota.domain import admission, billing, claims, escrow, quotas, reservations, usage
from dbquota.domain.kinds import registry
from dbquota.domain.resources import Reservation
from dbquota.kits import steps, timestamps
from tests.unit.domain import samples

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "cnpg-cluster.yaml"
NOW = 1_000_000.0
CHARGED = NOW - 100


def ref() -> reservations.ClaimRef:
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"]["uid"] = "u1"
    found = reservations.deriver(registry.KINDS["cnpg"])(obj)
    assert found is not None
    return found


def spec() -> claims.ClaimSpec:
    found = ref().spec
    assert found is not None
    return found


def held() -> list[Reservation]:
    return [
        reservations.hold(
            claim_name="Cluster/orders-pg",
            uid="u1",
            generation=1,
            charged=0.0,
            cost=300.0,
            storage_gib=510,
            pricing="Live",
            degraded=False,
            new_claim=True,
            holder="r1",
            now=CHARGED,
        )
    ]


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


def test_the_reservation_stands_until_billing_shows_the_object() -> None:
    kept, confirmed, released = reservations.settle(
        held=held(), claims={"u1": ref()}, now=NOW + 10_000, grace=5, costs={}
    )
    assert (len(kept), confirmed, released) == (1, [], [])
    counted = steps.finish(usage.recount(claims=[ref()], held=kept, costs={})).usage
    assert (counted.reserved, counted.observed, counted.claims, counted.storage_gib) == (
        300.0,
        0.0,
        1,
        510,
    )


def test_billing_from_before_the_charge_does_not_settle_it() -> None:
    kept, confirmed, _ = reservations.settle(
        held=held(), claims={"u1": ref()}, now=NOW, grace=5, costs=cost(CHARGED - 5)
    )
    assert len(kept) == 1
    assert confirmed == []


def test_billing_after_the_charge_settles_it_and_counts_the_billed_cost() -> None:
    costs = cost(CHARGED + 30)
    kept, confirmed, _ = reservations.settle(
        held=held(), claims={"u1": ref()}, now=NOW, grace=5, costs=costs
    )
    assert kept == []
    assert len(confirmed) == 1
    counted = steps.finish(usage.recount(claims=[ref()], held=kept, costs=costs))
    assert counted.usage.observed == 290.0
    assert counted.usage.reserved == 0.0
    assert counted.billed == {"Cluster/orders-pg"}
    assert reservations.orphans(held=[], claims=[ref()], now=NOW, covered=False, billed=costs) == []


def test_deleting_the_object_releases_it() -> None:
    _, _, released = reservations.settle(
        held=held(), claims={}, deleted={"u1"}, now=NOW, grace=5, costs={}
    )
    assert [why for _, why in released] == ["ClaimDeleted"]


def test_an_object_with_no_reservation_and_no_bill_is_adopted() -> None:
    (orphan,) = reservations.orphans(held=[], claims=[ref()], now=NOW, covered=False, billed={})
    adopted = reservations.adopt(claim=orphan, cost=123.0, pricing="Live", now=NOW)
    assert adopted["claim"] == "Cluster/orders-pg"
    assert timestamps.from_rfc3339(adopted["reservedAt"]) == NOW


def test_a_standing_reservation_is_marked_and_not_in_flight_any_more() -> None:
    kept, _, _ = reservations.settle(held=held(), claims={"u1": ref()}, now=NOW, grace=5, costs={})
    assert kept[0].get("standing") is True
    standing: dict[str, Reservation] = {}
    for i in range(3):
        copy = kept[0].copy()
        copy["uid"] = f"u{i}"
        standing[f"u{i}"] = copy
    outcome = admission.admit(
        quota=samples.quota(),
        usage=quotas.Usage(),
        others=escrow.NOTHING,
        request=admission.Request(
            name="Cluster/another", uid="u9", generation=1, claim=spec(), old=None
        ),
        held=standing,
        snapshot=samples.healthy(),
        now=NOW,
        holder="me",
        in_flight_limit=3,
    )
    assert outcome.decision.reason != "TooManyInFlight"
