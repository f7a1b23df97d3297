"""A DatabaseQuota's status, recomputed from its spec, its claims and the billing snapshot.

Pure: the reconciler (:mod:`dbquota.services.reconciling`) runs :func:`quota_status`, a
slice of claims at a time, before a compare-and-swap write, and posts Events for what
:class:`Refresh` reports. One visit settles the reservations in flight
(:func:`dbquota.domain.reservations.settle`), drops the escrow of replicas whose lease
lapsed and adopts what they left unwritten, recounts the totals from the claims
(:func:`dbquota.domain.usage.recount`), and writes billing health and the conditions.

Conditions (Kubernetes API conventions; each present from the first visit):

- ``Ready``: ``True/Reconciled`` while the quota can be enforced as specified;
  ``False/BillingUnavailable`` while the billing data is older than the quota's
  ``maxStaleness`` (or there never was any), so decisions follow the degradation policy
  rather than prices; ``False/InvalidSpec`` when the spec cannot be read (every other
  condition is then ``Unknown/InvalidSpec``: none is evaluated, and none is left saying
  what an earlier spec gave). A quota that is over budget is Ready: denying claims is
  the quota working. Health checks built on ``Ready`` (Argo CD, Flux, kstatus) thus show
  a quota that cannot see prices as degraded, and one that is merely spent as healthy.
- ``BillingAvailable``: ``True/BillingLive``; ``False`` with ``CircuitOpen``,
  ``CircuitHalfOpen``, ``BillingStale`` or ``NoBillingData`` while degraded (a brief
  breaker trip with fresh data is shown here, not in ``Ready``).
- ``BudgetExceeded``: ``True/OverBudget`` when observed + reserved exceed the budget,
  else ``False/WithinBudget``.
- ``BudgetThresholdReached``: ``True/ThresholdReached`` once observed + reserved reach one
  of ``spec.alerts.thresholds`` (percentages of the budget; the message names the highest
  reached), ``False/BelowThresholds`` below the lowest, ``False/NoThresholds`` with none.

Budget alerts: the highest threshold reached is kept in ``status.alerts.reached``, and a
refresh that moves it reports each threshold passed (:class:`Crossing`, one per threshold,
up or down) for the reconciler to announce. Because what was announced is in the status,
a restarted operator or a new leader announces nothing again.

Size: one reconcile's status in one module (conditions, holds, totals, billing health,
alerts), because every field is written from the same visit and a reader checking what the
status says needs all of them side by side; each is one short step. ``quota_status``
reads as that list of steps, one status field or condition each, and is kept whole so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from dbquota.domain import (
    billing,
    conditions,
    degradation,
    escrow,
    pricing,
    quotas,
    reservations,
    usage,
    wording,
)
from dbquota.domain.resources import (
    Alerts,
    BillingStatus,
    Escrow,
    QuotaObject,
    QuotaStatus,
    Reservation,
)
from dbquota.kits import steps, timestamps


@dataclass(frozen=True)
class Crossing:
    """One alert threshold passed by a refresh (a ``BudgetThresholdCrossed`` Event)."""

    threshold: int
    """Percent of the monthly budget."""
    upward: bool
    """True: spend reached it; False: spend fell back below it."""
    message: str = ""
    """For people (the Event's note)."""


@dataclass(frozen=True)
class Refresh:
    """A new status and what changed that people should hear about (as Events)."""

    status: QuotaStatus
    released: tuple[tuple[Reservation, reservations.ReleaseReason], ...] = ()
    budget_crossed: bool | None = None
    """True: went over budget; False: back within it; None: no change."""
    budget_note: str = ""
    """What to say of a budget crossing: what is over or left, with the figures."""
    adopted: tuple[Reservation, ...] = ()
    """Reservations taken for claims that existed without a price or a reservation."""
    expired: tuple[Escrow, ...] = ()
    """Escrow of replicas whose lease lapsed, let go."""
    confirmed: int = 0
    """Reservations that ended because their claim now carries the price."""
    crossed: tuple[Crossing, ...] = ()
    """Alert thresholds passed since the last announced (``status.alerts.reached``)."""
    spec: quotas.QuotaSpec | None = field(default=None, compare=False)
    """The parsed spec (None when invalid)."""


UNREADABLE = "not evaluated: the spec cannot be read (the Ready condition says why)"
"""The message of every condition but ``Ready`` while the spec is invalid."""


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
        leftOutOfListing=health.left_out,
    )
    # Written as a merge patch: a field left out would keep an older value, so an unknown
    # one is null (removed). A replica that never synced can join one that did.
    status["lastSuccessfulSync"] = (
        None if health.last_success is None else timestamps.to_rfc3339(health.last_success)
    )
    status["stalenessSeconds"] = (
        int(assessed.staleness) if math.isfinite(assessed.staleness) else None
    )
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


