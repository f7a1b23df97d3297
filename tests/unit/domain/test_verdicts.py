"""Admission decisions by example: every policy, enforcement mode, hard cap and message.

Checks, with exact message text where a tenant reads it:

- healthy billing: live and cached pricing, the budget check, a class missing from the
  catalog (priced conservatively, with a warning);
- UPDATEs: only the growth is priced and reserved; an update that adds nothing is
  admitted in every state, even over budget; class changes while degraded;
- degraded billing under each policy: Conservative (priced at highest known x margin,
  denies what live would admit near the limit; no prices at all denies), StrictCap (the
  allowance of claims and GiB, conservative budget check, unpriced admissions, the zero
  default), FailClosed (denies), FailOpen (admits, says what it would cost);
- enforcement: Enforce denies, Warn admits with the denial as a warning, DryRun admits and
  only records; hard caps obey enforcement too;
- hard caps on claims and storage, counted over the namespace, in every state;
- combining the decisions of several quotas;
- a denial names the part of "reserved" that other replicas hold in escrow.
"""

from __future__ import annotations

import dataclasses

import pytest

from dbquota.domain import billing, claims, escrow, pricing, quotas, verdicts
from tests.unit.domain import samples

WHY = "billing degraded (circuit Open, data 1,234s old > maxStaleness 900s)"


def decide(
    quota: quotas.QuotaSpec,
    *,
    claim: claims.ClaimSpec | None = None,
    old_claim: claims.ClaimSpec | None = None,
    usage: quotas.Usage | None = None,
    snapshot: billing.BillingSnapshot | None = None,
) -> verdicts.Decision:
    return verdicts.decide(
        quota=quota,
        claim=samples.claim() if claim is None else claim,
        old_claim=old_claim,
        usage=quotas.Usage() if usage is None else usage,
        snapshot=samples.healthy() if snapshot is None else snapshot,
        now=samples.NOW,
    )


# -- healthy billing ----------------------------------------------------------------------


def test_live_budget_denial_message() -> None:
    decision = decide(samples.quota(), usage=quotas.Usage(observed=4500, reserved=300))
    assert not decision.allowed
    assert decision.would_deny
    assert decision.reason == "BudgetExceeded"
    assert decision.pricing == "Live"
    assert not decision.degraded
    assert decision.cost == pytest.approx(410.40)
    assert decision.message == (
        "denied by DatabaseQuota team-a: projected 5,210.40 USD/month exceeds budget "
        "5,000.00 by 210.40 (observed 4,500.00 + reserved 300.00 + this claim 410.40; "
        "prices live)"
    )
    assert decision.warnings == ()


def test_denial_names_budget_other_replicas_hold_in_escrow() -> None:
    usage = escrow.with_held(quotas.Usage(observed=4500, reserved=100), escrow.Allowance(200))
    decision = decide(samples.quota(), usage=usage)
    assert decision.message == (
        "denied by DatabaseQuota team-a: projected 5,210.40 USD/month exceeds budget "
        "5,000.00 by 210.40 (observed 4,500.00 + reserved 300.00 (of which 200.00 held by "
        "other webhook replicas for claims they may admit) + this claim 410.40; prices live)"
    )


def test_live_admission_within_budget() -> None:
    decision = decide(samples.quota(), usage=quotas.Usage(observed=4000, reserved=300))
    assert decision.allowed
    assert not decision.would_deny
    assert decision.reason == "WithinBudget"
    assert decision.pricing == "Live"
    assert decision.policy is None
    assert (decision.new_claims, decision.storage_gib) == (1, 100)
    assert decision.message == (
        "admitted by DatabaseQuota team-a: projected 4,710.40 USD/month within budget "
        "5,000.00, 289.60 left (observed 4,000.00 + reserved 300.00 + this claim 410.40; "
        "prices live)"
    )
    assert decision.warnings == ()


def test_exactly_filling_the_budget_is_admitted_and_one_cent_more_is_not() -> None:
    cost = pricing.project_cost(claim=samples.claim(), prices=samples.PRICES)
    assert cost is not None
    usage = quotas.Usage(observed=100)
    assert decide(samples.quota(monthlyBudget=usage.spend + cost), usage=usage).allowed
    assert not decide(samples.quota(monthlyBudget=usage.spend + cost - 0.01), usage=usage).allowed


