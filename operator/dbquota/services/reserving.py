"""Reservations on a DatabaseQuota's status: by compare-and-swap, batched, and from escrow.

**The exact path** is the method of Kubernetes' ResourceQuota admission plugin: read the
quota (and its ``resourceVersion``), decide every pending request against the totals its
status holds *plus those admitted earlier in the same batch*
(:func:`dbquota.domain.admission.admit`), and write the new reservations and totals with a
merge patch that carries the ``resourceVersion`` read. If another writer got there first,
the apiserver answers 409; we re-read and decide the whole batch again, until
:data:`RESERVE_DEADLINE`: losing races is a retry, not a denial. Batching (one writer task
per quota, taking every request queued while the previous write was in flight) keeps
throughput up under bursts: N concurrent claims cost one round instead of N rounds with
N-1 conflicts each (kubernetes#67761).

**The escrow path** takes that write off the review's path (the why and the invariant are
in :mod:`dbquota.domain.escrow`). Every exact round also sets this replica's escrow: a
share (``--escrow-share``) of the room left, written in the same compare-and-swap. A
CREATE that the escrow covers is then admitted from memory at once; its reservation joins
the next write, which moves the amount from the escrow to the reservation on the
apiserver in one patch, at most every :data:`FLUSH_INTERVAL`. Denials, UPDATEs that grow
and StrictCap's degraded admissions always take the exact path; so does a CREATE the
escrow cannot cover, and that round returns what was left of the escrow and takes a fresh
share. A replica idle for :data:`IDLE_RETURN` gives its escrow back. A replica admits
from its escrow only while its liveness lease is fresh (``alive()``), so once the lease
lapses nobody is admitting from that escrow and the reconciler may let it go.

**No wait where nothing is at stake.** An UPDATE that adds nothing, and every dry-run
request, is decided against what this replica last saw of the quota (its watch keeps that
current) and answered at once: it neither waits in the queue nor can a lost race deny it.

A request that only *live* other replicas' escrow keeps out (it would fit without it)
waits up to :data:`CONTENDED_WAIT` for them to use or return it, re-reading the quota
every :data:`CONTENDED_POLL`, so that near the end of a budget the replicas together admit
exactly what fits; escrow whose holder's lease lapsed is not waited for.

The reconciler writes the status through its own compare-and-swap
(:mod:`dbquota.services.reconciling`), never through this queue, so its refreshes never
delay an admission. Called by :mod:`dbquota.services.admitting`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from dbquota.adapters import metrics
from dbquota.domain import admission, billing, escrow, quotas, reservations, usage, verdicts
from dbquota.domain.resources import Escrow, QuotaObject, QuotaStatus, Reservation
from dbquota.errors import Conflict, KubeError

logger = logging.getLogger(__name__)

RESERVE_DEADLINE = 8.0
"""Most seconds one batch keeps retrying lost compare-and-swap races before it gives up
(below the webhook's timeout, so the answer says why instead of timing out)."""
FLUSH_INTERVAL = 0.25
"""Seconds between two writes of reservations admitted from escrow (batching them)."""
IDLE_RETURN = 1.0
"""Seconds without admissions after which a replica gives its escrow back."""
CONTENDED_WAIT = 3.0
"""Most seconds a request waits for live other replicas' escrow before it is decided with it."""
CONTENDED_POLL = 0.05
"""Seconds between re-reads of the quota while a request waits for other replicas' escrow."""
CLOSE_PATIENCE = 5.0
"""Most seconds shutdown waits for the last reservations and the escrow's return."""
RETRY_DELAY = 0.5
"""Seconds before retrying to write reservations after a failed write."""


class QuotaStore(Protocol):
    """Where a quota is read and its status written by compare-and-swap (the apiserver;
    a dict in unit tests). :class:`dbquota.adapters.kube.Kube` is one."""

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        """The quota, status and ``resourceVersion`` included."""
        ...

    async def patch_quota_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> QuotaObject:
        """Merge-patch ``status``; a compare-and-swap when ``resource_version`` is given
        (``Conflict`` when the quota changed since)."""
        ...


class ReservationConflictError(KubeError):
    """The quota kept changing under us until the deadline: the client should retry."""


def holder_id() -> str:
    """A name for this process's escrow entries and lease: host (pod) name, pid, a nonce."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def newer(candidate: QuotaObject, than: QuotaObject | None) -> bool:
    """Whether ``candidate`` is a later version of the quota than ``than``.

    resourceVersions are opaque by contract; etcd's are increasing integers, which is what
    every apiserver serves today. Anything else counts as newer (the safe reading: a copy
    that is not newer is re-read at the next conflict anyway).
    """
    if than is None:
        return True
    a = str(candidate.get("metadata", {}).get("resourceVersion", ""))
    b = str(than.get("metadata", {}).get("resourceVersion", ""))
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


def _generation(quota: QuotaObject) -> int:
    return int(quota.get("metadata", {}).get("generation", 0))


@dataclass
class _Pending:
    request: admission.Request
    deadline: float | None = None  # set once live other replicas' escrow keeps it waiting
    future: asyncio.Future[verdicts.Decision] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Round:
    """What one compare-and-swap round writes and answers (see :meth:`Ledger._plan`)."""

    flushing: dict[str, Reservation]
    working: QuotaStatus
    renew: bool = False
    kept: escrow.Allowance = escrow.NOTHING
    refused: bool = False  # some request of the batch was denied or left waiting
    mine: Escrow | None = None
    patch: dict[str, Any] = field(default_factory=dict)
    results: dict[int, verdicts.Decision] = field(default_factory=dict)
    waiting: list[_Pending] = field(default_factory=list)


@dataclass(frozen=True)
class _View:
    """The quota as this replica last saw it, with what it admitted from escrow since."""

    quota: QuotaObject
    spec: quotas.QuotaSpec
    usage: quotas.Usage
    held: dict[str, Reservation]
    others: escrow.Allowance


class Ledger:
    """Serialises one replica's reservations on one DatabaseQuota; see the module docstring."""

    def __init__(
        self,
        *,
        store: QuotaStore,
        namespace: str,
        name: str,
        snapshot: Callable[[], billing.BillingSnapshot],
        holder: str | None = None,
        share: float = 0.0,
        alive: Callable[[], bool] = lambda: True,
        live: Callable[[str], bool] = lambda _: True,
        clock: Callable[[], float] = time.time,
        in_flight_limit: int | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.name = name
        self.holder = holder or holder_id()
        self.share = share
        self._snapshot = snapshot
        self._alive = alive
        self._live = live
        self._clock = clock
        self._limit = in_flight_limit
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._latest: QuotaObject | None = None  # as last read, written or watched
        self._stale = True  # re-read before the next compare-and-swap round
        self._specs: tuple[int, quotas.QuotaSpec | ValueError] | None = None
        self._view_cache: _View | None = None
        self._escrow = escrow.NOTHING  # what this replica may still admit from memory
        self._escrow_generation = -1
        self._held_on_server = False  # whether the status holds an escrow entry of ours
        self._unwritten: dict[str, Reservation] = {}  # admitted from escrow, not yet written
        self._typical = escrow.NOTHING  # what the last admission took
        self._active = 0.0  # monotonic time of the last admission
        self._last_write = 0.0
        self._closing = False
        self.writes = 0
        self.conflicts = 0
        self.from_escrow = 0

    # -- what admission calls ------------------------------------------------------------

    def observe(self, quota: QuotaObject) -> None:
        """A newer copy of the quota (from the watch, or a write of another writer): decide
        against it from now on. A spec change (new generation) ends the escrow taken under
        the old spec; an informer lagging behind the ledger's own writes is no news."""
        if not newer(quota, self._latest):
            return
        self._set_latest(quota)
        self._stale = False
        if self._escrow_generation < _generation(quota):
            self._escrow = escrow.NOTHING

    async def reserve(self, request: admission.Request) -> verdicts.Decision:
        """Decide one request; hold its reservation unless dry-run (module docstring)."""
        if self._latest is None:
            await self._read_fresh()
        quick = self._quick(request)
        if quick is not None:
            return quick
        if not request.dry_run:
            self._active = time.monotonic()
        pending = _Pending(request=request)
        self._queue.append(pending)
        self._start()
        return await asyncio.shield(pending.future)

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

    # -- the view and the decision ----------------------------------------------------------

    def _set_latest(self, quota: QuotaObject) -> None:
        self._latest = quota
        self._view_cache = None

    def _spec(self, quota: QuotaObject) -> quotas.QuotaSpec | ValueError:
        """The parsed spec, parsed once per generation."""
        generation = _generation(quota)
        if self._specs is None or self._specs[0] != generation:
            try:
                spec: quotas.QuotaSpec | ValueError = quotas.parse_quota(
                    name=self.name, spec=quota.get("spec") or {}
                )
            except ValueError as exc:
                spec = exc
            self._specs = (generation, spec)
        return self._specs[1]

    def _view(self) -> _View | ValueError:
        """The quota as last seen, with the reservations admitted from escrow on it."""
        if self._view_cache is not None:
            return self._view_cache
        assert self._latest is not None
        spec = self._spec(self._latest)
        if isinstance(spec, ValueError):
            return spec
        status = self._latest.get("status") or {}
        if self._unwritten:
            status = usage.add(status, self._unwritten.values(), budget=spec.monthly_budget)
        self._view_cache = _View(
            quota=self._latest,
            spec=spec,
            usage=usage.of_status(status),
            held=reservations.by_uid(status.get("reservations") or []),
            others=escrow.held_by_others(escrow.entries_of(status), holder=self.holder),
        )
        return self._view_cache

    def _decide(
        self,
        request: admission.Request,
        *,
        spec: quotas.QuotaSpec,
        status: QuotaStatus,
        others: escrow.Allowance,
        held: Mapping[str, Reservation] | None = None,
        counted: quotas.Usage | None = None,
    ) -> admission.Outcome:
        outcome = admission.admit(
            quota=spec,
            usage=usage.of_status(status) if counted is None else counted,
            others=others,
            request=request,
            held=reservations.by_uid(status.get("reservations") or []) if held is None else held,
            snapshot=self._snapshot(),
            now=self._clock(),
            holder=self.holder,
            in_flight_limit=self._limit,
        )
        return admission.dry(outcome) if request.dry_run else outcome

    def _quick(self, request: admission.Request) -> verdicts.Decision | None:
        """Answer at once when no write is at stake: a dry run, an update that adds
        nothing, or a CREATE this replica's escrow covers. None: queue it."""
        view = self._view()
        if isinstance(view, ValueError):
            return admission.invalid_quota(self.name, view).decision
        outcome = admission.admit(
            quota=view.spec,
            usage=view.usage,
            others=view.others,
            request=request,
            held=view.held,
            snapshot=self._snapshot(),
            now=self._clock(),
            holder=self.holder,
            in_flight_limit=self._limit,
        )
        if request.dry_run:
            return outcome.decision
        if outcome.admitted and outcome.hold is None:
            return outcome.decision  # e.g. an update that adds nothing
        if self._from_escrow(outcome):
            return outcome.decision
        return None

    def _from_escrow(self, outcome: admission.Outcome) -> bool:
        """Admit from this replica's escrow if it covers the outcome (module docstring)."""
        if (
            self._closing
            or self._latest is None
            or self._escrow.empty
            or not outcome.admitted
            or not outcome.escrow_ok
            or outcome.hold is None
            or _generation(self._latest) != self._escrow_generation
            or not self._escrow.fits(outcome.take)
            or not self._alive()
        ):
            return False
        self._escrow = self._escrow.minus(outcome.take)
        uid = str(outcome.hold.get("uid", ""))
        self._unwritten[uid] = outcome.hold
        view = self._view_cache
        if view is not None:  # move the view along: O(1), not a rebuild per admission
            replacing = view.held.get(uid)
            view.held[uid] = outcome.hold
            self._view_cache = dataclasses.replace(
                view, usage=usage.with_hold(view.usage, outcome.hold, replacing=replacing)
            )
        self._typical = outcome.take
        self._active = time.monotonic()
        self.from_escrow += 1
        metrics.admission_paths.labels(path="escrow").inc()
        self._start()
        return True

    # -- the writer ------------------------------------------------------------------------

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
                self._queue = [p for p in self._queue if not self._served_at_once(p)]
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

    def _served_at_once(self, pending: _Pending) -> bool:
        """Serve a queued request from the escrow if it covers it now (e.g. the escrow the
        round it queued behind has just taken): one write for a burst, not two."""
        if pending.future.done() or pending.deadline is not None or self._latest is None:
            return False
        decision = self._quick(pending.request)
        if decision is None:
            return False
        pending.future.set_result(decision)
        return True

    async def _read_fresh(self) -> QuotaObject:
        quota = await self.store.get_quota(namespace=self.namespace, name=self.name)
        if newer(quota, self._latest) or self._stale:
            self._set_latest(quota)
        self._stale = False
        assert self._latest is not None
        return self._latest

    async def _process(self, batch: list[_Pending]) -> None:
        deadline = time.monotonic() + RESERVE_DEADLINE
        attempt = 0
        while True:
            quota = self._latest if (self._latest and not self._stale) else await self._read_fresh()
            round_ = self._plan(quota, batch)
            sent = time.monotonic()
            if round_.patch:
                try:
                    written = await self.store.patch_quota_status(
                        namespace=self.namespace,
                        name=self.name,
                        status=round_.patch,
                        resource_version=quota.get("metadata", {}).get("resourceVersion"),
                    )
                except Conflict:
                    self.conflicts += 1
                    self._stale = True
                    attempt += 1
                    if time.monotonic() >= deadline:
                        break
                    if attempt > 2:  # a hot quota: let the other writers through
                        await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * 2**attempt)))  # noqa: S311
                    continue
                self._set_latest(written)
                self.writes += 1
                self._last_write = time.monotonic()
            self._written(round_, generation=_generation(quota), sent=sent)
            for i, p in enumerate(batch):
                if i in round_.results and not p.future.done():
                    p.future.set_result(round_.results[i])
                    metrics.admission_paths.labels(path="exact").inc()
            if round_.waiting:
                self._queue[:0] = round_.waiting
                self._stale = True  # see whether the others gave some back
                await asyncio.sleep(CONTENDED_POLL)
            return
        raise ReservationConflictError(
            f"DatabaseQuota {self.namespace}/{self.name} kept changing under "
            f"{attempt} compare-and-swap attempts in {RESERVE_DEADLINE:.0f}s; try again"
        )

    def _plan(self, quota: QuotaObject, batch: list[_Pending]) -> _Round:
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
        exact = any(not p.request.dry_run for p in batch)
        renew = (
            generation != self._escrow_generation
            or self._closing
            or idle
            or not self._alive()
            or (exact and not self._escrow.fits(self._typical))
        )
        round_ = self._round(quota, batch, renew=renew, idle=idle)
        if not renew and not round_.kept.empty and round_.refused:
            round_ = self._round(quota, batch, renew=True, idle=idle)
        return round_

    def _round(
        self, quota: QuotaObject, batch: list[_Pending], *, renew: bool, idle: bool
    ) -> _Round:
        base = cast(QuotaStatus, dict(quota.get("status") or {}))
        round_ = _Round(flushing=dict(self._unwritten), working=base, renew=renew)
        spec = self._spec(quota)
        if isinstance(spec, ValueError):
            for i in range(len(batch)):
                round_.results[i] = admission.invalid_quota(self.name, spec).decision
            return round_
        if round_.flushing:
            round_.working = usage.add(
                round_.working, round_.flushing.values(), budget=spec.monthly_budget
            )
        round_.kept = self._escrow  # what stays ours unless this round renews the grant
        if renew:
            self._escrow = round_.kept = escrow.NOTHING  # nothing admitted from it meanwhile
        room = self._decide_batch(spec, batch, round_)
        if renew and not (self._closing or idle) and self._alive() and room is not None:
            round_.kept = escrow.grant(room=room, share=self.share, typical=self._typical)
        round_.mine = self._entry(round_.kept, generation=_generation(quota))
        working = round_.working
        entries = [e for e in escrow.entries_of(working) if e.get("holder") != self.holder]
        escrow_after = entries + ([round_.mine] if round_.mine is not None else [])
        if escrow_after or "escrow" in base:
            working = cast(QuotaStatus, {**working, "escrow": escrow_after})
        round_.working = working
        round_.patch = {k: v for k, v in working.items() if base.get(k) != v}
        return round_

    def _decide_batch(
        self, spec: quotas.QuotaSpec, batch: list[_Pending], round_: _Round
    ) -> escrow.Allowance | None:
        """Decide the batch in order into ``round_``; the room left after the last admission."""
        entries = escrow.entries_of(round_.working)
        others = escrow.held_by_others(entries, holder=self.holder).plus(round_.kept)
        live_others = escrow.held_by_others(
            (e for e in entries if self._live(str(e.get("holder", "")))), holder=self.holder
        )
        room: escrow.Allowance | None = None
        for i, p in enumerate(batch):
            outcome = self._decide(p.request, spec=spec, status=round_.working, others=others)
            round_.refused = round_.refused or not (p.request.dry_run or outcome.admitted)
            if (
                not outcome.admitted
                and not live_others.nothing
                and self._may_wait(p)
                and self._decide(
                    p.request,
                    spec=spec,
                    status=round_.working,
                    others=others.minus(live_others),
                ).admitted
            ):
                round_.waiting.append(p)  # only live replicas' escrow keeps it out
                continue
            if outcome.hold is not None:
                round_.working = usage.add(
                    round_.working, [outcome.hold], budget=spec.monthly_budget
                )
                self._typical = outcome.take
            room = outcome.room if outcome.room is not None else room
            round_.results[i] = outcome.decision
        return room

    def _written(self, round_: _Round, *, generation: int, sent: float) -> None:
        """Bookkeeping once a round's patch is on the apiserver (or needed none)."""
        del sent
        for uid, reservation in round_.flushing.items():
            if self._unwritten.get(uid) is reservation:
                del self._unwritten[uid]
        self._view_cache = None
        self._held_on_server = round_.mine is not None
        if round_.renew:
            self._escrow = round_.kept
            self._escrow_generation = generation

    def _may_wait(self, pending: _Pending) -> bool:
        """Whether ``pending`` may still wait for other replicas' escrow (starts its clock)."""
        now = time.monotonic()
        if pending.deadline is None:
            pending.deadline = now + CONTENDED_WAIT
        return now < pending.deadline

    def _entry(self, kept: escrow.Allowance, *, generation: int) -> Escrow | None:
        if kept.empty:
            return None
        return escrow.entry(holder=self.holder, allowance=kept, generation=generation)


