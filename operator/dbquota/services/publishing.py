"""Claim status: each admitted claim carries the price its admission charged.

The objects are the ledger (:mod:`dbquota.domain.reservations`): once a claim's status
shows its price for its generation, every quota of its namespace counts it at that price
and its reservation on the quota ends. This service writes that status — one
``PATCH .../databaseclaims/<name>/status`` per claim generation, nothing else — on the
leader (:class:`dbquota.services.leasing.LeaderElection`), driven by events, never by
polling:

- a claim appears (or its spec changes) without a price for its generation: it waits for
  its reservation, which the quota's watch brings (the webhook wrote it before answering),
  or which this replica's own ledger holds (it admitted the claim from its escrow and
  writes the reservation a moment later: ``admitted_here``, no wait for that write and
  its watch event; the reconciler keeps such a claim out of its count until then), then
  writes
  ``estimatedMonthlyCost``, ``pricing``, ``reservedAt``, ``degraded`` and the
  ``Admitted`` condition from it;
- an UPDATE that added nothing has no reservation: after :data:`NO_HOLD_WAIT` the status
  keeps its price and only moves ``observedGeneration`` (tools such as Argo CD read an
  older one as "still progressing"). Only while the quota watch is current
  (``Informer.current``): while it is not (the apiserver restarting), the UPDATE's
  reservation may be on the quota unseen, and its growth must not be confirmed at the
  old price;
- a claim that shows a price below what a reservation of its generation (or an older
  one) holds gets the higher price (:func:`dbquota.domain.reservations.owed`): that
  reservation came after the price was written (a watch late by more than
  :data:`NO_HOLD_WAIT`, another quota's reservation, a CREATE written late from a
  replica's escrow), and it is not confirmed, so it would stay on the quota for good;
- a claim in a namespace with no DatabaseQuota is priced at the current catalog
  (``NoQuota``), once there are prices (never at 0 for want of them);
- a claim that never gets a reservation is *adopted* by the reconciler, which then holds
  one for it: that reservation is written here like any other.

Writes run a few at a time beside everything else: :data:`STEADY_WORKERS` while they keep
up, so that they do not crowd out the apiserver's work on the creates being admitted,
doubling for each :data:`BACKLOG_AGE` that the oldest claim ready to be written has
waited, up to :data:`WORKERS` (:func:`in_flight`). Each answer goes straight into the
claim informer, and the namespace's quotas are marked dirty so the reconciler confirms
the reservations. Called by the operator's start-up code.

Size: the status a claim gets (pure functions, first) and the writer that schedules it in
one module, because each wait of the writer (for a reservation, for :data:`NO_HOLD_WAIT`,
for the quota watch, for prices) is one case of what those functions answer; kept apart,
a case would be added to one and not the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dbquota.adapters.kube import Informer
from dbquota.domain import billing, conditions, pricing, reservations
from dbquota.domain.resources import ClaimStatus, Reservation
from dbquota.errors import KubeError, NotFound
from dbquota.kits import timestamps
from dbquota.kits.schedules import DueQueue

logger = logging.getLogger(__name__)

NO_HOLD_WAIT = 2.0
"""Seconds a claim whose spec changed waits for a reservation before its status moves to
the new generation at the old price (an UPDATE that added nothing has none)."""
STEADY_WORKERS = 2
"""Status writes in flight at once while the writes keep up (the oldest claim ready to be
written has waited at most :data:`BACKLOG_AGE`). Each write is apiserver CPU that the
creates being admitted at the same moment also need: with 16 in flight, every flush of
escrow reservations (a batch of claims ready at once) met the next creates with 16 writes
ahead of them, and at 100 creates/s on two cores the creates' p99 was twice that with 2
(``bench/README.md``, "Fewer claim status writes at once")."""
WORKERS = 16
"""Most status writes in flight at once, for a backlog (a burst faster than
:data:`STEADY_WORKERS` writes keep up with, a new leader catching up on thousands of
claims): then claims showing their price soon matters more than the creates' tail."""
BACKLOG_AGE = 0.5
"""Each time the oldest claim ready to be written has waited this many seconds more, the
writes allowed at once double, from :data:`STEADY_WORKERS` up to :data:`WORKERS`
(:func:`in_flight`). Going to 16 at once, at 200 creates/s, gave the creates a p99 about
twice that of doubling step by step, with the same time to a price."""
RETRY_DELAY = 1.0
"""Seconds before a failed status write is tried again."""
WAIT_CHECK = 10.0
"""Seconds after which a claim still waiting for its reservation is looked at again (it
is looked at whenever a quota of its namespace changes, which is when one arrives)."""
RECHECK_EVERY = 1.0
"""Most often, in seconds, that the reservations of a namespace's changed quotas are
gone through for claims whose price is below one of them (module docstring). Not at each
change: in a burst a quota changes many times a second, with hundreds of reservations;
and such a claim is counted meanwhile (its reservation stays), only not settled yet."""


