"""Properties of admission decisions, checked by hypothesis over generated states.

- a bigger claim (more storage or replicas) never costs less and is never admitted where
  the smaller one is denied;
- with current prices at or below the highest known, a degraded Conservative (or
  StrictCap) decision never admits what a live decision would deny, and never reserves
  less;
- a sequence of admitted claims and updates, each reserving its cost, never takes the
  namespace over budget (healthy billing, and degraded Conservative/StrictCap with prices);
- StrictCap never admits more new claims or GiB while degraded than its allowance;
- FailClosed never admits a new claim or growth while degraded;
- hard caps hold in every billing state and policy;
- every degraded decision carries a warning naming the policy and why; enforcement changes
  what happens to a denial, never the verdict itself; costs are finite and never negative.

Price books are generated the way ingestion keeps them: the highest known price of a class
is at or above its current price. Floats are compared with a tolerance only where sums are
re-associated (the running total of reservations).
"""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dbquota.domain import billing, claims, pricing, quotas, verdicts
from tests.unit.domain import samples

Change = tuple[claims.ClaimSpec, claims.ClaimSpec | None]
Books = tuple[billing.PriceBook, billing.PriceBook]


def decide(
    quota: quotas.QuotaSpec,
    change: Change,
    usage: quotas.Usage,
    snapshot: billing.BillingSnapshot,
) -> verdicts.Decision:
    claim, old = change
    return verdicts.decide(
        quota=quota, claim=claim, old_claim=old, usage=usage, snapshot=snapshot, now=samples.NOW
    )


@st.composite
def healthy_snapshots(draw: st.DrawFn, books: Books | None = None) -> billing.BillingSnapshot:
    current, highest = draw(samples.price_books()) if books is None else books
    return samples.healthy(
        prices=current,
        highest=highest,
        age=draw(st.floats(min_value=0, max_value=900)),
        failures=draw(st.integers(min_value=0, max_value=3)),
    )


snapshots = healthy_snapshots() | samples.degraded_snapshots()


@settings(deadline=None)
@given(
    quota=samples.quota_specs(),
    claim=samples.claim_specs(),
    more_storage=st.integers(min_value=0, max_value=1000),
    more_replicas=st.integers(min_value=0, max_value=5),
    usage=samples.usages(),
    snapshot=snapshots,
)
def test_bigger_claims_never_cost_less_nor_pass_where_smaller_fail(
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    more_storage: int,
    more_replicas: int,
    usage: quotas.Usage,
    snapshot: billing.BillingSnapshot,
) -> None:
    bigger = replace(
        claim, storage_gib=claim.storage_gib + more_storage, replicas=claim.replicas + more_replicas
    )
    small = decide(quota, (claim, None), usage, snapshot)
    big = decide(quota, (bigger, None), usage, snapshot)
    assert big.cost >= small.cost
    if big.allowed:
        assert small.allowed


@settings(deadline=None, max_examples=400)  # the key property: a few more examples
@given(
    books=samples.price_books(),
    policy=st.sampled_from(("Conservative", "StrictCap")),
    data=st.data(),
    change=samples.updates(),
    usage=samples.usages(),
    why=st.sampled_from(("Open", "HalfOpen", "stale")),
)
def test_degraded_conservative_never_admits_what_live_would_deny(
    books: Books,
    policy: quotas.Policy,
    data: st.DataObject,
    change: Change,
    usage: quotas.Usage,
    why: str,
) -> None:
    quota = data.draw(samples.quota_specs(policy=policy))
    live_snapshot = data.draw(healthy_snapshots(books))
    current, highest = books
    if why == "stale":
        degraded_snapshot = samples.degraded(
            circuit="Closed", age=3600, prices=current, highest=highest
        )
    else:
        circuit: billing.CircuitState = "Open" if why == "Open" else "HalfOpen"
        degraded_snapshot = samples.degraded(
            circuit=circuit, age=10, prices=current, highest=highest
        )
    live = decide(quota, change, usage, live_snapshot)
    conservative = decide(quota, change, usage, degraded_snapshot)
    assert not live.degraded
    assert conservative.degraded
    assert conservative.cost >= live.cost
    if live.would_deny:
        assert conservative.would_deny
        assert not conservative.allowed