def test_cached_prices_say_how_old_they_are() -> None:
    decision = decide(
        samples.quota(currency="EUR"),
        usage=quotas.Usage(observed=4800),
        snapshot=samples.healthy(age=720, failures=3),
    )
    assert decision.pricing == "Cached"
    assert not decision.degraded
    assert decision.message == (
        "denied by DatabaseQuota team-a: projected 5,210.40 EUR/month exceeds budget "
        "5,000.00 by 210.40 (observed 4,800.00 + reserved 0.00 + this claim 410.40; "
        "cached prices, 12 minutes old)"
    )


def test_unknown_class_is_priced_as_the_dearest_known_class_with_a_warning() -> None:
    decision = decide(samples.quota(), claim=samples.claim(samples.UNKNOWN_CLASS))
    assert decision.allowed
    assert not decision.degraded
    assert decision.pricing == "Conservative"
    assert decision.cost == pytest.approx(1.0 * 1.2 * 730 + 100 * 0.5 * 1.2)  # 936.00
    assert decision.warnings == (
        "DatabaseQuota team-a: instance class db.x9.huge is not in the price catalog; "
        "priced as the dearest known class x 1.2",
    )
    assert decision.message.endswith(
        "(observed 0.00 + reserved 0.00 + this claim 936.00; conservative: class db.x9.huge "
        "not in the price catalog, priced as the dearest known class x 1.2)"
    )


# -- updates ------------------------------------------------------------------------------


def test_update_reserves_only_its_growth() -> None:
    old = samples.claim(storage_gib=100)
    decision = decide(
        samples.quota(),
        claim=samples.claim(storage_gib=150),
        old_claim=old,
        usage=quotas.Usage(observed=4900, claims=1, storage_gib=100),
    )
    assert decision.allowed
    assert decision.cost == pytest.approx(50 * 0.454)
    assert (decision.new_claims, decision.storage_gib) == (0, 50)
    assert "+ this update 22.70; prices live)" in decision.message


def test_update_growth_over_budget_is_denied() -> None:
    decision = decide(
        samples.quota(),
        claim=samples.claim(replicas=2),
        old_claim=samples.claim(replicas=1),
        usage=quotas.Usage(observed=4800),
    )
    assert not decision.allowed
    assert decision.cost == pytest.approx(365.0)
    assert decision.message == (
        "denied by DatabaseQuota team-a: projected 5,165.00 USD/month exceeds budget "
        "5,000.00 by 165.00 (observed 4,800.00 + reserved 0.00 + this update 365.00; "
        "prices live)"
    )


@pytest.mark.parametrize(
    "snapshot",
    [samples.healthy(), samples.degraded(prices=None, highest=None)],
    ids=["healthy", "degraded-no-prices"],
)
@pytest.mark.parametrize("policy", quotas.POLICIES)
def test_update_that_adds_nothing_is_admitted_even_over_budget(
    snapshot: billing.BillingSnapshot, policy: quotas.Policy
) -> None:
    old = samples.claim(storage_gib=100, replicas=2)
    decision = decide(
        samples.with_policy(policy, hard={"claims": 1, "storageGiB": 100}),
        claim=samples.claim(storage_gib=80, replicas=2),
        old_claim=old,
        usage=quotas.Usage(observed=9000, claims=5, storage_gib=500),
        snapshot=snapshot,
    )
    assert decision.allowed
    assert decision.reason == "NoIncrease"
    assert decision.cost == 0.0
    assert decision.pricing is None
    assert (
        decision.message == "admitted by DatabaseQuota team-a: this update adds nothing to pay for"
    )
    assert decision.degraded == (snapshot.prices is None)
    if decision.degraded:
        assert decision.warnings == (
            f"billing degraded (circuit Open, data 1,234s old > maxStaleness 900s, "
            f"no prices): policy {policy} applies, but this update adds nothing, so it "
            "needs no price",
        )


