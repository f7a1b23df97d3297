"""A quota's status counts each claim once: as reserved until billing samples it, then observed.

A new claim's reservation holds its whole cost; a billing sample of its cluster from
before the reservation (the cluster existed before its claim, or belonged to a deleted
claim of the same clusterId) must not be counted as observed on top of it. An update's
reservation holds only its growth, so the earlier sample still counts beside it.
"""

from __future__ import annotations

from dbquota.domain import billing, reservations, statuses
from dbquota.domain.resources import Escrow, QuotaObject, Reservation, Spend

RESERVED_AT = "2026-11-27T09:00:00Z"
T0 = reservations.from_rfc3339(RESERVED_AT)
CLAIM = reservations.ClaimRef(name="orders", uid="u1", cluster_id="orders-db", storage_gib=100)


def quota(*held: Reservation) -> QuotaObject:
    return QuotaObject(
        metadata={"name": "team-a", "namespace": "team-a", "generation": 1},
        spec={"monthlyBudget": 5000},
        status={"reservations": list(held)},
    )


def hold(cost: float, *, new_claim: bool) -> Reservation:
    return Reservation(
        claim="orders", cost=cost, storageGiB=100, newClaim=new_claim, reservedAt=RESERVED_AT
    )


def sampled(at: float, total: float = 170.0) -> billing.BillingSnapshot:
    cost = billing.ClusterCost(cluster_id="orders-db", compute=total, storage=0.0, observed_at=at)
    return billing.BillingSnapshot(costs={"orders-db": cost})


def spend(quota_obj: QuotaObject, snapshot: billing.BillingSnapshot) -> Spend:
    refresh = statuses.quota_status(
        quota=quota_obj, snapshot=snapshot, claims=[CLAIM], now=T0 + 5, grace=300
    )
    return refresh.status["spend"]


def test_new_claim_is_reserved_not_also_observed_from_an_earlier_sample() -> None:
    got = spend(quota(hold(165.0, new_claim=True)), sampled(T0 - 30))
    assert got == {"observed": 0.0, "reserved": 165.0, "remaining": 4835.0}


def test_new_claim_is_observed_once_billing_samples_it_after_the_reservation() -> None:
    got = spend(quota(hold(165.0, new_claim=True)), sampled(T0 + 2))
    assert got == {"observed": 170.0, "reserved": 0.0, "remaining": 4830.0}


def test_update_growth_is_reserved_beside_the_earlier_sample() -> None:
    got = spend(quota(hold(50.0, new_claim=False)), sampled(T0 - 30))
    assert got == {"observed": 170.0, "reserved": 50.0, "remaining": 4780.0}


def test_an_orphan_claim_is_adopted_and_long_expired_escrow_let_go() -> None:
    orphan = reservations.ClaimRef(
        name="orders",
        uid="u1",
        cluster_id="orders-db",
        storage_gib=100,
        created=T0 - 60,
        cost=165.0,
        pricing="Live",
    )
    quota_obj = quota()
    quota_obj["status"]["escrow"] = [
        Escrow(holder="crashed", cost=1000.0, expiresAt="2026-11-27T08:50:00Z"),
        Escrow(holder="alive", cost=500.0, expiresAt="2026-11-27T09:00:10Z"),
    ]
    refresh = statuses.quota_status(
        quota=quota_obj, snapshot=billing.BillingSnapshot(), claims=[orphan], now=T0, grace=300
    )
    assert [r["claim"] for r in refresh.adopted] == ["orders"]
    assert refresh.status["spend"] == {"observed": 0.0, "reserved": 165.0, "remaining": 4835.0}
    assert [e["holder"] for e in refresh.expired] == ["crashed"]
    assert [e["holder"] for e in refresh.status["escrow"]] == ["alive"]


def test_escrow_is_left_alone_when_nothing_expired() -> None:
    quota_obj = quota()
    quota_obj["status"]["escrow"] = [
        Escrow(holder="alive", cost=500.0, expiresAt="2026-11-27T09:00:10Z")
    ]
    refresh = statuses.quota_status(
        quota=quota_obj, snapshot=billing.BillingSnapshot(), claims=[], now=T0, grace=300
    )
    assert "escrow" not in refresh.status  # the ledger keeps the entries it read
    assert refresh.expired == ()
