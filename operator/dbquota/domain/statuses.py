"""A DatabaseQuota's status, computed from its spec, the billing snapshot and its claims.

Pure: the reconciler (:mod:`dbquota.services.reconciling`) calls :func:`quota_status`
inside a compare-and-swap write and posts Events for what :class:`Refresh` reports.

Conditions (Kubernetes API conventions; each present from the first visit):

- ``Ready``: ``True/Reconciled`` once the status reflects spec and billing;
  ``False/InvalidSpec`` when the spec cannot be read.
- ``BillingAvailable``: ``True/BillingLive``; ``False`` with ``CircuitOpen``,
  ``CircuitHalfOpen``, ``BillingStale`` or ``NoBillingData`` while degraded.
- ``BudgetExceeded``: ``True/OverBudget`` when observed + reserved exceed the budget,
  else ``False/WithinBudget``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dbquota.domain import billing, conditions, degradation, escrow, quotas, reservations
from dbquota.domain.resources import BillingStatus, Escrow, QuotaObject, QuotaStatus, Reservation


@dataclass(frozen=True)
class Refresh:
    """A new status and what changed that people should hear about (as Events)."""

    status: QuotaStatus
    released: tuple[tuple[Reservation, reservations.ReleaseReason], ...]
    budget_crossed: bool | None
    """True: went over budget; False: back within it; None: no change."""
    adopted: tuple[Reservation, ...] = ()
    """Reservations taken for claims that existed without one."""
    expired: tuple[Escrow, ...] = ()
    """Escrow of replicas that stopped renewing it, let go."""


def _money(value: float) -> str:
    return f"{value:,.2f}"


def billing_status(
    *, snapshot: billing.BillingSnapshot, max_staleness: float, now: float
) -> tuple[BillingStatus, degradation.Degradation]:
    """``status.billing`` for a quota with this ``maxStaleness``, and the assessment."""
    health = snapshot.health
    assessed = degradation.assess(snapshot=snapshot, max_staleness=max_staleness, now=now)
    status = BillingStatus(
        circuitState=health.circuit_state,
        degraded=assessed.degraded,
        degradedReason=assessed.describe() if assessed.degraded else "",
        fallbackHitRate=round(health.fallback_hit_rate, 4),
        consecutiveFailures=health.consecutive_failures,
        lastError=health.last_error[:512],
    )
    if health.last_success is not None:
        status["lastSuccessfulSync"] = reservations.to_rfc3339(health.last_success)
    if math.isfinite(assessed.staleness):
        status["stalenessSeconds"] = int(assessed.staleness)
    return status, assessed


def _billing_condition(
    snapshot: billing.BillingSnapshot, assessed: degradation.Degradation
) -> tuple[conditions.Status, str, str]:
    state = snapshot.health.circuit_state
    if not assessed.degraded:
        age = degradation.describe_age(assessed.staleness)
        return "True", "BillingLive", f"billing data {age} old, circuit {state}"
    reason = {"Open": "CircuitOpen", "HalfOpen": "CircuitHalfOpen"}.get(state)
    if reason is None:
        reason = (
            "NoBillingData"
            if snapshot.health.last_success is None or not (degradation.has_prices(snapshot))
            else "BillingStale"
        )
    return "False", reason, assessed.describe()


def quota_status(
    *,
    quota: QuotaObject,
    snapshot: billing.BillingSnapshot,
    claims: Sequence[reservations.ClaimRef],
    now: float,
    grace: float,
) -> Refresh:
    """The quota's whole status after one reconcile (reservations settled)."""
    meta = quota.get("metadata", {})
    generation = int(meta.get("generation", 0))
    old = quota.get("status", {})
    current = list(old.get("conditions", []))
    stamp = reservations.to_rfc3339(now)

    def cond(type_: str, status: conditions.Status, reason: str, message: str) -> None:
        nonlocal current
        current = conditions.set_condition(
            current,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            generation=generation,
            now=stamp,
        )

    try:
        spec = quotas.parse_quota(name=meta.get("name", "?"), spec=quota.get("spec", {}))
    except ValueError as exc:
        cond("Ready", "False", "InvalidSpec", str(exc))
        current = conditions.initial(current, now=stamp, generation=generation)
        return Refresh(
            status=QuotaStatus(conditions=current, observedGeneration=generation),
            released=(),
            budget_crossed=None,
        )

    kept, released = reservations.settle(
        held=old.get("reservations", []), claims=claims, costs=snapshot.costs, now=now, grace=grace
    )
    adopted = reservations.adopt(held=kept, claims=claims, costs=snapshot.costs, now=now)
    kept += adopted
    escrowed, expired = escrow.prune(escrow.entries_of(old), now=now, after=escrow.PRUNE_AFTER)
    whole = {str(r.get("claim", "")) for r in kept if r.get("newClaim")}
    observed = reservations.observed_spend(claims=claims, costs=snapshot.costs, reserved=whole)
    reserved = round(sum(float(r.get("cost", 0.0)) for r in kept), 2)
    remaining = round(spec.monthly_budget - observed - reserved, 2)
    billing_, assessed = billing_status(
        snapshot=snapshot, max_staleness=spec.max_staleness, now=now
    )

    cond("Ready", "True", "Reconciled", "status reflects the spec, the billing data and claims")
    cond("BillingAvailable", *_billing_condition(snapshot, assessed))
    over = remaining < 0
    spent = (
        f"{_money(observed + reserved)} of {_money(spec.monthly_budget)} {spec.currency}"
        f"/month (observed {_money(observed)} + reserved {_money(reserved)})"
    )
    if over:
        cond(
            "BudgetExceeded", "True", "OverBudget", f"over budget by {_money(-remaining)}: {spent}"
        )
    else:
        cond("BudgetExceeded", "False", "WithinBudget", f"{_money(remaining)} left: {spent}")
    was_over = next(
        (
            c["status"] == "True"
            for c in old.get("conditions", [])
            if c["type"] == "BudgetExceeded" and c["status"] != "Unknown"
        ),
        None,
    )
    return Refresh(
        status=QuotaStatus(
            observedGeneration=generation,
            spend={"observed": observed, "reserved": reserved, "remaining": remaining},
            billing=billing_,
            reservations=kept,
            conditions=current,
            **({"escrow": escrowed} if expired else {}),
        ),
        released=tuple(released),
        budget_crossed=_crossing(was_over=was_over, over=over),
        adopted=tuple(adopted),
        expired=tuple(expired),
    )


def _crossing(*, was_over: bool | None, over: bool) -> bool | None:
    """True on going over budget (also on the first evaluation), False on coming back."""
    if was_over is None:
        return True if over else None
    return over if was_over != over else None
