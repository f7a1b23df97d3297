"""A quota's status, recomputed from its claims, its reservations in flight and billing.

Checks that a claim counts at the price on its status until billing samples its cluster
after the charge, then at its billed cost (never at a billed 0: claims listed at 0 while
provisioned still spend the budget); that reservations end silently once their
claim shows the price, stay while in flight, and are released after the grace (also an
UPDATE's whose claim stays below its generation, once the claim shows its own price); that the
escrow of a replica whose lease lapsed is let go and, in the same status, the claims it
admitted without writing a reservation are adopted (while a live replica's escrow may
still cover them, only old ones are, and the young ones count in that escrow only until
it is written; thousands of them a batch at a time, all counted meanwhile; with no prices
at all, none is adopted at 0 and the lapsed escrow stays until prices come); an UPDATE's
reservation for a claim this replica's escrow holds stays until that escrow's write; the
conditions (``Ready`` is about whether prices can be trusted, not about the budget; a
spec that cannot be read leaves every other condition ``Unknown``, none stale from the
last valid spec); budget crossings; budget alert thresholds (the
highest reached, compared in cents; one crossing per threshold passed, up lowest first and
down highest first; nothing announced again that the status says was announced; over-budget
thresholds; the ``BudgetThresholdReached`` condition; condition messages that change with the
state, not with every claim); and that a refresh that only ages the
figures is not material (also against a status with no conditions yet), and that one that
only drops reservations confirmed by their claims only settles (totals unchanged). A large
namespace is recounted a slice of claims at a time, to the same status as at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any

from dbquota.domain import billing, reservations, statuses, usage
from dbquota.domain.resources import Escrow, QuotaObject, QuotaStatus, Reservation
from dbquota.kits import steps, timestamps
from tests.unit.domain import samples

STAMP = "2026-11-27T09:00:00Z"
T0 = timestamps.from_rfc3339(STAMP)


def quota(*held: Reservation, escrow: list[Escrow] | None = None, **spec: Any) -> QuotaObject:
    body: dict[str, Any] = {"monthlyBudget": 5000, **spec}
    status: dict[str, Any] = {"reservations": list(held)}
    if escrow is not None:
        status["escrow"] = escrow
    return QuotaObject(
        metadata={"name": "team-a", "namespace": "team-a", "generation": 1},
        spec=body,
        status=status,  # type: ignore[typeddict-item]
    )


def claim(name: str = "orders", **fields: Any) -> reservations.ClaimRef:
    base: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "cluster_id": f"{name}-db",
        "storage_gib": 100,
        "reserved_at": T0,
        "spec": samples.claim(),
    }
    base.update(fields)
    return reservations.ClaimRef(**base)


def hold(name: str = "orders", cost: float = 165.0, at: str = STAMP) -> Reservation:
    return Reservation(
        claim=name,
        uid=f"uid-{name}",
        generation=1,
        cost=cost,
        delta=cost,
        storageGiB=100,
        newClaim=True,
        reservedAt=at,
    )


def sampled(at: float, total: float = 170.0) -> billing.BillingSnapshot:
    cost = billing.ClusterCost(cluster_id="orders-db", compute=total, storage=0.0, observed_at=at)
    return billing.BillingSnapshot(costs={"orders-db": cost})


def stamped(now: float) -> reservations.Ages:
    """Ages as if the reconciler had seen each reservation from its ``reservedAt`` on, on
    one clock with ``now``, and each unpriced claim just now (the apiserver's
    ``creationTimestamp`` then decides whether it is young)."""

    def age(key: Hashable) -> float:
        return now - timestamps.from_rfc3339(key[2]) if isinstance(key, tuple) else 0.0

    return age


def growth(*, storage_gib: int) -> Reservation:
    """Replica ``b``'s reservation of an UPDATE of ``orders`` to generation 2: 50 more on
    the 165 its claim was charged, ``storage_gib`` more GiB."""
    return reservations.hold(
        claim_name="orders",
        uid="uid-orders",
        generation=2,
        charged=165.0,
        cost=50.0,
        storage_gib=storage_gib,
        pricing="Live",
        degraded=False,
        new_claim=False,
        holder="b",
        now=T0,
    )


def refresh(
    quota_obj: QuotaObject,
    claims: list[reservations.ClaimRef],
    snapshot: billing.BillingSnapshot | None = None,
    *,
    now: float = T0 + 5,
    live: Any = lambda _: True,
    ages: reservations.Ages | None = None,
) -> statuses.Refresh:
    return steps.finish(
        statuses.quota_status(
            quota=quota_obj,
            snapshot=snapshot or billing.BillingSnapshot(),
            claims=claims,
            now=now,
            grace=10,
            ages=ages or stamped(now),
            live=live,
        )
    )


def test_a_claim_counts_at_its_price_until_billing_samples_it_after_the_charge() -> None:
    priced = claim(cost=165.0, priced_generation=1)
    before = refresh(quota(), [priced], sampled(T0 - 30)).status["spend"]
    assert before == {"observed": 0.0, "reserved": 165.0, "remaining": 4835.0}
    after = refresh(quota(), [priced], sampled(T0 + 2)).status["spend"]
    assert after == {"observed": 170.0, "reserved": 0.0, "remaining": 4830.0}


def test_claims_billing_lists_at_zero_still_spend_the_budget() -> None:
    """Twelve claims admitted at 500 on a 5,000 budget, listed by billing at 0 while their
    clusters are provisioned: the quota is over budget, not 6,000 under it."""
    claims = [claim(f"db{i}", cost=500.0, priced_generation=1) for i in range(12)]
    costs = {
        c.cluster_id: billing.ClusterCost(
            cluster_id=c.cluster_id, compute=0.0, storage=0.0, observed_at=T0 + 2
        )
        for c in claims
    }
    got = refresh(quota(), claims, billing.BillingSnapshot(costs=costs))
    assert got.status["spend"] == {"observed": 0.0, "reserved": 6000.0, "remaining": -1000.0}
    assert conditions(got)["BudgetExceeded"] == ("True", "OverBudget")


def test_reservations_end_when_their_claim_shows_the_price() -> None:
    got = refresh(
        quota(hold("priced"), hold("unpriced"), hold("never", at="2026-11-27T08:59:00Z")),
        [claim("priced", cost=165.0, priced_generation=1), claim("unpriced")],
    )
    assert [r["claim"] for r in got.status["reservations"]] == ["unpriced"]
    assert got.confirmed == 1
    assert [(r["claim"], why) for r, why in got.released] == [("never", "NeverCreated")]
    assert got.status["spend"]["reserved"] == 165.0 + 165.0
    assert got.status["used"]["claims"] == 2


def test_an_update_that_never_reached_its_claim_gives_its_growth_back_after_the_grace() -> None:
    """Growth of 50 admitted for generation 2, the UPDATE then denied by another webhook:
    the claim stays at generation 1. Priced for it, the claim counts its 165 and the 50 go
    (``NeverApplied``) once the reconciler has seen the reservation for the grace. Not
    priced yet, the reservation stays: it may be all that counts the claim (it replaced
    the CREATE's reservation, built on it)."""
    grown = growth(storage_gib=20)
    priced = claim(cost=165.0, priced_generation=1)
    held = refresh(quota(grown), [priced], ages=lambda _: 9.0)
    assert (held.status["reservations"], held.status["spend"]["reserved"]) == ([grown], 215.0)
    assert held.status["used"]["storageGiB"] == 120
    gone = refresh(quota(grown), [priced], ages=lambda _: 11.0)
    assert [(r["claim"], why) for r, why in gone.released] == [("orders", "NeverApplied")]
    assert (gone.status["reservations"], gone.status["spend"]["reserved"]) == ([], 165.0)
    assert gone.status["used"]["storageGiB"] == 100
    unpriced = refresh(quota(grown), [claim()], ages=lambda _: 3600.0)
    assert (unpriced.status["reservations"], unpriced.released) == ([grown], ())


def test_a_lapsed_replicas_escrow_goes_and_what_it_admitted_is_adopted() -> None:
    orphan = claim(created=T0)
    got = refresh(
        quota(escrow=[Escrow(holder="crashed", cost=1000.0), Escrow(holder="alive", cost=500.0)]),
        [orphan],
        samples.healthy(),
        now=samples.NOW,
        live=lambda holder: holder == "alive",
    )
    assert [e["holder"] for e in got.expired] == ["crashed"]
    assert [e["holder"] for e in got.status["escrow"]] == ["alive"]
    assert [r["claim"] for r in got.adopted] == ["orders"]
    assert got.adopted[0]["cost"] == 410.4  # priced at the live catalog
    assert got.status["spend"]["reserved"] == 410.4


def test_an_orphan_is_not_adopted_at_nothing_while_there_are_no_prices() -> None:
    """A new pod with an empty cache while billing is down: the dead replica's escrow is
    what counts the claim it admitted and never wrote. It used to be let go, and the claim
    adopted at 0.00 (its status then showed a price of 0): the whole budget was free
    again. Now the escrow stays until prices come, and then the claim is adopted at its
    price and the escrow goes, in one status."""
    orphan = claim(created=T0)
    lapsed = [Escrow(holder="crashed", cost=1000.0)]
    got = refresh(quota(escrow=lapsed), [orphan], now=samples.NOW, live=lambda _: False)
    assert (got.adopted, got.expired) == ((), ())
    assert "escrow" not in got.status  # the entry stays as it is, counted by admissions
    assert got.status["spend"]["reserved"] == 0.0
    priced = refresh(
        quota(escrow=lapsed), [orphan], samples.healthy(), now=samples.NOW, live=lambda _: False
    )
    assert [e["holder"] for e in priced.expired] == ["crashed"]
    assert priced.status["escrow"] == []
    assert [(r["claim"], r["cost"]) for r in priced.adopted] == [("orders", 410.4)]
    assert priced.status["spend"]["reserved"] == 410.4
    # With no escrow at all (made while the webhook was bypassed) it waits all the same.
    assert refresh(quota(), [orphan], now=samples.NOW).adopted == ()


def test_an_update_of_a_claim_this_replicas_escrow_holds_stays_until_its_write() -> None:
    """The leader admitted the claim from its escrow and priced it from memory; another
    replica admitted its UPDATE (growth 50) and wrote it. Until the leader's write, the
    claim counts in that escrow only, so the UPDATE's reservation is what counts the
    growth, even once the claim shows the new price: it stays, and the write joins it."""
    grown = growth(storage_gib=0)
    priced = claim(generation=2, created=T0, cost=215.0, priced_generation=2)
    before = steps.finish(
        statuses.quota_status(
            quota=quota(grown, escrow=[Escrow(holder="me", cost=500.0)]),
            snapshot=billing.BillingSnapshot(),
            claims=[priced],
            now=T0 + 1,
            grace=10,
            ages=stamped(T0 + 1),
            unwritten={"uid-orders"},
        )
    )
    assert (before.status["reservations"], before.confirmed) == ([grown], 0)
    assert before.status["spend"]["reserved"] == 50.0  # and 165.0 in the escrow
    written = usage.add(before.status, [hold()], budget=5000)  # the leader's write ...
    assert written["spend"]["reserved"] == 215.0
    after = refresh(quota(*written["reservations"]), [priced], now=T0 + 2)
    assert after.status["spend"]["reserved"] == 215.0  # ... and the claim's price after it
    assert after.confirmed == 1


def test_live_escrow_may_still_cover_a_young_orphan() -> None:
    young = claim(created=T0)
    old = claim("old", created=T0 - reservations.ADOPT_AFTER - 1)
    live = quota(escrow=[Escrow(holder="alive", cost=500.0)])
    got = refresh(live, [young, old], samples.healthy(), now=T0)
    assert [r["claim"] for r in got.adopted] == ["old"]
    assert "escrow" not in got.status  # nothing lapsed: the ledgers' entries stay as they are


def test_what_a_live_escrow_may_still_hold_counts_once_before_and_after_its_write() -> None:
    """A claim admitted from escrow can exist before the replica writes its reservation.
    Until then its count and storage are in that escrow, not in ``used`` as well: the
    write adds them (``usage.add``), and the next refresh agrees with it rather than
    rewriting the status (at 200 creates/s the disagreement made one write of the whole
    reservation list every refresh)."""
    admitted = claim(created=T0)
    live = [Escrow(holder="alive", cost=500.0)]
    before = refresh(quota(escrow=live), [admitted], now=T0)
    assert before.status["used"]["claims"] == 0
    assert before.status["used"]["storageGiB"] == 0
    written = usage.add(before.status, [hold()], budget=5000)  # the replica's next write
    assert (written["used"]["claims"], written["used"]["storageGiB"]) == (1, 100)
    obj = quota(*written["reservations"], escrow=live)
    obj["status"] = written
    after = refresh(obj, [admitted], now=T0 + 1)
    assert after.status["used"] == written["used"]
    assert statuses.change(written, after) == "aged"
    # No escrow to hold it: an unpriced claim counts in the caps, as ever.
    alone = refresh(quota(), [admitted], now=T0)
    assert alone.status["used"]["claims"] == 1


def test_a_claim_priced_before_its_escrow_write_counts_once_before_and_after_it() -> None:
    """The leader prices what its own escrow admitted without waiting for the reservation
    write (``unwritten``): until that write the claim is in the escrow, price or not; the
    write adds it to the totals and, its claim priced, drops the reservation at once."""
    priced = claim(created=T0, cost=165.0, priced_generation=1)
    live = [Escrow(holder="me", cost=500.0)]
    counted_twice = refresh(quota(escrow=live), [priced], now=T0)
    assert counted_twice.status["spend"]["reserved"] == 165.0  # and again in the escrow
    before = steps.finish(
        statuses.quota_status(
            quota=quota(escrow=live),
            snapshot=billing.BillingSnapshot(),
            claims=[priced],
            now=T0,
            grace=10,
            ages=stamped(T0),
            unwritten={"uid-orders"},
        )
    )
    assert before.status["spend"]["reserved"] == 0.0
    assert (before.status["used"]["claims"], before.status["used"]["storageGiB"]) == (0, 0)
    written = usage.add(before.status, [hold()], budget=5000)  # the replica's write ...
    written["reservations"] = []  # ... drops the reservation its claim confirms
    obj = quota(escrow=live)
    obj["status"] = written
    after = refresh(obj, [priced], now=T0 + 1)
    assert after.status["spend"] == written["spend"]
    assert after.status["used"] == written["used"]
    assert statuses.change(written, after) == "aged"


def test_thousands_of_orphans_are_adopted_a_batch_at_a_time_and_counted_meanwhile() -> None:
    """Claims made while no operator ran: the status holds one batch of reservations (so it
    stays far below etcd's object size limit), and spend counts every orphan at its price."""
    n = reservations.ADOPT_AT_ONCE * 3 + 7
    orphans = [claim(f"old{i}", created=T0) for i in range(n)]
    got = refresh(quota(), orphans, samples.healthy(), now=samples.NOW)
    assert len(got.adopted) == reservations.ADOPT_AT_ONCE
    assert len(got.status["reservations"]) == reservations.ADOPT_AT_ONCE
    assert got.status["spend"]["reserved"] == round(n * 410.4, 2)
    assert got.status["used"]["claims"] == n
    # once the adopted ones carry their price, the next visit adopts the next batch
    priced = [
        claim(f"old{i}", created=T0, cost=410.4, priced_generation=1)
        if i < reservations.ADOPT_AT_ONCE
        else c
        for i, c in enumerate(orphans)
    ]
    again = refresh(quota(*got.status["reservations"]), priced, samples.healthy(), now=samples.NOW)
    assert {r["claim"] for r in again.adopted}.isdisjoint(r["claim"] for r in got.adopted)
    assert len(again.adopted) == reservations.ADOPT_AT_ONCE
    assert again.status["spend"]["reserved"] == round(n * 410.4, 2)


def test_a_large_namespace_is_recounted_a_slice_at_a_time_with_the_same_result() -> None:
    """The reconciler runs the recount between admission reviews: it must stop after each
    slice of claims (twice per slice: indexing, then counting), and come to the same status
    as at once, reservations in flight and unpriced claims included."""
    n = steps.SLICE * 3 + 1
    many = [claim(f"c{i}", cost=10.0, priced_generation=1) for i in range(n - 1)]
    many.append(claim("new", created=T0))  # unpriced, young: held by its reservation
    kwargs: dict[str, Any] = {
        "quota": quota(hold("new", cost=25.0)),
        "snapshot": samples.healthy(),
        "claims": many,
        "now": T0 + 5,
        "grace": 10,
        "ages": stamped(T0 + 5),
    }
    work, stops = statuses.quota_status(**kwargs), 0
    while True:
        try:
            next(work)
        except StopIteration as done:
            stepped = done.value
            break
        stops += 1
    assert stops == 2 * 4
    assert stepped == steps.finish(statuses.quota_status(**kwargs))
    assert stepped.status["used"]["claims"] == n
    assert stepped.status["spend"]["reserved"] == round((n - 1) * 10.0 + 25.0, 2)


def test_a_status_without_conditions_is_compared_without_failing() -> None:
    fresh = refresh(quota(), [], samples.healthy(), now=samples.NOW).status
    empty: Any = dict.fromkeys(fresh)
    assert statuses.material(fresh) != statuses.material(empty)


def conditions(got: statuses.Refresh) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in got.status["conditions"]}


