"""Each degradation policy's rule on its own, and the registry that finds them by name.

Checks, for one degraded request handed straight to a rule (no hard caps, no
enforcement: :mod:`tests.unit.domain.test_verdicts` covers the whole decision):

- Conservative: reserves the conservative price and checks the budget; with no prices at
  all it denies (``BillingUnavailable``) and prices nothing;
- StrictCap: admits within its allowance of claims and GiB, denies past either, still
  checks the budget when prices are known, admits unpriced at cost 0 without prices but
  denies growth its allowance cannot count; refuses escrow and needs ``strictCap``;
- FailClosed: denies, yet carries the conservative cost for Warn and DryRun;
- FailOpen: never denies, even far over budget, and says by how much;
- the registry: keyed by each rule's name, in the CRD enum's order (``quotas.POLICIES``
  is its names), and only StrictCap keeps its admissions out of escrow.
"""

from __future__ import annotations

import pytest

from dbquota.domain import claims, policies, quotas, quotes
from tests.unit.domain import samples

WHY = "billing degraded (circuit Open)"


def request(
    quota: quotas.QuotaSpec | None = None,
    *,
    usage: quotas.Usage | None = None,
    claim: claims.ClaimSpec | None = None,
    old: claims.ClaimSpec | None = None,
    priced: bool = True,
) -> policies.Degraded:
    """A degraded request, priced conservatively from the sample books unless ``priced``
    is False (no price known at all)."""
    quota = samples.quota() if quota is None else quota
    claim = samples.claim() if claim is None else claim
    snapshot = samples.degraded() if priced else samples.degraded(prices=None, highest=None)
    return policies.Degraded(
        quota=quota,
        claim=claim,
        old_claim=old,
        usage=quotas.Usage() if usage is None else usage,
        why=WHY,
        quote=quotes.conservative(quota=quota, claim=claim, old_claim=old, snapshot=snapshot),
    )


def reasons(ruling: policies.Ruling) -> list[str]:
    return [denial.reason for denial in ruling.denials]


# -- Conservative -------------------------------------------------------------------------

CONSERVATIVE = policies.RULES["Conservative"]


def test_conservative_reserves_the_conservative_price_when_it_fits() -> None:
    ruling = CONSERVATIVE.decide(request())
    assert ruling.cost == pytest.approx(585.60)  # (0.6 x 730 + 100 x 0.5) x 1.2
    assert ruling.mode == "Conservative"
    assert ruling.reason == "WithinBudget"
    assert ruling.denials == ()
    assert ruling.admitted.startswith("admitted by DatabaseQuota team-a: projected 585.60")
    assert ruling.warnings == (
        f"{WHY}: policy Conservative, priced conservatively at highest known prices x 1.2",
    )


def test_conservative_denies_what_does_not_fit_at_conservative_prices() -> None:
    ruling = CONSERVATIVE.decide(request(usage=quotas.Usage(observed=4500)))
    assert reasons(ruling) == ["BudgetExceeded"]
    assert "exceeds budget 5,000.00 by 85.60" in ruling.denials[0].text


def test_conservative_cannot_price_without_any_prices() -> None:
    ruling = CONSERVATIVE.decide(request(priced=False))
    assert reasons(ruling) == ["BillingUnavailable"]
    assert (ruling.cost, ruling.mode) == (0.0, None)
    assert ruling.denials[0].text == (
        f"{WHY}: policy Conservative cannot price this claim without any known prices"
    )


# -- StrictCap ----------------------------------------------------------------------------

STRICT_CAP = policies.RULES["StrictCap"]


def strict(claims_: int | None = 2, storage: int | None = 500) -> quotas.QuotaSpec:
    cap: dict[str, int] = {}
    if claims_ is not None:
        cap["claims"] = claims_
    if storage is not None:
        cap["storageGiB"] = storage
    return samples.with_policy("StrictCap", degradation={"strictCap": cap})


def test_strict_cap_admits_within_its_allowance_at_the_conservative_price() -> None:
    ruling = STRICT_CAP.decide(request(strict(), usage=quotas.Usage(degraded_claims=1)))
    assert ruling.denials == ()
    assert (ruling.mode, ruling.reason) == ("StrictCap", "WithinStrictCap")
    assert ruling.cost == pytest.approx(585.60)
    assert ruling.warnings[0].startswith(f"{WHY}: policy StrictCap, 1 of 2 new claims")


def test_strict_cap_denies_past_its_claims_and_its_storage() -> None:
    usage = quotas.Usage(degraded_claims=2, degraded_storage_gib=450)
    ruling = STRICT_CAP.decide(request(strict(), usage=usage))
    assert reasons(ruling) == ["StrictCapExceeded", "StrictCapExceeded"]
    assert "at most 2 new claims" in ruling.denials[0].text
    assert "at most 500 GiB of new storage" in ruling.denials[1].text


