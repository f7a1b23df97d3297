"""Reservation bookkeeping: usage counted once, holds that add up, releases with a reason.

Checks that a CREATE does not count its own earlier reservation while an UPDATE does;
that pending (not yet created) claims count toward claims and storage; that StrictCap's
degraded counters count new claims only; that holding an update adds to the earlier hold;
and each release rule of ``settle``: billed after the reservation, claim deleted (known
uid, or a new uid under the same name), never created after the grace period, and kept
otherwise (learning the claim's uid).
"""

from __future__ import annotations

from dbquota.domain import billing, reservations
from dbquota.domain.resources import QuotaStatus, Reservation

T0 = reservations.from_rfc3339("2026-11-27T09:00:00Z")


def ref(name: str, *, uid: str = "", storage: int = 100) -> reservations.ClaimRef:
    return reservations.ClaimRef(
        name=name, uid=uid or f"uid-{name}", cluster_id=f"ns/{name}", storage_gib=storage
    )


def res(name: str, cost: float = 100.0, **extra: object) -> Reservation:
    r = Reservation(claim=name, cost=cost, storageGiB=50, reservedAt="2026-11-27T09:00:00Z")
    r.update(extra)  # type: ignore[typeddict-item]
    return r


STATUS = QuotaStatus(spend={"observed": 400.0})


def test_create_ignores_its_own_earlier_reservation_but_update_counts_it() -> None:
    held = [res("a"), res("b")]
    created = reservations.usage(status=STATUS, held=held, claims=[], claim_name="a", creating=True)
    updated = reservations.usage(
        status=STATUS, held=held, claims=[ref("a")], claim_name="a", creating=False
    )
    assert (created.reserved, created.claims) == (100.0, 1)
    assert (updated.reserved, updated.claims) == (200.0, 2)
    assert created.observed == updated.observed == 400.0


def test_pending_claims_count_toward_claims_and_storage() -> None:
    usage = reservations.usage(
        status=STATUS, held=[res("pending")], claims=[ref("live")], claim_name="new", creating=True
    )
    assert usage.claims == 2
    assert usage.storage_gib == 100 + 50


def test_degraded_counters_count_new_claims_and_all_degraded_storage() -> None:
    held = [
        res("n", degraded=True, newClaim=True),
        res("u", degraded=True, newClaim=False),
        res("live"),
    ]
    usage = reservations.usage(status=STATUS, held=held, claims=[], claim_name="x", creating=True)
    assert usage.degraded_claims == 1
    assert usage.degraded_storage_gib == 100


def test_holding_an_update_adds_to_the_earlier_hold() -> None:
    first = reservations.hold(
        previous=None,
        claim_name="a",
        cost=100.0,
        storage_gib=50,
        pricing="Live",
        degraded=False,
        new_claim=True,
        now=T0,
    )
    first["uid"] = "uid-a"
    second = reservations.hold(
        previous=first,
        claim_name="a",
        cost=25.5,
        storage_gib=10,
        pricing="Conservative",
        degraded=True,
        new_claim=False,
        now=T0 + 60,
    )
    assert second["cost"] == 125.5
    assert second["storageGiB"] == 60
    assert second["degraded"] is True
    assert second["newClaim"] is True
    assert second["uid"] == "uid-a"
    assert second["reservedAt"] == "2026-11-27T09:01:00Z"


def cost(name: str, at: float) -> billing.ClusterCost:
    return billing.ClusterCost(cluster_id=f"ns/{name}", compute=80.0, storage=20.0, observed_at=at)


def test_settle_releases_billed_claims_only_when_sampled_after_the_reservation() -> None:
    kept, released = reservations.settle(
        held=[res("fresh"), res("old-sample")],
        claims=[ref("fresh"), ref("old-sample")],
        costs={"ns/fresh": cost("fresh", T0 + 5), "ns/old-sample": cost("old-sample", T0 - 5)},
        now=T0 + 10,
        grace=300,
    )
    assert [(r["claim"], why) for r, why in released] == [("fresh", "Billed")]
    assert [r["claim"] for r in kept] == ["old-sample"]
    assert kept[0]["uid"] == "uid-old-sample"