def conditions_of(quota_obj: QuotaObject) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in quota_obj["status"]["conditions"]}


def test_ready_is_about_trusting_prices_not_about_the_budget() -> None:
    now = samples.NOW
    fresh = conditions(refresh(quota(), [], samples.healthy(), now=now))
    assert fresh["Ready"] == ("True", "Reconciled")
    tripped = conditions(refresh(quota(), [], samples.degraded(age=30.0), now=now))
    assert tripped["Ready"] == ("True", "Reconciled")  # data still fresh: prices hold
    assert tripped["BillingAvailable"] == ("False", "CircuitOpen")
    stale = conditions(refresh(quota(), [], samples.degraded(age=1234.0), now=now))
    assert stale["Ready"] == ("False", "BillingUnavailable")
    never = conditions(refresh(quota(), [], billing.BillingSnapshot(), now=now))
    assert never["Ready"] == ("False", "BillingUnavailable")
    over = refresh(quota(monthlyBudget=100), [claim(cost=165.0)], samples.healthy(), now=now)
    assert conditions(over)["Ready"] == ("True", "Reconciled")
    assert conditions(over)["BudgetExceeded"] == ("True", "OverBudget")
    assert over.budget_crossed is True


def test_an_invalid_spec_is_not_ready() -> None:
    got = refresh(quota(monthlyBudget=-1), [])
    assert conditions(got)["Ready"] == ("False", "InvalidSpec")
    assert conditions(got)["BillingAvailable"] == ("Unknown", "InvalidSpec")
    assert [c["type"] for c in got.status["conditions"]] == [
        "Ready",
        "BillingAvailable",
        "BudgetExceeded",
        "BudgetThresholdReached",
    ]


