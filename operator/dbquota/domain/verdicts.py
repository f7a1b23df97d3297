"""Admission decisions: whether one quota admits a claim, at what cost, and why, in words.

:func:`decide` is the one entry point: one DatabaseQuota, one claim (and its old version for
an UPDATE), the namespace's :class:`~dbquota.domain.quotas.Usage` and the current
:class:`~dbquota.domain.billing.BillingSnapshot`. It returns a :class:`Decision`;
:func:`combine` folds the decisions of every quota of the namespace into one
:class:`Verdict` (denied if any quota denies). The order of the checks:

1. **Hard caps** (``hard.claims``, ``hard.storageGiB``, totals over the namespace) need no
   prices and hold in every billing state and policy.
2. An UPDATE that adds nothing (same class, no more replicas or storage) is admitted with
   no price (``NoIncrease``), whatever the billing state, as ResourceQuota admits updates
   that do not raise usage.
3. **Healthy billing** prices at the current catalog (``Live``, or ``Cached`` after failed
   syncs) and checks the budget; a class missing from the catalog is priced conservatively.
4. **Degraded billing** (see :mod:`dbquota.domain.degradation`) applies the quota's policy:

   - ``Conservative``: highest known unit prices x safetyMargin, then the budget check;
     with no prices at all nothing can be priced and growth is denied
     (``BillingUnavailable``).
   - ``StrictCap``: at most ``strictCap.claims`` new claims and ``strictCap.storageGiB``
     GiB of storage (new claims plus grown ones) are admitted while degraded, counted by
     ``Usage.degraded_claims`` / ``Usage.degraded_storage_gib``. *Cost accounting:* when
     any prices are known, the claim is also priced conservatively (highest known x
     safetyMargin), that cost must fit the budget and is what gets reserved, so StrictCap
     is never looser than Conservative. With no prices at all, the cost is unknown: the
     claim is admitted within the allowance, ``cost`` is 0 (nothing reserved; the
     reconciler sees the real cost once billing recovers), so the allowance alone bounds
     the overrun; growth the allowance cannot count (another class, more replicas on an
     UPDATE) is then denied (``BillingUnavailable``).
   - ``FailClosed``: denies new claims and growth (``BillingUnavailable``).
   - ``FailOpen``: admits without a budget check, with a warning that says what the claim
     would cost at highest known prices and whether that exceeds the budget.

``cost`` is always what to reserve if the claim is admitted (the growth of an UPDATE), so
Warn and DryRun admissions reserve a meaningful amount: conservative cost while degraded
(0 when no prices are known at all). Enforcement applies to every denial, hard caps
included: ``Enforce`` denies, ``Warn`` admits with a warning carrying the denial text,
``DryRun`` admits and only records in ``message`` what it would have done.

Called by the admission service and handler. Pure: no I/O, no clock (``now`` is passed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from dbquota.domain import billing, claims, degradation, pricing, quotas

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
objects have not shown up yet).
"""

ADMITTED_REASONS: tuple[Reason, ...] = ("WithinBudget", "NoIncrease", "WithinStrictCap", "FailOpen")
DENIED_REASONS: tuple[Reason, ...] = (
    "HardCapExceeded",
    "StrictCapExceeded",
    "BillingUnavailable",
    "BudgetExceeded",
    "InvalidQuota",
    "TooManyInFlight",
)


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


@dataclass(frozen=True)
class _Denial:
    reason: Reason
    text: str


@dataclass(frozen=True)
class _Outcome:
    """What a pricing path found, before enforcement: denials go to a shared list."""

    cost: float
    mode: PricingMode | None
    reason: Reason
    admitted: str
    """The message if nothing denies."""


@dataclass(frozen=True)
class _Priced:
    cost: float
    basis: str
    """The pricing basis for messages, e.g. ``prices live``."""


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _factor(value: float) -> str:
    return f"{value:g}"


def _conservative_basis(quota: quotas.QuotaSpec) -> str:
    return f"conservative: highest known prices x {_factor(quota.safety_margin)}"


def _hard_cap_denials(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, new_claims: int, storage_gib: int
) -> list[_Denial]:
    denials: list[_Denial] = []
    cap = quota.hard.claims
    if cap is not None and new_claims > 0 and usage.claims + new_claims > cap:
        denials.append(
            _Denial(
                "HardCapExceeded",
                f"{usage.claims + new_claims:,} claims would exceed the hard cap of {cap:,} "
                f"claims ({usage.claims:,} in the namespace + this claim)",
            )
        )
    cap = quota.hard.storage_gib
    if cap is not None and storage_gib > 0 and usage.storage_gib + storage_gib > cap:
        total = usage.storage_gib + storage_gib
        denials.append(
            _Denial(
                "HardCapExceeded",
                f"storage would total {total:,} GiB, exceeding the hard cap of {cap:,} GiB "
                f"by {total - cap:,} ({usage.storage_gib:,} GiB in the namespace + "
                f"{storage_gib:,} GiB for this {'claim' if new_claims else 'update'})",
            )
        )
    return denials


