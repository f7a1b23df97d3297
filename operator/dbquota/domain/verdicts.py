"""Admission decisions: whether one quota admits a claim, at what cost, and why.

:func:`decide` is the one entry point: one DatabaseQuota, one claim (and its old version for
an UPDATE), the namespace's :class:`~dbquota.domain.quotas.Usage` and the current
:class:`~dbquota.domain.billing.BillingSnapshot`. It returns a :class:`Decision`;
:func:`combine` folds the decisions of every quota of the namespace into one
:class:`Verdict` (denied if any quota denies). The flow, and where each step lives::

    hard caps            limits.hard_caps        every state, every policy, no price needed
    then one of:
      adds nothing       (here)                  an UPDATE with the same class and no more
                                                 replicas or storage: NoIncrease, no price
      healthy billing    quotes.healthy          Live, or Cached after failed syncs; a class
                         + limits.budget         missing from the catalog at the dearest
                                                 known class x safetyMargin
      degraded billing   quotes.conservative     the quota's policy rules:
                         + policies.RULES[name]  Conservative, StrictCap, FailClosed, FailOpen
    enforcement          (here)                  Enforce denies; Warn admits with a warning
                                                 carrying the denial; DryRun admits and only
                                                 records in ``message`` what it would have done

Degraded means what :func:`dbquota.domain.degradation.assess` says. Every denial is
collected (hard caps first; ``reason`` is the first one's) and enforcement applies to all of
them, hard caps included. ``cost`` is always what to reserve if the claim is admitted (the
growth of an UPDATE), so Warn and DryRun admissions reserve a meaningful amount:
conservative cost while degraded (0 when no prices are known at all). The words are
:mod:`dbquota.domain.wording`'s.

Called by :func:`dbquota.domain.admission.admit`. Pure: no I/O, no clock (``now`` is passed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dbquota.domain import (
    billing,
    claims,
    degradation,
    limits,
    policies,
    pricing,
    quotas,
    quotes,
    wording,
)

PricingMode = pricing.PricingMode
"""Re-exported: ``Decision.pricing`` is one of these (or None)."""

Reason = Literal[
    "WithinBudget",
    "NoIncrease",
    "WithinStrictCap",
    "FailOpen",
    "HardCapExceeded",
    "StrictCapExceeded",
    "BillingUnavailable",
    "BudgetExceeded",
    "InvalidQuota",
    "TooManyInFlight",
]
"""One CamelCase word per outcome (condition reason, metric label).

Admitted: ``WithinBudget`` (priced and fits), ``NoIncrease`` (an UPDATE that adds nothing),
``WithinStrictCap`` (StrictCap, degraded), ``FailOpen`` (FailOpen, degraded). Denied (or,
under Warn/DryRun, would be): ``HardCapExceeded``, ``StrictCapExceeded``,
``BillingUnavailable`` (FailClosed, or nothing to price with), ``BudgetExceeded``,
``InvalidQuota`` (the quota cannot be read; the CRD schema should prevent it),
``TooManyInFlight`` (the quota already holds ``--max-reservations`` admissions whose
objects have not shown up yet, or :data:`~dbquota.domain.reservations.MOST_HELD` whose
claims do not show their price yet).
"""


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What one DatabaseQuota says about one claim."""

    quota: str
    """Name of the DatabaseQuota that decided."""
    allowed: bool
    """Whether the claim is admitted (Warn and DryRun admit what Enforce would deny)."""
    would_deny: bool
    """Whether enforcement Enforce would deny it."""
    cost: float
    """Monthly cost to reserve if admitted: the claim's cost, or an UPDATE's growth (>= 0)."""
    pricing: PricingMode | None
    """How ``cost`` was priced; None when nothing was priced (an UPDATE that adds nothing,
    a FailClosed decision, or Conservative with no prices at all)."""
    degraded: bool
    """Whether billing was degraded for this quota (the policy applied)."""
    policy: quotas.Policy | None
    """The degradation policy that applied; None when billing was healthy."""
    reason: Reason
    """The outcome in one word; for a (would-be) denial, the first thing that failed."""
    message: str
    """For people: why, by how much, and on which pricing basis."""
    warnings: tuple[str, ...] = ()
    """Admission warnings: degradation, unknown classes, Warn-mode denials."""
    new_claims: int = 0
    """Claims this request adds to the namespace: 1 for a CREATE, 0 for an UPDATE."""
    storage_gib: int = 0
    """GiB of storage this request adds to the namespace (never negative)."""


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The namespace's answer: every quota's decision folded into one."""

    allowed: bool
    """False when any quota denies."""
    message: str = ""
    """The denying quotas' messages (or, when admitted, every quota's), joined by ``; ``."""
    warnings: tuple[str, ...] = ()
    """Every quota's warnings, each once, in order."""
    decisions: tuple[Decision, ...] = ()
    """Each quota's decision: what to reserve on which quota."""