def test_healthy_update_from_a_class_missing_from_the_catalog_credits_nothing() -> None:
    decision = decide(
        samples.quota(),
        claim=samples.claim("db.r6g.large", storage_gib=100),
        old_claim=samples.claim("db.retired.large", storage_gib=100),
    )
    assert decision.pricing == "Live"
    assert decision.cost == pytest.approx(0.5 * 730)  # the new instance, nothing credited


def test_degraded_class_change_prices_new_high_and_old_at_current_prices() -> None:
    decision = decide(
        samples.quota(),
        claim=samples.claim("db.r6g.xlarge", storage_gib=100),
        old_claim=samples.claim("db.r6g.large", storage_gib=100),
        snapshot=samples.degraded(),
    )
    # new instance at 1.0 x 1.2 per hour, old one credited at its current 0.5 per hour
    assert decision.cost == pytest.approx(1.2 * 730 - 0.5 * 730)
    assert decision.pricing == "Conservative"


# -- degraded: Conservative ---------------------------------------------------------------


def test_conservative_prices_at_highest_known_times_margin() -> None:
    decision = decide(samples.quota(), snapshot=samples.degraded())
    assert decision.allowed
    assert decision.degraded
    assert decision.policy == "Conservative"
    assert decision.pricing == "Conservative"
    assert decision.reason == "WithinBudget"
    assert decision.cost == pytest.approx(585.60)
    assert decision.warnings == (
        f"{WHY}: policy Conservative, priced conservatively at highest known prices x 1.2",
    )


def test_conservative_denies_near_the_limit_what_live_admits() -> None:
    usage = quotas.Usage(observed=4500)
    assert decide(samples.quota(), usage=usage).allowed
    decision = decide(samples.quota(), usage=usage, snapshot=samples.degraded())
    assert not decision.allowed
    assert decision.reason == "BudgetExceeded"
    assert decision.message == (
        "denied by DatabaseQuota team-a: projected 5,085.60 USD/month exceeds budget "
        "5,000.00 by 85.60 (observed 4,500.00 + reserved 0.00 + this claim 585.60; "
        "conservative: highest known prices x 1.2)"
    )
    assert len(decision.warnings) == 1


def test_conservative_uses_history_when_the_current_catalog_is_missing() -> None:
    decision = decide(samples.quota(), snapshot=samples.healthy(prices=None))
    assert decision.degraded
    assert decision.allowed
    assert decision.cost == pytest.approx(585.60)


def test_conservative_without_any_prices_denies() -> None:
    snapshot = samples.degraded(age=None, prices=None, highest=None)
    decision = decide(samples.quota(), snapshot=snapshot)
    assert not decision.allowed
    assert decision.reason == "BillingUnavailable"
    assert decision.pricing is None
    assert decision.cost == 0.0
    why = "billing degraded (circuit Open, no successful sync yet, no prices)"
    assert decision.message == (
        f"denied by DatabaseQuota team-a: {why}: policy Conservative cannot price this "
        "claim without any known prices"
    )
    assert decision.warnings == (f"{why}: policy Conservative, not priced: no prices known",)


# -- degraded: StrictCap ------------------------------------------------------------------


def strict(claims_: int = 2, storage: int = 500, **spec: object) -> quotas.QuotaSpec:
    return samples.with_policy(
        "StrictCap", degradation={"strictCap": {"claims": claims_, "storageGiB": storage}}, **spec
    )


def test_strict_cap_admits_within_its_allowance_and_reserves_conservatively() -> None:
    decision = decide(
        strict(),
        usage=quotas.Usage(degraded_claims=1, degraded_storage_gib=100),
        snapshot=samples.degraded(),
    )
    assert decision.allowed
    assert decision.reason == "WithinStrictCap"
    assert decision.pricing == "StrictCap"
    assert decision.cost == pytest.approx(585.60)
    assert decision.warnings == (
        f"{WHY}: policy StrictCap, 1 of 2 new claims and 100 of 500 GiB already admitted "
        "while degraded; priced conservatively at highest known prices x 1.2",
    )


