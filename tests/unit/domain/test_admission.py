"""The admission core: one quota, its usage and one request in; a decision and a hold out.

Unit checks: a CREATE within budget holds its whole cost and may be served from escrow;
a denial holds and draws nothing; an UPDATE that adds nothing holds nothing; an UPDATE's
growth holds on top of the price already charged and never comes from escrow; StrictCap's
degraded allowance never comes from escrow; a dry run decides without holding; other
replicas' escrow counts as used (and is named in a denial); the in-flight limit; no
request adds a reservation to a quota that holds the most its status can keep.

Hypothesis properties, over generated quotas, usage, escrow, claims and price books:

- under ``Enforce``, what is admitted never takes the namespace over its budget (counting
  other replicas' escrow) unless the policy is FailOpen (StrictCap with no prices at all
  admits at no cost, within its allowance), nor over a hard cap, in any billing state;
- the room left after an admission is never negative and never more than before it;
- the same inputs give the same outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import admission, billing, claims, escrow, quotas, reservations
from dbquota.domain.resources import Reservation
from tests.unit.domain import samples

NOTHING_HELD: dict[str, object] = {}


def request(
    claim: claims.ClaimSpec | None = None,
    *,
    old: claims.ClaimSpec | None = None,
    charged: float = 0.0,
    dry_run: bool = False,
) -> admission.Request:
    return admission.Request(
        name="orders",
        uid="u1",
        generation=1 if old is None else 2,
        claim=claim or samples.claim(),
        old=old,
        charged=charged,
        dry_run=dry_run,
    )


def admit(
    req: admission.Request,
    *,
    quota: quotas.QuotaSpec | None = None,
    usage: quotas.Usage | None = None,
    others: escrow.Allowance = escrow.NOTHING,
    snapshot: billing.BillingSnapshot | None = None,
) -> admission.Outcome:
    return admission.admit(
        quota=quota or samples.quota(),
        usage=usage or quotas.Usage(),
        others=others,
        request=req,
        held={},
        snapshot=snapshot or samples.healthy(),
        now=samples.NOW,
        holder="me",
    )


def test_a_create_within_budget_holds_its_cost_and_may_come_from_escrow() -> None:
    got = admit(request(), usage=quotas.Usage(observed=1000.0))
    assert got.admitted
    assert got.escrow_ok
    assert got.hold is not None
    assert (got.hold["cost"], got.hold["delta"], got.hold["newClaim"]) == (410.4, 410.4, True)
    assert got.take == escrow.Allowance(cost=410.4, claims=1, storage_gib=100)
    assert got.room == escrow.Allowance(cost=5000 - 1000 - 410.4)


def test_a_denial_holds_and_draws_nothing() -> None:
    got = admit(request(), usage=quotas.Usage(observed=4800.0))
    assert not got.admitted
    assert (got.hold, got.take, got.room, got.escrow_ok) == (None, escrow.NOTHING, None, False)
    assert "exceeds budget" in got.decision.message


def test_an_update_that_adds_nothing_holds_nothing() -> None:
    same = samples.claim()
    got = admit(request(same, old=same, charged=410.4), usage=quotas.Usage(observed=4999.0))
    assert got.admitted
    assert got.hold is None


def test_an_update_holds_its_growth_on_the_price_charged_and_never_from_escrow() -> None:
    got = admit(request(samples.claim(storage_gib=150), old=samples.claim(), charged=410.4))
    assert got.admitted
    assert not got.escrow_ok
    assert got.hold is not None
    assert (got.hold["delta"], got.hold["cost"], got.hold["storageGiB"]) == (22.7, 433.1, 50)


def test_strict_caps_degraded_allowance_never_comes_from_escrow() -> None:
    quota = samples.with_policy("StrictCap", degradation={"strictCap": {"claims": 5}})
    got = admit(request(), quota=quota, snapshot=samples.degraded())
    assert got.admitted
    assert got.hold is not None
    assert not got.escrow_ok


def test_a_dry_run_decides_and_holds_nothing() -> None:
    got = admission.dry(admit(request(dry_run=True)))
    assert got.admitted
    assert (got.hold, got.take, got.escrow_ok) == (None, escrow.NOTHING, False)


def test_other_replicas_escrow_counts_as_used_and_is_named() -> None:
    got = admit(request(), usage=quotas.Usage(observed=4000.0), others=escrow.Allowance(cost=900.0))
    assert not got.admitted
    assert "900.00 held by other webhook replicas" in got.decision.message


@st.composite
def snapshots(draw: st.DrawFn) -> billing.BillingSnapshot:
    current, highest = draw(samples.price_books())
    if draw(st.booleans()):
        return samples.healthy(prices=current, highest=highest)
    return draw(samples.degraded_snapshots())


allowances = st.builds(
    escrow.Allowance,
    cost=st.floats(min_value=0, max_value=10_000),
    claims=st.integers(min_value=0, max_value=5),
    storage_gib=st.integers(min_value=0, max_value=500),
)


@given(
    quota=samples.quota_specs(),
    usage=samples.usages(),
    others=allowances,
    change=samples.updates(),
    snapshot=snapshots(),
)
def test_admitted_never_exceeds_the_budget_or_a_hard_cap(
    quota: quotas.QuotaSpec,
    usage: quotas.Usage,
    others: escrow.Allowance,
    change: tuple[claims.ClaimSpec, claims.ClaimSpec | None],
    snapshot: billing.BillingSnapshot,
) -> None:
    claim, old = change
    got = admit(request(claim, old=old), quota=quota, usage=usage, others=others, snapshot=snapshot)
    if not got.admitted or got.hold is None:
        return
    counted = escrow.with_held(usage, others)
    if got.take.cost > 0 and (quota.policy != "FailOpen" or not got.decision.degraded):
        assert counted.spend + got.take.cost <= quota.monthly_budget + 1e-6
    if quota.hard.claims is not None and got.take.claims:
        assert counted.claims + got.take.claims <= quota.hard.claims
    if quota.hard.storage_gib is not None and got.take.storage_gib:
        assert counted.storage_gib + got.take.storage_gib <= quota.hard.storage_gib
    assert got.room is not None
    before = escrow.free(quota=quota, usage=counted)
    assert got.room.cost >= 0
    assert got.room.cost <= before.cost + 1e-6


@given(
    quota=samples.quota_specs(),
    usage=samples.usages(),
    others=allowances,
    change=samples.updates(),
    snapshot=snapshots(),
)
def test_the_same_inputs_give_the_same_outcome(
    quota: quotas.QuotaSpec,
    usage: quotas.Usage,
    others: escrow.Allowance,
    change: tuple[claims.ClaimSpec, claims.ClaimSpec | None],
    snapshot: billing.BillingSnapshot,
) -> None:
    claim, old = change
    first = admit(
        request(claim, old=old), quota=quota, usage=usage, others=others, snapshot=snapshot
    )
    again = admit(
        request(claim, old=old), quota=quota, usage=usage, others=others, snapshot=snapshot
    )
    assert first == again


def held_for(*uids: int) -> dict[str, Reservation]:
    """Reservations in flight for the objects ``u<i>``."""
    return {f"u{i}": Reservation(claim=f"c{i}", uid=f"u{i}", delta=1.0) for i in uids}


def admit_with_limit(
    held: dict[str, Reservation],
    *,
    limit: int,
    req: admission.Request | None = None,
    present: Callable[[], Collection[str]] = frozenset,
    in_flight: admission.InFlightCount | None = None,
    quota: quotas.QuotaSpec | None = None,
) -> admission.Outcome:
    """Decide ``req`` (a CREATE by default) under an in-flight limit of ``limit``."""
    return admission.admit(
        quota=samples.quota() if quota is None else quota,
        usage=quotas.Usage(),
        others=escrow.NOTHING,
        request=request() if req is None else req,
        held=held,
        snapshot=samples.healthy(),
        now=samples.NOW,
        holder="me",
        in_flight_limit=limit,
        present=present,
        in_flight=in_flight,
    )


def test_creates_are_refused_while_too_many_admissions_are_in_flight() -> None:
    held = held_for(*range(3))

    def decide(req: admission.Request, **spec: object) -> admission.Outcome:
        return admit_with_limit(held, limit=3, req=req, quota=samples.quota(**spec))

    refused = decide(request())
    assert not refused.admitted
    assert refused.decision.reason == "TooManyInFlight"
    assert "3 admissions are in flight" in refused.decision.message
    same = samples.claim()
    assert decide(request(same, old=same, charged=410.4)).admitted  # updates are not held
    assert decide(request(dry_run=True)).admitted  # nor dry runs
    warned = decide(request(), enforcement="Warn")  # Warn never denies: it holds nothing
    assert warned.admitted
    assert warned.hold is None


def test_reservations_whose_claims_exist_do_not_count_against_the_in_flight_limit() -> None:
    """A burst whose claims the watch has seen, though not priced yet, is not held back;
    reservations for objects that never appeared (forged reviews) are."""
    held = held_for(*range(5))

    def decide(present: set[str]) -> admission.Outcome:
        return admit_with_limit(held, limit=3, present=lambda: present)

    assert decide({"u0", "u1", "u2"}).admitted  # two unseen: under the limit
    refused = decide({"u0"})
    assert refused.decision.reason == "TooManyInFlight"
    assert "4 admissions are in flight" in refused.decision.message


def test_no_quota_holds_more_than_the_most_reservations_its_status_can_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the in-flight limit, and though every claim has been seen: a request that
    would add one more reservation is refused; one that replaces its own is not."""
    monkeypatch.setattr(reservations, "MOST_HELD", 3)
    held = held_for(10, 11, 12)
    seen = {"u10", "u11", "u12"}  # all seen: none counts against the in-flight limit

    def decide(req: admission.Request, **spec: object) -> admission.Outcome:
        return admit_with_limit(
            held, limit=100, req=req, present=lambda: seen, quota=samples.quota(**spec)
        )

    refused = decide(request())
    assert refused.decision.reason == "TooManyInFlight"
    assert "holds 3 admissions whose claims do not show their price yet" in (
        refused.decision.message
    )
    assert refused.hold is None
    assert refused.take == escrow.NOTHING
    grown = request(samples.claim(storage_gib=150), old=samples.claim(), charged=410.4)
    assert decide(grown).decision.reason == "TooManyInFlight"  # a new entry for the growth
    assert decide(request(dry_run=True)).admitted  # holds nothing
    warned = decide(request(), enforcement="Warn")  # Warn never denies: it holds nothing
    assert warned.admitted
    assert warned.hold is None
    held["u1"] = Reservation(claim="orders", uid="u1", cost=410.4, delta=410.4)
    del held["u10"]
    replaced = decide(grown)  # its own reservation still held: replaced, not added
    assert replaced.admitted
    assert replaced.hold is not None


def test_the_in_flight_count_is_walked_again_only_near_the_limit_or_for_a_new_copy() -> None:
    """Between reviews against the same reservations, growing in place as the ledger
    admits, the count grows at most by the entries added: no walk while that stays under
    the limit; at the limit, or for another copy, an exact count."""
    held = held_for(*range(10))
    walks: list[int] = []
    memo = admission.InFlightCount()

    def present() -> set[str]:
        walks.append(1)
        return {f"u{i}" for i in range(6)}  # four of the ten not seen

    def decide(reservations: dict[str, Reservation]) -> admission.Outcome:
        return admit_with_limit(reservations, limit=10, present=present, in_flight=memo)

    assert decide(held).admitted
    assert len(walks) == 1
    for i in range(10, 15):  # five more admitted: at most nine in flight, no walk
        held.update(held_for(i))
        assert decide(held).admitted
    assert len(walks) == 1
    held.update(held_for(15))  # at most ten: count
    refused = decide(held)
    assert refused.decision.reason == "TooManyInFlight"
    assert "10 admissions are in flight" in refused.decision.message
    assert len(walks) == 2
    copy = dict(held)
    copy.pop("u15")
    assert decide(copy).admitted  # a newer copy of the quota: counted afresh
    assert len(walks) == 3