def test_a_spec_that_becomes_invalid_leaves_no_condition_of_the_valid_one() -> None:
    now = samples.NOW
    valid = quota(monthlyBudget=100, alerts={"thresholds": [50]})
    valid["status"] = refresh(valid, [claim(cost=165.0)], samples.healthy(), now=now).status
    assert conditions_of(valid) == {
        "Ready": ("True", "Reconciled"),
        "BillingAvailable": ("True", "BillingLive"),
        "BudgetExceeded": ("True", "OverBudget"),
        "BudgetThresholdReached": ("True", "ThresholdReached"),
    }
    broken = QuotaObject(
        metadata={**valid["metadata"], "generation": 2},
        spec={"monthlyBudget": -1, "alerts": {"thresholds": [50]}},
        status=valid["status"],
    )
    got = refresh(broken, [claim(cost=165.0)], samples.healthy(), now=now + 60)
    assert conditions(got) == {
        "Ready": ("False", "InvalidSpec"),
        "BillingAvailable": ("Unknown", "InvalidSpec"),
        "BudgetExceeded": ("Unknown", "InvalidSpec"),
        "BudgetThresholdReached": ("Unknown", "InvalidSpec"),
    }
    flipped = timestamps.to_rfc3339(now + 60)
    for c in got.status["conditions"]:
        assert c["observedGeneration"] == 2
        assert c["lastTransitionTime"] == flipped  # each status changed
        if c["type"] != "Ready":
            assert c["message"] == statuses.UNREADABLE
    broken["status"] = got.status
    again = refresh(broken, [claim(cost=165.0)], samples.healthy(), now=now + 120)
    assert again.status["conditions"] == got.status["conditions"]  # no flip, same times
    fixed = QuotaObject(
        metadata={**valid["metadata"], "generation": 3},
        spec=valid["spec"],
        status={**valid["status"], **again.status},  # a merge patch keeps status.alerts
    )
    back = refresh(fixed, [claim(cost=165.0)], samples.healthy(), now=now + 180)
    assert conditions(back) == conditions_of(valid)
    assert back.budget_crossed is True  # announced again, as for a new quota
    assert back.crossed == ()  # status.alerts.reached says 50% was announced