def _budget_denial(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, priced: _Priced, label: str
) -> _Denial | None:
    projected = usage.spend + priced.cost
    if projected <= quota.monthly_budget:
        return None
    return _Denial(
        "BudgetExceeded",
        f"projected {_money(projected)} {quota.currency}/month exceeds budget "
        f"{_money(quota.monthly_budget)} by {_money(projected - quota.monthly_budget)} "
        f"({_breakdown(usage=usage, priced=priced, label=label)})",
    )


def _breakdown(*, usage: quotas.Usage, priced: _Priced, label: str) -> str:
    escrowed = (
        f" (of which {_money(usage.escrowed)} held by other webhook replicas for claims they "
        "may admit)"
        if usage.escrowed > 0
        else ""
    )
    return (
        f"observed {_money(usage.observed)} + reserved {_money(usage.reserved)}{escrowed} + "
        f"{label} {_money(priced.cost)}; {priced.basis}"
    )


def _within_budget(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, priced: _Priced, label: str
) -> str:
    projected = usage.spend + priced.cost
    return (
        f"admitted by DatabaseQuota {quota.name}: projected {_money(projected)} "
        f"{quota.currency}/month within budget {_money(quota.monthly_budget)}, "
        f"{_money(quota.monthly_budget - projected)} left "
        f"({_breakdown(usage=usage, priced=priced, label=label)})"
    )


def _price_healthy(
    *,
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    snapshot: billing.BillingSnapshot,
    state: degradation.Degradation,
    warnings: list[str],
) -> tuple[_Priced, PricingMode]:
    """Current prices; a class missing from the catalog priced as the dearest known x margin.

    What an UPDATE gives up is credited at current prices, or at nothing if its class is
    missing from the catalog (we cannot know what it costs, so it cannot pay for growth).
    """
    latest = snapshot.prices
    highest = pricing.highest_known(snapshot.highest, latest)
    if latest is None or highest is None:  # assess() calls this degraded; keep mypy honest
        raise ValueError("healthy billing needs a price catalog")

    high = pricing.live_unit_prices(
        instance_class=claim.instance_class, prices=latest
    ) or pricing.conservative_unit_prices(
        instance_class=claim.instance_class, highest=highest, margin=quota.safety_margin
    )
    low = pricing.ZERO
    if old_claim is not None:
        low = (
            pricing.live_unit_prices(instance_class=old_claim.instance_class, prices=latest)
            or pricing.ZERO
        )
    cost = pricing.growth_cost(claim=claim, old_claim=old_claim, high=high, low=low)
    if claim.instance_class not in latest.instance_hourly:
        warnings.append(
            f"DatabaseQuota {quota.name}: instance class {claim.instance_class} is not in the "
            f"price catalog; priced as the dearest known class x "
            f"{_factor(quota.safety_margin)}"
        )
        basis = (
            f"conservative: class {claim.instance_class} not in the price catalog, "
            f"priced as the dearest known class x {_factor(quota.safety_margin)}"
        )
        return _Priced(cost, basis), "Conservative"
    if state.healthy_mode == "Cached":
        basis = f"cached prices, {degradation.describe_age(state.staleness)} old"
        return _Priced(cost, basis), "Cached"
    return _Priced(cost, "prices live"), "Live"


def _price_conservatively(
    *,
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    snapshot: billing.BillingSnapshot,
) -> _Priced | None:
    """Highest known prices x margin for what grows, latest (or zero) for what shrinks."""
    highest = pricing.highest_known(snapshot.highest, snapshot.prices)
    if highest is None:
        return None
    low = pricing.ZERO
    if old_claim is not None and snapshot.prices is not None:
        low = (
            pricing.live_unit_prices(
                instance_class=old_claim.instance_class, prices=snapshot.prices
            )
            or pricing.ZERO
        )
    cost = pricing.growth_cost(
        claim=claim,
        old_claim=old_claim,
        high=pricing.conservative_unit_prices(
            instance_class=claim.instance_class, highest=highest, margin=quota.safety_margin
        ),
        low=low,
    )
    return _Priced(cost, _conservative_basis(quota))