def in_flight(waited: float) -> int:
    """Status writes allowed at once when the oldest claim ready to be written has
    ``waited`` seconds: :data:`STEADY_WORKERS` while they keep up, doubling every
    :data:`BACKLOG_AGE` of backlog, at most :data:`WORKERS`."""
    steps = int(max(0.0, waited) / BACKLOG_AGE)
    return WORKERS if steps >= WORKERS.bit_length() else min(WORKERS, STEADY_WORKERS << steps)


def claim_status(
    *,
    ref: reservations.ClaimRef,
    held: Sequence[Reservation],
    quotas: Sequence[str],
    snapshot: billing.BillingSnapshot,
    now: float,
) -> ClaimStatus | None:
    """The status to write for ``ref``, from its reservations on the namespace's quotas
    (and those this replica admitted from escrow, not written yet); None when it must wait
    for one, or shows its price already.

    With several quotas (each pricing at its own safety margin) the claim carries the
    highest of their prices, so none of them counts it for less than it charged.
    """
    generation = ref.generation
    mine = [r for r in held if r.get("uid") == ref.uid]
    due: Reservation | None
    if ref.priced:  # raised if its reservations come to more (of a newer generation: the
        # part it built on)
        due = reservations.raised(ref, mine)
        if due is None:
            return None
    elif any(_generation(r) >= generation for r in mine):
        due = reservations.owed(ref, mine)
    elif not quotas:
        return _no_quota(ref, snapshot=snapshot, now=now)
    else:
        return None  # wait: for its reservation, or (an update that added nothing) for time
    assert due is not None
    return _charged(ref, due, mine=mine, quotas=quotas, now=now)


def moved(
    *, ref: reservations.ClaimRef, held: Sequence[Reservation], quotas: Sequence[str], now: float
) -> ClaimStatus | None:
    """The status of a claim whose spec changed and reserved nothing, once it has waited:
    its price so far at the new generation (raised to an older reservation it does not
    cover: :func:`~dbquota.domain.reservations.owed`); None with no price nor reservation
    (it waits for one, or for the reconciler to adopt it)."""
    mine = [r for r in held if r.get("uid") == ref.uid]
    due = reservations.owed(ref, mine)
    if due is None:
        return None
    if ref.cost is not None and ref.cost >= float(due.get("cost", 0.0)) - reservations.HALF_CENT:
        return ClaimStatus(observedGeneration=ref.generation)
    return _charged(ref, due, mine=mine, quotas=quotas, now=now)


def _generation(res: Reservation) -> int:
    return int(res.get("generation", 1))


def _charged(
    ref: reservations.ClaimRef,
    due: Reservation,
    *,
    mine: Sequence[Reservation],
    quotas: Sequence[str],
    now: float,
) -> ClaimStatus:
    """The status that shows ``due``, what ``ref``'s reservations come to."""
    cost = round(float(due.get("cost", 0.0)), 2)
    mode = str(due.get("pricing", "None"))
    message = f"admitted at {cost:,.2f}/month ({mode} pricing) under DatabaseQuota " + ", ".join(
        sorted({str(q) for q in quotas})
    )
    current = (r for r in mine if _generation(r) >= ref.generation)
    return _status(
        ref,
        cost=cost,
        mode=mode,
        reserved_at=str(due.get("reservedAt", timestamps.to_rfc3339(now))),
        degraded=bool(due.get("degraded")) or any(bool(r.get("degraded")) for r in current),
        reason=f"{mode}Pricing" if mode in pricing.PRICING_MODES else "Admitted",
        message=message,
        now=now,
    )