def test_a_refresh_that_only_ages_the_figures_is_not_material() -> None:
    a = refresh(quota(), [], samples.healthy(age=10), now=samples.NOW).status
    seen = quota()
    seen["status"] = a
    b = refresh(seen, [], samples.healthy(age=10), now=samples.NOW + 30).status
    assert a != b
    assert statuses.material(a) == statuses.material(b)
    synced = refresh(seen, [], samples.healthy(age=1), now=samples.NOW + 30).status
    assert synced["billing"]["lastSuccessfulSync"] != a["billing"]["lastSuccessfulSync"]
    assert statuses.material(a) == statuses.material(synced)  # a sync alone: written by resync
    c = refresh(quota(), [claim(cost=1.0)], samples.healthy(age=10), now=samples.NOW).status
    assert statuses.material(a) != statuses.material(c)


def test_a_refresh_that_only_drops_confirmed_reservations_only_settles() -> None:
    before = quota(hold())
    before["status"] = refresh(quota(hold()), [claim()]).status  # written while in flight
    was = before["status"]
    priced = refresh(before, [claim(cost=165.0, priced_generation=1)])
    assert priced.confirmed == 1
    assert priced.status["reservations"] == []
    assert priced.status["spend"] == was["spend"]
    assert statuses.change(was, priced) == "settles"
    dearer = refresh(before, [claim(cost=170.0, priced_generation=1)])
    assert statuses.change(was, dearer) != "settles"  # the totals move
    another = [claim(cost=165.0, priced_generation=1), claim("billing", cost=10.0)]
    assert statuses.change(was, refresh(before, another)) != "settles"
    assert statuses.change(was, refresh(before, [], now=T0 + 60)) != "settles"  # released
    assert statuses.change(was, refresh(before, [claim()])) != "settles"  # nothing confirmed