def test_settle_releases_deleted_claims_and_recreated_names() -> None:
    kept, released = reservations.settle(
        held=[res("gone", uid="u1"), res("again", uid="u2")],
        claims=[ref("again", uid="u3")],
        costs={},
        now=T0 + 1,
        grace=300,
    )
    assert kept == []
    assert [(r["claim"], why) for r, why in released] == [
        ("gone", "ClaimDeleted"),
        ("again", "ClaimDeleted"),
    ]


def test_settle_waits_a_grace_period_for_claims_that_never_appear() -> None:
    kept, released = reservations.settle(
        held=[res("late")], claims=[], costs={}, now=T0 + 299, grace=300
    )
    assert [r["claim"] for r in kept] == ["late"]
    assert released == []
    kept, released = reservations.settle(
        held=[res("late")], claims=[], costs={}, now=T0 + 301, grace=300
    )
    assert kept == []
    assert [why for _, why in released] == ["NeverCreated"]


def test_observed_spend_counts_each_billed_cluster_once() -> None:
    shared = reservations.ClaimRef(name="twin", uid="t", cluster_id="ns/a", storage_gib=1)
    total = reservations.observed_spend(
        claims=[ref("a"), shared, ref("unbilled")], costs={"ns/a": cost("a", T0)}
    )
    assert total == 100.0


def test_observed_spend_leaves_out_claims_whose_cost_is_still_reserved() -> None:
    total = reservations.observed_spend(
        claims=[ref("a"), ref("b")],
        costs={"ns/a": cost("a", T0), "ns/b": cost("b", T0)},
        reserved={"b"},
    )
    assert total == 100.0


def test_settle_keeps_a_reservation_sampled_earlier_within_the_same_second() -> None:
    # reservedAt has whole seconds: a hold taken at T0 + 0.8 reads "...T09:00:00Z", and a
    # sample from T0 + 0.3 predates it (it cannot show an update's growth yet).
    held = reservations.hold(
        previous=None,
        claim_name="a",
        cost=50.0,
        storage_gib=0,
        pricing="Live",
        degraded=False,
        new_claim=False,
        now=T0 + 0.8,
    )
    kept, released = reservations.settle(
        held=[held], claims=[ref("a")], costs={"ns/a": cost("a", T0 + 0.3)}, now=T0 + 2, grace=300
    )
    assert (len(kept), released) == (1, [])
    kept, released = reservations.settle(
        held=[held], claims=[ref("a")], costs={"ns/a": cost("a", T0 + 1)}, now=T0 + 2, grace=300
    )
    assert (kept, [why for _, why in released]) == ([], ["Billed"])


def priced(
    name: str, *, cost: float | None, created: float, cluster: str = ""
) -> reservations.ClaimRef:
    return reservations.ClaimRef(
        name=name,
        uid=f"uid-{name}",
        cluster_id=cluster or f"ns/{name}",
        storage_gib=20,
        created=created,
        cost=cost,
        pricing="Live",
    )


def test_adopt_holds_claims_that_exist_unreserved_and_unbilled() -> None:
    now = T0 + 100
    claims = [
        priced("orphan", cost=250.0, created=T0),
        priced("held", cost=100.0, created=T0),
        priced("billed", cost=100.0, created=T0),
        priced("young", cost=100.0, created=now - 5),
        priced("unpriced", cost=None, created=T0),
    ]
    costs = {
        "ns/billed": billing.ClusterCost(
            cluster_id="ns/billed", compute=90.0, storage=10.0, observed_at=T0
        )
    }
    adopted = reservations.adopt(held=[res("held")], claims=claims, costs=costs, now=now)
    assert adopted == [
        Reservation(
            claim="orphan",
            uid="uid-orphan",
            cost=250.0,
            storageGiB=20,
            pricing="Live",
            degraded=False,
            newClaim=True,
            reservedAt=reservations.to_rfc3339(now),
        )
    ]


def test_claim_ref_reads_creation_and_price() -> None:
    obj = {
        "metadata": {
            "name": "c",
            "namespace": "ns",
            "uid": "u",
            "creationTimestamp": "2026-11-27T09:00:00Z",
        },
        "spec": {"engine": "postgres", "instanceClass": "db.small", "storageGiB": 20},
        "status": {"estimatedMonthlyCost": 12.5, "pricing": "Conservative"},
    }
    ref_ = reservations.claim_ref(obj)
    assert ref_ is not None
    assert (ref_.created, ref_.cost, ref_.pricing) == (T0, 12.5, "Conservative")
