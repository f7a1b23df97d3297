"""Reservations on a DatabaseQuota's status: by compare-and-swap, batched, and from escrow.

One :class:`Ledger` per quota and replica serialises that replica's writes:

- **The exact path** is the method of Kubernetes' ResourceQuota admission plugin: read
  the quota and its ``resourceVersion``, decide every queued request in order
  (:func:`dbquota.domain.rounds.plan`), write reservations and totals with a merge patch
  that carries the ``resourceVersion`` read. On a 409 another writer got there first: read
  again and decide the whole batch again, until :data:`RESERVE_DEADLINE` (losing races is
  a retry, not a denial; a read or write with no answer by then fails the round). One
  writer task per quota takes every request queued while the previous write was in
  flight, so N concurrent claims cost one round, not N rounds with N-1 conflicts each
  (kubernetes#67761).
- **The escrow path** takes that write off the review's path (the why and the invariant
  are in :mod:`dbquota.domain.escrow`): a CREATE the replica's escrow covers is admitted
  from memory at once, and its reservation joins the next write, at most every
  :data:`FLUSH_INTERVAL` (:data:`LEADER_FLUSH_INTERVAL` on the leader, which prices its
  own admissions from memory). The escrow is given back after :data:`IDLE_RETURN` idle
  near the budget and :data:`QUIET_RETURN` far from it, and serves only while this
  replica's liveness lease is trusted (``alive()``).
- **No wait where nothing is at stake**: an UPDATE that adds nothing and every dry run
  are decided against what this replica last saw (:mod:`dbquota.domain.views`; the watch
  keeps it current) and answered at once. So is a refusal for too many admissions in
  flight (``TooManyInFlight``): it is backpressure that says "try again", and queueing
  it for a round would cost a read and a write of the quota at the moment the quota is
  fullest, for a count the round could lower only by what the watch shows a moment later.
- A request that only *live* other replicas' escrow keeps out waits up to
  :data:`CONTENDED_WAIT` for them to use or return it, re-reading every
  :data:`CONTENDED_POLL`; a lapsed holder's escrow is not waited for.
- **An abandoned request reserves nothing**: when the apiserver gives up on a review
  (its timeout; :mod:`dbquota.handlers.webhook` then cancels the review), a request still
  queued for a round leaves the queue undecided. Without that, a burst that made the
  writes slow would hold budget for claims whose creates had already failed, until the
  reconciler released them after ``--reservation-grace``. A request whose round has
  already planned it keeps its reservation, released the same way.
- **A ledger serves one quota object, for life**: the one its ``metadata.uid`` names,
  not whatever bears its name. A quota deleted and created again under the same name
  (``kubectl replace --force``, Argo CD's ``Replace=true``, a Helm reinstall) is a new
  quota with a new uid, whose generation starts at 1 again, so nothing keyed by name or
  generation could tell them apart: the old ledger's escrow, its allowance in memory, its
  totals and its parsed spec would be written into the new quota, over its budget. So
  the ledger stops for good (:meth:`Ledger.stop`) once its object is gone: when the
  watch says so (:class:`dbquota.services.admitting.Ledgers` drops or replaces it), when
  a read finds another uid under the name (the compare-and-swap carries the
  ``resourceVersion`` of a copy of its own object, so no write reaches another), or when
  a read or write finds no quota at all (404: one INFO line, no retries). Its waiting
  requests fail with "try again"; the next review gets a new, empty ledger.

The reconciler writes the status through its own compare-and-swap
(:mod:`dbquota.services.reconciling`), never through this queue, so its refreshes never
delay an admission; on the leader it asks what escrow admitted and is not written yet
(:meth:`Ledger.unwritten`: the publisher prices those claims from memory, and until the
write that escrow holds them). Called by :mod:`dbquota.services.admitting`.

Size: the queue, the compare-and-swap writer and the escrow's flushes in one module,
because they are one state machine per quota: when the writer runs next depends on what
the queue and the escrow hold, and what the reconciler may read depends on the writes
in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from dbquota.adapters import metrics
from dbquota.domain import (
    admission,
    billing,
    escrow,
    quotas,
    reservations,
    rounds,
    usage,
    verdicts,
    views,
)
from dbquota.domain.reservations import ClaimRef
from dbquota.domain.resources import QuotaObject, QuotaStatus, Reservation
from dbquota.errors import Conflict, KubeError, NotFound
from dbquota.services import stores

logger = logging.getLogger(__name__)

RESERVE_DEADLINE = 8.0
"""Most seconds one batch keeps retrying lost compare-and-swap races before it gives up,
with a denial that says why; also the most all its reads and writes may take (a call stuck
on a dead connection fails there, not at the generic 30 s request timeout). Each review
also has a deadline of its own, shortly before the apiserver's timeout (the webhook's step
6): the chart's 5 s comes first."""
FLUSH_INTERVAL = 0.25
"""Seconds between two writes of reservations admitted from escrow (batching them)."""
LEADER_FLUSH_INTERVAL = 5.0
"""The same on the leader (:mod:`dbquota.domain.escrow` says why it may wait), unless a
quarter of ``reservations.MOST_HELD`` (500) wait: then it writes as the others do."""
IDLE_RETURN = 1.0
"""Seconds without admissions after which a replica gives its escrow back near the budget."""
QUIET_RETURN = 10.0
"""The same far from the budget, where the escrow keeps nobody out."""
WAKE_SLACK = 0.001
"""Seconds a write may come after it is due rather than wake the writer (:meth:`Ledger._nudge`)."""
CONTENDED_WAIT = 3.0
"""Most seconds a request waits for live other replicas' escrow before it is decided with it."""
CONTENDED_POLL = 0.05
"""Seconds between re-reads of the quota while a request waits for other replicas' escrow."""
CLOSE_PATIENCE = 5.0
"""Most seconds shutdown waits for the last reservations and the escrow's return."""
RETRY_DELAY = 0.5
"""Seconds before retrying to write reservations after a failed write."""

