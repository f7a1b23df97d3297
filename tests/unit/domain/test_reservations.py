"""Reservations in flight: what an admission holds, and what ends it.

Checks that a CREATE's reservation holds its whole cost and an UPDATE's its growth on top
of what the claim is already counted at (or of its own reservation still in flight); each
way a reservation ends in ``settle``: confirmed once the claim's status shows, for that
generation, a price that covers it (not a generation moved ahead at the old price; a blind
UPDATE's only once its claim is old), kept while the claim is unpriced or not seen yet,
released as ``ClaimDeleted`` or ``NeverCreated`` (after the grace, measured from the
admission); a CREATE written late joining the UPDATE it did not see; what a claim owes,
and a property: once it shows that, each reservation is confirmed and it owes no more; which
claims are orphans (no price, no reservation) while escrow may still cover them and once
it cannot; and how a claim object is read (junk status fields read as "no price"), and
that another kind's object too large to count (storage or cpu beyond an int64) is
unreadable for the informer, not an exception.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import reservations
from dbquota.domain.kinds import registry
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


def aged(seconds: float = 0.0, **by_uid: float) -> reservations.Ages:
    """How long the reconciler has seen each reservation (by its object's uid, with
    dashes as underscores) or unpriced claim: ``seconds`` for any other."""

    def age(key: Hashable) -> float:
        uid = key[0] if isinstance(key, tuple) else key
        return by_uid.get(str(uid).replace("-", "_"), seconds)

    return age


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
        ages=aged(1.0, uid_never=11.0),
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
    covered = reservations.orphans(held=holds, claims=claims, now=T0, covered=True, ages=aged())
    assert [c.name for c in covered] == ["old"]
    uncovered = reservations.orphans(held=holds, claims=claims, now=T0, covered=False, ages=aged())
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
    kept, _, released = reservations.settle(
        held=[old], claims={}, now=T0, grace=10, ages=aged(60), current=False
    )
    assert (kept, released) == ([old], [])
    _, _, released = reservations.settle(held=[old], claims={}, now=T0, grace=10, ages=aged(60))
    assert [why for _, why in released] == ["NeverCreated"]


def update(name: str, *, charged: float, growth: float, generation: int = 2) -> Reservation:
    """An UPDATE's reservation, decided by a replica that saw no reservation of the claim
    in flight (so it built on the claim's status price, ``charged``)."""
    return reservations.hold(
        claim_name=name,
        uid=f"uid-{name}",
        generation=generation,
        charged=charged,
        cost=growth,
        storage_gib=10,
        pricing="Live",
        degraded=False,
        new_claim=False,
        holder="b",
        now=T0 + 1,
    )


def test_a_price_moved_ahead_does_not_confirm_the_growth_it_does_not_show() -> None:
    """The publisher saw no reservation for generation 2 (its quota watch behind) and
    moved the claim's generation at the old price: the UPDATE's growth is not in that
    price, so its reservation stays (it used to end, and the growth was counted nowhere)."""
    grown = update("a", charged=100.0, growth=50.0)
    moved_ahead = ref("a", generation=2, cost=100.0, priced_generation=2)
    assert not reservations.confirmed_by(grown, moved_ahead)
    kept, confirmed, _ = reservations.settle(
        held=[grown], claims={moved_ahead.uid: moved_ahead}, now=T0 + 100, grace=10, ages=aged(100)
    )
    assert (kept, confirmed) == ([grown], [])
    priced = ref("a", generation=2, cost=150.0, priced_generation=2)
    assert reservations.confirmed_by(grown, priced)
    in_cents = ref("a", generation=2, cost=149.996, priced_generation=2)
    assert reservations.confirmed_by(grown, in_cents)


def test_an_update_that_adds_no_cost_is_confirmed_at_the_price_it_keeps() -> None:
    """More storage for a cheaper class can add nothing to the price: the reservation
    holds the storage at the price charged, and the claim keeps that price."""
    storage_only = update("a", charged=100.0, growth=0.0)
    assert (storage_only["cost"], storage_only["delta"]) == (100.0, 0.0)
    assert reservations.confirmed_by(
        storage_only, ref("a", generation=2, cost=100.0, priced_generation=2)
    )


def test_a_blind_update_is_confirmed_only_once_its_claim_is_old() -> None:
    """An UPDATE decided while the claim showed no price and its CREATE's reservation was
    on no quota (in some replica's escrow) holds the growth alone; while the claim is
    young that CREATE may still come, and must find the UPDATE's reservation to join."""
    blind = update("a", charged=0.0, growth=50.0)
    assert reservations.blind(blind)
    assert not reservations.blind(update("a", charged=100.0, growth=50.0))
    priced = ref("a", generation=2, cost=50.0, priced_generation=2, created=T0)
    assert not reservations.confirmed_by(blind, priced)
    claims = {priced.uid: priced}
    young, _, _ = reservations.settle(held=[blind], claims=claims, now=T0, grace=10, ages=aged())
    assert young == [blind]
    later = T0 + reservations.ADOPT_AFTER
    _, old, _ = reservations.settle(held=[blind], claims=claims, now=later, grace=10, ages=aged())
    assert old == [blind]


def test_a_create_written_after_the_update_it_did_not_see_joins_it() -> None:
    create = held("a", cost=100.0)
    blind = update("a", charged=0.0, growth=50.0)
    got = reservations.merged(create, blind)
    assert got is not None
    assert (got["generation"], got["cost"], got["delta"], got["storageGiB"]) == (2, 150, 150, 60)
    assert (got.get("newClaim"), got["holder"]) == (True, "b")
    assert got["reservedAt"] == blind["reservedAt"]
    # An UPDATE built on the price the CREATE charged has it already.
    assert reservations.merged(create, update("a", charged=100.0, growth=50.0)) is None


def owed(claim: reservations.ClaimRef, *holds: Reservation) -> tuple[float, int, str] | None:
    due = reservations.owed(claim, holds)
    return None if due is None else (due["cost"], due["generation"], due["pricing"])


def test_what_a_claim_must_show_adds_what_its_price_did_not_see() -> None:
    create, grown = held("a", cost=100.0, pricing="Live"), update("a", charged=100, growth=50)
    unpriced = ref("a", generation=2)
    assert owed(unpriced, create, grown) == (150.0, 2, "Live")
    blind = update("a", charged=0.0, growth=50.0)
    assert owed(unpriced, create, blind) == (150.0, 2, "Live")
    # Priced at the old price moved ahead: the UPDATE's reservation raises it.
    moved_ahead = ref("a", generation=2, cost=100.0, priced_generation=2)
    assert reservations.owes(moved_ahead, [grown])
    assert owed(moved_ahead, grown) == (150.0, 2, "Live")
    # Priced from the blind UPDATE alone, then the CREATE is written: both count.
    from_blind = ref("a", generation=2, cost=50.0, priced_generation=2, pricing="Live")
    assert reservations.owes(from_blind, [create])
    assert owed(from_blind, create) == (150.0, 2, "Live")
    # A price that covers them owes nothing; one for a later generation waits for it.
    assert not reservations.owes(ref("a", generation=2, cost=150.0, priced_generation=2), [grown])
    shown = ref("a", cost=100.0, priced_generation=1)
    assert not reservations.owes(shown, [update("a", charged=100.0, growth=50.0)])
    assert reservations.owed(ref("a"), []) is None


HOLD: dict[str, Any] = {
    "claim_name": "a",
    "uid": "uid-a",
    "storage_gib": 200,
    "pricing": "Live",
    "degraded": False,
    "new_claim": False,
    "holder": "r1",
    "now": T0 + 5,
}
"""An UPDATE of claim ``a`` but its generation, charge and cost."""


def on_create_in_flight(create: Reservation, *, growth: float) -> Reservation:
    """An UPDATE to generation 2 admitted while ``create`` is still on the quota (the
    reconciler has not confirmed it yet): it builds on it, and holds the CREATE itself."""
    return reservations.hold(
        **HOLD, generation=2, charged=float(create["cost"]), cost=growth, previous=create
    )


def test_an_update_built_on_its_create_in_flight_owes_its_whole_price_not_that_plus_the_shown() -> (
    None
):
    """The claim shows its CREATE's price (written, not confirmed yet) when an UPDATE from
    100 to 300 GiB builds on the CREATE's reservation: that reservation is the whole
    price. Added to the price shown, the claim was charged 199.13 + 219.98 = 419.11."""
    create = held("a", cost=199.13, pricing="Live")
    grown = on_create_in_flight(create, growth=20.85)
    assert (grown["cost"], grown.get("newClaim")) == (219.98, True)
    shows_create = ref("a", generation=2, cost=199.13, priced_generation=1, pricing="Live")
    assert owed(shows_create, grown) == (219.98, 2, "Live")
    assert owed(shows_create, create, grown) == (219.98, 2, "Live")
    # Two quotas: the one at the higher margin charged the CREATE 240.00, which the claim
    # shows; the other's UPDATE built on its own 199.13. The claim shows the dearest.
    shows_dearer = ref("a", generation=2, cost=240.0, priced_generation=1, pricing="Live")
    assert owed(shows_dearer, grown) == (240.0, 2, "Live")
    dearer = on_create_in_flight(held("a", cost=240.0), growth=25.0)
    assert owed(shows_dearer, grown, dearer) == (265.0, 2, "Live")
    # The price of a blind UPDATE alone shown; the CREATE written late joined it on the
    # quota, and a third generation built on that: it holds the blind part already.
    joined = reservations.merged(create, update("a", charged=0.0, growth=50.0))
    assert joined is not None
    third = reservations.hold(
        **{**HOLD, "generation": 3, "charged": 249.13, "cost": 10.0}, previous=joined
    )
    shows_blind = ref("a", generation=3, cost=50.0, priced_generation=2, pricing="Live")
    assert owed(shows_blind, third) == (259.13, 3, "Live")


MONEY = st.floats(min_value=0, max_value=5000).map(lambda x: round(x, 2))


@st.composite
def histories(draw: st.DrawFn) -> tuple[reservations.ClaimRef, list[Reservation]]:
    """One claim's reservations as its quotas and a replica's escrow may hold them: a
    CREATE, UPDATEs each built on some price (or blind) or on the reservation before it,
    one a generation ahead of the object; and the price its status shows, for some
    generation, or none."""
    generation = draw(st.integers(min_value=1, max_value=4))
    holds: list[Reservation] = []
    for g in range(1, generation + 2):
        if not draw(st.booleans()):
            continue
        if g == 1:
            holds.append(held("a", cost=draw(MONEY)))
            continue
        if draw(st.booleans()) and holds:  # built on the last one, still in flight
            on = holds[-1]
            grown = {"generation": g, "charged": on["cost"], "cost": draw(MONEY)}
            holds.append(reservations.hold(**{**HOLD, **grown}, previous=on))
            continue
        charged = draw(st.one_of(st.just(0.0), MONEY))
        holds.append(update("a", charged=charged, growth=draw(MONEY), generation=g))
    claim = ref("a", generation=generation)
    if draw(st.booleans()):
        shown = draw(st.integers(min_value=1, max_value=generation))
        claim = replace(claim, cost=draw(MONEY), priced_generation=shown)
    return claim, holds


@given(histories())
def test_a_claim_that_shows_what_it_owes_owes_nothing_more(
    history: tuple[reservations.ClaimRef, list[Reservation]],
) -> None:
    """The publisher writes what :func:`reservations.owed` says: then every reservation of
    that generation or older is confirmed, and nothing more is owed (no second write)."""
    claim, holds = history
    due = reservations.owed(claim, holds)
    if due is None:
        assert claim.cost is None
        assert not holds
        return
    shown = replace(claim, cost=round(due["cost"], 2), priced_generation=claim.generation)
    assert claim.cost is None or due["cost"] >= claim.cost - 0.005  # never lowered
    assert not reservations.owes(shown, holds)
    for res in holds:
        if res["generation"] <= claim.generation:
            assert reservations.confirmed_by(res, shown, now=T0 + reservations.ADOPT_AFTER)


def test_the_grace_is_counted_on_the_reconcilers_clock_whatever_reserved_at_says() -> None:
    """``reservedAt`` is the admitting replica's wall clock and ``now`` the leader's: with
    nodes an hour apart the leader released at once the reservations of claims still on
    their way (its clock ahead) or held never-created ones an hour (behind). The age that
    counts is how long the reconciler has seen the reservation, on its own clock."""
    from_behind = held("a", at=T0 - 3600)  # the admitting replica's clock an hour behind
    from_ahead = held("b", at=T0 + 3600)  # an hour ahead
    both = [from_behind, from_ahead]
    kept, _, released = reservations.settle(held=both, claims={}, now=T0, grace=10, ages=aged(9))
    assert (kept, released) == (both, [])
    kept, _, released = reservations.settle(held=both, claims={}, now=T0, grace=10, ages=aged(11))
    assert (kept, [why for _, why in released]) == ([], ["NeverCreated", "NeverCreated"])


def test_an_update_never_applied_is_released_once_its_claim_stays_below_its_generation() -> None:
    """dbquota admitted an UPDATE for generation 2, and another webhook denied it: the
    claim stays at generation 1, priced for it, and the reservation held the growth for
    good. After the grace it is released (``NeverApplied``): the claim's price counts
    what generation 1 owes. Not while the claims' watch is behind, and never once the
    claim is at generation 2 (reached by that UPDATE, or by a later one that the
    apiserver gave the same number)."""
    grown = update("a", charged=100.0, growth=50.0)
    stayed = ref("a", generation=1, cost=100.0, priced_generation=1)

    def settle(
        claim: reservations.ClaimRef, seconds: float, *, current: bool = True
    ) -> tuple[list[Reservation], list[Reservation], list[tuple[Reservation, str]]]:
        kept, confirmed, released = reservations.settle(
            held=[grown],
            claims={claim.uid: claim},
            now=T0,
            grace=10,
            ages=aged(seconds),
            current=current,
        )
        return kept, confirmed, list(released)

    assert settle(stayed, 9) == ([grown], [], [])
    assert settle(stayed, 11) == ([], [], [(grown, "NeverApplied")])
    assert settle(stayed, 11, current=False) == ([grown], [], [])
    reached = ref("a", generation=2, cost=100.0, priced_generation=2)
    assert settle(reached, 3600) == ([grown], [], [])  # the publisher raises its price first
    unpriced_yet = ref("a", generation=2, cost=100.0, priced_generation=1)
    assert settle(unpriced_yet, 3600) == ([grown], [], [])


def test_a_claim_showing_no_price_for_its_generation_keeps_what_holds_its_earlier_part() -> None:
    """An UPDATE admitted while the CREATE's reservation was in flight replaced it, built on
    it (150 = 100 + 50). Released while the claim shows no price, the CREATE's 100 would
    count nowhere (an unpriced claim counts in the caps only). It stays until the claim
    shows a price for its generation (the publisher writes it from this reservation, the
    only one left), then goes."""
    create = held("a", cost=100.0)
    grown = reservations.hold(
        claim_name="a",
        uid="uid-a",
        generation=2,
        charged=0.0,
        cost=50.0,
        storage_gib=10,
        pricing="Live",
        degraded=False,
        new_claim=False,
        holder="b",
        now=T0 + 1,
        previous=create,
    )
    for unpriced in (ref("a"), ref("a", generation=3, cost=100.0, priced_generation=2)):
        grown_later = Reservation(**grown)
        grown_later["generation"] = unpriced.generation + 1
        kept, _, released = reservations.settle(
            held=[grown_later], claims={"uid-a": unpriced}, now=T0, grace=10, ages=aged(3600)
        )
        assert (kept, released) == ([grown_later], [])
    priced = ref("a", cost=150.0, priced_generation=1)
    _, _, released = reservations.settle(
        held=[grown], claims={"uid-a": priced}, now=T0, grace=10, ages=aged(3600)
    )
    assert released == [(grown, "NeverApplied")]


def test_a_claim_is_young_only_while_both_clocks_say_so() -> None:
    """``created`` is the apiserver's clock and ``now`` the leader's. With the leader an
    hour behind, an unpriced claim with no reservation looked young for an hour: left to
    some live replica's escrow (counted nowhere) and not adopted. The reconciler's own
    sighting ends that after :data:`reservations.ADOPT_AFTER`; a claim the apiserver says
    is old stays old (a new leader sees it for the first time)."""
    ahead = ref("ahead", created=T0 + 3600)  # the apiserver's clock an hour ahead
    old = ref("old", created=T0 - 100)
    claims = [ahead, old]

    def orphans(ages: reservations.Ages) -> list[str]:
        found = reservations.orphans(held=[], claims=claims, now=T0, covered=True, ages=ages)
        return [c.name for c in found]

    assert orphans(aged(1)) == ["old"]
    assert reservations.in_escrow(held=[], claims=claims, now=T0, ages=aged(1)) == {"uid-ahead"}
    seen_long = aged(reservations.ADOPT_AFTER)
    assert orphans(seen_long) == ["ahead", "old"]
    assert reservations.in_escrow(held=[], claims=claims, now=T0, ages=seen_long) == frozenset()


def test_a_new_hold_of_the_same_object_is_aged_afresh() -> None:
    """An UPDATE's reservation replaces its claim's CREATE reservation under the same uid:
    it is another admission, whose grace starts when it is first seen."""
    create = held("a")
    grown = update("a", charged=100.0, growth=50.0)
    assert reservations.identity(create) != reservations.identity(grown)
    assert reservations.identity(create) == reservations.identity(Reservation(**create))


@given(
    histories(),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=-7200, max_value=7200),
    st.booleans(),
    st.booleans(),
)
def test_settle_releases_only_what_counts_elsewhere_and_only_after_the_grace(
    history: tuple[reservations.ClaimRef, list[Reservation]],
    seen: float,
    skew: float,
    present: bool,
    current: bool,
) -> None:
    """Whatever clock wrote ``reservedAt`` (two hours either way), nothing is released
    before the reconciler has seen it for the grace, with the claims' watch current; a
    reservation whose claim exists is released only as ``NeverApplied``, when the claim
    stays below its generation and shows a price for its own (so it counts what that
    generation owes); and each reservation lands in exactly one list."""
    claim, holds = history
    stamped = [Reservation(**r) for r in holds]
    for res in stamped:
        res["reservedAt"] = timestamps.to_rfc3339(T0 + skew)
    kept, confirmed, released = reservations.settle(
        held=stamped,
        claims={claim.uid: claim} if present else {},
        now=T0,
        grace=10,
        ages=aged(seen),
        current=current,
    )
    assert len(kept) + len(confirmed) + len(released) == len(stamped)
    for res, why in released:
        assert current
        assert seen > 10
        if present:
            assert why == "NeverApplied"
            assert claim.generation < res["generation"]
            assert claim.priced
        else:
            assert why == "NeverCreated"