# -- budget alerts ---------------------------------------------------------------------------

THRESHOLDS = [50, 80, 90, 100]


def spending(cost: float, *, reached: int | None = None) -> statuses.Refresh:
    """A refresh of a 1,000/month quota with alerts, spending ``cost``; ``reached`` is what
    its status says was announced before (None: a quota never reconciled)."""
    quota_obj = quota(monthlyBudget=1000, alerts={"thresholds": THRESHOLDS})
    if reached is not None:
        quota_obj["status"]["alerts"] = {"reached": reached}
    return refresh(quota_obj, [claim(cost=cost)], samples.healthy(), now=samples.NOW)


def crossings(got: statuses.Refresh) -> list[tuple[int, bool]]:
    return [(c.threshold, c.upward) for c in got.crossed]


def test_the_highest_threshold_reached_is_compared_in_cents() -> None:
    reached = statuses.threshold_reached
    assert reached(thresholds=THRESHOLDS, spend=499.99, budget=1000) == 0
    assert reached(thresholds=THRESHOLDS, spend=500.0, budget=1000) == 50
    assert reached(thresholds=THRESHOLDS, spend=0.1 + 0.2 + 799.7, budget=1000) == 80
    assert reached(thresholds=THRESHOLDS, spend=2500.0, budget=1000) == 100
    assert reached(thresholds=[], spend=2500.0, budget=1000) == 0