_generation = views.generation_of
T = TypeVar("T")


@dataclass
class _Pending:
    request: admission.Request
    deadline: float | None = None  # set once live other replicas' escrow keeps it waiting
    future: asyncio.Future[verdicts.Decision] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


async def _by(deadline: float | None, call: Awaitable[T]) -> T:
    """``call``'s answer, or a ``KubeError`` at ``deadline`` (monotonic; None: no bound).

    A round's reads and writes may take what is left of its :data:`RESERVE_DEADLINE`, not
    the generic request timeout (30 s): the reviews waiting on the round are answered
    within it (sooner still by the webhook's own deadline), and a call stuck on a dead
    pooled connection (after an apiserver or load balancer failover) held the writer, and
    every review queued behind it, that long. The round fails like any failed write: its
    reviews hear "try again", and a write it owed is retried on a new connection."""
    if deadline is None:
        return await call
    limit = asyncio.timeout(max(0.0, deadline - time.monotonic()))
    try:
        async with limit:
            return await call
    except TimeoutError as exc:
        if not limit.expired():
            raise
        raise KubeError(
            f"no answer from the apiserver within the reservation deadline "
            f"({RESERVE_DEADLINE:.0f}s)"
        ) from exc


class Ledger:
    """Serialises one replica's reservations on one DatabaseQuota; see the module docstring."""

    def __init__(
        self,
        *,
        store: stores.QuotaStore,
        namespace: str,
        name: str,
        snapshot: Callable[[], billing.BillingSnapshot],
        holder: str | None = None,
        share: float = 0.0,
        alive: Callable[[], bool] = lambda: True,
        live: Callable[[str], bool] = lambda _: True,
        clock: Callable[[], float] = time.time,
        in_flight_limit: int | None = None,
        present: Callable[[str], Mapping[str, ClaimRef]] = lambda _: {},
        leading: Callable[[], bool] = lambda: False,
        uid: str | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.name = name
        self.uid = uid
        """The quota object (``metadata.uid``) this ledger serves; None until a first copy."""
        self.gone = ""
        """Why that object is gone ("deleted", "replaced by ..."), once it is: no more writes."""
        self.holder = holder or stores.holder_id()
        self.share = share
        self._snapshot = snapshot
        self._alive = alive
        self._live = live
        self._clock = clock
        self._limit = in_flight_limit
        self._leading = leading
        self._present = functools.partial(present, namespace)  # bound once, not per review
        self._in_flight = admission.InFlightCount()
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sleeps_until = -math.inf  # when the writer's sleep ends; -inf: it is not asleep
        self.known = views.QuotaView(name=name, holder=self.holder)
        self.account = escrow.Account(
            share=share,
            flush_interval=FLUSH_INTERVAL,
            idle_return=IDLE_RETURN,
            lazy_flush=LEADER_FLUSH_INTERVAL,
            lazy_most=reservations.MOST_HELD // 4,
            quiet_return=QUIET_RETURN,
        )
        self._room_of: QuotaObject | None = None  # the copy _see_room last looked at
        self._unsure = 0  # writes whose outcome is not known yet (:meth:`_write`)
        self._known_again = asyncio.Event()  # cleared while _unsure
        self.writes = 0
        self.conflicts = 0
        self.from_escrow = 0

    # -- what admission calls ------------------------------------------------------------

    def observe(self, quota: QuotaObject) -> None:
        """A newer copy of the quota (from the watch, or a write of another writer): decide
        against it from now on. A spec change (new generation) ends the escrow taken under
        the old spec; an informer lagging behind the ledger's own writes is no news."""
        if self.gone or not self._same(quota):
            return
        if self.known.observe(quota):
            self.account.spec_changed(_generation(quota))
            if self.account.on_server:
                self._wake.set()  # the room moved: the writer sees whether to keep the escrow

    async def reserve(self, request: admission.Request) -> verdicts.Decision:
        """Decide one request; hold its reservation unless dry-run (module docstring).
        Cancelled while it waits for a round, it is taken out of the queue undecided.
        :class:`~dbquota.services.stores.QuotaGoneError` once the quota object is gone."""
        if self.known.latest is None and not self.gone:
            await self._read_fresh()
        if self.gone:  # also while the read was in flight (the watch saw the delete)
            raise self._gone_error()
        quick = self._quick(request)
        if quick is not None:
            return quick
        if not request.dry_run:
            self._see_room()
            self.account.demand(time.monotonic())
        pending = _Pending(request=request)
        self._queue.append(pending)
        self._start()
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            pending.future.cancel()  # abandoned: no round decides it from now on
            raise

    def wake(self) -> None:
        """Plan the next write again (e.g. this replica no longer leads: write soon)."""
        if self.account.owes_a_write:
            self._start()

    async def unwritten(self, patience: float) -> frozenset[str] | None:
        """Uids of claims admitted from escrow and not written yet. A flush in flight makes
        that ambiguous (the quota as read may hold it): wait up to ``patience`` for its
        answer, else None. The reconciler reads the quota first; anything newer fails its CAS.
        Once the object is gone, nothing: what it admitted is no other quota's."""
        if self._unsure and not self.gone:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience):
                    while self._unsure:  # the next write may start before this resumes
                        await self._known_again.wait()
        if self.gone:
            return frozenset()
        return None if self._unsure else frozenset(self.account.unwritten)

    async def close(self) -> None:
        """Write what was admitted from escrow and give the escrow back (shutdown)."""
        self.account.close()
        if self.gone or not (self.account.owes_a_write or self._queue):
            return
        self._start()
        assert self._writer is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_PATIENCE)

    def stop(self, why: str = "deleted") -> asyncio.Task[None] | None:
        """The quota object is gone (``why``: deleted, or replaced under its name): write
        nothing more, for good (module docstring). Requests waiting here fail with
        :class:`~dbquota.services.stores.QuotaGoneError`; the writer is cancelled and
        returned for the caller to await, here or at a later call (None: none runs, or it
        is the caller)."""
        writer = self._writer
        if writer is not None and (writer.done() or writer is asyncio.current_task()):
            writer = None
        if self.gone:
            return writer  # cancelled when it stopped
        self.gone = why
        logger.info(
            "DatabaseQuota %s/%s (uid %s) %s: its reservation ledger stops",
            self.namespace,
            self.name,
            self.uid or "unknown",
            why,
        )
        self._fail(self._queue)
        self._queue = []
        self._unsure = 0
        self._known_again.set()  # nobody waits on a write whose answer no longer matters
        if writer is not None:
            writer.cancel()
        return writer

    def _same(self, quota: QuotaObject) -> bool:
        """Whether ``quota`` is a copy of this ledger's object (the first copy binds it). A
        copy of a newer object by its name means its own is gone: it stops."""
        uid = views.uid_of(quota)
        if self.uid is None:
            self.uid = uid
        if uid == self.uid:
            return True
        if views.newer(quota, self.known.latest):
            self.stop(f"replaced by a new object of the same name (uid {uid or 'unknown'})")
        return False

    def _gone_error(self) -> stores.QuotaGoneError:
        return stores.QuotaGoneError(f"DatabaseQuota {self.namespace}/{self.name} was {self.gone}")

    def _fail(self, pendings: list[_Pending]) -> None:
        """Answer requests that no round will decide: the quota is gone (or, on shutdown,
        the writer was cancelled)."""
        for p in pendings:
            if p.future.done():
                continue
            if self.gone:
                p.future.set_exception(self._gone_error())
            else:
                p.future.cancel()

    # -- the view and the decision ----------------------------------------------------------

    def _decide(
        self,
        request: admission.Request,
        status: QuotaStatus,
        others: escrow.Allowance,
        *,
        counted: quotas.Usage | None = None,
        held: Mapping[str, Reservation] | None = None,
    ) -> admission.Outcome:
        """Decide one request against ``status`` (or the ``counted`` usage and ``held``
        reservations already derived from it) with :func:`dbquota.domain.admission.admit`."""
        spec = self.known.spec()
        if isinstance(spec, ValueError):
            return admission.invalid_quota(self.name, spec)
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
            present=self._present,
            in_flight=self._in_flight,
        )
        return admission.dry(outcome) if request.dry_run else outcome

    def _quick(self, request: admission.Request) -> verdicts.Decision | None:
        """Answer at once when no write is at stake: a dry run, an update that adds
        nothing, a refusal for too many in flight, or a CREATE this replica's escrow
        covers. None: queue it."""
        view = self.known.current(self.account.unwritten)
        if isinstance(view, ValueError):
            return admission.invalid_quota(self.name, view).decision
        outcome = self._decide(
            request, view.quota.get("status") or {}, view.others, counted=view.usage, held=view.held
        )
        if request.dry_run:
            return outcome.decision
        if outcome.admitted and outcome.hold is None:
            return outcome.decision  # e.g. an update that adds nothing
        if outcome.backpressure:
            return outcome.decision  # from this view (module docstring)
        if self._from_escrow(outcome):
            return outcome.decision
        return None

    def _from_escrow(self, outcome: admission.Outcome) -> bool:
        """Admit from this replica's escrow if it covers the outcome (module docstring)."""
        hold, latest = outcome.hold, self.known.latest
        if (
            latest is None
            or hold is None
            or not (outcome.admitted and outcome.escrow_ok)
            or not self.account.covers(
                outcome.take, generation=_generation(latest), alive=self._alive()
            )
        ):
            return False
        self.account.admit(hold=hold, take=outcome.take, now=time.monotonic())
        self.known.admitted(hold)
        self.from_escrow += 1
        metrics.from_escrow.inc()
        self._nudge()
        return True

    # -- the writer ------------------------------------------------------------------------

    def _start(self) -> None:
        if self.gone:
            return
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=f"ledger {self.name}")

    def _nudge(self) -> None:
        """After an admission from escrow: wake the writer only if the write it owes is now
        due before its sleep ends. An admission can only bring that write forward (the first
        one not written, or not priced on the leader); waking the writer on every one would
        cost a task switch and a new timeout per review for nothing. :data:`WAKE_SLACK`
        absorbs the clock read between planning the sleep and starting it."""
        if self._writer is not None and not self._writer.done():
            now = time.monotonic()
            delay = self.account.next_delay(now, leading=self._leading(), appeared=self._appeared)
            if delay is None or now + delay >= self._sleeps_until - WAKE_SLACK:
                return
        self._start()

    async def _drain(self) -> None:
        """The writer: exact rounds at once, escrow flushes batched, the escrow returned.

        It outlives any failure of its own (a bug: failed writes are handled in
        :meth:`_turn`): a writer that died would leave queued reviews waiting until the
        webhook gives up on them, and a write it owes (an escrow flush or return on a quiet
        quota) undone until the next review on this replica."""
        while True:
            try:
                if not await self._turn():
                    return
            except Exception:
                logger.exception(
                    "the writer of DatabaseQuota %s/%s failed; going on in %.1fs",
                    self.namespace,
                    self.name,
                    RETRY_DELAY,
                )
                await asyncio.sleep(RETRY_DELAY)

    async def _turn(self) -> bool:
        """Sleep until the next round is due, or run it; False: nothing left to do."""
        if (delay := self._next_delay()) is None:
            return False
        if delay > 0:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and the writer must stop when cancelled.
            self._sleeps_until = time.monotonic() + delay
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            finally:
                self._sleeps_until = -math.inf  # awake: it looks at everything next
            return True
        if self._queue:  # done: abandoned while queued (the webhook cancelled it)
            self._queue = [
                p for p in self._queue if not (p.future.done() or self._served_at_once(p))
            ]
            if not self._queue:
                return True  # no round: all abandoned, or served by the escrow just taken
        batch, self._queue = self._queue, []
        try:
            await self._process(batch)
        except asyncio.CancelledError:
            self._fail(batch)  # stopped mid-round (the quota is gone), or shutdown
            raise
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
            return await self._round_failed(batch, exc)
        return True

    async def _round_failed(self, batch: list[_Pending], exc: Exception) -> bool:
        """Tell ``batch`` why its round failed; wait to retry a write still owed. False:
        the writer stops (the quota is gone, or this is shutdown's last try)."""
        if self.gone:  # found gone by this round: said once by stop(), no retry
            self._fail(batch)
            return False
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)
        if not self.account.owes_a_write:
            return True
        logger.warning(
            "could not write DatabaseQuota %s/%s status (retrying in %.1fs): %s",
            self.namespace,
            self.name,
            RETRY_DELAY,
            exc,
        )
        if self.account.closing:
            return False
        await asyncio.sleep(RETRY_DELAY)
        return True

    def _next_delay(self) -> float | None:
        """Seconds until the writer's next round (<= 0: now); None: nothing left to do, or
        the quota is gone."""
        self._wake.clear()
        if self.gone:
            return None
        if self._queue:
            return 0.0
        if self.account.on_server:
            self._see_room()
        return self.account.next_delay(
            time.monotonic(), leading=self._leading(), appeared=self._appeared
        )

    def _see_room(self) -> None:
        """Tell the escrow account what is free outside every escrow, as the view shows it.
        Once per copy of the quota: an admission from this replica's escrow moves an amount
        from its allowance to its usage, which leaves that room as it was."""
        latest = self.known.latest
        if latest is None or latest is self._room_of:
            return
        self._room_of = latest
        view = self.known.current(self.account.unwritten)
        if isinstance(view, ValueError):
            self.account.roomy = False
        else:
            self.account.room_seen(view.free(self.account.allowance))

    def _served_at_once(self, pending: _Pending) -> bool:
        """Serve a queued request from the escrow if it covers it now (e.g. the escrow the
        round it queued behind has just taken): one write for a burst, not two."""
        if pending.deadline is not None or self.known.latest is None:
            return False
        decision = self._quick(pending.request)
        if decision is None:
            return False
        pending.future.set_result(decision)
        return True

    async def _read_fresh(self, *, deadline: float | None = None) -> QuotaObject:
        """The quota as the apiserver has it now, if it is still this ledger's object;
        given up at ``deadline`` (monotonic), if any (:func:`_by`)."""
        try:
            quota = await _by(
                deadline, self.store.get_quota(namespace=self.namespace, name=self.name)
            )
        except NotFound:
            self.stop("deleted")
            raise self._gone_error() from None
        if self.gone or not self._same(quota):
            self.stop("replaced by a new object of the same name")  # if _same did not
            raise self._gone_error()
        if views.newer(quota, self.known.latest) or self.known.stale:
            self.known.set(quota)
        self.known.stale = False
        assert self.known.latest is not None
        return self.known.latest

    async def _process(self, batch: list[_Pending]) -> None:
        deadline = time.monotonic() + RESERVE_DEADLINE
        attempt = 0
        while True:
            # Those abandoned while a lost race is retried are left out (a round with no
            # request, an escrow flush, is planned all the same).
            batch[:] = [p for p in batch if not p.future.done()]
            quota = await self._planned_on(deadline)
            round_ = rounds.plan(
                quota=quota,
                spec=self.known.spec(quota),
                requests=[p.request for p in batch],
                account=self.account,
                holder=self.holder,
                alive=self._alive(),
                live=self._live,
                may_wait=lambda i: self._may_wait(batch[i]),
                decide=self._decide,
                now=time.monotonic(),
                confirmed=self._confirmed,
            )
            if round_.patch:
                try:
                    written = await self._write(quota, round_, deadline=deadline)
                except Conflict:
                    self.conflicts += 1
                    self.known.stale = True
                    attempt += 1
                    if time.monotonic() >= deadline:
                        break
                    if attempt > 2:  # a hot quota: let the other writers through
                        await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * 2**attempt)))  # noqa: S311
                    continue
                self.known.set(written)
                self.writes += 1
            self.account.written(
                round_.flushing,
                renewed=round_.kept if round_.renew else None,
                generation=_generation(quota),
                on_server=round_.mine is not None,
                now=time.monotonic() if round_.patch else None,
            )
            if round_.patch and round_.flushing:
                self._known(landed=True)  # once account.unwritten says so too
            self.known.forget_view()
            for i, p in enumerate(batch):
                if i in round_.results and not p.future.done():
                    p.future.set_result(round_.results[i])
                    metrics.exact.inc()
            if round_.waiting:
                self._queue[:0] = [batch[i] for i in round_.waiting]
                self.known.stale = True  # see whether the others gave some back
                await asyncio.sleep(CONTENDED_POLL)
            return
        raise stores.ReservationConflictError(
            f"DatabaseQuota {self.namespace}/{self.name} kept changing under "
            f"{attempt} compare-and-swap attempts in {RESERVE_DEADLINE:.0f}s; try again"
        )

    async def _planned_on(self, deadline: float) -> QuotaObject:
        """The quota a round plans on: the one known, unless stale; else read afresh."""
        known = self.known
        if known.latest and not known.stale:
            return known.latest
        return await self._read_fresh(deadline=deadline)

    async def _write(
        self, quota: QuotaObject, round_: rounds.Round, *, deadline: float
    ) -> QuotaObject:
        """Send one round's patch, given up at the round's ``deadline`` (:func:`_by`); one
        that flushes escrow admissions is unsure until its answer is taken in, or a
        conflict, or after any other failure (a timeout included) a later one lands."""
        if round_.flushing:
            self._unsure += 1
            self._known_again.clear()
        try:
            return await _by(
                deadline,
                self.store.patch_quota_status(
                    namespace=self.namespace,
                    name=self.name,
                    status=round_.patch,
                    resource_version=quota.get("metadata", {}).get("resourceVersion"),
                ),
            )
        except Conflict:
            if round_.flushing:
                self._known(landed=False)
            raise
        except NotFound:
            self.stop("deleted")
            raise self._gone_error() from None

    def _known(self, *, landed: bool) -> None:
        self._unsure = 0 if landed else self._unsure - 1
        if not self._unsure:
            self._known_again.set()

    def _appeared(self, uid: str) -> bool:
        """Whether the DatabaseClaim of escrow admission ``uid`` exists, as this replica's
        watch shows it: then it shows its price, or will from this ledger's memory (the
        leader's publisher writes its status from what escrow admitted here,
        ``Admission.admitted_here``), and needs no reservation on the quota for that.
        Another operator's object does (:meth:`_confirmed`): it is written as soon as on a
        replica that does not lead."""
        claim = self._present().get(uid)
        return claim is not None and claim.owned

    def _confirmed(self, res: Reservation) -> bool:
        """Whether ``res``'s DatabaseClaim, as this replica's watch shows it, shows the
        price ``res`` charged (:func:`dbquota.domain.reservations.confirmed_by`), so that a
        write may drop ``res``. Never another operator's object's: the leader announces
        what its admission charged (the ``Priced`` Event, :mod:`dbquota.services.
        announcing`) from its reservation on the quota, as the object's and the quota's
        events come, before its reconciler ends that reservation (``Counted``). Dropped
        here because the object existed by the time an escrow admission was written, it
        never reached the quota, and the object never got its Event."""
        claim = self._present().get(str(res.get("uid", "")))
        return claim is not None and claim.owned and reservations.confirmed_by(res, claim)

    def _may_wait(self, pending: _Pending) -> bool:
        """Whether ``pending`` may still wait for other replicas' escrow (starts its clock)."""
        now = time.monotonic()
        if pending.deadline is None:
            pending.deadline = now + CONTENDED_WAIT
        return now < pending.deadline
