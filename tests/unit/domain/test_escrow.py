"""Escrow arithmetic: what fits, what is left, what others hold, what a replica may take.

Checks that an uncapped dimension never limits; that other replicas' escrow (lapsed
holders' too) is counted as used and a replica's own is not; that the room left follows
the budget and the hard caps; that a grant is a share of the room, rounded down, and
nothing when it would not fit an admission like the last one; and that only entries of
holders whose lease lapsed are let go; that an escrow far from the budget is kept longer
between admissions, and that the leader writes what escrow admitted lazily but gives it
back on time. A hypothesis property: however a grant is consumed, the takes
never add up to more than the grant.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import escrow, quotas
from dbquota.domain.resources import Escrow, Reservation


def hold(uid: str) -> Reservation:
    return Reservation(claim=uid, uid=uid, generation=1, cost=10.0)


def held(holder: str, cost: float, **extra: object) -> Escrow:
    e = Escrow(holder=holder, cost=cost, generation=1)
    e.update(extra)  # type: ignore[typeddict-item]
    return e


def test_an_uncapped_dimension_never_limits() -> None:
    allowance = escrow.Allowance(cost=500.0)
    assert allowance.fits(escrow.take(cost=500.0, new_claims=1, storage_gib=10_000))
    assert not allowance.fits(escrow.take(cost=500.01, new_claims=0, storage_gib=0))
    capped = escrow.Allowance(cost=500.0, claims=1, storage_gib=100)
    assert capped.fits(escrow.take(cost=10.0, new_claims=1, storage_gib=100))
    assert not capped.fits(escrow.take(cost=10.0, new_claims=2, storage_gib=1))
    assert not capped.fits(escrow.take(cost=10.0, new_claims=0, storage_gib=101))


def test_minus_and_plus() -> None:
    capped = escrow.Allowance(cost=500.0, claims=3, storage_gib=100)
    left = capped.minus(escrow.take(cost=120.5, new_claims=1, storage_gib=40))
    assert left == escrow.Allowance(cost=379.5, claims=2, storage_gib=60)
    assert escrow.Allowance(cost=1.0).plus(left) == escrow.Allowance(
        cost=380.5, claims=2, storage_gib=60
    )
    assert escrow.Allowance(cost=1.0).plus(escrow.NOTHING) == escrow.Allowance(cost=1.0)


def test_empty_when_it_could_admit_nothing() -> None:
    assert escrow.NOTHING.empty
    assert escrow.Allowance(cost=100.0, claims=0).empty
    assert not escrow.Allowance(cost=100.0).empty


def test_other_replicas_escrow_counts_lapsed_ones_too_but_not_ones_own() -> None:
    entries = [
        held("me", 1000.0, claims=5),
        held("a", 200.0, claims=1, storageGiB=50),
        held("lapsed", 100.5),
    ]
    assert escrow.held_by_others(entries, holder="me") == escrow.Allowance(
        cost=300.5, claims=1, storage_gib=50
    )
    assert escrow.held_by_others([], holder="me") == escrow.Allowance(
        cost=0.0, claims=0, storage_gib=0
    )


def test_held_counts_as_used() -> None:
    usage = quotas.Usage(observed=100.0, reserved=50.0, claims=2, storage_gib=10)
    counted = escrow.with_held(usage, escrow.Allowance(cost=25.0, claims=1, storage_gib=5))
    assert (counted.reserved, counted.claims, counted.storage_gib) == (75.0, 3, 15)
    assert escrow.with_held(usage, escrow.NOTHING) is usage


def test_free_room_follows_budget_and_hard_caps() -> None:
    quota = quotas.QuotaSpec(
        name="q", monthly_budget=1000.0, hard=quotas.HardCaps(claims=5, storage_gib=None)
    )
    usage = quotas.Usage(observed=300.0, reserved=200.0, claims=3, storage_gib=70)
    assert escrow.free(quota=quota, usage=usage) == escrow.Allowance(
        cost=500.0, claims=2, storage_gib=None
    )
    over = quotas.Usage(observed=1300.0, claims=9)
    assert escrow.free(quota=quota, usage=over) == escrow.Allowance(cost=0.0, claims=0)


def test_grant_is_a_share_rounded_down_or_nothing_when_too_small() -> None:
    room = escrow.Allowance(cost=999.99, claims=7, storage_gib=None)
    typical = escrow.take(cost=100.0, new_claims=1, storage_gib=10)
    assert escrow.grant(room=room, share=0.25, typical=typical) == escrow.Allowance(
        cost=249.99, claims=1, storage_gib=None
    )
    assert escrow.grant(room=room, share=0.1, typical=typical) == escrow.NOTHING  # 99.99
    assert escrow.grant(room=room, share=0.0, typical=typical) == escrow.NOTHING
    assert escrow.grant(room=escrow.Allowance(cost=1e9, claims=3), share=0.25, typical=typical) == (
        escrow.NOTHING  # a quarter of 3 claims is none
    )


def test_entry_records_capped_dimensions_only() -> None:
    entry = escrow.entry(
        holder="me", allowance=escrow.Allowance(cost=12.346, claims=2), generation=3
    )
    assert entry == {"holder": "me", "cost": 12.35, "claims": 2, "generation": 3}


def test_prune_lets_go_only_entries_of_lapsed_holders() -> None:
    entries = [held("live", 1.0), held("lapsed", 2.0)]
    kept, dropped = escrow.prune(entries, live=lambda holder: holder != "lapsed")
    assert [e["holder"] for e in kept] == ["live"]
    assert [e["holder"] for e in dropped] == ["lapsed"]
    assert escrow.prune(entries, live=lambda _: True) == (entries, [])


@given(
    grant=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    costs=st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), max_size=50),
)
def test_takes_never_add_up_to_more_than_the_grant(grant: float, costs: list[float]) -> None:
    left = escrow.Allowance(cost=round(grant, 2))
    taken = 0.0
    for cost in costs:
        take = escrow.take(cost=round(cost, 2), new_claims=1, storage_gib=0)
        if left.fits(take):
            left = left.minus(take)
            taken += take.cost
    assert taken <= round(grant, 2) + 1e-6 * (1 + len(costs))


def test_an_escrow_far_from_the_budget_is_kept_longer_between_admissions() -> None:
    account = escrow.Account(share=0.5, flush_interval=0.25, idle_return=1.0, quiet_return=10.0)
    account.typical = escrow.Allowance(cost=100.0)
    account.room_seen(escrow.Allowance(cost=399.0))  # not four more like the last
    assert (account.roomy, account.idle_after) == (False, 1.0)
    account.room_seen(escrow.Allowance(cost=400.0))
    assert (account.roomy, account.idle_after) == (True, 10.0)
    account.demand(0.0)
    account.demand(5.0)  # five seconds apart: busy while far from the budget
    assert (account.busy, account.idle(14.0), account.idle(15.0)) == (True, False, True)
    account.room_seen(escrow.Allowance(cost=100.0))
    account.demand(10.0)
    assert (account.busy, account.idle(11.0)) == (False, True)


def test_the_leader_writes_what_escrow_admitted_lazily_but_gives_back_on_time() -> None:
    account = escrow.Account(share=0.5, flush_interval=0.25, idle_return=1.0, lazy_flush=5.0)
    account.on_server, account.last_write, account.active = True, 0.0, 0.0
    assert account.next_delay(0.0) == 1.0  # nothing to write: the return when idle
    account.admit(hold=hold("a"), take=escrow.Allowance(cost=10.0), now=0.5)
    assert account.next_delay(0.5) == -0.25  # a replica that does not lead: soon
    assert account.next_delay(0.5, leading=True) == 0.25  # the claim has not appeared yet
    appeared = {"a"}.__contains__
    assert account.next_delay(0.5, leading=True, appeared=appeared) == 1.0  # with the return
    account.roomy, account.quiet_return = True, 10.0
    assert account.next_delay(0.5, leading=True, appeared=appeared) == 4.5  # far from budget
    account.admit(hold=hold("b"), take=escrow.Allowance(cost=10.0), now=1.0)
    assert account.next_delay(1.0, leading=True, appeared=appeared) == 0.25  # b has not
    assert list(account.unseen) == [("b", 1.0)]  # a, seen, was looked at once
    account.close()
    assert account.next_delay(0.5, leading=True) == 0.0
