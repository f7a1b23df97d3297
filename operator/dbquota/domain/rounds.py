"""One compare-and-swap round of a quota's ledger, planned: what to write, what to answer.

The reservation service (:class:`dbquota.services.reserving.Ledger`) reads the quota,
asks :func:`plan` what one round writes, sends that patch with the ``resourceVersion`` it
read, and on a conflict reads again and plans again. Planning is pure: given the quota as
read, the batch of requests queued, the replica's escrow :class:`~dbquota.domain.escrow.Account`
and a way to decide one request (:func:`dbquota.domain.admission.admit` with the billing
snapshot and the time bound in), it returns the :class:`Round`:

- the reservations admitted from escrow since the last write, added to the totals;
- each request decided in queue order against the totals, the reservations this round
  adds before it, and other replicas' escrow (counted as used); a request only *live*
  other replicas' escrow keeps out waits instead of being denied (``may_wait``);
- this replica's escrow kept, or renewed (what is left given back, a fresh share of the
  room after the last admission taken), written in the same patch;
- when the round writes anyway, the reservations whose claims already show their price
  (``confirmed``, :func:`dbquota.domain.reservations.confirmed_by`; the ledger confirms
  no other operator's object here, whose reservation the leader must see to announce its
  price) dropped from the list, the totals unchanged: the claims count at those prices
  now. The reconciler does the same on its refreshes; doing it here keeps the list (and
  every write and watch event of the quota) short during a burst, when the reconciler's
  compare-and-swap would keep losing to this writer's.

The escrow is renewed when the spec changed, when idle or closing (then nothing is
taken), when the lease is not trusted, and when an exact request comes while what is
left would not cover an admission like the last one. Otherwise it stays ours and is
counted as used by this round's decisions, since admissions from it go on while the
round is written; should that deny a request, the round is planned again with the escrow
given back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from dbquota.domain import admission, escrow, quotas, usage, verdicts, views
from dbquota.domain.resources import Escrow, QuotaObject, QuotaStatus, Reservation

Decide = Callable[[admission.Request, QuotaStatus, escrow.Allowance], admission.Outcome]
"""Decide one request against a status and the other replicas' escrow."""


@dataclass
class Round:
    """What one round writes and answers."""

    flushing: dict[str, Reservation]
    """Reservations admitted from escrow that this round writes."""
    working: QuotaStatus
    """The status as it will be after this round."""
    renew: bool = False
    kept: escrow.Allowance = escrow.NOTHING
    """This replica's escrow after the round."""
    refused: bool = False
    """Some request of the batch was denied or left waiting."""
    mine: Escrow | None = None
    """This replica's escrow entry on the status after the round (None: none)."""
    patch: dict[str, Any] = field(default_factory=dict)
    """The merge patch of ``status`` (empty: nothing to write)."""
    results: dict[int, verdicts.Decision] = field(default_factory=dict)
    """Decisions by the request's index in the batch."""
    waiting: list[int] = field(default_factory=list)
    """Indices of requests that wait for live replicas' escrow."""


generation_of = views.generation_of


@dataclass(frozen=True)
class _Context:
    """Everything one plan reads (so its steps need not pass it along)."""

    quota: QuotaObject
    spec: quotas.QuotaSpec
    requests: Sequence[admission.Request]
    account: escrow.Account
    holder: str
    alive: bool
    live: Callable[[str], bool]
    may_wait: Callable[[int], bool]
    decide: Decide
    confirmed: Callable[[Reservation], bool]


