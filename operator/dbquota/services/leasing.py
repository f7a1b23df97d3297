"""Leases: each replica's liveness (which its escrow depends on) and the reconciler's leader.

Both follow client-go's leader election (``k8s.io/client-go/tools/leaderelection``), on
``coordination.k8s.io/v1`` Leases in one namespace (``--lease-namespace``):

- **The holder renews** every ``retry_period``, replacing the record it wrote last without
  reading it first (client-go's fast path for the leader; a conflict means someone else
  wrote it, and only then is it read). It trusts its lease only until
  ``renew_deadline`` after it *sent* its last successful renewal, measured on its own
  monotonic clock; ``renew_deadline < lease_duration``.
- **The others never compare clocks.** A watcher records, on its own monotonic clock, when
  it saw a lease's record change, and counts the lease lapsed once ``lease_duration`` (the
  record's own ``leaseDurationSeconds`` if longer) has passed since then with no change.
  The holder's trust ended at least ``lease_duration - renew_deadline`` (5 s by default)
  before that, which covers any difference in clock *rates* and the delay of the watch.
- **Silence proves nothing unless the watch is working.** A watch that fails, relists or
  stalls shows no renewals either, while the holders renew and admit. So the time a lease
  has gone unchanged counts only while the watch shows changes: while its informer is
  current, and at most :attr:`Timing.watch_gap` (5 s by default) past the last change of
  any lease it showed. A healthy watch shows one every retry period (this replica's own
  renewal), so this changes nothing then; a stalled one freezes every lease's age, and no
  lapse is declared (:meth:`LeaseWatch.live`). Budget stays held a while longer; it is
  never handed out while its holder still admits from it.

Each replica's own lease also carries its billing health (its circuit breaker, last
successful sync, failures, last error, fallback rate: annotation ``dbquota.io/billing``,
:func:`dbquota.domain.billing.shared`), renewed with it: every replica admits from its own
billing data, so the leader's quota status shows the worst of the live replicas
(:meth:`LeaseWatch.healths`, :func:`dbquota.domain.billing.worst`), not only its own.

So a replica cut off from the apiserver stops admitting from its escrow (its
:class:`Liveness` says not ``alive()``) before any other replica sees its lease lapse
(:class:`LeaseWatch` says not ``live(holder)``) and lets that escrow go; and a new leader
takes over only once the old one has stopped acting as leader. A clean shutdown deletes
the replica's lease and releases the leader's, so a rolling update hands over at once.
Each lease call may take only what the holder's trust leaves (:meth:`Timing.patience`),
and both loops outlive any failure of one attempt, so a connection stuck after a failover
or a failed refresh of the credentials costs an attempt, not the lease.

Size: the two kinds of Lease and their watch in one module, because the timing argument
above holds only for the three together: the holder's trust and the watchers' lapse are the
two sides of one inequality, and a reader checks them side by side.

Called by the operator's start-up code (:mod:`dbquota.handlers.operating`); the ledgers
ask :meth:`Liveness.alive`, the reconciler :meth:`LeaseWatch.live` and
:meth:`LeaderElection.leading`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dbquota.adapters import metrics
from dbquota.adapters.kube import LEASES, Informer, Kube
from dbquota.domain import billing, kinds
from dbquota.errors import Conflict, KubeError, NotFound
from dbquota.kits import supervising, timestamps

logger = logging.getLogger(__name__)

ROLE_LABEL = f"{kinds.GROUP}/lease"
"""Label of dbquota's Leases: ``replica`` (liveness) or ``leader``."""
BILLING_ANNOTATION = f"{kinds.GROUP}/billing"
"""Annotation of a replica's own lease: its billing health, as JSON (module docstring)."""


