"""Reservations on a DatabaseQuota's status: by compare-and-swap, batched, and from escrow.

**The exact path** is the method of Kubernetes' ResourceQuota admission plugin: read the
quota (and its ``resourceVersion``), decide every pending request against the reservations
already held *plus those admitted earlier in the same batch*, and write the new reservation
list with a merge patch that carries the ``resourceVersion`` read. If another writer got
there first, the apiserver answers 409; we re-read and decide the whole batch again.
Batching (one writer task per quota, taking every request queued while the previous write
was in flight) keeps throughput up under bursts: N concurrent claims cost one round
instead of N rounds with N-1 conflicts each (kubernetes#67761).

**The escrow path** takes that write off the review's path (the why and the invariant are
in :mod:`dbquota.domain.escrow`). Every exact round also sets this replica's escrow: a
share (``--escrow-share``) of the room left, written in the same compare-and-swap. A
CREATE that the escrow covers is then admitted from memory at once; its reservation joins
the next write, which moves the amount from the escrow to the reservation on the
apiserver in one patch, at most every :data:`FLUSH_INTERVAL`. Denials, UPDATEs and
StrictCap's degraded admissions always take the exact path; so does a CREATE the escrow
cannot cover, and that round returns what was left of the escrow and takes a fresh share.
A replica idle for :data:`IDLE_RETURN` gives its escrow back; one that stops renewing it
(crashed) leaves it counted until the reconciler prunes it.

A request that only other replicas' escrow keeps out (it would fit without it) waits up
to :data:`CONTENDED_WAIT` for them to use or return it, re-reading the quota every
:data:`CONTENDED_POLL`, so that near the end of a budget the replicas together admit
exactly what fits. Requests marked dry-run are decided against what this replica last
read and reserve nothing.

The reconciler's status updates go through the same ledger (:meth:`Ledger.update`) so the
process never conflicts with itself. Called by :mod:`dbquota.services.admitting` and
:mod:`dbquota.services.reconciling`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from dbquota.adapters import metrics
from dbquota.adapters.kube import Kube
from dbquota.domain import escrow
from dbquota.domain.resources import Escrow, QuotaObject, QuotaStatus, Reservation
from dbquota.errors import Conflict, KubeError

logger = logging.getLogger(__name__)

R = TypeVar("R")  # what a decision returns to its caller

MAX_ATTEMPTS = 8
"""CAS rounds per batch before giving up (ResourceQuota uses 3; our batches are larger)."""
FLUSH_INTERVAL = 0.25
"""Seconds between two writes of reservations admitted from escrow (batching them)."""
IDLE_RETURN = 1.0
"""Seconds without admissions after which a replica gives its escrow back."""
ESCROW_TTL = 15.0
"""Seconds an escrow entry is valid after each write (``expiresAt``); renewed by every write."""
ESCROW_MARGIN = 5.0
"""This replica stops admitting from an escrow this long before it expires, so that a
clock skew up to that between replicas cannot make another one see it expired early."""
CONTENDED_WAIT = 3.0
"""Most seconds a request waits for other replicas' escrow before it is decided with it."""
CONTENDED_POLL = 0.05
"""Seconds between re-reads of the quota while a request waits for other replicas' escrow."""
CLOSE_PATIENCE = 5.0
"""Most seconds shutdown waits for the last reservations and the escrow's return."""
RETRY_DELAY = 0.5
"""Seconds before retrying to write reservations after a failed write."""


class ReservationConflictError(KubeError):
    """The quota kept changing under us for every attempt: the caller should deny and retry."""


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """A decision on one request: what to tell its caller and the reservation to hold.

    ``reservation`` replaces any earlier reservation of the same claim name; ``None`` holds
    nothing (a denial, or a dry-run decision). ``take`` is what the reservation draws on
    the quota's room and ``room`` what is left after it; ``escrow`` says whether an
    admission like this one may be served from escrow at all.
    """

    result: R
    admitted: bool = True
    reservation: Reservation | None = None
    take: escrow.Allowance = escrow.NOTHING
    room: escrow.Allowance | None = None
    escrow: bool = False