def _ready_condition(
    spec: quotas.QuotaSpec, snapshot: billing.BillingSnapshot, now: float
) -> tuple[conditions.Status, str, str]:
    if currency := billing.other_currency(snapshot.prices, spec.currency):
        return "False", "CurrencyMismatch", wording.other_currency(spec, currency)
    staleness = snapshot.health.staleness(now=now)
    if staleness <= spec.max_staleness and degradation.has_prices(snapshot):
        return "True", "Reconciled", "status reflects the spec, the billing data and claims"
    seen = (
        "no billing data yet"
        if not math.isfinite(staleness) or not degradation.has_prices(snapshot)
        else f"billing data {degradation.describe_age(staleness)} old"
    )
    return (
        "False",
        "BillingUnavailable",
        f"{seen}, beyond maxStaleness {degradation.seconds(spec.max_staleness)}: claims are "
        f"decided by degradation policy {spec.policy}",
    )


def threshold_reached(*, thresholds: Sequence[int], spend: float, budget: float) -> int:
    """The highest of ``thresholds`` (percent of ``budget``) that ``spend`` has reached, 0
    when none; compared in whole cents, as the status shows money."""
    cents = round(spend * 100)
    return max((t for t in thresholds if cents >= round(budget * t)), default=0)


def threshold_crossings(
    *, thresholds: Sequence[int], was: int, reached: int, spent: str = ""
) -> tuple[Crossing, ...]:
    """The thresholds between the one announced last (``was``) and the one ``reached`` now:
    upward crossings lowest first, downward ones highest first (the order they were passed).
    ``spent`` ("812.00 of 1,000.00 USD/month ...") ends each message."""
    tail = f": {spent}" if spent else ""
    if reached > was:
        return tuple(
            Crossing(t, upward=True, message=f"spend reached {t}% of the monthly budget{tail}")
            for t in thresholds
            if was < t <= reached
        )
    return tuple(
        Crossing(t, upward=False, message=f"spend fell below {t}% of the monthly budget{tail}")
        for t in sorted(thresholds, reverse=True)
        if reached < t <= was
    )


def _announced(old: QuotaStatus) -> int:
    reached = (old.get("alerts") or {}).get("reached", 0)
    return reached if isinstance(reached, int) and not isinstance(reached, bool) else 0


def _threshold_condition(
    spec: quotas.QuotaSpec, *, reached: int
) -> tuple[conditions.Status, str, str]:
    thresholds = spec.alert_thresholds
    if not thresholds:
        return "False", "NoThresholds", "no budget alerts: spec.alerts.thresholds is not set"
    if not reached:
        return "False", "BelowThresholds", f"below the lowest threshold, {thresholds[0]}%"
    higher = [t for t in thresholds if t > reached]
    following = f", next {higher[0]}%" if higher else ""
    return "True", "ThresholdReached", f"threshold {reached}% reached{following}"


Pricer = Callable[[reservations.ClaimRef, quotas.QuotaSpec], tuple[float, str | None]]