def _no_quota(
    ref: reservations.ClaimRef, *, snapshot: billing.BillingSnapshot, now: float
) -> ClaimStatus | None:
    """The status of a claim in a namespace with no quota: priced at the current catalog;
    None (wait) while there are no prices at all, rather than a price of 0 that a quota
    made later would count it at."""
    if ref.spec is None:
        return None
    cost, mode = pricing.estimate(claim=ref.spec, snapshot=snapshot, margin=1.0)
    if mode is None:
        return None
    return _status(
        ref,
        cost=round(cost, 2),
        mode=mode,
        reserved_at=timestamps.to_rfc3339(now),
        degraded=False,
        reason="NoQuota",
        message="admitted: the namespace has no DatabaseQuota",
        now=now,
    )


def _status(
    ref: reservations.ClaimRef,
    *,
    cost: float,
    mode: str | None,
    reserved_at: str,
    degraded: bool,
    reason: str,
    message: str,
    now: float,
) -> ClaimStatus:
    status = ClaimStatus(
        observedGeneration=ref.generation,
        estimatedMonthlyCost=cost,
        reservedAt=reserved_at,
        degraded=degraded,
        conditions=[
            conditions.Condition(
                type="Admitted",
                status="True",
                reason=reason,
                message=message,
                lastTransitionTime=timestamps.to_rfc3339(now),
                observedGeneration=ref.generation,
            )
        ],
    )
    if mode in pricing.PRICING_MODES:
        status["pricing"] = mode
    return status


class StatusWriter(Protocol):
    """Where claim statuses are written (:class:`dbquota.adapters.kube.Kube`)."""

    async def patch_claim_status(
        self, *, namespace: str, name: str, uid: str, status: ClaimStatus
    ) -> dict[str, Any]:
        """Merge-patch one claim's status; the object as written."""
        ...