def _cnpg(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "pg", "namespace": "team-a", "uid": "u-pg", "generation": 1},
        "spec": spec,
    }


_RDS = {
    "metadata": {"name": "db", "uid": "u-db", "labels": {"crossplane.io/claim-namespace": "a"}},
    "spec": {
        "forProvider": {
            "instanceClass": "db.r6g.large",
            "allocatedStorage": 1.7e308,
            "multiAz": True,
        }
    },
}


def test_an_object_too_large_to_count_is_unreadable_for_the_informer() -> None:
    """Its storage overflowed (OverflowError out of the derive: the kind's watch relisted
    every second, forever), or its cpu priced at infinity (every recount of its quota
    raised): now it is unreadable, like any other bad object, and counted by no quota."""
    cnpg, rds = registry.KINDS["cnpg"], registry.KINDS["rds"]
    label = "crossplane.io/claim-namespace"
    assert reservations.foreign_ref(_RDS, kind=rds, namespace_label=label) is None
    base = {"instances": 2, "storage": {"size": "10Gi"}}
    for spec in (
        {**base, "storage": {"size": "1.7e317"}},
        {**base, "resources": {"requests": {"cpu": "1e308", "memory": "1Gi"}}},
        {**base, "storage": {"size": "1e28"}},
    ):
        assert reservations.foreign_ref(_cnpg(spec), kind=cnpg, namespace_label="") is None
    readable = reservations.foreign_ref(_cnpg(base), kind=cnpg, namespace_label="")
    assert readable is not None
    assert readable.storage_gib == 20