def price_orphan(
    snapshot: billing.BillingSnapshot,
) -> Pricer:
    """How the reconciler prices a claim it adopts (see :func:`dbquota.domain.pricing.estimate`):
    no pricing mode when it cannot, and then it is not adopted (:class:`_Holds`)."""

    def price(claim: reservations.ClaimRef, spec: quotas.QuotaSpec) -> tuple[float, str | None]:
        if claim.spec is None:
            return 0.0, None  # not adopted (:class:`_Holds`)
        return pricing.estimate(claim=claim.spec, snapshot=snapshot, margin=spec.safety_margin)

    return price


def price_foreign(
    snapshot: billing.BillingSnapshot, spec: quotas.QuotaSpec, *, degraded: bool
) -> usage.Estimate:
    """How the recount prices another operator's object from its spec: at the current
    catalog, or at the highest known prices x the quota's ``safetyMargin`` while billing
    is ``degraded`` for this quota (then in its degraded totals, which StrictCap caps), as
    an admission would (:func:`dbquota.domain.pricing.estimate`)."""

    def price(claim: reservations.ClaimRef) -> tuple[float, bool]:
        if claim.spec is None:
            return 0.0, degraded
        cost, _ = pricing.estimate(
            claim=claim.spec, snapshot=snapshot, margin=spec.safety_margin, degraded=degraded
        )
        return cost, degraded

    return price


def quota_status(
    *,
    quota: QuotaObject,
    snapshot: billing.BillingSnapshot,
    claims: Sequence[reservations.ClaimRef],
    now: float,
    grace: float,
    ages: reservations.Ages,
    live: Callable[[str], bool] = lambda _: True,
    deleted: Collection[str] = (),
    claims_current: bool = True,
    unwritten: Collection[str] = (),
    shared: Callable[[str], bool] = usage.unshared,
) -> steps.Steps[Refresh]:
    """The quota's whole status after one reconcile (module docstring), yielding after
    each slice of ``claims`` (:mod:`dbquota.kits.steps`): the reconciler runs it between
    admission reviews, each delayed by one slice at most.

    ``unwritten`` are uids of claims that this replica admitted from its escrow and has
    not written yet, as of ``quota``: its escrow entry still holds them, so they are not
    counted again, even once their claims show their price (this replica's publisher
    prices them from its ledger without waiting for the write). Another replica's
    reservation for one of them (an UPDATE) stays until that write, which joins it
    (:func:`usage.joined`): the claim is not counted meanwhile, so that reservation is
    what counts the UPDATE's growth.

    ``shared(cluster_id)`` says whether an object of another namespace names that billing
    id too (then billing's cost for it stands in for no object: :func:`usage.recount`).

    ``ages`` says how long the reconciler has seen each reservation and unpriced claim, on
    its own clock (:data:`dbquota.domain.reservations.Ages`): the grace and a claim's youth
    are measured so, never from another node's clock. ``live(holder)`` says whether an
    escrow holder's lease is still live; ``deleted`` are uids of claims seen deleted
    recently. Unless ``claims_current`` (their watch up to date), nothing is concluded from
    a claim's absence or its generation: no reservation is released as never created or
    never applied, no lapsed escrow let go, no orphan adopted (an apiserver restart leaves
    the watch behind for a few seconds, and budget released then would be handed out twice).
    """
    meta = quota.get("metadata", {})
    generation = int(meta.get("generation", 0))
    old = quota.get("status") or {}
    conds = _Conditions(list(old.get("conditions", [])), generation, timestamps.to_rfc3339(now))
    try:
        spec = quotas.parse_quota(name=meta.get("name", "?"), spec=quota.get("spec", {}))
    except ValueError as exc:
        conds.set("Ready", "False", "InvalidSpec", str(exc))
        for type_ in conditions.QUOTA_TYPES:
            if type_ != "Ready":
                conds.set(type_, "Unknown", "InvalidSpec", UNREADABLE)
        return Refresh(status=QuotaStatus(conditions=conds.current, observedGeneration=generation))

    held = old.get("reservations") or []
    owners, unpriced = yield from _indexed(claims, {str(r.get("uid", "")) for r in held})
    holds = _Holds.settle(
        old=old,
        spec=spec,
        snapshot=snapshot,
        owners=owners,
        unpriced=unpriced,
        now=now,
        grace=grace,
        ages=ages,
        live=live,
        deleted=deleted,
        claims_current=claims_current,
        unwritten=unwritten,
    )
    billing_, assessed = billing_status(
        snapshot=snapshot, max_staleness=spec.max_staleness, now=now
    )
    counted = (
        yield from usage.recount(
            claims=claims,
            held=holds.kept,
            costs=snapshot.costs,
            in_escrow=holds.in_escrow,
            estimate=price_foreign(snapshot, spec, degraded=assessed.degraded),
            shared=shared,
        )
    ).usage
    if holds.waiting:
        counted = dataclasses.replace(counted, reserved=round(counted.reserved + holds.waiting, 2))
    spend, used = usage.fields(counted, budget=spec.monthly_budget)
    spent = (
        f"{_money(counted.spend)} of {_money(spec.monthly_budget)} {spec.currency}"
        f"/month (observed {_money(counted.observed)} + reserved {_money(counted.reserved)})"
    )
    reached = threshold_reached(
        thresholds=spec.alert_thresholds, spend=counted.spend, budget=spec.monthly_budget
    )
    over = spend["remaining"] < 0
    conds.set("Ready", *_ready_condition(spec, snapshot, now))
    conds.set("BillingAvailable", *_billing_condition(snapshot, assessed))
    budget_note = _budget_note(remaining=spend["remaining"], spent=spent)
    conds.set(
        "BudgetExceeded", *_budget_condition(spec, remaining=spend["remaining"], note=budget_note)
    )
    conds.set(
        "BudgetThresholdReached",
        *_threshold_condition(spec, reached=reached),
    )
    return Refresh(
        status=QuotaStatus(
            observedGeneration=generation,
            spend=spend,
            used=used,
            billing=billing_,
            reservations=holds.kept,
            alerts=Alerts(reached=reached),
            conditions=conds.current,
            **({"escrow": holds.escrowed} if holds.expired else {}),  # else the ledgers' to write
        ),
        released=tuple(holds.released),
        budget_crossed=_crossing(was_over=_was_over(old), over=over),
        budget_note=budget_note,
        adopted=tuple(holds.adopted),
        expired=tuple(holds.expired),
        confirmed=holds.confirmed,
        crossed=threshold_crossings(
            thresholds=spec.alert_thresholds, was=_announced(old), reached=reached, spent=spent
        ),
        spec=spec,
    )