def test_strict_cap_counts_only_the_dimensions_it_caps() -> None:
    usage = quotas.Usage(degraded_claims=99, degraded_storage_gib=99_999)
    assert STRICT_CAP.decide(request(strict(claims_=None), usage=usage)).denials != ()
    assert STRICT_CAP.decide(request(strict(storage=None), usage=usage)).denials != ()
    ruling = STRICT_CAP.decide(request(strict(claims_=100, storage=None), usage=usage))
    assert ruling.denials == ()


def test_strict_cap_still_checks_the_budget_when_prices_are_known() -> None:
    ruling = STRICT_CAP.decide(request(strict(), usage=quotas.Usage(observed=4500)))
    assert reasons(ruling) == ["BudgetExceeded"]


def test_strict_cap_without_prices_admits_unpriced_within_its_allowance() -> None:
    ruling = STRICT_CAP.decide(request(strict(), usage=quotas.Usage(observed=1e6), priced=False))
    assert ruling.denials == ()
    assert (ruling.cost, ruling.mode) == (0.0, "StrictCap")
    assert ruling.admitted.endswith("while billing is degraded; not priced: no prices known")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (samples.claim(replicas=1), samples.claim(replicas=2)),
        (samples.claim("db.t3.micro"), samples.claim("db.r6g.large")),
    ],
    ids=["more-replicas", "another-class"],
)
def test_strict_cap_without_prices_denies_growth_it_cannot_count(
    old: claims.ClaimSpec, new: claims.ClaimSpec
) -> None:
    ruling = STRICT_CAP.decide(request(strict(), claim=new, old=old, priced=False))
    assert reasons(ruling) == ["BillingUnavailable"]


def test_strict_cap_without_prices_admits_more_storage_within_its_allowance() -> None:
    grown = request(
        strict(), claim=samples.claim(storage_gib=150), old=samples.claim(), priced=False
    )
    assert STRICT_CAP.decide(grown).denials == ()


def test_strict_cap_keeps_out_of_escrow_and_needs_its_allowance() -> None:
    assert not STRICT_CAP.escrow
    assert STRICT_CAP.needs == ("strictCap",)


# -- FailClosed and FailOpen --------------------------------------------------------------

FAIL_CLOSED = policies.RULES["FailClosed"]
FAIL_OPEN = policies.RULES["FailOpen"]


@pytest.mark.parametrize("priced", [True, False])
def test_fail_closed_denies_and_carries_the_conservative_cost(priced: bool) -> None:
    ruling = FAIL_CLOSED.decide(request(priced=priced))
    assert reasons(ruling) == ["BillingUnavailable"]
    assert ruling.mode is None
    assert ruling.cost == (pytest.approx(585.60) if priced else 0.0)
    assert ruling.warnings == (f"{WHY}: policy FailClosed, new claims and growth are denied",)


def test_fail_open_never_denies_and_says_how_far_over_budget() -> None:
    ruling = FAIL_OPEN.decide(request(usage=quotas.Usage(observed=9000)))
    assert ruling.denials == ()
    assert (ruling.mode, ruling.reason) == ("FailOpen", "FailOpen")
    assert ruling.cost == pytest.approx(585.60)
    assert ruling.warnings[0].endswith("projected 9,585.60, over budget 5,000.00 by 4,585.60")
    assert ruling.admitted.startswith("admitted by DatabaseQuota team-a without a budget check")


def test_fail_open_without_prices_admits_unpriced() -> None:
    ruling = FAIL_OPEN.decide(request(priced=False))
    assert (ruling.denials, ruling.cost) == ((), 0.0)
    assert ruling.warnings[0].endswith("not priced: no prices known")


# -- the registry -------------------------------------------------------------------------


def test_the_registry_is_keyed_by_each_rules_name_and_gives_the_policy_names() -> None:
    assert quotas.POLICIES == ("Conservative", "StrictCap", "FailClosed", "FailOpen")
    assert tuple(policies.RULES) == quotas.POLICIES
    for name, rule in policies.RULES.items():
        assert rule.name == name


def test_only_strict_cap_keeps_its_admissions_out_of_escrow() -> None:
    assert [name for name, rule in policies.RULES.items() if not rule.escrow] == ["StrictCap"]


def test_a_policy_not_in_the_registry_is_refused_when_the_quota_is_read() -> None:
    with pytest.raises(ValueError, match="policy must be one of Conservative, StrictCap"):
        samples.with_policy("Hope")
