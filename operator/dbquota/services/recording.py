"""Kubernetes Events as ``events.k8s.io/v1``, repeats folded into one Event with a series.

One :class:`Recorder` per process, built by :mod:`dbquota.handlers.operating` and closed at
shutdown. The reconciler (:mod:`dbquota.services.reconciling`) records through it what it
tells people about a quota (reservations released or adopted, escrow let go, budget and
threshold crossings, breaker transitions, ingestion news), and the runtime the ``WouldDeny``
of admissions under ``Warn`` or ``DryRun``.

Each Event is what the Kubernetes API conventions and client-go's ``tools/events`` write:
``eventTime`` (MicroTime, when it first happened), ``action`` (what dbquota was doing:
``Reconcile``, ``Admit``, ``Sync``), ``reason``, ``note``, ``type``, ``regarding`` (the
object, with its uid), ``reportingController: dbquota.io/operator`` and
``reportingInstance`` (the replica's holder id). Its name is ``<object>.<hex nanoseconds>``,
client-go's ``GenerateEventName``, so that for one object the apiserver lists Events in the
order they happened (``kubectl describe`` keeps that order: the field it sorts by,
``lastTimestamp``, is empty on such Events).

**Series.** Events that are isomorphic (same regarding object, reason, action, type,
reporting controller and instance; the note may differ) within :data:`FINISH_AFTER` of the
previous one are ONE Event: the first is created, later ones update its
``series.count`` and ``series.lastObservedTime`` and its note (the latest wins) by PATCH.
The PATCHes of one series are throttled: a repeat after a quiet :data:`INTERVAL` is
written at once; repeats within it are written together when it ends; :meth:`Recorder.close`
writes the final counts. So 1,000 ``WouldDeny`` on one quota in a few seconds are one Event
(one create and a couple of PATCHes), and ``kubectl get events -o wide`` shows COUNT 1000.
Those PATCHes go through the core/v1 view of the same object (see
:meth:`dbquota.adapters.kube.Kube.patch_event_series`: ``events.k8s.io/v1`` makes the note
immutable). A series quiet for :data:`FINISH_AFTER` is forgotten, so a later repeat is a new
Event, as client-go does.

**Order.** A caller that awaits :meth:`Recorder.record` call after call has its Events
created in that order, and before a new Event is created on an object, the series updates
still pending on that object are written first: no Event appears on the apiserver ahead
of repeats on the same object that happened before it.

Failures are logged, never raised (an Event is worth a log line, not a failed reconcile):
a write that fails is tried again :data:`INTERVAL` later, up to :data:`MAX_TRIES` times; a
series whose Event is gone (expired after the apiserver's ``--event-ttl``, or deleted) is
created again with its count.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol

from dbquota.domain import kinds
from dbquota.domain.resources import Event, EventSeries, ObjectReference
from dbquota.errors import Conflict, KubeError, NotFound
from dbquota.kits import clock as clocks
from dbquota.kits import timestamps

logger = logging.getLogger(__name__)

CONTROLLER = f"{kinds.GROUP}/operator"
"""``reportingController`` of every Event dbquota writes."""
INTERVAL = 5.0
"""Seconds between two writes of one series: repeats within it are written together."""
FINISH_AFTER = 360.0
"""Seconds after its latest occurrence at which a series ends (client-go's ``finishTime``):
the next isomorphic Event starts a new object."""
MAX_TRIES = 12
"""Failed writes of one Event before it is given up (client-go's ``maxTriesPerEvent``)."""
NOTE_LIMIT = 1024
"""Most characters of a note (the apiserver refuses longer ones)."""
INSTANCE_LIMIT = 128
"""Most characters of ``reportingInstance`` (likewise)."""
NAME_LIMIT = 253

EventType = Literal["Normal", "Warning"]


class Sink(Protocol):
    """Where Events are written (:class:`dbquota.adapters.kube.Kube`; a fake in tests)."""

    async def create_event(self, *, namespace: str, event: Event) -> Event:
        """Create one Event; ``Conflict`` when its name is taken."""
        ...

    async def patch_event_series(
        self, *, namespace: str, name: str, series: EventSeries, note: str
    ) -> None:
        """Update an Event's series and note; ``NotFound`` when it is gone."""
        ...


@dataclass(frozen=True)
class _Key:
    """What makes two Events isomorphic (the reporting controller and instance are the
    recorder's own)."""

    namespace: str
    api_version: str
    kind: str
    name: str
    uid: str
    type_: str
    reason: str
    action: str

    @property
    def regarding(self) -> tuple[str, str, str, str, str]:
        return (self.namespace, self.api_version, self.kind, self.name, self.uid)


@dataclass(eq=False)
class _Series:
    """One Event and its repeats as this replica has seen them."""

    key: _Key
    event: Event
    """As created (its name, first ``eventTime`` and the rest), series and note aside."""
    note: str
    last_observed: float
    """Epoch seconds of the latest occurrence."""
    count: int = 1
    written: int = 0
    """Occurrences the apiserver shows (0: the Event is not created yet)."""
    last_write: float = float("-inf")
    """Monotonic time the latest write started."""
    tries: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        return self.count > self.written


def reference(
    *, api_version: str, kind: str, namespace: str, name: str, uid: str
) -> ObjectReference:
    """``regarding`` for an Event about one object."""
    return ObjectReference(
        apiVersion=api_version, kind=kind, namespace=namespace, name=name, uid=uid
    )


def event_name(object_name: str, nanoseconds: int) -> str:
    """client-go's ``GenerateEventName``: ``<object>.<hex nanoseconds>``, or a uuid when that
    would be too long for a name."""
    name = f"{object_name}.{nanoseconds:x}"
    return name if len(name) <= NAME_LIMIT else str(uuid.uuid4())


class Recorder:
    """Writes Events and folds repeats into series; see the module docstring."""

    def __init__(
        self,
        sink: Sink,
        *,
        instance: str,
        controller: str = CONTROLLER,
        clock: clocks.Clock | None = None,
        interval: float = INTERVAL,
        finish_after: float = FINISH_AFTER,
    ) -> None:
        self._sink = sink
        self._instance = instance[:INSTANCE_LIMIT]
        self._controller = controller
        self._clock = clock or clocks.SystemClock()
        self._interval = interval
        self._finish_after = finish_after
        self._series: dict[_Key, _Series] = {}
        self._by_object: dict[tuple[str, str, str, str, str], dict[_Key, _Series]] = {}
        self._last_sweep = self._clock.monotonic()
        self._last_nanos = 0
        self._closed = False
        self.creates = 0
        """Events created (for tests and benchmarks)."""
        self.patches = 0
        """Series updates written."""

    async def record(
        self,
        regarding: ObjectReference,
        *,
        type_: EventType,
        reason: str,
        action: str,
        note: str,
    ) -> None:
        """One occurrence: a new Event, or one more in the series of an isomorphic one."""
        if self._closed:
            logger.debug("not recording %s after shutdown: %s", reason, note)
            return
        now = self._clock.time()
        note = note[:NOTE_LIMIT]
        key = _Key(
            namespace=str(regarding.get("namespace", "")),
            api_version=str(regarding.get("apiVersion", "")),
            kind=str(regarding.get("kind", "")),
            name=str(regarding.get("name", "")),
            uid=str(regarding.get("uid", "")),
            type_=type_,
            reason=reason,
            action=action,
        )
        self._sweep()
        series = self._series.get(key)
        if series is not None and now - series.last_observed < self._finish_after:
            series.count += 1
            series.note = note
            series.last_observed = max(now, series.last_observed)
            quiet = self._clock.monotonic() - series.last_write >= self._interval
            if quiet and not series.lock.locked():
                await self._write(series)
            else:
                self._schedule(series)
            return
        ended = series  # quiet too long (or None): a new Event, the old count written first
        if ended is not None:
            self._drop(ended)
        series = _Series(
            key=key,
            event=self._new_event(regarding, now=now, type_=type_, reason=reason, action=action),
            note=note,
            last_observed=now,
            last_write=self._clock.monotonic(),  # repeats meanwhile wait for the create
        )
        self._series[key] = series
        same_object = self._by_object.setdefault(key.regarding, {})
        same_object[key] = series
        earlier = [s for s in same_object.values() if s is not series and s.pending]
        for pending in ([ended] if ended is not None else []) + earlier:
            await self._write(pending)
        await self._write(series)

    async def flush(self) -> None:
        """Write every pending series update now."""
        for series in list(self._series.values()):
            if series.pending:
                await self._write(series)

    async def close(self) -> None:
        """Write the final counts; record nothing after this."""
        self._closed = True
        timers = [s.timer for s in self._series.values() if s.timer is not None]
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        await self.flush()

    # -- internals -------------------------------------------------------------------------

    def _new_event(
        self,
        regarding: ObjectReference,
        *,
        now: float,
        type_: EventType,
        reason: str,
        action: str,
    ) -> Event:
        nanos = max(int(now * 1e9), self._last_nanos + 1)  # unique and increasing
        self._last_nanos = nanos
        namespace = str(regarding.get("namespace", "")) or "default"
        return Event(
            apiVersion="events.k8s.io/v1",
            kind="Event",
            metadata={
                "name": event_name(str(regarding.get("name", "")), nanos),
                "namespace": namespace,
            },
            eventTime=timestamps.to_micro(now),
            action=action,
            reason=reason,
            type=type_,
            regarding=regarding,
            reportingController=self._controller,
            reportingInstance=self._instance,
        )

    def _schedule(self, series: _Series) -> None:
        """Write ``series`` when its interval since the latest write ends."""
        if series.timer is None and not self._closed:
            series.timer = asyncio.get_running_loop().create_task(self._write_later(series))

    async def _write_later(self, series: _Series) -> None:
        try:
            while series.pending and not self._closed and self._series.get(series.key) is series:
                await self._clock.sleep(
                    series.last_write + self._interval - self._clock.monotonic()
                )
                await self._write(series)
        finally:
            series.timer = None

    async def _write(self, series: _Series) -> None:
        """Create the Event or update its series to what was seen so far."""
        async with series.lock:
            if not series.pending:
                return
            series.last_write = self._clock.monotonic()
            count, note = series.count, series.note
            observed = EventSeries(
                count=count, lastObservedTime=timestamps.to_micro(series.last_observed)
            )
            namespace = str(series.event["metadata"].get("namespace", ""))
            name = str(series.event["metadata"].get("name", ""))
            try:
                if series.written:
                    try:
                        await self._sink.patch_event_series(
                            namespace=namespace, name=name, series=observed, note=note
                        )
                        self.patches += 1
                    except NotFound:  # expired or deleted: create it again, count and all
                        await self._create(series, observed if count > 1 else None, note)
                else:
                    await self._create(series, observed if count > 1 else None, note)
            except KubeError as exc:
                series.tries += 1
                if series.tries >= MAX_TRIES:
                    logger.warning(
                        "gave up on %s Event %s/%s after %d tries: %s",
                        series.key.reason,
                        namespace,
                        name,
                        series.tries,
                        exc,
                    )
                    self._drop(series)
                    return
                logger.warning(
                    "could not write %s Event on %s %s/%s (trying again in %.0fs): %s",
                    series.key.reason,
                    series.key.kind,
                    series.key.namespace,
                    series.key.name,
                    self._interval,
                    exc,
                )
                self._schedule(series)
                return
            series.written = count
            series.tries = 0

    async def _create(self, series: _Series, observed: EventSeries | None, note: str) -> None:
        event: Event = {**series.event, "note": note}
        if observed is not None:
            event["series"] = observed
        namespace = str(series.event["metadata"].get("namespace", ""))
        try:
            await self._sink.create_event(namespace=namespace, event=event)
        except Conflict:  # the name is taken (another replica, the same nanosecond): a new one
            nanos = max(self._last_nanos + 1, int(self._clock.time() * 1e9))
            self._last_nanos = nanos
            series.event["metadata"]["name"] = event_name(series.key.name, nanos)
            event["metadata"] = series.event["metadata"]
            await self._sink.create_event(namespace=namespace, event=event)
        self.creates += 1

    def _drop(self, series: _Series) -> None:
        if self._series.get(series.key) is series:
            del self._series[series.key]
            same = self._by_object.get(series.key.regarding, {})
            same.pop(series.key, None)
            if not same:
                self._by_object.pop(series.key.regarding, None)
        if series.timer is not None and series.timer is not asyncio.current_task():
            series.timer.cancel()

    def _sweep(self) -> None:
        """Forget series that ended (written in full, quiet for :data:`FINISH_AFTER`), at
        most every tenth of that period, so memory holds only recent Events."""
        now = self._clock.monotonic()
        if now - self._last_sweep < self._finish_after / 10:
            return
        self._last_sweep = now
        wall = self._clock.time()
        for series in list(self._series.values()):
            if not series.pending and wall - series.last_observed >= self._finish_after:
                self._drop(series)