def _indexed(
    claims: Sequence[reservations.ClaimRef], held: Collection[str]
) -> steps.Steps[tuple[dict[str, reservations.ClaimRef], list[reservations.ClaimRef]]]:
    """The claims of the ``held`` uids by uid, and the claims with no price (the only ones
    that can be orphans or held by an escrow), a slice at a time: all that settling the
    reservations and finding orphans look at."""
    owners: dict[str, reservations.ClaimRef] = {}
    unpriced: list[reservations.ClaimRef] = []
    for part in steps.slices(claims):
        for claim in part:
            if claim.uid in held:
                owners[claim.uid] = claim
            if claim.cost is None:
                unpriced.append(claim)
        yield
    return owners, unpriced


@dataclass
class _Conditions:
    """The quota's conditions as one reconcile sets them, stamped alike."""

    current: list[conditions.Condition]
    generation: int
    now: str

    def set(self, type_: str, status: conditions.Status, reason: str, message: str) -> None:
        self.current = conditions.set_condition(
            self.current,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            generation=self.generation,
            now=self.now,
        )


@dataclass(frozen=True)
class _Holds:
    """What one reconcile does to the budget held on the status: reservations settled
    (kept, confirmed by their claim, released), escrow of lapsed holders let go, and
    claims nobody holds (orphans) adopted at their price, at most
    :data:`~dbquota.domain.reservations.ADOPT_AT_ONCE` per visit so that the status stays
    small (thousands of claims made while no operator ran would not fit in one object).

    An orphan that cannot be priced (no prices at all: a new pod with an empty cache
    while billing is down) is not adopted, and while there is one, no lapsed escrow is
    let go: that escrow may be what counts it. Adopted at 0.00, its claim would then
    show a price of 0 and count at nothing until billing showed its cluster."""

    kept: list[Reservation]
    confirmed: int
    released: list[tuple[Reservation, reservations.ReleaseReason]]
    escrowed: list[Escrow]
    expired: list[Escrow]
    adopted: list[Reservation]
    waiting: float = 0.0
    """The cost of orphans beyond :data:`~dbquota.domain.reservations.ADOPT_AT_ONCE`, left
    for the next visits to adopt and counted as reserved meanwhile."""
    in_escrow: frozenset[str] = frozenset()
    """Uids of claims that a live replica's escrow may still hold (unpriced, no
    reservation, younger than :data:`~dbquota.domain.reservations.ADOPT_AFTER` by the
    apiserver's clock and by the reconciler's sight of them), and those
    this replica's escrow surely holds (``unwritten``, priced or not): counted by that
    escrow until its holder writes their reservations (:func:`usage.recount`)."""

    @classmethod
    def settle(
        cls,
        *,
        old: Mapping[str, Any],
        spec: quotas.QuotaSpec,
        snapshot: billing.BillingSnapshot,
        owners: Mapping[str, reservations.ClaimRef],
        unpriced: Sequence[reservations.ClaimRef],
        now: float,
        grace: float,
        ages: reservations.Ages,
        live: Callable[[str], bool],
        deleted: Collection[str],
        claims_current: bool,
        unwritten: Collection[str],
    ) -> _Holds:
        """``owners``: the held reservations' claims by uid; ``unpriced``: see :func:`_indexed`."""
        kept, confirmed, released = reservations.settle(
            held=old.get("reservations") or [],
            claims=owners,
            deleted=deleted,
            now=now,
            grace=grace,
            ages=ages,
            current=claims_current,
        )
        if unwritten:  # until this replica's write joins them (quota_status)
            kept += [r for r in confirmed if str(r.get("uid", "")) in unwritten]
            confirmed = [r for r in confirmed if str(r.get("uid", "")) not in unwritten]
        entries = escrow.entries_of(old)
        escrowed, expired = escrow.prune(entries, live=live if claims_current else lambda _: True)
        covering = bool(escrowed) and not expired
        found = _orphans(
            kept, unpriced, now=now, ages=ages, covered=covering, current=claims_current
        )
        priced = _priced_orphans(found, spec, snapshot)
        if len(priced) < len(found):  # some cannot be priced: see the class docstring
            escrowed, expired = list(entries), []
        adopted = [
            reservations.adopt(claim=claim, cost=cost, pricing=mode, now=now)
            for claim, cost, mode in priced[: reservations.ADOPT_AT_ONCE]
        ]
        covered = bool(escrowed) and not expired
        return cls(
            kept=[*kept, *adopted],
            confirmed=len(confirmed),
            released=list(released),
            escrowed=escrowed,
            expired=expired,
            adopted=adopted,
            waiting=round(sum(cost for _, cost, _ in priced[reservations.ADOPT_AT_ONCE :]), 2),
            in_escrow=frozenset(unwritten)
            | (
                reservations.in_escrow(held=kept, claims=unpriced, now=now, ages=ages)
                if covered
                else frozenset()
            ),
        )