class Ledgers:
    """One :class:`Ledger` per quota, created on first use; all share one escrow holder."""

    def __init__(
        self,
        store: QuotaStore,
        *,
        snapshot: Callable[[], billing.BillingSnapshot],
        share: float = 0.0,
        holder: str | None = None,
        alive: Callable[[], bool] = lambda: True,
        live: Callable[[str], bool] = lambda _: True,
        in_flight_limit: int | None = None,
    ) -> None:
        self.store = store
        self.share = share
        self.holder = holder or holder_id()
        self._snapshot = snapshot
        self._alive = alive
        self._live = live
        self._limit = in_flight_limit
        self._ledgers: dict[tuple[str, str], Ledger] = {}

    def of(self, *, namespace: str, name: str) -> Ledger:
        """The ledger of quota ``namespace/name``."""
        key = (namespace, name)
        ledger = self._ledgers.get(key)
        if ledger is None:
            ledger = self._ledgers[key] = Ledger(
                store=self.store,
                namespace=namespace,
                name=name,
                snapshot=self._snapshot,
                holder=self.holder,
                share=self.share,
                alive=self._alive,
                live=self._live,
                in_flight_limit=self._limit,
            )
        return ledger

    def observe(self, quota: QuotaObject) -> None:
        """A quota as the watch delivered it (only ledgers already in use care)."""
        meta = quota.get("metadata", {})
        ledger = self._ledgers.get((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        if ledger is not None:
            ledger.observe(quota)

    def drop(self, *, namespace: str, name: str) -> None:
        """Forget a deleted quota."""
        self._ledgers.pop((namespace, name), None)

    async def close(self) -> None:
        """Write every pending reservation and give every escrow back (shutdown)."""
        await asyncio.gather(*(ledger.close() for ledger in self._ledgers.values()))
