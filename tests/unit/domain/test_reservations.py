"""Reservations in flight: what an admission holds, and what ends it.

Checks that a CREATE's reservation holds its whole cost and an UPDATE's its growth on top
of what the claim is already counted at (or of its own reservation still in flight); each
way a reservation ends in ``settle``: confirmed once the claim's status shows a price for
that generation, kept while the claim is unpriced or not seen yet, released as
``ClaimDeleted`` or ``NeverCreated`` (after the grace, measured from the admission); which
claims are orphans (no price, no reservation) while escrow may still cover them and once
it cannot; and how a claim object is read (junk status fields read as "no price").
"""

from __future__ import annotations

from typing import Any

from dbquota.domain import reservations
from dbquota.domain.resources import Reservation
from dbquota.kits import timestamps

T0 = timestamps.from_rfc3339("2026-11-27T09:00:00Z")


def ref(name: str, **fields: Any) -> reservations.ClaimRef:
    base: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "cluster_id": f"ns/{name}",
        "storage_gib": 100,
    }
    base.update(fields)
    return reservations.ClaimRef(**base)


def held(name: str, *, cost: float = 100.0, at: float = T0, **extra: object) -> Reservation:
    r = Reservation(
        claim=name,
        uid=f"uid-{name}",
        generation=1,
        cost=cost,
        delta=cost,
        storageGiB=50,
        newClaim=True,
        reservedAt=timestamps.to_rfc3339(at),
    )
    r.update(extra)  # type: ignore[typeddict-item]
    return r


def test_a_create_holds_its_whole_cost() -> None:
    got = reservations.hold(
        claim_name="a",
        uid="u",
        generation=1,
        charged=0.0,
        cost=100.0,
        storage_gib=50,
        pricing="Live",
        degraded=False,
        new_claim=True,
        holder="r1",
        now=T0,
    )
    assert got == {
        "claim": "a",
        "uid": "u",
        "generation": 1,
        "cost": 100.0,
        "delta": 100.0,
        "storageGiB": 50,
        "pricing": "Live",
        "newClaim": True,
        "reservedAt": "2026-11-27T09:00:00Z",
        "holder": "r1",
    }  # no "degraded": flags are written only when set


def test_an_update_holds_its_growth_on_top_of_the_price_charged() -> None:
    got = reservations.hold(
        claim_name="a",
        uid="u",
        generation=2,
        charged=410.4,
        cost=25.5,
        storage_gib=10,
        pricing="Conservative",
        degraded=True,
        new_claim=False,
        holder="r1",
        now=T0 + 60,
    )
    assert (got["cost"], got["delta"], got["storageGiB"]) == (435.9, 25.5, 10)
    assert "newClaim" not in got
    assert (got["degraded"], got["generation"]) == (True, 2)


def test_an_update_of_a_claim_still_in_flight_builds_on_its_reservation() -> None:
    first = held("a", cost=100.0)
    got = reservations.hold(
        claim_name="a",
        uid="uid-a",
        generation=2,
        charged=0.0,  # the claim shows no price yet
        cost=25.5,
        storage_gib=10,
        pricing="Live",
        degraded=False,
        new_claim=False,
        holder="r1",
        previous=first,
        now=T0 + 1,
    )
    assert (got["cost"], got["delta"], got["storageGiB"], got["newClaim"]) == (
        125.5,
        125.5,
        60,
        True,
    )


def test_settle_confirms_kept_and_releases_with_a_reason() -> None:
    kept, confirmed, released = reservations.settle(
        held=[
            held("priced"),
            held("unpriced"),
            held("old-generation", generation=2),
            held("deleted"),
            held("young"),
            held("never", at=T0 - 11),
        ],
        claims={
            c.uid: c
            for c in (
                ref("priced", cost=100.0, priced_generation=1),
                ref("unpriced"),
                ref("old-generation", generation=2, cost=90.0, priced_generation=1),
            )
        },
        deleted={"uid-deleted"},
        now=T0,
        grace=10,
    )
    assert [r["claim"] for r in confirmed] == ["priced"]
    assert [r["claim"] for r in kept] == ["unpriced", "old-generation", "young"]
    assert [(r["claim"], why) for r, why in released] == [
        ("deleted", "ClaimDeleted"),
        ("never", "NeverCreated"),
    ]


def test_orphans_wait_for_escrow_until_it_cannot_cover_them() -> None:
    claims = [
        ref("fresh", created=T0 - 1),
        ref("old", created=T0 - reservations.ADOPT_AFTER),
        ref("held", created=T0 - 100),
        ref("priced", created=T0 - 100, cost=10.0, priced_generation=1),
    ]
    holds = [held("held")]
    covered = reservations.orphans(held=holds, claims=claims, now=T0, covered=True)
    assert [c.name for c in covered] == ["old"]
    uncovered = reservations.orphans(held=holds, claims=claims, now=T0, covered=False)
    assert [c.name for c in uncovered] == ["fresh", "old"]


def test_adopting_holds_the_price_given() -> None:
    got = reservations.adopt(claim=ref("a", generation=3), cost=55.556, pricing="Live", now=T0)
    assert (got["uid"], got["cost"], got["delta"], got["generation"]) == ("uid-a", 55.56, 55.56, 3)
    assert (got["holder"], got["newClaim"], got["storageGiB"]) == (reservations.ADOPTED, True, 100)


def claim_object(**status: object) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "uid": "u1",
            "generation": 3,
            "creationTimestamp": "2026-11-27T09:00:00Z",
        },
        "spec": {"engine": "postgres", "instanceClass": "db.t3.micro", "storageGiB": 20},
        "status": status,
    }


def test_a_claim_object_is_read_with_its_price() -> None:
    got = reservations.claim_ref(
        claim_object(
            estimatedMonthlyCost=12.5,
            observedGeneration=3,
            reservedAt="2026-11-27T09:00:05Z",
            pricing="Live",
            degraded=True,
        )
    )
    assert got is not None
    assert (got.name, got.uid, got.cluster_id, got.storage_gib) == ("a", "u1", "ns/a", 20)
    assert (got.cost, got.priced_generation, got.priced, got.degraded) == (12.5, 3, True, True)
    assert (got.created, got.reserved_at) == (T0, T0 + 5)


def test_junk_in_a_claims_status_reads_as_no_price() -> None:
    for junk in ("12", -1, None, [1]):
        got = reservations.claim_ref(claim_object(estimatedMonthlyCost=junk, reservedAt=5))
        assert got is not None
        assert (got.cost, got.priced, got.reserved_at) == (None, False, 0.0)
    assert reservations.claim_ref({"metadata": {"name": "x"}, "spec": None}) is None


def test_nothing_is_released_as_never_created_while_the_claims_watch_is_behind() -> None:
    old = held("old", at=T0 - 60)
    kept, _, released = reservations.settle(held=[old], claims={}, now=T0, grace=10, current=False)
    assert (kept, released) == ([old], [])
    _, _, released = reservations.settle(held=[old], claims={}, now=T0, grace=10)
    assert [why for _, why in released] == ["NeverCreated"]