def _orphans(
    kept: Sequence[Reservation],
    unpriced: Sequence[reservations.ClaimRef],
    *,
    now: float,
    ages: reservations.Ages,
    covered: bool,
    current: bool,
) -> list[reservations.ClaimRef]:
    """The claims to adopt (:func:`dbquota.domain.reservations.orphans`); none while the
    claims' watch is behind (:func:`quota_status`)."""
    if not current:
        return []
    return reservations.orphans(held=kept, claims=unpriced, now=now, covered=covered, ages=ages)


def _priced_orphans(
    found: Sequence[reservations.ClaimRef],
    spec: quotas.QuotaSpec,
    snapshot: billing.BillingSnapshot,
) -> list[tuple[reservations.ClaimRef, float, str]]:
    """Each of ``found`` with its price and pricing mode, leaving out those that cannot be
    priced (:func:`price_orphan`: no prices at all), never adopted at 0 (:class:`_Holds`)."""
    price = price_orphan(snapshot)
    priced = ((claim, *price(claim, spec)) for claim in found)
    return [(claim, cost, mode) for claim, cost, mode in priced if mode is not None]


def _budget_note(*, remaining: float, spent: str) -> str:
    """What is over or left, with the figures: the note of an Event announcing a crossing."""
    if remaining < 0:
        return f"over budget by {_money(-remaining)}: {spent}"
    return f"{_money(remaining)} left: {spent}"