def _strict_cap_denials(
    *,
    quota: quotas.QuotaSpec,
    usage: quotas.Usage,
    new_claims: int,
    storage_gib: int,
    why: str,
) -> list[_Denial]:
    cap = quota.strict_cap
    denials: list[_Denial] = []
    if (
        cap.claims is not None
        and new_claims > 0
        and usage.degraded_claims + new_claims > cap.claims
    ):
        denials.append(
            _Denial(
                "StrictCapExceeded",
                f"{why}: policy StrictCap admits at most {cap.claims:,} new claims while "
                f"degraded and {usage.degraded_claims:,} already were",
            )
        )
    if (
        cap.storage_gib is not None
        and storage_gib > 0
        and usage.degraded_storage_gib + storage_gib > cap.storage_gib
    ):
        denials.append(
            _Denial(
                "StrictCapExceeded",
                f"{why}: policy StrictCap admits at most {cap.storage_gib:,} GiB of new "
                f"storage while degraded; {usage.degraded_storage_gib:,} GiB already were "
                f"and this {'claim' if new_claims else 'update'} adds {storage_gib:,} GiB",
            )
        )
    return denials


def _apply_enforcement(
    *, quota: quotas.QuotaSpec, denials: Sequence[_Denial], admitted: str, warnings: list[str]
) -> tuple[bool, str]:
    """(allowed, message) under the quota's enforcement; may add a Warn-mode warning."""
    if not denials:
        return True, admitted
    denial = f"denied by DatabaseQuota {quota.name}: " + "; ".join(d.text for d in denials)
    if quota.enforcement == "Enforce":
        return False, denial
    if quota.enforcement == "Warn":
        warning = f"enforcement Warn: would be {denial}"
        warnings.append(warning)
        return True, warning
    return True, f"enforcement DryRun: would have been {denial}"


@dataclass(frozen=True)
class _Degraded:
    """One request that grows, under degraded billing: what every policy reads."""

    quota: quotas.QuotaSpec
    claim: claims.ClaimSpec
    old_claim: claims.ClaimSpec | None
    usage: quotas.Usage
    why: str
    """``billing degraded (...)``."""
    priced: _Priced | None
    """Conservative price, None when no prices are known at all."""

    @property
    def kind(self) -> str:
        return "claim" if self.old_claim is None else "update"

    @property
    def label(self) -> str:
        return f"this {self.kind}"

    @property
    def how(self) -> str:
        if self.priced is None:
            return "not priced: no prices known"
        margin = _factor(self.quota.safety_margin)
        return f"priced conservatively at highest known prices x {margin}"

    def budget_denial(self, priced: _Priced) -> _Denial | None:
        return _budget_denial(quota=self.quota, usage=self.usage, priced=priced, label=self.label)

    def within_budget(self, priced: _Priced) -> str:
        return _within_budget(quota=self.quota, usage=self.usage, priced=priced, label=self.label)


_PolicyRule = Callable[[_Degraded, list[_Denial], list[str]], _Outcome]


def _conservative(req: _Degraded, denials: list[_Denial], warnings: list[str]) -> _Outcome:
    """Highest known prices x margin, then the budget; nothing to price with denies."""
    warnings.append(f"{req.why}: policy Conservative, {req.how}")
    if req.priced is None:
        denials.append(
            _Denial(
                "BillingUnavailable",
                f"{req.why}: policy Conservative cannot price this {req.kind} without any "
                "known prices",
            )
        )
        return _Outcome(0.0, None, "BillingUnavailable", "")
    _append(denials, req.budget_denial(req.priced))
    return _Outcome(req.priced.cost, "Conservative", "WithinBudget", req.within_budget(req.priced))


def _strict_cap(req: _Degraded, denials: list[_Denial], warnings: list[str]) -> _Outcome:
    """The allowance, plus the conservative budget check when any prices are known."""
    cap, usage = req.quota.strict_cap, req.usage
    of_claims = "unlimited" if cap.claims is None else f"{cap.claims:,}"
    of_storage = "unlimited" if cap.storage_gib is None else f"{cap.storage_gib:,}"
    warnings.append(
        f"{req.why}: policy StrictCap, {usage.degraded_claims:,} of {of_claims} new claims "
        f"and {usage.degraded_storage_gib:,} of {of_storage} GiB already admitted "
        f"while degraded; {req.how}"
    )
    denials.extend(
        _strict_cap_denials(
            quota=req.quota,
            usage=usage,
            new_claims=1 if req.old_claim is None else 0,
            storage_gib=req.claim.storage_growth(req.old_claim),
            why=req.why,
        )
    )
    if req.priced is not None:
        _append(denials, req.budget_denial(req.priced))
        return _Outcome(
            req.priced.cost, "StrictCap", "WithinStrictCap", req.within_budget(req.priced)
        )
    old = req.old_claim
    if old is not None and (
        req.claim.instance_class != old.instance_class or req.claim.replicas > old.replicas
    ):
        denials.append(
            _Denial(
                "BillingUnavailable",
                f"{req.why}: policy StrictCap cannot admit another instance class or more "
                "replicas without any known prices",
            )
        )
    return _Outcome(
        0.0,
        "StrictCap",
        "WithinStrictCap",
        f"admitted by DatabaseQuota {req.quota.name} within StrictCap's allowance while "
        "billing is degraded; not priced: no prices known",
    )