def decide(
    *,
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    usage: quotas.Usage,
    snapshot: billing.BillingSnapshot,
    now: float,
) -> Decision:
    """Whether ``quota`` admits ``claim`` (an UPDATE of ``old_claim`` when given).

    ``usage`` is the namespace as it stands (for an UPDATE, ``old_claim`` included);
    ``now`` is epoch seconds, for staleness. See the module docstring for the rules.
    """
    state = degradation.assess(snapshot=snapshot, max_staleness=quota.max_staleness, now=now)
    new_claims = 1 if old_claim is None else 0
    storage_gib = claim.storage_growth(old_claim)
    if not claim.grows_from(old_claim):
        ruling = _adds_nothing(quota=quota, state=state)
    elif (
        not state.degraded
        and (
            quote := quotes.healthy(
                quota=quota, claim=claim, old_claim=old_claim, snapshot=snapshot, state=state
            )
        )
        is not None
    ):
        ruling = _healthy(quota=quota, claim=claim, old_claim=old_claim, usage=usage, quote=quote)
    else:  # degraded, or a unit with no price at all (e.g. vCPU before any requests price)
        request = policies.Degraded(
            quota=quota,
            claim=claim,
            old_claim=old_claim,
            usage=usage,
            why=state.describe(),
            quote=quotes.conservative(
                quota=quota, claim=claim, old_claim=old_claim, snapshot=snapshot
            ),
        )
        ruling = policies.RULES[quota.policy].decide(request)
    denials = (
        limits.hard_caps(quota=quota, usage=usage, new_claims=new_claims, storage_gib=storage_gib)
        + ruling.denials
    )
    allowed, message, warning = _enforce(quota=quota, denials=denials, admitted=ruling.admitted)
    return Decision(
        quota=quota.name,
        allowed=allowed,
        would_deny=bool(denials),
        cost=ruling.cost,
        pricing=ruling.mode,
        degraded=state.degraded,
        policy=quota.policy if state.degraded else None,
        reason=denials[0].reason if denials else ruling.reason,
        message=message,
        warnings=ruling.warnings + warning + _currency(quota, snapshot),
        new_claims=new_claims,
        storage_gib=storage_gib,
    )


def _currency(quota: quotas.QuotaSpec, snapshot: billing.BillingSnapshot) -> tuple[str, ...]:
    """The warning when billing prices in another currency than the quota's budget."""
    currency = billing.other_currency(snapshot.prices, quota.currency)
    return (wording.other_currency(quota, currency),) if currency else ()


def _adds_nothing(*, quota: quotas.QuotaSpec, state: degradation.Degradation) -> policies.Ruling:
    """An UPDATE that adds nothing: admitted with no price, in every billing state."""
    warnings = (
        (wording.adds_nothing_warning(why=state.describe(), policy=quota.policy),)
        if state.degraded
        else ()
    )
    return policies.Ruling(
        cost=0.0,
        mode=None,
        reason="NoIncrease",
        admitted=wording.admitted(quota, wording.ADDS_NOTHING),
        warnings=warnings,
    )


def _healthy(
    *,
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    usage: quotas.Usage,
    quote: quotes.Quote,
) -> policies.Ruling:
    """Healthy billing: the current catalog's price must fit the budget."""
    label = "this claim" if old_claim is None else "this update"
    warnings = (
        (
            wording.missing_class_warning(
                quota=quota, instance_class=claim.instance_class, what=quote.missing_what
            ),
        )
        if quote.missing_class
        else ()
    )
    return policies.Ruling(
        cost=quote.cost,
        mode=quote.mode,
        reason="WithinBudget",
        admitted=wording.within_budget(quota=quota, usage=usage, quote=quote, label=label),
        denials=limits.budget(quota=quota, usage=usage, quote=quote, label=label),
        warnings=warnings,
    )


def _enforce(
    *, quota: quotas.QuotaSpec, denials: Sequence[limits.Denial], admitted: str
) -> tuple[bool, str, tuple[str, ...]]:
    """(allowed, message, a Warn-mode warning if any) under the quota's enforcement."""
    if not denials:
        return True, admitted, ()
    denial = wording.denied(quota, (d.text for d in denials))
    if quota.enforcement == "Enforce":
        return False, denial, ()
    if quota.enforcement == "Warn":
        warning = wording.warn_mode(denial)
        return True, warning, (warning,)
    return True, wording.dry_run(denial), ()


def combine(decisions: Sequence[Decision]) -> Verdict:
    """Fold the decisions of every quota of a namespace: denied if any quota denies.

    No decisions (a namespace without quotas) admits; whether that is wanted is the
    caller's setting (``--no-quota-policy``).
    """
    denying = [d for d in decisions if not d.allowed]
    warnings = tuple(dict.fromkeys(w for d in decisions for w in d.warnings))
    return Verdict(
        allowed=not denying,
        message="; ".join(d.message for d in (denying or decisions)),
        warnings=warnings,
        decisions=tuple(decisions),
    )