@dataclass(frozen=True, kw_only=True)
class Timing:
    """client-go's three durations, in seconds."""

    lease_duration: float = 15.0
    """How long others wait, after they last saw a lease change, before it counts lapsed."""
    renew_deadline: float = 10.0
    """How long a holder trusts its lease after sending its last successful renewal."""
    retry_period: float = 2.0
    """Time between two renewals (or two attempts to acquire)."""

    @property
    def watch_gap(self) -> float:
        """How much of a pause in the lease watch counts towards a lease's age:
        ``lease_duration - renew_deadline`` (5 s by default); a longer pause counts as this
        long (:class:`LeaseWatch`).

        A stall that hides a live holder's renewals began at most a renewal period (plus
        the watch's delay) after the last one it showed, so that lease's age stops short of
        ``lease_duration`` unless renewal period + delay >= ``renew_deadline``, when the
        holder itself stops trusting its lease between renewals. A healthy watch pauses a
        retry period at most (this replica's own renewals): lapses come as before. (With a
        retry period above this gap, they come later by that ratio, never earlier.)
        """
        return self.lease_duration - self.renew_deadline

    def patience(self, trusted_until: float) -> float:
        """Seconds one lease call may take, for a holder that trusts its lease until
        ``trusted_until`` (monotonic): what is left of that trust (a whole renew deadline
        when none is), less two retry periods, one for the loop's wait and one for the next
        attempt; at least one retry period.

        client-go bounds a renewal by the renew deadline; this also leaves room for another
        attempt. A call stuck on a dead pooled connection (after an apiserver or load
        balancer failover) then fails in time for the next one, on a new connection, to
        renew before trust ends, and long before the others see the lease lapse. With the
        generic request timeout (30 s) one such call kept the holder from renewing past the
        lease duration: its escrow let go, its leadership taken over.
        """
        left = trusted_until - time.monotonic()
        return max(
            self.retry_period, (left if left > 0 else self.renew_deadline) - 2 * self.retry_period
        )

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leases need 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


def lease_name(prefix: str, holder: str) -> str:
    """A valid object name for ``holder``'s lease."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", holder.lower()).strip("-.")
    return f"{prefix}-{cleaned}"[:253].rstrip("-.")


_KEPT = ("acquireTime", "leaseTransitions")
"""What a renewal keeps of the holder's own record."""


