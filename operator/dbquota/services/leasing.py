"""Leases: each replica's liveness (which its escrow depends on) and the reconciler's leader.

Both follow client-go's leader election (``k8s.io/client-go/tools/leaderelection``), on
``coordination.k8s.io/v1`` Leases in one namespace (``--lease-namespace``):

- **The holder renews** every ``retry_period``, replacing the record it wrote last without
  reading it first (client-go's fast path for the leader; a conflict means someone else
  wrote it, and only then is it read). It trusts its lease only until
  ``renew_deadline`` after it *sent* its last successful renewal, measured on its own
  monotonic clock; ``renew_deadline < lease_duration``.
- **The others never compare clocks.** A watcher records, on its own monotonic clock, when
  it saw a lease's record change, and counts the lease lapsed once ``lease_duration`` has
  passed since then with no change. The holder's trust ended at least
  ``lease_duration - renew_deadline`` (5 s by default) before that, which covers any
  difference in clock *rates* and the delay of the watch.

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
from dbquota.kits import timestamps

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
        duration=float(duration) if isinstance(duration, int | float) else 15.0,
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(KubeError):
            await self._kube.delete(LEASES, namespace=self.namespace, name=self.name)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._timing.retry_period)
            try:
                await self._renew()
            except KubeError as exc:
                logger.warning(
                    "could not renew lease %s/%s (%s); escrow admissions stop %.0fs after "
                    "the last renewal",
                    self.namespace,
                    self.name,
                    exc,
                    self._timing.renew_deadline,
                )

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
            if self._version:
                got = await self._kube.replace(
                    LEASES, namespace=self.namespace, name=self.name, body=body
                )
            else:
                got = await self._kube.create(LEASES, namespace=self.namespace, body=body)
        except (Conflict, NotFound):
            # Someone else wrote it (or it was deleted): take the current version and retry.
            self._version = await self._current_version()
            body["metadata"]["resourceVersion"] = self._version
            if self._version:
                got = await self._kube.replace(
                    LEASES, namespace=self.namespace, name=self.name, body=body
                )
            else:
                body["metadata"].pop("resourceVersion")
                got = await self._kube.create(LEASES, namespace=self.namespace, body=body)
        self._version = str(got.get("metadata", {}).get("resourceVersion", ""))
        self._trusted_until = sent + self._timing.renew_deadline
        self.renewals += 1

    async def _current_version(self) -> str:
        try:
            got = await self._kube.get(LEASES, namespace=self.namespace, name=self.name)
        except NotFound:
            return ""
        return str(got.get("metadata", {}).get("resourceVersion", ""))


class LeaseWatch:
    """Every replica lease, as seen on this replica's clock (module docstring)."""

    def __init__(self, kube: Kube, *, namespace: str, timing: Timing) -> None:
        self._timing = timing
        self.namespace = namespace
        self.informer: Informer[LeaseRecord] = Informer(
            kube, LEASES, derive=_record, namespace=namespace
        )
        self._seen: dict[str, float] = {}  # holder -> monotonic time its record last changed
        self._synced_at: float | None = None
        self._lapse_timers: dict[str, asyncio.TimerHandle] = {}  # holder -> its lapse check
        self.informer.add_listener(self._changed)
        self._lapse_listeners: list[Callable[[str], None]] = []

    def _changed(
        self, namespace: str, name: str, before: LeaseRecord | None, after: LeaseRecord | None
    ) -> None:
        del namespace, name
        if after is not None:
            self._seen[after.holder] = time.monotonic()
            self._check_at(after.holder, self._timing.lease_duration)
        elif before is not None:  # deleted: the holder shut down cleanly (or someone cleaned)
            self._seen[before.holder] = -float("inf")
            self._lapsed(before.holder)

    def add_lapse_listener(self, cb: Callable[[str], None]) -> None:
        """Call ``cb(holder)`` when a lease is deleted, or lapses with no renewal (a holder
        that crashed deletes nothing): a check per lease, set again at each change."""
        self._lapse_listeners.append(cb)

    def close(self) -> None:
        """No more lapse checks (shutdown)."""
        for timer in self._lapse_timers.values():
            timer.cancel()
        self._lapse_timers.clear()

    def _check_at(self, holder: str, delay: float) -> None:
        if (timer := self._lapse_timers.pop(holder, None)) is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._lapse_timers[holder] = loop.call_later(delay + 0.05, self._check, holder)

    def _check(self, holder: str) -> None:
        self._lapse_timers.pop(holder, None)
        if not self.live(holder):
            self._lapsed(holder)
        elif due := self.next_lapse([holder]):  # a timer a hair early
            self._check_at(holder, due)

    def _lapsed(self, holder: str) -> None:
        if (timer := self._lapse_timers.pop(holder, None)) is not None:
            timer.cancel()
        for cb in self._lapse_listeners:
            cb(holder)

    def live(self, holder: str) -> bool:
        """Whether ``holder``'s lease is live as this replica sees it.

        A holder never seen counts as live until the watch has been synced for a whole
        lease duration (its lease may just not have reached us yet).
        """
        now = time.monotonic()
        seen = self._seen.get(holder)
        if seen is None:
            if not self.informer.synced.is_set():
                return True
            if self._synced_at is None:
                self._synced_at = now
            return now - self._synced_at < self._timing.lease_duration
        return now - seen < self._timing.lease_duration

    def healths(self, *, exclude: str) -> dict[str, billing.BillingHealth]:
        """The billing health of every live replica but ``exclude`` (this one), by name."""
        return {
            r.holder: r.billing
            for r in self.informer.in_namespace(self.namespace)
            if r.billing is not None and r.holder != exclude and self.live(r.holder)
        }

    def next_lapse(self, holders: list[str]) -> float | None:
        """Seconds until the first of ``holders`` lapses (None: none will on its own)."""
        now = time.monotonic()
        due = [
            seen + self._timing.lease_duration - now
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
                await self._kube.replace(
                    LEASES, namespace=self.namespace, name=self.name, body=body
                )
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
        while True:
            try:
                await self._attempt()
            except KubeError as exc:
                logger.warning("leader election: %s", exc)
            self._set(self.leading())
            await asyncio.sleep(self._timing.retry_period)

    async def _attempt(self) -> None:
        sent = time.monotonic()
        if self.leading() and await self._renew():
            return
        try:
            current = await self._kube.get(LEASES, namespace=self.namespace, name=self.name)
        except NotFound:
            body = self._record("", kept=None)
            got = await self._kube.create(LEASES, namespace=self.namespace, body=body)
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
            got = await self._kube.replace(
                LEASES, namespace=self.namespace, name=self.name, body=body
            )
        except Conflict:
            return  # someone else moved first; look again next period
        self._won(got, sent)

    async def _renew(self) -> bool:
        """The leader's fast path, as client-go's: renew the record it wrote last, unread.
        False when someone else wrote the Lease since (then it is read, and looked at)."""
        sent = time.monotonic()
        body = self._record(self._version, kept=self._spec)
        try:
            got = await self._kube.replace(
                LEASES, namespace=self.namespace, name=self.name, body=body
            )
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