def _budget_condition(
    spec: quotas.QuotaSpec, *, remaining: float, note: str
) -> tuple[conditions.Status, str, str]:
    """``BudgetExceeded``. Within budget the message names no running figure
    (``status.spend`` has them), so it changes with the state, not with every claim: else
    every admission would cost the reconciler a status write of its own. Over budget it is
    the ``note``, figures and all (admissions are denied then, so they do not move it)."""
    if remaining < 0:
        return "True", "OverBudget", note
    within = f"within the monthly budget of {_money(spec.monthly_budget)} {spec.currency}"
    return "False", "WithinBudget", within


def _was_over(old: Mapping[str, Any]) -> bool | None:
    """Whether the last status said over budget (None: it said nothing yet)."""
    return next(
        (
            c["status"] == "True"
            for c in old.get("conditions", [])
            if c["type"] == "BudgetExceeded" and c["status"] != "Unknown"
        ),
        None,
    )


_VOLATILE_BILLING = ("stalenessSeconds", "lastSuccessfulSync")  # ages: one moves every sync
_MATERIAL_MESSAGES = ("BudgetExceeded", "BudgetThresholdReached")  # no ages in them


def material(status: QuotaStatus) -> QuotaStatus:
    """``status`` without what changes with the mere passing of time (staleness, the time
    of the last successful sync, and the condition messages that state an age), to tell a
    refresh worth writing from one that only ages the figures."""
    billing_ = {
        k: v for k, v in (status.get("billing") or {}).items() if k not in _VOLATILE_BILLING
    }
    conds = [
        {k: v for k, v in c.items() if k != "message" or c["type"] in _MATERIAL_MESSAGES}
        for c in status.get("conditions") or []
    ]
    return QuotaStatus(**{**status, "billing": billing_, "conditions": conds})  # type: ignore[typeddict-item]


Change = Literal["aged", "settles", "material"]
"""What a refresh changes of the status it read (:func:`change`)."""


def change(old: QuotaStatus, refresh: Refresh) -> Change:
    """What ``refresh`` changes of ``old``, for the reconciler to decide whether to write:
    ``aged``, only the figures' age (:func:`material`; nothing to write); ``settles``,
    nothing but drop reservations whose claims now carry their price (totals, caps and
    conditions the same, nothing to announce: the write can wait for one made anyway);
    else ``material``."""
    new = material(refresh.status)
    then = material(cast(QuotaStatus, {k: old.get(k) for k in refresh.status}))
    if new == then:
        return "aged"
    announces = refresh.released or refresh.adopted or refresh.expired or refresh.crossed
    if announces or refresh.budget_crossed is not None or not refresh.confirmed:
        return "material"
    was = {str(r.get("uid", "")) for r in old.get("reservations") or []}
    if any(str(r.get("uid", "")) not in was for r in refresh.status.get("reservations") or []):
        return "material"
    same = {**new, "reservations": None} == {**then, "reservations": None}
    return "settles" if same else "material"


def _crossing(*, was_over: bool | None, over: bool) -> bool | None:
    """True on going over budget (also on the first evaluation), False on coming back."""
    if was_over is None:
        return True if over else None
    return over if was_over != over else None