def test_strict_cap_denies_past_its_claims() -> None:
    decision = decide(strict(), usage=quotas.Usage(degraded_claims=2), snapshot=samples.degraded())
    assert not decision.allowed
    assert decision.reason == "StrictCapExceeded"
    assert decision.message == (
        f"denied by DatabaseQuota team-a: {WHY}: policy StrictCap admits at most 2 new "
        "claims while degraded and 2 already were"
    )


def test_strict_cap_denies_past_its_storage() -> None:
    decision = decide(
        strict(),
        claim=samples.claim(storage_gib=450),
        usage=quotas.Usage(degraded_storage_gib=100),
        snapshot=samples.degraded(),
    )
    assert not decision.allowed
    assert decision.reason == "StrictCapExceeded"
    assert decision.message.endswith(
        "policy StrictCap admits at most 500 GiB of new storage while degraded; 100 GiB "
        "already were and this claim adds 450 GiB"
    )


def test_strict_cap_still_checks_the_budget_at_conservative_prices() -> None:
    decision = decide(strict(), usage=quotas.Usage(observed=4500), snapshot=samples.degraded())
    assert not decision.allowed
    assert decision.reason == "BudgetExceeded"


def test_strict_cap_without_prices_admits_unpriced_within_allowance() -> None:
    snapshot = samples.degraded(prices=None, highest=None)
    decision = decide(strict(), usage=quotas.Usage(observed=99_999), snapshot=snapshot)
    assert decision.allowed
    assert decision.pricing == "StrictCap"
    assert decision.cost == 0.0
    assert decision.message == (
        "admitted by DatabaseQuota team-a within StrictCap's allowance while billing is "
        "degraded; not priced: no prices known"
    )


def test_strict_cap_without_prices_denies_growth_it_cannot_count() -> None:
    snapshot = samples.degraded(prices=None, highest=None)
    decision = decide(
        strict(),
        claim=samples.claim(replicas=3),
        old_claim=samples.claim(replicas=1),
        snapshot=snapshot,
    )
    assert not decision.allowed
    assert decision.reason == "BillingUnavailable"
    assert decision.message.endswith(
        "policy StrictCap cannot admit another instance class or more replicas without any "
        "known prices"
    )


def test_strict_cap_default_allowance_is_zero() -> None:
    decision = decide(samples.with_policy("StrictCap"), snapshot=samples.degraded())
    assert not decision.allowed
    assert decision.reason == "StrictCapExceeded"
    assert "at most 0 new claims" in decision.message


def test_strict_cap_on_claims_only_leaves_storage_unlimited() -> None:
    quota = dataclasses.replace(
        samples.with_policy("StrictCap"), strict_cap=quotas.StrictCap(claims=1)
    )
    decision = decide(quota, snapshot=samples.degraded())
    assert decision.allowed, decision.message
    assert decision.reason == "WithinStrictCap"


# -- degraded: FailClosed and FailOpen ----------------------------------------------------


def test_fail_closed_denies_new_claims() -> None:
    decision = decide(samples.with_policy("FailClosed"), snapshot=samples.degraded())
    assert not decision.allowed
    assert decision.reason == "BillingUnavailable"
    assert decision.pricing is None
    assert decision.message == (
        f"denied by DatabaseQuota team-a: {WHY}: policy FailClosed denies new claims and "
        "growth until billing recovers"
    )
    assert decision.warnings == (f"{WHY}: policy FailClosed, new claims and growth are denied",)


def test_fail_closed_admits_when_billing_is_healthy() -> None:
    decision = decide(samples.with_policy("FailClosed"))
    assert decision.allowed
    assert decision.pricing == "Live"


def test_fail_open_admits_over_budget_and_says_by_how_much() -> None:
    decision = decide(
        samples.with_policy("FailOpen"),
        usage=quotas.Usage(observed=4500, reserved=300),
        snapshot=samples.degraded(),
    )
    assert decision.allowed
    assert not decision.would_deny
    assert decision.reason == "FailOpen"
    assert decision.pricing == "FailOpen"
    assert decision.cost == pytest.approx(585.60)
    assert decision.warnings == (
        f"{WHY}: policy FailOpen, admitted without a budget check; at highest known prices "
        "x 1.2 this claim costs 585.60 USD/month, projected 5,385.60, over budget 5,000.00 "
        "by 385.60",
    )