def plan(
    *,
    quota: QuotaObject,
    spec: quotas.QuotaSpec | ValueError,
    requests: Sequence[admission.Request],
    account: escrow.Account,
    holder: str,
    alive: bool,
    live: Callable[[str], bool],
    may_wait: Callable[[int], bool],
    decide: Decide,
    now: float,
    confirmed: Callable[[Reservation], bool] = lambda _: False,
) -> Round:
    """Plan one round (module docstring); ``now`` is the caller's monotonic time.

    Moves ``account``'s allowance (given back when renewing) and its ``typical``.
    """
    if isinstance(spec, ValueError):
        name = str(quota.get("metadata", {}).get("name", "?"))
        base = cast(QuotaStatus, dict(quota.get("status") or {}))
        round_ = Round(flushing={}, working=base)
        for i in range(len(requests)):
            round_.results[i] = admission.invalid_quota(name, spec).decision
        return round_
    ctx = _Context(quota, spec, requests, account, holder, alive, live, may_wait, decide, confirmed)
    idle = account.idle(now)
    renew = account.renews(
        generation=generation_of(quota),
        exact=any(not r.dry_run for r in requests),
        now=now,
        alive=alive,
    )
    round_ = _round(ctx, renew=renew, idle=idle)
    if not renew and not round_.kept.empty and round_.refused:
        round_ = _round(ctx, renew=True, idle=idle)
    return round_


def _round(ctx: _Context, *, renew: bool, idle: bool) -> Round:
    account, spec = ctx.account, ctx.spec
    base = cast(QuotaStatus, dict(ctx.quota.get("status") or {}))
    round_ = Round(flushing=dict(account.unwritten), working=base, renew=renew)
    if round_.flushing:
        round_.working = usage.add(
            round_.working, round_.flushing.values(), budget=spec.monthly_budget
        )
    round_.kept = account.allowance  # ours unless this round renews the grant
    if renew:  # nothing is admitted from it meanwhile
        account.allowance = round_.kept = escrow.NOTHING
    room = _decide_batch(ctx, round_)
    if renew and account.busy and not (account.closing or idle) and ctx.alive and room is not None:
        round_.kept = account.grant(room)
    if not round_.kept.empty:
        round_.mine = escrow.entry(
            holder=ctx.holder, allowance=round_.kept, generation=generation_of(ctx.quota)
        )
    entries = [e for e in escrow.entries_of(round_.working) if e.get("holder") != ctx.holder]
    escrow_after = entries + ([round_.mine] if round_.mine is not None else [])
    if escrow_after or "escrow" in base:
        round_.working = cast(QuotaStatus, {**round_.working, "escrow": escrow_after})
    round_.patch = {k: v for k, v in round_.working.items() if base.get(k) != v}
    if round_.patch:
        held = round_.working.get("reservations") or []
        kept = [r for r in held if not ctx.confirmed(r)]
        if len(kept) < len(held):
            round_.working = cast(QuotaStatus, {**round_.working, "reservations": kept})
            round_.patch["reservations"] = kept
    return round_


def _decide_batch(ctx: _Context, round_: Round) -> escrow.Allowance | None:
    """Decide the batch in order into ``round_``; the room left after the last admission."""
    entries = escrow.entries_of(round_.working)
    others = escrow.held_by_others(entries, holder=ctx.holder).plus(round_.kept)
    live_others = escrow.held_by_others(
        (e for e in entries if ctx.live(str(e.get("holder", "")))), holder=ctx.holder
    )
    room: escrow.Allowance | None = None
    for i, request in enumerate(ctx.requests):
        outcome = ctx.decide(request, round_.working, others)
        round_.refused = round_.refused or not (request.dry_run or outcome.admitted)
        if (
            not outcome.admitted
            and not live_others.nothing
            and ctx.may_wait(i)
            and ctx.decide(request, round_.working, others.minus(live_others)).admitted
        ):
            round_.waiting.append(i)  # only live replicas' escrow keeps it out
            continue
        if outcome.hold is not None:
            round_.working = usage.add(
                round_.working, [outcome.hold], budget=ctx.spec.monthly_budget
            )
            ctx.account.typical = outcome.take
        room = outcome.room if outcome.room is not None else room
        round_.results[i] = outcome.decision
    return room