Decide = Callable[[QuotaObject, Sequence[Reservation], escrow.Allowance], Outcome[R]]
"""Decide one request given the quota as read, the reservations held so far and the escrow
of other replicas (to count as used)."""

Mutate = Callable[[QuotaObject], QuotaStatus | None]
"""Compute a status patch from the quota as read; ``None`` means nothing to write."""


@dataclass
class _Pending(Generic[R]):
    decide: Decide[R] | None
    mutate: Mutate | None
    dry_run: bool
    deadline: float | None = None  # set once other replicas' escrow keeps it waiting
    future: asyncio.Future[R | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Round:
    """What one compare-and-swap round writes and answers (see :meth:`Ledger._plan`)."""

    flushing: dict[str, Reservation]
    working: dict[str, Any]
    renew: bool = False
    kept: escrow.Allowance = escrow.NOTHING
    refused: bool = False  # some request of the batch was denied or left waiting
    mine: Escrow | None = None
    patch: dict[str, Any] = field(default_factory=dict)
    results: dict[int, object] = field(default_factory=dict)
    waiting: list[_Pending[object]] = field(default_factory=list)


def holder_id() -> str:
    """A name for this process's escrow entries: the pod (host) name, pid and a nonce."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def totals(*, quota: QuotaObject, reservations: Sequence[Reservation]) -> QuotaStatus:
    """The ``spend`` fields that follow from the reservations: reserved and remaining."""
    reserved = round(sum(float(r.get("cost", 0.0)) for r in reservations), 2)
    observed = float(quota.get("status", {}).get("spend", {}).get("observed", 0.0))
    budget = float(str(quota.get("spec", {}).get("monthlyBudget", 0.0)))
    return QuotaStatus(
        reservations=list(reservations),
        spend={
            "observed": observed,
            "reserved": reserved,
            "remaining": round(budget - observed - reserved, 2),
        },
    )


def upsert(reservations: Sequence[Reservation], new: Reservation) -> list[Reservation]:
    """``reservations`` with ``new`` replacing any entry of the same claim."""
    kept = [r for r in reservations if r.get("claim") != new.get("claim")]
    kept.append(new)
    return kept


def _generation(quota: QuotaObject) -> int:
    return int(quota.get("metadata", {}).get("generation", 0))


class Ledger:
    """Serialises the status writes of one DatabaseQuota; see the module docstring."""

    def __init__(
        self,
        *,
        kube: Kube,
        namespace: str,
        name: str,
        holder: str | None = None,
        share: float = 0.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.holder = holder or holder_id()
        self.share = share
        self._queue: list[_Pending[object]] = []
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._latest: QuotaObject | None = None  # as last read or written
        self._stale = True  # re-read before the next compare-and-swap round
        self._escrow = escrow.NOTHING  # what this replica may still admit from memory
        self._escrow_generation = -1
        self._escrow_until = 0.0  # monotonic: no admission from escrow after this
        self._held_on_server = False  # whether the status holds an escrow entry of ours
        self._unwritten: dict[str, Reservation] = {}  # admitted from escrow, not yet written
        self._typical = escrow.NOTHING  # what the last admission took
        self._active = 0.0  # monotonic time of the last admission
        self._last_write = 0.0
        self._closing = False
        self.writes = 0
        self.conflicts = 0
        self.from_escrow = 0

    def forget(self) -> None:
        """Read the quota afresh for the next round (e.g. someone else changed it).

        Admissions from escrow and dry-run decisions go on using the copy: the escrow, not
        the copy, is what guarantees their budget.
        """
        self._stale = True

    def expect_generation(self, generation: int) -> None:
        """Drop the cached copy and stop using the escrow if the quota's spec changed.

        Status writes do not bump ``metadata.generation``, spec changes do: a denial
        (which writes nothing, so no conflict would tell us) must see a raised budget, and
        an escrow taken under the old spec must not admit under the new one.
        """
        if self._latest is not None and _generation(self._latest) < generation:
            self._latest, self._stale = None, True
        if self._escrow_generation < generation:  # (an informer lagging behind is no news)
            self._escrow = escrow.NOTHING

    async def reserve(self, decide: Decide[R], *, dry_run: bool) -> R:
        """Decide one request; hold its reservation unless dry-run (module docstring)."""
        if dry_run and self._latest is not None:
            quota, held = self._view()
            return decide(quota, held, self._others(quota)).result
        served = self._from_escrow(decide) if not dry_run else None
        if served is not None:
            return served.result
        if not dry_run:
            self._active = time.monotonic()
        pending: _Pending[R] = _Pending(decide=decide, mutate=None, dry_run=dry_run)
        result = await self._enqueue(pending)
        assert result is not None
        return result

    async def update(self, mutate: Mutate) -> None:
        """Apply a status patch computed from the freshest quota, by CAS, in queue order."""
        await self._enqueue(_Pending(decide=None, mutate=mutate, dry_run=False))

    async def close(self) -> None:
        """Write what was admitted from escrow and give the escrow back (shutdown)."""
        self._closing = True
        self._escrow = escrow.NOTHING
        if not (self._unwritten or self._held_on_server or self._queue):
            return
        self._start()
        assert self._writer is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_PATIENCE)

    def _view(self) -> tuple[QuotaObject, list[Reservation]]:
        """The quota as last read, with the reservations admitted from escrow on it."""
        assert self._latest is not None
        held = self._latest.get("status", {}).get("reservations", [])
        if not self._unwritten:
            return self._latest, held
        unwritten = self._unwritten
        kept = [r for r in held if r.get("claim") not in unwritten]
        return self._latest, [*kept, *unwritten.values()]

    def _others(self, quota: QuotaObject) -> escrow.Allowance:
        return escrow.held_by_others(escrow.entries_of(quota.get("status", {})), holder=self.holder)

    def _from_escrow(self, decide: Decide[R]) -> Outcome[R] | None:
        """Admit from this replica's escrow if it covers the request; None: go exact."""
        if (
            self._closing
            or self._latest is None
            or self._escrow.empty
            or time.monotonic() >= self._escrow_until
            or _generation(self._latest) != self._escrow_generation
        ):
            return None
        quota, held = self._view()
        outcome = decide(quota, held, self._others(quota))
        if not (outcome.admitted and outcome.escrow) or not self._escrow.fits(outcome.take):
            return None
        if outcome.reservation is not None:
            self._escrow = self._escrow.minus(outcome.take)
            self._unwritten[str(outcome.reservation.get("claim", ""))] = outcome.reservation
            self._typical = outcome.take
        self._active = time.monotonic()
        self.from_escrow += 1
        metrics.admission_paths.labels(path="escrow").inc()
        self._start()
        return outcome

    async def _enqueue(self, pending: _Pending[R]) -> R | None:
        self._queue.append(pending)  # type: ignore[arg-type]
        self._start()
        return await asyncio.shield(pending.future)

    def _start(self) -> None:
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=f"ledger {self.name}")

    async def _drain(self) -> None:
        """The writer: exact rounds at once, escrow flushes batched, the escrow returned."""
        while (delay := self._next_delay()) is not None:
            if delay > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event is set, and the writer must stop when cancelled.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            if self._queue:
                self._queue = [p for p in self._queue if not self._served_from_escrow(p)]
                if not self._queue:
                    continue  # all served by the escrow the last round took
            batch, self._queue = self._queue, []
            try:
                await self._process(batch)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                if not (self._unwritten or self._held_on_server):
                    continue
                logger.warning(
                    "could not write DatabaseQuota %s/%s status (retrying in %.1fs): %s",
                    self.namespace,
                    self.name,
                    RETRY_DELAY,
                    exc,
                )
                if self._closing:
                    return
                await asyncio.sleep(RETRY_DELAY)

    def _next_delay(self) -> float | None:
        """Seconds until the writer's next round (<= 0: now); None: nothing left to do."""
        self._wake.clear()
        now = time.monotonic()
        if self._queue:
            return 0.0
        if self._unwritten:
            return 0.0 if self._closing else self._last_write + FLUSH_INTERVAL - now
        if self._held_on_server:
            return 0.0 if self._closing else self._active + IDLE_RETURN - now
        return None

    def _served_from_escrow(self, pending: _Pending[object]) -> bool:
        """Serve a queued request from the escrow if it covers it now (e.g. the escrow the
        round it queued behind has just taken): one write for a burst, not two."""
        if pending.decide is None or pending.dry_run or pending.future.done():
            return False
        outcome = self._from_escrow(pending.decide)
        if outcome is None:
            return False
        pending.future.set_result(outcome.result)
        return True

    async def _read(self) -> QuotaObject:
        if self._stale or self._latest is None:
            self._latest = await self.kube.get_quota(namespace=self.namespace, name=self.name)
            self._stale = False
        return self._latest

    async def _process(self, batch: list[_Pending[object]]) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            quota = await self._read()
            round_ = self._plan(quota, batch)
            sent = time.monotonic()
            if round_.patch:
                try:
                    self._latest = await self.kube.patch_quota_status(
                        namespace=self.namespace,
                        name=self.name,
                        status=round_.patch,
                        resource_version=quota.get("metadata", {}).get("resourceVersion"),
                    )
                    self.writes += 1
                    self._last_write = time.monotonic()
                except Conflict:
                    self.conflicts += 1
                    self._stale = True
                    continue
            self._written(round_, generation=_generation(quota), sent=sent)
            for i, p in enumerate(batch):
                if i in round_.results and not p.future.done():
                    p.future.set_result(round_.results[i])
                    if p.decide is not None and not p.dry_run:
                        metrics.admission_paths.labels(path="exact").inc()
            if round_.waiting:
                self._queue[:0] = round_.waiting
                self._stale = True  # see whether the others gave some back
                await asyncio.sleep(CONTENDED_POLL)
            return
        raise ReservationConflictError(
            f"DatabaseQuota {self.namespace}/{self.name} changed under every one of "
            f"{MAX_ATTEMPTS} compare-and-swap attempts; try again"
        )

    def _plan(self, quota: QuotaObject, batch: list[_Pending[object]]) -> _Round:
        """One round's status patch: escrow admissions written, the batch decided, the
        escrow kept, renewed or returned, and what to tell each waiter.

        The escrow is renewed (what is left given back, a fresh share taken) when the spec
        changed, when idle or closing (then nothing is taken), and when an exact request
        comes while what is left would not cover an admission like the last one. Otherwise
        it stays ours and is counted as used by this round's decisions, since admissions
        from it go on while the round is written; should that deny a request, the round
        is planned again with the escrow given back.
        """
        generation = _generation(quota)
        idle = time.monotonic() - self._active >= IDLE_RETURN
        exact = any(p.decide is not None and not p.dry_run for p in batch)
        renew = (
            generation != self._escrow_generation
            or self._closing
            or idle
            or (exact and not self._escrow.fits(self._typical))
        )
        round_ = self._round(quota, batch, renew=renew, idle=idle)
        if not renew and not round_.kept.empty and round_.refused:
            round_ = self._round(quota, batch, renew=True, idle=idle)
        return round_

    def _round(
        self, quota: QuotaObject, batch: list[_Pending[object]], *, renew: bool, idle: bool
    ) -> _Round:
        base: dict[str, Any] = dict(quota.get("status") or {})
        round_ = _Round(flushing=dict(self._unwritten), working=dict(base), renew=renew)
        working = round_.working  # the status as it will be after this round
        for reservation in round_.flushing.values():
            working["reservations"] = upsert(working.get("reservations", []), reservation)
        round_.kept = self._escrow  # what stays ours unless this round renews the grant
        if renew:
            self._escrow = round_.kept = escrow.NOTHING  # nothing admitted from it meanwhile
        room = self._decide_batch(quota, batch, round_)
        if renew and not (self._closing or idle) and room is not None:
            round_.kept = escrow.grant(room=room, share=self.share, typical=self._typical)
        round_.mine = self._entry(round_.kept, generation=_generation(quota))
        entries = [e for e in escrow.entries_of(working) if e.get("holder") != self.holder]
        working["escrow"] = entries + ([round_.mine] if round_.mine is not None else [])
        if working.get("reservations") != base.get("reservations"):
            view = cast(QuotaObject, {**quota, "status": working})
            working.update(totals(quota=view, reservations=working.get("reservations", [])))
        round_.patch = {k: v for k, v in working.items() if base.get(k) != v}
        if not working["escrow"] and "escrow" not in base:
            round_.patch.pop("escrow", None)
        return round_

    def _decide_batch(
        self, quota: QuotaObject, batch: list[_Pending[object]], round_: _Round
    ) -> escrow.Allowance | None:
        """Decide the batch in order into ``round_``; the room left after the last admission."""
        working = round_.working
        others = escrow.held_by_others(escrow.entries_of(working), holder=self.holder)
        others = others.plus(round_.kept)  # what admissions from escrow may still take
        room: escrow.Allowance | None = None
        for i, p in enumerate(batch):
            view = cast(QuotaObject, {**quota, "status": working})
            if p.decide is None:
                assert p.mutate is not None
                working.update(p.mutate(view) or {})
                round_.results[i] = None
                continue
            held = list(working.get("reservations", []))
            outcome = p.decide(view, held, others)
            round_.refused = round_.refused or not (p.dry_run or outcome.admitted)
            if (
                not outcome.admitted
                and others != escrow.NOTHING
                and self._may_wait(p)
                and p.decide(view, held, escrow.NOTHING).admitted
            ):
                round_.waiting.append(p)  # only other replicas' escrow keeps it out
                continue
            if outcome.reservation is not None and not p.dry_run:
                working["reservations"] = upsert(
                    working.get("reservations", []), outcome.reservation
                )
                self._typical = outcome.take
            room = outcome.room if outcome.room is not None else room
            round_.results[i] = outcome.result
        return room

    def _written(self, round_: _Round, *, generation: int, sent: float) -> None:
        """Bookkeeping once a round's patch is on the apiserver (or needed none)."""
        for name, reservation in round_.flushing.items():
            if self._unwritten.get(name) is reservation:
                del self._unwritten[name]
        self._held_on_server = round_.mine is not None
        if round_.renew:
            self._escrow = round_.kept
            self._escrow_generation = generation
        if round_.mine is not None:
            self._escrow_until = sent + ESCROW_TTL - ESCROW_MARGIN

    def _may_wait(self, pending: _Pending[object]) -> bool:
        """Whether ``pending`` may still wait for other replicas' escrow (starts its clock)."""
        now = time.monotonic()
        if pending.deadline is None:
            pending.deadline = now + CONTENDED_WAIT
        return now < pending.deadline

    def _entry(self, kept: escrow.Allowance, *, generation: int) -> Escrow | None:
        if kept.empty:
            return None
        return escrow.entry(
            holder=self.holder,
            allowance=kept,
            generation=generation,
            expires=time.time() + ESCROW_TTL,
        )


class Ledgers:
    """One :class:`Ledger` per quota, created on first use; all share one escrow holder."""

    def __init__(self, kube: Kube, *, share: float = 0.0, holder: str | None = None) -> None:
        self.kube = kube
        self.share = share
        self.holder = holder or holder_id()
        self._ledgers: dict[tuple[str, str], Ledger] = {}

    def of(self, *, namespace: str, name: str) -> Ledger:
        """The ledger of quota ``namespace/name``."""
        key = (namespace, name)
        ledger = self._ledgers.get(key)
        if ledger is None:
            ledger = self._ledgers[key] = Ledger(
                kube=self.kube,
                namespace=namespace,
                name=name,
                holder=self.holder,
                share=self.share,
            )
        return ledger

    def drop(self, *, namespace: str, name: str) -> None:
        """Forget a deleted quota."""
        self._ledgers.pop((namespace, name), None)

    async def close(self) -> None:
        """Write every pending reservation and give every escrow back (shutdown)."""
        await asyncio.gather(*(ledger.close() for ledger in self._ledgers.values()))