@st.composite
def starting_usage(draw: st.DrawFn, budget: float) -> quotas.Usage:
    observed = draw(st.floats(min_value=0, max_value=budget))
    reserved = draw(st.floats(min_value=0, max_value=max(0.0, budget - observed)))
    return quotas.Usage(observed=observed, reserved=reserved)


Step = tuple[claims.ClaimSpec, int | None]
steps = st.lists(
    st.tuples(samples.claim_specs(max_storage=500), st.none() | st.integers(0, 100)),
    min_size=1,
    max_size=25,
)


def run(
    quota: quotas.QuotaSpec,
    usage: quotas.Usage,
    snapshot: billing.BillingSnapshot,
    plan: list[Step],
) -> quotas.Usage:
    """Apply ``plan`` (new claims, or updates of the i-th admitted one), reserving each cost.

    Returns the final usage; reservations only ever grow (a shrinking update releases
    nothing before billing shows it).
    """
    admitted: list[claims.ClaimSpec] = []
    for claim, target in plan:
        old = admitted[target % len(admitted)] if target is not None and admitted else None
        decision = decide(quota, (claim, old), usage, snapshot)
        assert decision.cost >= 0.0
        if not decision.allowed:
            continue
        if old is None:
            admitted.append(claim)
        else:
            admitted[admitted.index(old)] = claim
        usage = replace(
            usage,
            reserved=usage.reserved + decision.cost,
            claims=usage.claims + decision.new_claims,
            storage_gib=sum(c.storage_gib for c in admitted),
            degraded_claims=usage.degraded_claims
            + (decision.new_claims if decision.degraded else 0),
            degraded_storage_gib=usage.degraded_storage_gib
            + (decision.storage_gib if decision.degraded else 0),
        )
    return usage


@settings(deadline=None)
@given(
    data=st.data(),
    books=samples.price_books(),
    state=st.sampled_from((None, "Conservative", "StrictCap")),
    plan=steps,
)
def test_admitted_claims_never_exceed_the_budget_in_total(
    data: st.DataObject, books: Books, state: quotas.Policy | None, plan: list[Step]
) -> None:
    """``state`` None: healthy billing under any policy; else degraded under that policy."""
    current, highest = books
    if state is None:
        quota = data.draw(samples.quota_specs(hard=False))
        snapshot = data.draw(healthy_snapshots(books))
    else:
        quota = data.draw(samples.quota_specs(policy=state, hard=False))
        snapshot = samples.degraded(prices=current, highest=highest)
    # A budget that some of the plan fits in, so that admissions happen and run close to it.
    dearest = pricing.highest_known(highest, current)
    assert dearest is not None
    whole = sum(
        pricing.conservative_cost(claim=c, highest=dearest, margin=quota.safety_margin)
        for c, _ in plan
    )
    share = data.draw(st.floats(min_value=0.05, max_value=1.0))
    quota = replace(quota, monthly_budget=max(1.0, share * whole))
    start = data.draw(starting_usage(quota.monthly_budget))
    end = run(quota, start, snapshot, plan)
    assert end.spend <= quota.monthly_budget + 1e-9 * quota.monthly_budget


@settings(deadline=None)
@given(
    data=st.data(),
    snapshot=samples.degraded_snapshots(),
    plan=steps,
)
def test_strict_cap_never_admits_past_its_allowance_while_degraded(
    data: st.DataObject, snapshot: billing.BillingSnapshot, plan: list[Step]
) -> None:
    quota = data.draw(samples.quota_specs(policy="StrictCap"))
    end = run(quota, quotas.Usage(), snapshot, plan)
    if quota.strict_cap.claims is not None:
        assert end.degraded_claims <= quota.strict_cap.claims
    if quota.strict_cap.storage_gib is not None:
        assert end.degraded_storage_gib <= quota.strict_cap.storage_gib