def _fail_closed(req: _Degraded, denials: list[_Denial], warnings: list[str]) -> _Outcome:
    """Denies; the conservative cost is still what Warn/DryRun would reserve."""
    warnings.append(f"{req.why}: policy FailClosed, new claims and growth are denied")
    denials.append(
        _Denial(
            "BillingUnavailable",
            f"{req.why}: policy FailClosed denies new claims and growth until billing recovers",
        )
    )
    cost = 0.0 if req.priced is None else req.priced.cost
    return _Outcome(cost, None, "BillingUnavailable", "")


def _fail_open(req: _Degraded, denials: list[_Denial], warnings: list[str]) -> _Outcome:
    """Admits without a budget check, saying what it would cost and whether that fits."""
    del denials  # FailOpen adds none
    quota, priced = req.quota, req.priced
    if priced is None:
        estimate = "not priced: no prices known"
    else:
        projected = req.usage.spend + priced.cost
        excess = projected - quota.monthly_budget
        fits = (
            f"over budget {_money(quota.monthly_budget)} by {_money(excess)}"
            if excess > 0
            else f"within budget {_money(quota.monthly_budget)}"
        )
        estimate = (
            f"at highest known prices x {_factor(quota.safety_margin)} {req.label} costs "
            f"{_money(priced.cost)} {quota.currency}/month, projected {_money(projected)}, "
            f"{fits}"
        )
    warnings.append(f"{req.why}: policy FailOpen, admitted without a budget check; {estimate}")
    return _Outcome(
        0.0 if priced is None else priced.cost,
        "FailOpen",
        "FailOpen",
        f"admitted by DatabaseQuota {quota.name} without a budget check (policy FailOpen, "
        f"billing degraded); {estimate}",
    )


_POLICY_RULES: Mapping[quotas.Policy, _PolicyRule] = {
    "Conservative": _conservative,
    "StrictCap": _strict_cap,
    "FailClosed": _fail_closed,
    "FailOpen": _fail_open,
}


def _append(denials: list[_Denial], denial: _Denial | None) -> None:
    if denial is not None:
        denials.append(denial)


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
    why = state.describe()
    new_claims = 1 if old_claim is None else 0
    storage_gib = claim.storage_growth(old_claim)
    label = "this claim" if old_claim is None else "this update"
    warnings: list[str] = []
    denials = _hard_cap_denials(
        quota=quota, usage=usage, new_claims=new_claims, storage_gib=storage_gib
    )
    if not claim.grows_from(old_claim):
        if state.degraded:
            warnings.append(
                f"{why}: policy {quota.policy} applies, but this update adds nothing, "
                "so it needs no price"
            )
        outcome = _Outcome(
            0.0,
            None,
            "NoIncrease",
            f"admitted by DatabaseQuota {quota.name}: this update adds nothing to pay for",
        )
    elif not state.degraded:
        priced, mode = _price_healthy(
            quota=quota,
            claim=claim,
            old_claim=old_claim,
            snapshot=snapshot,
            state=state,
            warnings=warnings,
        )
        _append(denials, _budget_denial(quota=quota, usage=usage, priced=priced, label=label))
        outcome = _Outcome(
            priced.cost,
            mode,
            "WithinBudget",
            _within_budget(quota=quota, usage=usage, priced=priced, label=label),
        )
    else:
        request = _Degraded(
            quota=quota,
            claim=claim,
            old_claim=old_claim,
            usage=usage,
            why=why,
            priced=_price_conservatively(
                quota=quota, claim=claim, old_claim=old_claim, snapshot=snapshot
            ),
        )
        outcome = _POLICY_RULES[quota.policy](request, denials, warnings)
    allowed, message = _apply_enforcement(
        quota=quota, denials=denials, admitted=outcome.admitted, warnings=warnings
    )
    return Decision(
        quota=quota.name,
        allowed=allowed,
        would_deny=bool(denials),
        cost=outcome.cost,
        pricing=outcome.mode,
        degraded=state.degraded,
        policy=quota.policy if state.degraded else None,
        reason=denials[0].reason if denials else outcome.reason,
        message=message,
        warnings=tuple(warnings),
        new_claims=new_claims,
        storage_gib=storage_gib,
    )


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