def test_crossing_up_is_announced_once_per_threshold_passed() -> None:
    got = spending(820.0, reached=0)
    assert crossings(got) == [(50, True), (80, True)]  # a jump over two: one Event each
    assert got.status["alerts"] == {"reached": 80}
    assert got.crossed[1].message.startswith("spend reached 80% of the monthly budget: 820.00")
    assert conditions(got)["BudgetThresholdReached"] == ("True", "ThresholdReached")
    message = {c["type"]: c["message"] for c in got.status["conditions"]}
    assert message["BudgetThresholdReached"] == "threshold 80% reached, next 90%"


def test_conditions_change_with_the_state_not_with_every_claim() -> None:
    """Within one state the conditions name no running figure (``status.spend`` has them),
    so an admission alone does not make the reconciler write; Events carry the figures."""
    conds = [spending(cost, reached=80).status["conditions"] for cost in (820.0, 830.0)]
    assert statuses.material(QuotaStatus(conditions=conds[0])) == statuses.material(
        QuotaStatus(conditions=conds[1])
    )
    message = {c["type"]: c["message"] for c in conds[0]}
    assert message["BudgetExceeded"] == "within the monthly budget of 1,000.00 USD"
    back = spending(820.0)
    assert back.budget_note.startswith("180.00 left: 820.00 of 1,000.00 USD/month")
    over = spending(1200.0)
    assert over.budget_crossed is True
    assert over.budget_note.startswith("over budget by 200.00: 1,200.00 of 1,000.00")
    assert {c["type"]: c["message"] for c in over.status["conditions"]}["BudgetExceeded"] == (
        over.budget_note
    )