@settings(deadline=None)
@given(
    quota=samples.quota_specs(policy="FailClosed"),
    change=samples.updates(),
    usage=samples.usages(),
    snapshot=samples.degraded_snapshots(),
)
def test_fail_closed_never_admits_a_claim_while_degraded(
    quota: quotas.QuotaSpec, change: Change, usage: quotas.Usage, snapshot: billing.BillingSnapshot
) -> None:
    claim, old = change
    decision = decide(quota, change, usage, snapshot)
    assert decision.degraded
    if claim.grows_from(old):
        assert not decision.allowed
        assert decision.pricing is None
    else:
        assert decision.allowed  # an update that adds nothing needs no price
        assert decision.reason == "NoIncrease"


@settings(deadline=None)
@given(
    data=st.data(),
    quota=samples.quota_specs(),
    change=samples.updates(),
    usage=samples.usages(),
    snapshot=snapshots,
)
def test_hard_caps_hold_in_every_mode(
    data: st.DataObject,
    quota: quotas.QuotaSpec,
    change: Change,
    usage: quotas.Usage,
    snapshot: billing.BillingSnapshot,
) -> None:
    claim, old = change
    growth = claim.storage_growth(old)
    if data.draw(st.booleans()):  # make the budget no obstacle, so hard caps must hold alone
        quota = replace(quota, monthly_budget=1e12)
    # caps often right at the edge of what the namespace holds plus this request
    edge = st.sampled_from((-1, 0, 1))
    quota = replace(
        quota,
        hard=quotas.HardCaps(
            claims=data.draw(
                st.just(quota.hard.claims) | edge.map(lambda d: max(0, usage.claims + d))
            ),
            storage_gib=data.draw(
                st.just(quota.hard.storage_gib)
                | edge.map(lambda d: max(0, usage.storage_gib + growth + d))
            ),
        ),
    )
    decision = decide(quota, change, usage, snapshot)
    if not decision.allowed:
        return
    if quota.hard.claims is not None and old is None:
        assert usage.claims + 1 <= quota.hard.claims
    if quota.hard.storage_gib is not None and growth > 0:
        assert usage.storage_gib + growth <= quota.hard.storage_gib


@settings(deadline=None)
@given(
    data=st.data(),
    change=samples.updates(),
    usage=samples.usages(),
    snapshot=snapshots,
)
def test_verdict_is_the_same_under_every_enforcement_and_degradation_is_said(
    data: st.DataObject, change: Change, usage: quotas.Usage, snapshot: billing.BillingSnapshot
) -> None:
    enforced = data.draw(samples.quota_specs(enforcement="Enforce"))
    decisions = {
        mode: decide(replace(enforced, enforcement=mode), change, usage, snapshot)
        for mode in quotas.ENFORCEMENTS
    }
    enforce = decisions["Enforce"]
    assert enforce.allowed == (not enforce.would_deny)
    for mode, decision in decisions.items():
        assert decision.would_deny == enforce.would_deny, mode
        assert decision.reason == enforce.reason, mode
        assert decision.cost == enforce.cost, mode
        assert decision.pricing == enforce.pricing, mode
        assert math.isfinite(decision.cost)
        assert decision.cost >= 0.0
        if mode != "Enforce":
            assert decision.allowed
        if decision.degraded:
            assert any(
                w.startswith("billing degraded (") and f"policy {enforced.policy}" in w
                for w in decision.warnings
            ), decision.warnings
    if enforce.would_deny:
        warn = decisions["Warn"]
        assert f"enforcement Warn: would be {enforce.message}" in warn.warnings
        assert (
            decisions["DryRun"].message == f"enforcement DryRun: would have been {enforce.message}"
        )
        assert not any(w.startswith("enforcement") for w in decisions["DryRun"].warnings)