def _body(
    *,
    name: str,
    namespace: str,
    holder: str,
    duration: float,
    role: str,
    version: str = "",
    kept: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Lease to write; ``kept``: the spec of the holder's own record, whose acquire time
    and count of transitions a renewal keeps."""
    now = timestamps.to_micro(time.time())
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {ROLE_LABEL: role}}
    if annotations:
        meta["annotations"] = dict(annotations)
    if version:
        meta["resourceVersion"] = version
    spec = {
        "holderIdentity": holder,
        "leaseDurationSeconds": max(1, round(duration)),
        "acquireTime": now,
        "renewTime": now,
    }
    spec.update({k: v for k, v in (kept or {}).items() if k in _KEPT})
    return {"apiVersion": LEASES.api_version, "kind": LEASES.kind, "metadata": meta, "spec": spec}


@dataclass(frozen=True)
class LeaseRecord:
    """What a watcher keeps of one Lease."""

    holder: str
    duration: float
    """The record's ``leaseDurationSeconds`` (0 when it has none)."""
    renew_time: str
    billing: billing.BillingHealth | None = None
    """The holder's billing health, on a replica's own lease (None on the leader's, or
    when unreadable)."""


def _record(obj: dict[str, Any]) -> LeaseRecord | None:
    spec = obj.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not isinstance(holder, str) or not holder:
        return None
    duration = spec.get("leaseDurationSeconds")
    return LeaseRecord(
        holder=holder,
        duration=float(duration) if isinstance(duration, int | float) else 0.0,
        renew_time=str(spec.get("renewTime", "")),
        billing=_health((obj.get("metadata") or {}).get("annotations") or {}),
    )


def _health(annotations: Mapping[str, Any]) -> billing.BillingHealth | None:
    text = annotations.get(BILLING_ANNOTATION)
    if not isinstance(text, str):
        return None
    try:
        return billing.from_shared(json.loads(text))
    except ValueError:  # not JSON (json.JSONDecodeError is a ValueError)
        return None


def _complain(exc: Exception, *, what: str, said: str) -> str:
    """Log one failed attempt of a lease loop, which goes on: a loop that died would stop
    renewing for good while the process runs on, trusted by nobody and never saying why.

    A ``KubeError`` (the apiserver busy or away) in one line. Anything else (a bug) with its
    traceback the first time it comes, in one line while it repeats: ``said`` is what the
    previous failure said (the loop passes back what this returns, "" after a success).
    """
    text = str(exc) if isinstance(exc, KubeError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KubeError) or text == said:
        logger.warning("%s: %s", what, text)
    else:
        logger.error("%s: %s", what, text, exc_info=exc)
    return text


async def _stop_loop(task: asyncio.Task[None] | None) -> None:
    """Stop a lease loop (:func:`dbquota.kits.supervising.stop`), so that nothing renews
    what the caller deletes or releases next. A cancellation that came before (a shutdown
    cut short, unwinding through its clean-up, which is what calls this) is the caller's
    to handle: the lease is still given up."""
    if task is not None:
        await supervising.stop(task, what=task.get_name())


class Liveness:
    """This replica's own lease, renewed until :meth:`stop` (module docstring)."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        holder: str,
        timing: Timing,
        health: Callable[[], billing.BillingHealth] | None = None,
    ) -> None:
        self._kube = kube
        self.namespace = namespace
        self.holder = holder
        self.name = lease_name("dbquota-replica", holder)
        self._timing = timing
        self._health = health
        self._trusted_until = 0.0  # monotonic
        self._version = ""
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0

    def alive(self) -> bool:
        """Whether this replica may still act on its lease (admit from escrow)."""
        return time.monotonic() < self._trusted_until

    async def start(self) -> None:
        """Take the lease (first renewal awaited) and keep renewing it in the background."""
        await self._renew()
        self._task = asyncio.create_task(self._loop(), name="liveness lease")

    async def stop(self) -> None:
        """Stop renewing and delete the lease (others see at once that we are gone)."""
        self._trusted_until = 0.0
        await _stop_loop(self._task)
        with contextlib.suppress(KubeError):
            await self._kube.delete(
                LEASES, namespace=self.namespace, name=self.name, seconds=self._patience()
            )

    async def _loop(self) -> None:
        """Renew every retry period, whatever fails (:func:`_complain`)."""
        said = ""
        what = (
            f"could not renew lease {self.namespace}/{self.name} (escrow admissions stop "
            f"{self._timing.renew_deadline:.0f}s after the last renewal)"
        )
        while True:
            await asyncio.sleep(self._timing.retry_period)
            try:
                await self._renew()
            except Exception as exc:  # noqa: BLE001 - said by _complain; renewal goes on
                said = _complain(exc, what=what, said=said)
            else:
                said = ""

    def _patience(self) -> float:
        """Seconds the next call may take (:meth:`Timing.patience`)."""
        return self._timing.patience(self._trusted_until)

    async def _renew(self) -> None:
        sent = time.monotonic()
        body = _body(
            name=self.name,
            namespace=self.namespace,
            holder=self.holder,
            duration=self._timing.lease_duration,
            role="replica",
            version=self._version,
            annotations=None
            if self._health is None
            else {BILLING_ANNOTATION: json.dumps(billing.shared(self._health()))},
        )
        try:
            got = await self._write(body)
        except (Conflict, NotFound):
            # Someone else wrote it (or it was deleted): take the current version and retry.
            self._version = await self._current_version()
            body["metadata"]["resourceVersion"] = self._version
            if not self._version:
                body["metadata"].pop("resourceVersion")
            got = await self._write(body)
        self._version = str(got.get("metadata", {}).get("resourceVersion", ""))
        self._trusted_until = sent + self._timing.renew_deadline
        self.renewals += 1

    async def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the lease at the version last seen, or create it if none was."""
        if self._version:
            return await self._kube.replace(
                LEASES,
                namespace=self.namespace,
                name=self.name,
                body=body,
                seconds=self._patience(),
            )
        return await self._kube.create(
            LEASES, namespace=self.namespace, body=body, seconds=self._patience()
        )

    async def _current_version(self) -> str:
        try:
            got = await self._kube.get(
                LEASES, namespace=self.namespace, name=self.name, seconds=self._patience()
            )
        except NotFound:
            return ""
        return str(got.get("metadata", {}).get("resourceVersion", ""))


class LeaseWatch:
    """Every replica lease, as seen on this replica's clock (module docstring).

    Ages are measured on a *watch clock*: this replica's monotonic clock, except that a
    pause between two lease changes the watch showed adds :attr:`Timing.watch_gap` at most.
    A stalled watch thus freezes every lease's age instead of letting live holders lapse,
    and a backlog it delivers late cannot make a holder look overdue before its own renewal
    (further down the backlog) arrives. While the informer is not current (failing,
    relisting, silent) no lease lapses at all.
    """

    def __init__(self, kube: Kube, *, namespace: str, timing: Timing) -> None:
        self._timing = timing
        self.namespace = namespace
        self.informer: Informer[LeaseRecord] = Informer(
            kube, LEASES, derive=_record, namespace=namespace
        )
        self._seen: dict[str, float] = {}  # holder -> watch clock when its record last changed
        self._durations: dict[str, float] = {}  # holder -> its record's leaseDurationSeconds
        self._clock_at = 0.0  # the watch clock at the last change shown
        self._changed_at: float | None = None  # monotonic: the last change shown
        self._synced_at: float | None = None  # watch clock
        self._lapse_timers: dict[str, asyncio.TimerHandle] = {}  # holder -> its lapse check
        self._waiting: set[str] = set()  # due while the watch could not tell: its next change
        self.informer.add_listener(self._changed)
        self._lapse_listeners: list[Callable[[str], None]] = []

    def _clock(self) -> float:
        """The watch clock now (class docstring)."""
        if self._changed_at is None:
            return 0.0
        paused = time.monotonic() - self._changed_at
        return self._clock_at + min(paused, self._timing.watch_gap)

    def _judging(self) -> bool:
        """Whether the watch clock runs now: the informer current, and a change shown
        within :attr:`Timing.watch_gap`."""
        return (
            self.informer.current
            and self._changed_at is not None
            and time.monotonic() - self._changed_at < self._timing.watch_gap
        )

    def _duration(self, holder: str) -> float:
        """How long ``holder``'s lease may go unchanged: the record's own duration, or ours
        if longer. The record's, as client-go's watchers honour it: a holder that writes 30
        trusts its lease for up to its own renew deadline below 30, whatever this replica
        was started with (a rolling update that shortens ``--lease-duration``). Ours when
        longer, because :attr:`Timing.watch_gap` is derived from it: a shorter record would
        eat into the margin a stalled watch relies on. Longer only holds budget longer."""
        return max(self._timing.lease_duration, self._durations.get(holder, 0.0))

    def _changed(
        self, namespace: str, name: str, before: LeaseRecord | None, after: LeaseRecord | None
    ) -> None:
        del namespace, name
        self._clock_at = self._clock()
        self._changed_at = time.monotonic()
        if after is not None:
            self._seen[after.holder] = self._clock_at
            self._durations[after.holder] = after.duration
            self._waiting.discard(after.holder)
            self._check_at(after.holder, self._duration(after.holder))
        elif before is not None:  # deleted: the holder shut down cleanly (or someone cleaned)
            self._seen[before.holder] = -float("inf")
            self._lapsed(before.holder)
        waiting, self._waiting = self._waiting, set()
        for holder in waiting:  # the clock runs again: judge those that were due
            self._check(holder)

    def add_lapse_listener(self, cb: Callable[[str], None]) -> None:
        """Call ``cb(holder)`` when a lease is deleted, or lapses with no renewal (a holder
        that crashed deletes nothing): a check per lease, set again at each change."""
        self._lapse_listeners.append(cb)

    def close(self) -> None:
        """No more lapse checks (shutdown)."""
        for timer in self._lapse_timers.values():
            timer.cancel()
        self._lapse_timers.clear()
        self._waiting.clear()

    def _check_at(self, holder: str, delay: float) -> None:
        if (timer := self._lapse_timers.pop(holder, None)) is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._lapse_timers[holder] = loop.call_later(delay + 0.05, self._check, holder)

    def _check(self, holder: str) -> None:
        self._lapse_timers.pop(holder, None)
        if not self.live(holder):
            self._lapsed(holder)
        elif (due := self.next_lapse([holder])) is not None:  # a timer a hair early
            self._check_at(holder, due)
        else:  # the watch cannot tell now: judge at its next change
            self._waiting.add(holder)

    def _lapsed(self, holder: str) -> None:
        if (timer := self._lapse_timers.pop(holder, None)) is not None:
            timer.cancel()
        self._waiting.discard(holder)
        for cb in self._lapse_listeners:
            cb(holder)

    def live(self, holder: str) -> bool:
        """Whether ``holder``'s lease is live as this replica sees it.

        Always while the lease watch is not current (failing, relisting after a 410,
        silent past :data:`~dbquota.adapters.kube.WATCH_SILENCE`): a lease it shows
        unchanged may have been renewed all the same. Otherwise, unless its record changed
        within its duration (:meth:`_duration`) of watch clock (class docstring). A holder
        never seen counts as live for a lease duration of watch clock after the watch
        synced (its lease may just not have reached us yet).
        """
        if not self.informer.current:
            return True
        now = self._clock()
        seen = self._seen.get(holder)
        if seen is None:
            if self._synced_at is None:
                self._synced_at = now
            return now - self._synced_at < self._timing.lease_duration
        return now - seen < self._duration(holder)

    def healths(self, *, exclude: str) -> dict[str, billing.BillingHealth]:
        """The billing health of every live replica but ``exclude`` (this one), by name."""
        return {
            r.holder: r.billing
            for r in self.informer.in_namespace(self.namespace)
            if r.billing is not None and r.holder != exclude and self.live(r.holder)
        }

    def next_lapse(self, holders: list[str]) -> float | None:
        """Seconds until the first of ``holders`` lapses, if the watch keeps showing changes
        (None: none will on its own, or the watch cannot tell now; the lapse listeners hear
        of a lapse once it can)."""
        if not self._judging():
            return None
        now = self._clock()
        due = [
            seen + self._duration(holder) - now
            for holder in holders
            if (seen := self._seen.get(holder)) is not None and seen > -float("inf")
        ]
        return max(0.0, min(due)) if due else None


class LeaderElection:
    """One Lease that at most one replica holds: the reconciler's (module docstring)."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        holder: str,
        timing: Timing,
        on_change: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self._timing = timing
        self._on_change = on_change
        self._trusted_until = 0.0
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._was_leading = False
        self._task: asyncio.Task[None] | None = None
        self._version = ""
        self._spec: dict[str, Any] = {}  # of the record this replica wrote last

    def leading(self) -> bool:
        """Whether this replica is the leader now."""
        return time.monotonic() < self._trusted_until

    def start(self) -> None:
        """Try to acquire, then renew, in the background."""
        self._task = asyncio.create_task(self._loop(), name="leader election")

    async def stop(self) -> None:
        """Stop; release the lease if held, so another replica takes over at once."""
        await _stop_loop(self._task)
        if self.leading() and self._version:
            body = _body(
                name=self.name,
                namespace=self.namespace,
                holder="",
                duration=1,
                role="leader",
                version=self._version,
            )
            with contextlib.suppress(KubeError):
                await self._replace(body)
        self._set(False)
        self._trusted_until = 0.0

    def _set(self, leading: bool) -> None:
        if leading != self._was_leading:
            self._was_leading = leading
            metrics.leader.set(1 if leading else 0)
            logger.info(
                "%s leadership of %s/%s", "took" if leading else "lost", self.namespace, self.name
            )
            try:
                self._on_change(leading)
            except Exception:
                logger.exception("a leadership listener failed")

    async def _loop(self) -> None:
        """Acquire or renew every retry period, whatever fails (:func:`_complain`), and say
        after each attempt whether this replica leads: one that could not renew past its
        renew deadline steps down (the gauge, the leadership listener) as well as stops."""
        said = ""
        while True:
            try:
                await self._attempt()
            except Exception as exc:  # noqa: BLE001 - said by _complain; the election goes on
                said = _complain(exc, what="leader election", said=said)
            else:
                said = ""
            self._set(self.leading())
            await asyncio.sleep(self._timing.retry_period)

    def _patience(self) -> float:
        """Seconds the next call may take (:meth:`Timing.patience`)."""
        return self._timing.patience(self._trusted_until)

    async def _replace(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._kube.replace(
            LEASES, namespace=self.namespace, name=self.name, body=body, seconds=self._patience()
        )

    async def _attempt(self) -> None:
        sent = time.monotonic()
        if self.leading() and await self._renew():
            return
        try:
            current = await self._kube.get(
                LEASES, namespace=self.namespace, name=self.name, seconds=self._patience()
            )
        except NotFound:
            body = self._record("", kept=None)
            got = await self._kube.create(
                LEASES, namespace=self.namespace, body=body, seconds=self._patience()
            )
            self._won(got, sent)
            return
        spec = current.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime", "")))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = spec.get("leaseDurationSeconds")
        lapsed = time.monotonic() - self._observed_at >= (
            float(duration) if isinstance(duration, int | float) else self._timing.lease_duration
        )
        if holder and holder != self.holder and not lapsed:
            return
        version = str(current.get("metadata", {}).get("resourceVersion", ""))
        body = self._record(version, kept=spec if holder == self.holder else None)
        if holder != self.holder:
            transitions = spec.get("leaseTransitions")
            body["spec"]["leaseTransitions"] = (
                transitions if isinstance(transitions, int) else 0
            ) + 1
        try:
            got = await self._replace(body)
        except Conflict:
            return  # someone else moved first; look again next period
        self._won(got, sent)

    async def _renew(self) -> bool:
        """The leader's fast path, as client-go's: renew the record it wrote last, unread.
        False when someone else wrote the Lease since (then it is read, and looked at)."""
        sent = time.monotonic()
        body = self._record(self._version, kept=self._spec)
        try:
            got = await self._replace(body)
        except (Conflict, NotFound):
            return False
        self._won(got, sent)
        return True

    def _record(self, version: str, *, kept: Mapping[str, Any] | None) -> dict[str, Any]:
        return _body(
            name=self.name,
            namespace=self.namespace,
            holder=self.holder,
            duration=self._timing.lease_duration,
            role="leader",
            version=version,
            kept=kept,
        )

    def _won(self, got: dict[str, Any], sent: float) -> None:
        self._version = str(got.get("metadata", {}).get("resourceVersion", ""))
        spec = got.get("spec") or {}
        self._spec = dict(spec)
        self._observed = (self.holder, str(spec.get("renewTime", "")))
        self._observed_at = time.monotonic()
        self._trusted_until = sent + self._timing.renew_deadline