class Publisher:
    """Writes claim statuses on the leader; see the module docstring.

    Scheduling is O(1) per event however many claims are pending: a claim to look at
    goes to a FIFO of ready claims; one whose reservation has not arrived waits, per
    namespace, until a quota of its namespace changes (the watch brings the reservation),
    with a timer as a safety net; the namespace's reservations are indexed by uid once
    per quota change, not searched per claim. After a quota changes, the claims its
    reservations name that show a price already are looked at once more (their price may
    be below a reservation's: module docstring), at most every :data:`RECHECK_EVERY`.
    """

    def __init__(
        self,
        *,
        kube: StatusWriter,
        claims: Informer[reservations.ClaimRef],
        quotas: Informer[Any],
        snapshot: Callable[[], billing.BillingSnapshot],
        clock: Callable[[], float] = time.time,
        leading: Callable[[], bool] = lambda: True,
        on_published: Callable[[str], None] = lambda _: None,
        admitted_here: Callable[[str, str], list[Reservation]] = lambda *_: [],
    ) -> None:
        self._kube = kube
        self._admitted_here = admitted_here
        self._claims = claims
        self._quotas = quotas
        self._snapshot = snapshot
        self._clock = clock
        self._leading = leading
        self._on_published = on_published
        # claims ready to be written, oldest first, each with when it became ready
        self._ready: dict[tuple[str, str], float] = {}
        self._waiting: dict[str, set[str]] = {}  # namespace -> claims awaiting a reservation
        self._timers: DueQueue[tuple[str, str]] = DueQueue()  # claims to look at again
        self._index: dict[str, tuple[dict[str, list[Reservation]], list[str]]] = {}
        self._writing: set[tuple[str, str]] = set()
        self._first: dict[tuple[str, str], float] = {}  # when a changed spec was first seen
        self._failing: dict[tuple[str, str], str] = {}  # claim -> its last unexpected error
        self._changed: set[str] = set()  # namespaces whose quotas changed since last looked
        self._rechecked = -float("inf")  # monotonic: when they were last looked at
        self._wake = asyncio.Event()
        self.writes = 0
        claims.add_listener(self._claim_changed)
        quotas.add_listener(self._quota_changed)

    def _claim_changed(
        self,
        namespace: str,
        name: str,
        before: reservations.ClaimRef | None,
        after: reservations.ClaimRef | None,
    ) -> None:
        del before
        if after is None:
            self._ready.pop((namespace, name), None)
            self._timers.discard((namespace, name))
            self._waiting.get(namespace, set()).discard(name)
            self._first.pop((namespace, name), None)
            self._failing.pop((namespace, name), None)
        elif not after.priced or (self._leading() and self._owes(namespace, after)):
            self._make_ready(namespace, name)
        else:  # priced (by us, or by the leader while this replica stands by)
            self._ready.pop((namespace, name), None)
            self._timers.discard((namespace, name))

    def _quota_changed(self, namespace: str, name: str, before: object, after: object) -> None:
        del name, before, after
        self._index.pop(namespace, None)
        if not self._changed:
            self._wake.set()  # for the recheck (:meth:`run` waits no longer than its time)
        self._changed.add(namespace)
        for waiting in self._waiting.pop(namespace, set()):  # a reservation may be in
            self._make_ready(namespace, waiting)

    def _owes(self, namespace: str, ref: reservations.ClaimRef) -> bool:
        """Whether priced ``ref`` shows less than a reservation of it on the namespace's
        quotas holds (:func:`dbquota.domain.reservations.owes`)."""
        held = self._holds(namespace)[0].get(ref.uid)
        return held is not None and reservations.owes(ref, held)

    def _recheck(self, now: float) -> None:
        """Make ready the priced claims that the reservations of changed quotas say owe,
        if :data:`RECHECK_EVERY` has passed."""
        if not self._changed or now - self._rechecked < RECHECK_EVERY:
            return
        self._rechecked = now
        while self._changed:
            namespace = self._changed.pop()
            for uid, held in self._holds(namespace)[0].items():
                ref = self._claims.derived(namespace=namespace, name=str(held[0].get("claim")))
                if ref is not None and ref.uid == uid and ref.priced and self._owes(namespace, ref):
                    self._make_ready(namespace, ref.name)

    def _make_ready(self, namespace: str, name: str) -> None:
        self._ready.setdefault((namespace, name), time.monotonic())
        self._wake.set()

    def _workers(self, now: float) -> int:
        """How many writes may be in flight now (:func:`in_flight`)."""
        return in_flight(now - next(iter(self._ready.values()), now))

    def _later(self, namespace: str, name: str, delay: float) -> None:
        """Look at the claim again in ``delay`` seconds (or sooner, if already due sooner)."""
        self._timers.put((namespace, name), time.monotonic() + delay)
        self._wake.set()

    def resync(self) -> None:
        """Look at every claim again (this replica just became the leader)."""
        for namespace in self._claims.namespaces():
            for ref in self._claims.in_namespace(namespace):
                if not ref.priced or self._owes(namespace, ref):
                    self._make_ready(namespace, ref.name)

    async def run(self) -> None:
        """Write due statuses while leading, a few at a time (:meth:`_workers`)."""
        running: set[asyncio.Task[None]] = set()
        while True:
            self._wake.clear()
            now = time.monotonic()
            while (due := self._timers.pop_due(now)) is not None:
                self._ready.setdefault(due, now)
            if self._leading():
                self._recheck(now)
                # Only the oldest few are looked at: a backlog of thousands (a burst
                # outpacing the writes) is not copied on every wake. Of these at most
                # len(self._writing) are skipped, so a free worker never goes unused.
                workers = self._workers(now)
                for key in list(itertools.islice(self._ready, workers + len(self._writing))):
                    if len(running) >= workers:
                        break
                    if key in self._writing:
                        continue
                    del self._ready[key]
                    self._writing.add(key)
                    task = asyncio.create_task(self._publish(*key))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    task.add_done_callback(functools.partial(self._written, key))
            next_at = self._timers.next_at()
            delay = 1.0 if next_at is None else max(0.0, next_at - now)
            if not self._leading():
                delay = min(delay, 1.0)
            elif self._changed:
                delay = min(delay, max(0.0, self._rechecked + RECHECK_EVERY - now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, 1.0)):
                    await self._wake.wait()

    def _written(self, key: tuple[str, str], _: object) -> None:
        self._writing.discard(key)
        self._wake.set()

    def _holds(self, namespace: str) -> tuple[dict[str, list[Reservation]], list[str]]:
        """The namespace's reservations by uid, and its quotas' names (cached per change)."""
        cached = self._index.get(namespace)
        if cached is not None:
            return cached
        by_uid: dict[str, list[Reservation]] = {}
        names: list[str] = []
        for quota_ref in self._quotas.in_namespace(namespace):
            name = str(getattr(quota_ref, "name", ""))
            obj = self._quotas.get(namespace=namespace, name=name) or {}
            names.append(name)
            for held in (obj.get("status") or {}).get("reservations") or []:
                by_uid.setdefault(str(held.get("uid", "")), []).append(held)
        self._index[namespace] = (by_uid, names)
        return by_uid, names

    async def _publish(self, namespace: str, name: str) -> None:
        """Write the claim's status if it is due one; a write that failed, for any reason,
        is tried again after :data:`RETRY_DELAY`. An error that is not the apiserver's
        answer (a bug, an ``OSError`` from below) is logged with its traceback the first
        time it fails this claim, in one line after that."""
        try:
            await self._write(namespace, name)
        except NotFound:
            return
        except KubeError as exc:
            logger.warning("could not write DatabaseClaim %s/%s status: %s", namespace, name, exc)
        except Exception as exc:  # noqa: BLE001 - a write must not drop its claim
            self._failed(namespace, name, exc)
        else:
            self._failing.pop((namespace, name), None)
            return
        self._later(namespace, name, RETRY_DELAY)

    def _failed(self, namespace: str, name: str, exc: Exception) -> None:
        """Log an unexpected failure to write a claim's status: with its traceback unless
        the last attempt for this claim failed of the same kind of error."""
        kind = type(exc).__name__
        if self._failing.get((namespace, name)) == kind:
            logger.warning(
                "writing DatabaseClaim %s/%s status failed again: %s: %s",
                namespace,
                name,
                kind,
                exc,
            )
            return
        self._failing[(namespace, name)] = kind
        logger.error("writing DatabaseClaim %s/%s status failed", namespace, name, exc_info=exc)

    async def _write(self, namespace: str, name: str) -> None:
        ref = self._claims.derived(namespace=namespace, name=name)
        if ref is None:
            return
        by_uid, quota_names = self._holds(namespace)
        held = [*by_uid.get(ref.uid, []), *self._admitted_here(namespace, ref.uid)]
        now = self._clock()
        status = claim_status(
            ref=ref, held=held, quotas=quota_names, snapshot=self._snapshot(), now=now
        )
        if status is None and not ref.priced:
            status = self._unheld(namespace, ref, held, quota_names, now)
        if status is None:
            return
        written = await self._kube.patch_claim_status(
            namespace=namespace, name=name, uid=ref.uid, status=status
        )
        self.writes += 1
        self._first.pop((namespace, name), None)
        self._claims.put(written)
        self._on_published(namespace)

    def _unheld(
        self,
        namespace: str,
        ref: reservations.ClaimRef,
        held: list[Reservation],
        quota_names: list[str],
        now: float,
    ) -> ClaimStatus | None:
        """The status of a claim with no reservation for its generation; None: it waits,
        for a reservation (or the reconciler's adoption, or prices), or, its spec changed,
        for :data:`NO_HOLD_WAIT` with the quota watch current (module docstring)."""
        name = ref.name
        self._waiting.setdefault(namespace, set()).add(name)
        if not quota_names or (ref.cost is None and not held):
            self._later(namespace, name, WAIT_CHECK)
            return None
        # Its spec changed: an update with nothing to reserve, unless one comes soon.
        waited = time.monotonic() - self._first.setdefault((namespace, name), time.monotonic())
        if waited < NO_HOLD_WAIT:
            self._later(namespace, name, NO_HOLD_WAIT - waited)
            return None
        if not self._quotas.current:  # the reservation may be on the quota, unseen
            self._later(namespace, name, RETRY_DELAY)
            return None
        status = moved(ref=ref, held=held, quotas=quota_names, now=now)
        if status is None:
            self._later(namespace, name, WAIT_CHECK)
            return None
        self._waiting[namespace].discard(name)
        return status