def test_crossing_down_is_announced_highest_first() -> None:
    got = spending(400.0, reached=90)
    assert crossings(got) == [(90, False), (80, False), (50, False)]
    assert got.status["alerts"] == {"reached": 0}
    assert got.crossed[0].message.startswith("spend fell below 90% of the monthly budget")
    assert conditions(got)["BudgetThresholdReached"] == ("False", "BelowThresholds")


def test_what_the_status_says_was_announced_is_not_announced_again() -> None:
    assert crossings(spending(850.0, reached=80)) == []  # a restart, or a new leader
    assert crossings(spending(950.0, reached=80)) == [(90, True)]
    assert crossings(spending(850.0, reached=90)) == [(90, False)]


def test_a_quota_never_reconciled_announces_what_it_has_reached() -> None:
    assert crossings(spending(910.0)) == [(50, True), (80, True), (90, True)]
    assert crossings(spending(10.0)) == []


def test_over_budget_alerts_go_past_100_percent() -> None:
    quota_obj = quota(monthlyBudget=100, alerts={"thresholds": [100, 150]})
    got = refresh(quota_obj, [claim(cost=165.0)], samples.healthy(), now=samples.NOW)
    assert crossings(got) == [(100, True), (150, True)]
    assert conditions(got)["BudgetExceeded"] == ("True", "OverBudget")  # its own condition
    assert conditions(got)["Ready"] == ("True", "Reconciled")


def test_without_thresholds_there_are_no_alerts() -> None:
    got = refresh(quota(monthlyBudget=100), [claim(cost=165.0)], samples.healthy(), now=samples.NOW)
    assert got.crossed == ()
    assert got.status["alerts"] == {"reached": 0}
    assert conditions(got)["BudgetThresholdReached"] == ("False", "NoThresholds")


def test_unknown_sync_times_are_written_as_null_so_the_merge_patch_removes_older_ones() -> None:
    """A replica that never synced can join one that did (the status shows the worst of
    them): a field left out of the merge patch would keep the older replica's time."""
    never = billing.BillingSnapshot(health=billing.BillingHealth(last_success=None))
    status, assessed = statuses.billing_status(snapshot=never, max_staleness=900, now=T0)
    assert assessed.degraded
    assert status["lastSuccessfulSync"] is None
    assert status["stalenessSeconds"] is None
    synced = billing.BillingSnapshot(health=billing.BillingHealth(last_success=T0 - 42))
    status, _ = statuses.billing_status(snapshot=synced, max_staleness=900, now=T0)
    assert (status["lastSuccessfulSync"], status["stalenessSeconds"]) == (
        "2026-11-27T08:59:18Z",
        42,
    )


def test_prices_in_another_currency_than_the_budget_make_the_quota_not_ready() -> None:
    in_euros = dataclasses.replace(samples.PRICES, currency="EUR")
    got = refresh(quota(), [], samples.healthy(prices=in_euros), now=samples.NOW)
    (ready,) = [c for c in got.status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "CurrencyMismatch")
    assert ready["message"].startswith("billing prices are in EUR, DatabaseQuota team-a's budget")
    in_dollars = dataclasses.replace(samples.PRICES, currency="USD")
    same = conditions(refresh(quota(), [], samples.healthy(prices=in_dollars), now=samples.NOW))
    assert same["Ready"] == ("True", "Reconciled")
    unknown = conditions(refresh(quota(), [], samples.healthy(), now=samples.NOW))
    assert unknown["Ready"] == ("True", "Reconciled")  # a catalog read back from the cache
