"""Reconciliation of DatabaseQuota status: totals, reservations, escrow, billing health, conditions.

Runs on the leader only (:class:`dbquota.services.leasing.LeaderElection`). Nothing asks
for a reconcile directly: events *mark* a quota dirty (:meth:`Reconciler.mark`) — a claim
created, priced or deleted, a reservation to settle, a lease that lapsed, a billing sync,
a spec change, the periodic resync — and one worker refreshes each dirty quota at most
once per :data:`MIN_INTERVAL`, however many events came. So a burst of 200 claims a second
costs a few status writes a second, not one per claim. The worker takes dirty quotas from
a queue ordered by when each may be refreshed (:class:`dbquota.kits.schedules.DueQueue`),
so an event costs O(log quotas), not a look at every dirty quota.

A refresh reads the quota from the watch, recomputes the whole status with
:func:`dbquota.domain.statuses.quota_status` from the namespace's claims (the claim
informer) and the billing snapshot, a slice of claims at a time so that the admission
reviews this process serves meanwhile wait for one slice at most
(:mod:`dbquota.kits.steps`), and writes it by compare-and-swap on the quota's
``resourceVersion``, re-reading on a conflict. Claims that this replica admitted from its
escrow and has not written yet count in that escrow, even once priced (the publisher
prices them from the ledger); while the ledger's write of the quota is in flight, the
refresh waits for its answer (:data:`WRITE_PATIENCE`), since the quota as read may or may
not hold it. It runs beside the webhook's reservation
ledgers, never in their queue, so an admission never waits for it. It writes only when
something other than the mere age of the data changed, unless the periodic resync asks (so
``stalenessSeconds`` stays current without a write per event). Dropping reservations whose
claims now show their price changes no total (:func:`.statuses.change`), so each waits up to
:data:`SETTLE_DELAY`, from when it was first found confirmed, for a write made anyway (the
ledgers drop them too): one quota write per create, not two. Events follow the write:
released and adopted reservations, lapsed escrow, budget and alert threshold crossings, and
(via :meth:`Reconciler.announce_transition`) circuit breaker transitions, recorded as
``events.k8s.io/v1`` Events by :class:`dbquota.services.recording.Recorder` (repeats become
one Event with a series). Each written status is also published as the quota's
``dbquota_quota_*`` metrics (:func:`dbquota.adapters.metrics.publish_quota`).

Reservations, and unpriced claims with none, are aged on this process's monotonic clock
from when a refresh first saw them (:mod:`dbquota.kits.sightings`, by quota object), never
from the wall-clock stamps other nodes wrote: a reservation is released as never created
or never applied once it has been seen for ``--reservation-grace``. A new leader counts
from its first refresh, so what it inherits is held at most one grace longer. How long
confirmed reservations have waited to be dropped (:data:`SETTLE_DELAY`) is timed the same
way.

While reservations stay in flight, the reconciler comes back by itself to release them or
to adopt claims no escrow holds any more, both decided by age: after :data:`MIN_INTERVAL`
once a visit wrote something, then twice as late after each visit with nothing to write, up
to :data:`FOLLOW_UP_MAX` (and an eighth of the grace). So one reservation stuck in a
namespace of 10,000 claims costs a recount every 5 s, not two a second, and a release or an
adoption comes at most that much after its time. An event about the quota's claims brings
a visit at once, whatever the follow-up's delay.

Size: the scheduling, the refresh and the Events a refresh announces in one module,
because each Event follows one written refresh and says what that refresh changed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from dbquota.adapters import metrics
from dbquota.adapters.kube import QUOTAS, Informer
from dbquota.domain import billing, reservations, statuses, usage
from dbquota.domain.resources import QuotaObject, QuotaStatus
from dbquota.errors import Conflict, KubeError, NotFound
from dbquota.kits import steps
from dbquota.kits.schedules import DueQueue
from dbquota.kits.sightings import Sightings
from dbquota.services import inventory, recording
from dbquota.services.stores import QuotaStore

logger = logging.getLogger(__name__)

MIN_INTERVAL = 0.5
"""Seconds between two refreshes of one quota, however often it is marked dirty."""
WORKERS = 4
"""Quotas refreshed at once."""
SETTLE_DELAY = 5.0
"""Most seconds a refresh that only drops confirmed reservations waits before writing."""
FOLLOW_UP_MAX = 5.0
"""Most seconds between two visits of a quota whose reservations stay in flight with nothing
to write: each such visit comes twice as late as the last, from :data:`MIN_INTERVAL`, and
never later than an eighth of the grace (module docstring)."""
MAX_CONFLICTS = 5
"""Compare-and-swap attempts of one refresh before it is marked dirty again for later."""
WRITE_PATIENCE = 1.0
"""Most seconds a refresh waits for this replica's own reservation write of the quota to
be answered (:meth:`dbquota.services.reserving.Ledger.unwritten`) before it tries later."""


async def _nothing_unwritten(
    namespace: str, name: str, patience: float, uid: str
) -> frozenset[str]:
    """No ledger of this replica owes the quota a write (the default: no webhook here)."""
    del namespace, name, patience, uid
    return frozenset()


class Store(QuotaStore, Protocol):
    """What the reconciler writes to: quota status by compare-and-swap."""


@dataclass(frozen=True)
class QuotaRef:
    """Which quota to post an Event on."""

    namespace: str
    name: str
    uid: str


def quota_ref(obj: dict[str, Any]) -> QuotaRef:
    """What the quota informer keeps of a DatabaseQuota beside the object itself."""
    meta = obj.get("metadata") or {}
    return QuotaRef(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
    )


class Reconciler:
    """Writes quota status on the leader; see the module docstring."""

    def __init__(
        self,
        *,
        kube: Store,
        events: recording.Recorder,
        quotas: Informer[QuotaRef],
        claims: inventory.Claims,
        snapshot: Callable[[], billing.BillingSnapshot],
        clock: Callable[[], float],
        grace: float,
        leading: Callable[[], bool] = lambda: True,
        live: Callable[[str], bool] = lambda _: True,
        next_lapse: Callable[[list[str]], float | None] = lambda _: None,
        deleted: Callable[[str], Collection[str]] = lambda _: (),
        claims_current: Callable[[], bool] = lambda: True,
        on_written: Callable[[QuotaObject, statuses.Refresh], None] = lambda *_: None,
        unwritten: Callable[[str, str, float, str], Awaitable[Collection[str] | None]] = (
            _nothing_unwritten
        ),
        shared: Callable[[str], bool] = usage.unshared,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._events = events
        self._quotas = quotas
        self._claims = claims
        self._snapshot = snapshot
        self._clock = clock
        self._grace = grace
        self._leading = leading
        self._live = live
        self._next_lapse = next_lapse
        self._deleted = deleted
        self._claims_current = claims_current
        self._on_written = on_written
        self._unwritten = unwritten
        self._shared = shared
        self._dirty: dict[tuple[str, str], bool] = {}  # -> whether a write is wanted anyway
        self._due: dict[tuple[str, str], float] = {}  # monotonic time a mark falls due
        self._last: dict[tuple[str, str], float] = {}  # monotonic time of the last refresh
        self._queue: DueQueue[tuple[str, str]] = DueQueue()  # dirty quotas, by when ready
        self._refreshing: set[tuple[str, str]] = set()
        self._wake_at = math.inf  # when the worker wakes by itself (marks due sooner wake it)
        self._sightings: Sightings[tuple[str, str], Hashable] = Sightings(monotonic)  # ages
        self._settling: Sightings[tuple[str, str], str] = Sightings(monotonic)  # confirmed since
        self._quiet: dict[tuple[str, str], float] = {}  # the last follow-up's delay
        self._wake = asyncio.Event()
        self._announcing = asyncio.Lock()
        self.refreshes = 0
        self.writes = 0

    # -- what marks a quota dirty ------------------------------------------------------------

    def mark(self, namespace: str, name: str, *, force: bool = False, after: float = 0.0) -> None:
        """Refresh this quota soon (not before ``after`` seconds); ``force`` writes even if
        only the figures' age changed."""
        key = (namespace, name)
        due = time.monotonic() + after
        if key not in self._dirty or due < self._due.get(key, due):
            self._due[key] = due
        self._dirty[key] = self._dirty.get(key, False) or force
        self._enqueue(key)

    def _enqueue(self, key: tuple[str, str]) -> None:
        """Queue a dirty quota for when it may be refreshed; wake the worker if that is
        sooner than it would wake by itself."""
        ready = max(self._last.get(key, -MIN_INTERVAL) + MIN_INTERVAL, self._due.get(key, 0.0))
        if self._queue.put(key, ready) and ready < self._wake_at:
            self._wake.set()

    def mark_namespace(self, namespace: str, *, force: bool = False) -> None:
        """Refresh every quota of ``namespace`` soon."""
        for ref in self._quotas.in_namespace(namespace):
            self.mark(namespace, ref.name, force=force)

    def mark_all(self, *, force: bool = False) -> None:
        """Refresh every quota soon (a billing sync, a new leader, the periodic resync)."""
        for namespace in self._quotas.namespaces():
            self.mark_namespace(namespace, force=force)

    def forget(self, namespace: str, name: str, uid: str = "") -> None:
        """A quota was deleted (the object ``uid``, if given). Its settling clocks go; its
        marks stay if a newer object of its name is there by now (a delete seen late, or
        the quota replaced while the watch was away): they are that quota's."""
        self._settling.forget((namespace, name))
        self._sightings.forget((namespace, name), uid)
        self._quiet.pop((namespace, name), None)
        now = self._quotas.derived(namespace=namespace, name=name)
        if uid and now is not None and now.uid != uid:
            return
        self._dirty.pop((namespace, name), None)
        self._queue.discard((namespace, name))
        self._due.pop((namespace, name), None)
        self._last.pop((namespace, name), None)

    # -- the worker ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Refresh dirty quotas while leading, each at most once per :data:`MIN_INTERVAL`,
        taking them from a queue ordered by when each may be refreshed (O(log n) each)."""
        running: set[asyncio.Task[None]] = set()
        while True:
            self._wake.clear()
            now = time.monotonic()
            leading = self._leading()
            while leading and len(running) < WORKERS and (key := self._queue.pop_due(now)):
                if key in self._refreshing or key not in self._dirty:
                    continue  # queued again when its refresh ends, or no longer dirty
                force = self._dirty.pop(key)
                self._due.pop(key, None)
                self._last[key] = now
                self._refreshing.add(key)
                task = asyncio.create_task(self._refresh_logged(*key, force=force))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(functools.partial(self._refreshed, key))
            ready = self._queue.next_at()
            if not leading:
                delay = 1.0 if self._dirty else 3600.0
            elif len(running) >= WORKERS or ready is None:
                delay = 3600.0  # a refresh that ends, or a mark, wakes the worker
            else:
                delay = max(0.001, ready - now)
            self._wake_at = now + delay
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _refreshed(self, key: tuple[str, str], _: object) -> None:
        self._refreshing.discard(key)
        if key in self._dirty:  # marked again while it was being refreshed
            self._enqueue(key)
        self._wake.set()

    async def _refresh_logged(self, namespace: str, name: str, *, force: bool) -> None:
        try:
            await self.refresh(namespace, name, force=force)
        except KubeError as exc:
            logger.warning("could not refresh DatabaseQuota %s/%s: %s", namespace, name, exc)
            self.mark(namespace, name, force=force)
        except Exception:  # a bug of ours: said once with its traceback, tried again later
            logger.exception("refreshing DatabaseQuota %s/%s failed", namespace, name)
            self.mark(namespace, name, force=force)

    async def refresh(
        self, namespace: str, name: str, *, force: bool = True
    ) -> statuses.Refresh | None:
        """Recompute and write one quota's status now; None if the quota is gone, or if
        this replica's own reservation write of it stayed unanswered (marked again)."""
        self.refreshes += 1
        quota = cast(QuotaObject | None, self._quotas.get(namespace=namespace, name=name))
        for _attempt in range(MAX_CONFLICTS):
            if quota is None:
                try:
                    quota = await self._kube.get_quota(namespace=namespace, name=name)
                except NotFound:
                    self.forget(namespace, name)
                    return None
            uid = str(quota.get("metadata", {}).get("uid", ""))
            unwritten = await self._unwritten(namespace, name, WRITE_PATIENCE, uid)
            if unwritten is None:  # this replica's own write of it: in flight, or unknown
                self.mark(namespace, name, force=force, after=WRITE_PATIENCE)
                return None
            refresh = await self._recompute(quota, namespace, unwritten)
            if not force and self._not_yet((namespace, name), quota.get("status") or {}, refresh):
                self._follow_up(namespace, name, refresh, wrote=False)
                return refresh
            try:
                written = await self._kube.patch_quota_status(
                    namespace=namespace,
                    name=name,
                    status=refresh.status,
                    resource_version=quota.get("metadata", {}).get("resourceVersion"),
                )
            except Conflict:
                quota = None  # read afresh
                continue
            except NotFound:
                self.forget(namespace, name)
                return None
            self.writes += 1
            self._settling.forget((namespace, name))
            self._quotas.put(cast(dict[str, Any], written))
            metrics.publish_quota(
                namespace=namespace,
                name=name,
                spec=written.get("spec", {}),
                status=refresh.status,
                escrow_expired=len(refresh.expired),
            )
            self._on_written(written, refresh)
            await self._announce_refresh(quota_ref(cast(dict[str, Any], written)), refresh)
            self._follow_up(namespace, name, refresh, wrote=True)
            return refresh
        self.mark(namespace, name, force=force)
        return None

    async def _recompute(
        self, quota: QuotaObject, namespace: str, unwritten: Collection[str]
    ) -> statuses.Refresh:
        """The quota's whole status from the claims of its namespace, as of now: a slice of
        claims at a time, letting admission reviews in between (:mod:`dbquota.kits.steps`)."""
        meta = quota.get("metadata", {})
        look = self._sightings.look((namespace, str(meta.get("name", ""))), meta.get("uid", ""))
        refresh = await steps.paced(
            statuses.quota_status(
                quota=quota,
                snapshot=self._snapshot(),
                claims=self._claims.in_namespace(namespace),
                now=self._clock(),
                grace=self._grace,
                ages=look,
                live=self._live,
                deleted=self._deleted(namespace),
                claims_current=self._claims_current(),
                unwritten=unwritten,
                shared=self._shared,
            )
        )
        look.end()
        return refresh

    def _not_yet(self, key: tuple[str, str], old: QuotaStatus, refresh: statuses.Refresh) -> bool:
        """Whether ``refresh`` need not be written now: it only ages the figures, or it only
        drops confirmed reservations, each waiting from when it was first found confirmed
        (an admission's write drops those before it, so a quiet quota's clock restarts)."""
        change = statuses.change(old, refresh)
        if change != "settles":
            self._settling.forget(key)
            return change == "aged"
        kept = {str(r.get("uid", "")) for r in refresh.status.get("reservations") or []}
        dropped = {str(r.get("uid", "")) for r in old.get("reservations") or []} - kept
        look = self._settling.look(key)
        wait = SETTLE_DELAY - max([look(uid) for uid in dropped], default=0.0)
        look.end()
        if wait > 0:
            self.mark(*key, after=wait)
        return wait > 0

    def _follow_up(
        self, namespace: str, name: str, refresh: statuses.Refresh, *, wrote: bool
    ) -> None:
        """Come back while reservations are in flight (to release them after the grace, or
        adopt claims no escrow holds any more): after :data:`MIN_INTERVAL` once a visit
        ``wrote``, twice as late after each visit that did not, up to
        :data:`FOLLOW_UP_MAX`; and when the lease of a replica holding escrow here would
        lapse (to let that escrow go)."""
        key = (namespace, name)
        if refresh.status.get("reservations"):
            most = max(MIN_INTERVAL, min(FOLLOW_UP_MAX, self._grace / 8))
            last = MIN_INTERVAL / 2 if wrote else self._quiet.get(key, MIN_INTERVAL / 2)
            self._quiet[key] = wait = min(2 * last, most)
            self.mark(namespace, name, after=0.0 if wait <= MIN_INTERVAL else wait)
        else:
            self._quiet.pop(key, None)
        quota = self._quotas.get(namespace=namespace, name=name) or {}
        holders = [
            str(e.get("holder", "")) for e in (quota.get("status") or {}).get("escrow") or []
        ]
        lapse = self._next_lapse(holders) if holders else None
        if lapse is not None:
            self.mark(namespace, name, after=lapse + 0.05)

    # -- Events --------------------------------------------------------------------------------

    async def _announce_refresh(self, quota: QuotaRef, refresh: statuses.Refresh) -> None:
        for held, why in refresh.released:
            await self._event(
                quota,
                "Normal",
                "ReservationReleased",
                f"released {held.get('cost', 0.0):,.2f} held for claim "
                f"{held.get('claim')}: {_release_why(held, why)}",
            )
        for held in refresh.adopted:
            await self._event(
                quota,
                "Warning",
                "ReservationAdopted",
                f"holding {held.get('cost', 0.0):,.2f} for claim {held.get('claim')}, which "
                "exists with no price and no reservation (admitted by a replica that stopped "
                "before writing it, or created while the webhook was bypassed)",
            )
        for lapsed in refresh.expired:
            await self._event(
                quota,
                "Warning",
                "EscrowExpired",
                f"let go of {lapsed.get('cost', 0.0):,.2f} held in escrow by replica "
                f"{lapsed.get('holder')}, whose lease lapsed",
            )
        if refresh.budget_crossed is not None:
            if refresh.budget_crossed:
                await self._event(quota, "Warning", "BudgetExceeded", refresh.budget_note)
            else:
                await self._event(quota, "Normal", "WithinBudget", refresh.budget_note)
        for crossing in refresh.crossed:
            type_: recording.EventType = "Warning" if crossing.upward else "Normal"
            await self._event(quota, type_, "BudgetThresholdCrossed", crossing.message)

    async def announce_transition(
        self, quotas: Sequence[QuotaRef], *, old: str, new: str, reason: str, replica: str = ""
    ) -> None:
        """Post a circuit breaker transition as an Event on every quota (naming the
        ``replica`` whose breaker it is, when others run beside it)."""
        where = f" on replica {replica}" if replica else ""
        await self.announce(
            quotas,
            type_="Normal" if new == "Closed" else "Warning",
            reason=f"Circuit{new}",
            action="Sync",
            message=f"billing circuit breaker {old} -> {new}{where}: {reason}",
        )

    async def announce(
        self,
        quotas: Sequence[QuotaRef],
        *,
        type_: recording.EventType,
        reason: str,
        action: str,
        message: str,
    ) -> None:
        """Post the same Event on every quota (news about billing concerns them all).

        Announcements are posted one after another, in the order they were made: breaker
        transitions come milliseconds apart (HalfOpen, then Closed), each posted from its
        own background task, and without the lock a slow first POST let the later Event
        be created first, so ``kubectl get events`` told the story out of order.
        """
        async with self._announcing:
            for quota in quotas:
                await self._event(quota, type_, reason, message, action=action)

    async def record(
        self,
        quota: QuotaRef,
        *,
        type_: recording.EventType,
        reason: str,
        action: str,
        message: str,
    ) -> None:
        """Post one Event on a quota (failures are logged, not raised)."""
        await self._event(quota, type_, reason, message, action=action)

    async def _event(
        self,
        quota: QuotaRef,
        type_: recording.EventType,
        reason: str,
        message: str,
        *,
        action: str = "Reconcile",
    ) -> None:
        regarding = recording.reference(
            api_version=QUOTAS.api_version,
            kind=QUOTAS.kind,
            namespace=quota.namespace,
            name=quota.name,
            uid=quota.uid,
        )
        await self._events.record(
            regarding, type_=type_, reason=reason, action=action, note=message
        )


def _release_why(held: Mapping[str, Any], why: reservations.ReleaseReason) -> str:
    """Why a reservation was released; an object of another operator (``Kind/name``)
    carries no price of ours, so its reservation stood until billing would show it."""
    if why == "ClaimDeleted" and "/" in str(held.get("claim", "")):
        return "the object was deleted before billing showed it"
    if why == "NeverApplied":
        return (
            f"the update admitted for generation {held.get('generation')} was never applied "
            "(refused after admission, e.g. by another webhook)"
        )
    return _RELEASE_WHY[why]


_RELEASE_WHY: dict[reservations.ReleaseReason, str] = {
    "ClaimDeleted": "the claim was deleted before its price was written on it",
    "NeverCreated": "no claim appeared after admission",
}