def test_fail_open_without_prices_admits_unpriced() -> None:
    decision = decide(
        samples.with_policy("FailOpen"), snapshot=samples.degraded(prices=None, highest=None)
    )
    assert decision.allowed
    assert decision.cost == 0.0
    assert decision.warnings[0].endswith(
        "policy FailOpen, admitted without a budget check; not priced: no prices known"
    )


def test_staleness_alone_degrades_with_a_closed_breaker() -> None:
    decision = decide(samples.quota(), snapshot=samples.degraded(circuit="Closed", age=3600))
    assert decision.degraded
    assert decision.warnings[0].startswith(
        "billing degraded (data 3,600s old > maxStaleness 900s): policy Conservative"
    )


def test_max_staleness_of_the_quota_decides() -> None:
    snapshot = samples.healthy(age=1800)
    assert decide(samples.quota(), snapshot=snapshot).degraded
    relaxed = samples.quota(degradation={"maxStaleness": "1h"})
    assert not decide(relaxed, snapshot=snapshot).degraded


# -- enforcement --------------------------------------------------------------------------

DENIAL = (
    "denied by DatabaseQuota team-a: projected 5,210.40 USD/month exceeds budget 5,000.00 by "
    "210.40 (observed 4,500.00 + reserved 300.00 + this claim 410.40; prices live)"
)


def test_warn_admits_with_the_denial_as_a_warning() -> None:
    decision = decide(
        samples.quota(enforcement="Warn"), usage=quotas.Usage(observed=4500, reserved=300)
    )
    assert decision.allowed
    assert decision.would_deny
    assert decision.reason == "BudgetExceeded"
    assert decision.cost == pytest.approx(410.40)
    assert decision.warnings == (f"enforcement Warn: would be {DENIAL}",)
    assert decision.message == f"enforcement Warn: would be {DENIAL}"


def test_dry_run_admits_and_records_what_it_would_have_done() -> None:
    decision = decide(
        samples.quota(enforcement="DryRun"), usage=quotas.Usage(observed=4500, reserved=300)
    )
    assert decision.allowed
    assert decision.would_deny
    assert decision.reason == "BudgetExceeded"
    assert decision.warnings == ()
    assert decision.message == f"enforcement DryRun: would have been {DENIAL}"


def test_dry_run_still_warns_about_degradation() -> None:
    decision = decide(samples.quota(enforcement="DryRun"), snapshot=samples.degraded())
    assert decision.warnings == (
        f"{WHY}: policy Conservative, priced conservatively at highest known prices x 1.2",
    )


@pytest.mark.parametrize("enforcement", ["Warn", "DryRun"])
def test_fail_closed_under_warn_or_dry_run_reserves_the_conservative_cost(
    enforcement: str,
) -> None:
    quota = samples.with_policy("FailClosed", enforcement=enforcement)
    decision = decide(quota, snapshot=samples.degraded())
    assert decision.allowed
    assert decision.would_deny
    assert decision.reason == "BillingUnavailable"
    assert decision.cost == pytest.approx(585.60)


def test_warn_applies_to_hard_caps_too() -> None:
    quota = samples.quota(enforcement="Warn", hard={"claims": 1})
    decision = decide(quota, usage=quotas.Usage(claims=1))
    assert decision.allowed
    assert decision.would_deny
    assert decision.reason == "HardCapExceeded"
    assert decision.warnings[0].startswith("enforcement Warn: would be denied by DatabaseQuota")


# -- hard caps ----------------------------------------------------------------------------


def test_hard_cap_on_claims_counts_the_namespace() -> None:
    decision = decide(samples.quota(hard={"claims": 20}), usage=quotas.Usage(claims=20))
    assert not decision.allowed
    assert decision.reason == "HardCapExceeded"
    assert decision.message == (
        "denied by DatabaseQuota team-a: 21 claims would exceed the hard cap of 20 claims "
        "(20 in the namespace + this claim)"
    )


def test_hard_cap_on_storage_counts_the_namespace() -> None:
    decision = decide(
        samples.quota(hard={"storageGiB": 2000}),
        claim=samples.claim(storage_gib=200),
        usage=quotas.Usage(storage_gib=1900),
    )
    assert not decision.allowed
    assert decision.message == (
        "denied by DatabaseQuota team-a: storage would total 2,100 GiB, exceeding the hard "
        "cap of 2,000 GiB by 100 (1,900 GiB in the namespace + 200 GiB for this claim)"
    )


def test_hard_caps_and_budget_are_all_reported_hard_caps_first() -> None:
    decision = decide(
        samples.quota(hard={"claims": 1, "storageGiB": 10}),
        usage=quotas.Usage(observed=5000, claims=1),
    )
    assert decision.reason == "HardCapExceeded"
    texts = decision.message.removeprefix("denied by DatabaseQuota team-a: ").split("; ")
    assert texts[0].startswith("2 claims would exceed the hard cap of 1 claims")
    assert texts[1].startswith("storage would total 100 GiB")
    assert texts[2].startswith("projected 5,410.40 USD/month exceeds budget")


@pytest.mark.parametrize("policy", quotas.POLICIES)
def test_hard_caps_hold_while_degraded_without_prices(policy: quotas.Policy) -> None:
    quota = samples.with_policy(
        policy,
        hard={"storageGiB": 150},
        degradation={"strictCap": {"claims": 5, "storageGiB": 5000}},
    )
    decision = decide(
        quota,
        usage=quotas.Usage(storage_gib=100),
        snapshot=samples.degraded(prices=None, highest=None),
    )
    assert not decision.allowed
    assert decision.reason == "HardCapExceeded"


def test_update_counts_only_its_storage_growth_and_no_new_claim() -> None:
    quota = samples.quota(hard={"claims": 3, "storageGiB": 1000})
    usage = quotas.Usage(claims=3, storage_gib=950)
    ok = decide(
        quota,
        claim=samples.claim(storage_gib=150),
        old_claim=samples.claim(storage_gib=100),
        usage=usage,
    )
    assert ok.allowed
    too_much = decide(
        quota,
        claim=samples.claim(storage_gib=151),
        old_claim=samples.claim(storage_gib=100),
        usage=usage,
    )
    assert not too_much.allowed
    assert too_much.message.endswith("(950 GiB in the namespace + 51 GiB for this update)")


# -- several quotas -----------------------------------------------------------------------


def test_combine_denies_when_any_quota_denies_and_keeps_every_warning_once() -> None:
    snapshot = samples.degraded()
    lenient = decide(samples.quota("lenient", monthlyBudget=100_000), snapshot=snapshot)
    tight = decide(samples.quota("tight", monthlyBudget=100), snapshot=snapshot)
    verdict = verdicts.combine([lenient, tight])
    assert not verdict.allowed
    assert verdict.message == tight.message
    assert verdict.message.startswith("denied by DatabaseQuota tight: ")
    assert verdict.warnings == lenient.warnings  # the same degradation warning, once
    assert verdict.decisions == (lenient, tight)


def test_combine_admits_when_every_quota_admits() -> None:
    a = decide(samples.quota("a"))
    b = decide(samples.quota("b"))
    verdict = verdicts.combine([a, b])
    assert verdict.allowed
    assert verdict.message == f"{a.message}; {b.message}"
    assert verdicts.combine([]).allowed


def test_prices_in_another_currency_than_the_budget_warn_on_each_admission() -> None:
    in_euros = dataclasses.replace(samples.PRICES, currency="EUR")
    decision = decide(samples.quota(), snapshot=samples.healthy(prices=in_euros))
    assert decision.allowed
    assert decision.warnings == (
        "billing prices are in EUR, DatabaseQuota team-a's budget in USD: dbquota does not "
        "convert currencies, so claims are priced in EUR against it (set spec.currency to "
        "EUR, or use a provider that prices in USD)",
    )
    assert (
        decide(samples.quota(currency="EUR"), snapshot=samples.healthy(prices=in_euros)).warnings
        == ()
    )
