"""The operator's long-lived parts, built once at start-up and shared by every handler.

kopf hands each handler the ``memo``; :func:`of` finds the :class:`Runtime` in it. The
runtime owns the Kubernetes connection, the watches, the ledgers, the ingestion worker,
admission, reconciliation, the claim status publisher and the leases, and the few glue
steps between them: what a claim appearing or going away means for billing tracking and
for the reconciler, reporting a decision to metrics and to the fallback rate, and posting
billing news as Events. Each replica posts its own breaker's transitions, naming itself
when other replicas run beside it (each breaker is its own: nothing is posted twice), and
refreshes every quota's status when another replica's breaker moves, as that replica's
lease says (:mod:`dbquota.services.leasing`): the status shows the worst of them. A lease
deleted or lapsed (a replica that crashed deletes nothing) refreshes them too, so its
billing leaves the status then, not at the next periodic refresh.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from dbquota.adapters import metrics
from dbquota.adapters.kube import Informer, Kube
from dbquota.domain import billing, reservations, verdicts
from dbquota.domain.resources import QuotaObject
from dbquota.services import (
    admitting,
    announcing,
    fallbacks,
    ingesting,
    inventory,
    leasing,
    publishing,
    reconciling,
)
from dbquota.settings import Settings

logger = logging.getLogger(__name__)

DELETED_MEMORY = 300.0
"""Seconds a deleted claim's uid is remembered, so that a reservation of it still in flight
is released as ``ClaimDeleted`` rather than waiting out the grace period."""


@dataclass
class Runtime:
    """See the module docstring."""

    settings: Settings
    kube: Kube
    ingestor: ingesting.Ingestor
    quota_informer: Informer[reconciling.QuotaRef]
    claim_informer: inventory.ClaimIndex
    """Every enabled kind's objects, by tenant namespace."""
    ledgers: admitting.Ledgers
    admission: admitting.Admission
    reconciler: reconciling.Reconciler
    publisher: publishing.Publisher | None
    """Writes DatabaseClaim status (None when DatabaseClaim is not an enabled kind)."""
    liveness: leasing.Liveness
    leases: leasing.LeaseWatch
    election: leasing.LeaderElection | None
    announcer: announcing.Announcer | None = None
    """Posts the price of other operators' objects as Events (None when none is enabled)."""
    ingest_events: list[tuple[str, str]] = field(default_factory=list)
    """Recent ingestion events, for quotas this replica starts reconciling later (a cache
    quarantined at start-up happens before any quota is known)."""
    fallback: fallbacks.FallbackRate = field(default_factory=fallbacks.FallbackRate)
    """Admission's fallback hit rate, fed by :meth:`observe_admission`."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    deleted: dict[str, dict[str, float]] = field(default_factory=dict)
    """Namespace -> uid of a claim deleted in the last :data:`DELETED_MEMORY` s -> when
    (epoch seconds). Every replica records every deletion, and the reconciler asks only
    on the leader and only for namespaces with a quota: entries are let go by age as new
    ones come (:meth:`_forget_deleted`), not when asked for, or they would pile up."""
    deletions: collections.deque[tuple[float, str, str]] = field(default_factory=collections.deque)
    """The same deletions, oldest first: (when, namespace, uid)."""
    clock: Callable[[], float] = time.time
    """Wall-clock seconds, for the deletions' times."""

    def wire(self) -> None:
        """Connect the parts' events to each other (called once, before the watches run)."""
        self.claim_informer.add_listener(self._claim_changed)
        self.quota_informer.add_listener(self._quota_changed)
        self.ingestor.add_transition_listener(self.on_transition)
        self.ingestor.add_event_listener(self.on_ingest_event)
        self.ingestor.add_sync_listener(self.reconciler.mark_all)
        self.leases.add_lapse_listener(lambda _: self.reconciler.mark_all())
        self.leases.informer.add_listener(self._lease_changed)

    def own_billing(self) -> billing.BillingSnapshot:
        """This replica's billing snapshot, with admission's fallback hit rate."""
        return self.fallback.onto(self.ingestor.snapshot())

    def billing_snapshot(self) -> billing.BillingSnapshot:
        """What quota status shows: this replica's billing snapshot, its health the worst
        of every live replica's (each admits from its own data)."""
        own = self.own_billing()
        others = self.leases.healths(exclude=self.liveness.holder)
        if not others:
            return own
        return dataclasses.replace(own, health=billing.worst(own.health, others))

    def _lease_changed(
        self,
        namespace: str,
        name: str,
        before: leasing.LeaseRecord | None,
        after: leasing.LeaseRecord | None,
    ) -> None:
        """Another replica's breaker moved (as its lease says, renewed every few seconds):
        every quota's status is refreshed. That replica posts the Event itself."""
        del namespace, name
        if after is None or after.billing is None or after.holder == self.liveness.holder:
            return
        old = None if before is None or before.billing is None else before.billing.circuit_state
        new = after.billing.circuit_state
        if old != new and not (old is None and new == "Closed"):
            self.reconciler.mark_all(force=True)

    def leading(self) -> bool:
        """Whether this replica reconciles (the leader, or the only one)."""
        return self.election is None or self.election.leading()

    def on_leadership(self, leading: bool) -> None:
        """This replica became (or stopped being) the leader."""
        if not leading:
            self.ledgers.wake()  # the new leader prices from the quota: write soon
            return
        self.reconciler.mark_all(force=True)
        if self.publisher is not None:
            self.publisher.resync()
        if self.announcer is not None:
            self.announcer.resync()

    # -- watch events ----------------------------------------------------------------------

    def _claim_changed(
        self,
        namespace: str,
        name: str,
        before: reservations.ClaimRef | None,
        after: reservations.ClaimRef | None,
    ) -> None:
        if before is not None and (after is None or after.cluster_id != before.cluster_id):
            self.ingestor.untrack([before.cluster_id])
        if after is not None and (before is None or after.cluster_id != before.cluster_id):
            self.ingestor.track([after.cluster_id])
        if after is None and before is not None:
            now = self.clock()
            self._forget_deleted(now - DELETED_MEMORY)
            self.deleted.setdefault(namespace, {})[before.uid] = now
            self.deletions.append((now, namespace, before.uid))
        if before is None or after is None or before.cost != after.cost:
            self.reconciler.mark_namespace(namespace)

    def _quota_changed(
        self,
        namespace: str,
        name: str,
        before: reconciling.QuotaRef | None,
        after: reconciling.QuotaRef | None,
    ) -> None:
        """A quota is known by its uid: one deleted and created again under its name (also
        while the watch was away, when a relist shows it as a change) is the old one
        forgotten, its ledger stopped, and a new one (services/reserving.py says why)."""
        if before is not None and (after is None or after.uid != before.uid):
            self.ledgers.drop(namespace=namespace, name=name, uid=before.uid)
            self.reconciler.forget(namespace, name, uid=before.uid)
        obj = self.quota_informer.get(namespace=namespace, name=name)
        if obj is not None:
            self.ledgers.observe(cast(QuotaObject, obj))
        if after is not None and (before is None or after.uid != before.uid):
            self._replay_ingest_events(after)

    def recently_deleted(self, namespace: str) -> set[str]:
        """Uids of claims of ``namespace`` deleted in the last :data:`DELETED_MEMORY` s."""
        self._forget_deleted(self.clock() - DELETED_MEMORY)
        return set(self.deleted.get(namespace, {}))

    def _forget_deleted(self, cutoff: float) -> None:
        """Let go of the deletions from before ``cutoff``: O(1) for each, once."""
        deletions = self.deletions
        while deletions and deletions[0][0] < cutoff:
            at, namespace, uid = deletions.popleft()
            gone = self.deleted.get(namespace)
            if gone is not None and gone.get(uid) == at:  # not deleted again since
                del gone[uid]
                if not gone:
                    del self.deleted[namespace]

    # -- admission ------------------------------------------------------------------------

    def observe_admission(
        self,
        verdict: verdicts.Verdict,
        *,
        namespace: str,
        claim: str,
        seconds: float,
        dry_run: bool,
    ) -> None:
        """Count one admission in metrics (each decision, dry-run ones included, labelled
        with its outcome, pricing, reason, dry run and whether billing was degraded) and in
        the fallback rate; record what Warn and DryRun quotas let through as a ``WouldDeny``
        Event on the quota (in the background, off the admission path)."""
        metrics.admission_seconds.observe(seconds)
        for decision in verdict.decisions:
            outcome = "admitted" if decision.allowed else "denied"
            if decision.allowed and decision.would_deny:
                outcome = "warned"
            metrics.decision_counter(
                outcome=outcome,
                pricing=decision.pricing or "None",
                reason=decision.reason,
                dry_run=dry_run,
                degraded=decision.degraded,
            ).inc()
            if decision.pricing is not None:
                self.fallback.record(from_cache=decision.pricing != "Live")
            if decision.allowed and decision.would_deny and not dry_run:
                self._would_deny(namespace=namespace, claim=claim, decision=decision)

    def _would_deny(self, *, namespace: str, claim: str, decision: verdicts.Decision) -> None:
        ref = self.quota_informer.derived(namespace=namespace, name=decision.quota)
        if ref is None:
            return
        self._background(
            self.reconciler.record(
                ref,
                type_="Warning",
                reason="WouldDeny",
                action="Admit",
                message=f"claim {claim} admitted by enforcement mode only: {decision.message}",
            )
        )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- billing news ---------------------------------------------------------------------

    def on_transition(self, old: str, new: str, reason: str) -> None:
        """This replica's breaker moved: an Event on every quota, posted by this replica
        whether it leads or not (each breaker is its own), naming it when other replicas
        run beside it; and every quota's status refreshed."""
        self.reconciler.mark_all(force=True)
        holder = self.liveness.holder
        replica = holder if self.leases.healths(exclude=holder) else ""
        self._background(
            self.reconciler.announce_transition(
                self._refs(), old=old, new=new, reason=reason, replica=replica
            )
        )

    def on_ingest_event(self, reason: str, message: str) -> None:
        """An ingestion event (e.g. ``CacheQuarantined``) as a Warning Event on every quota.

        Posted by whichever replica it happened to, leader or not: each has its own cache.
        """
        self.ingest_events = [*self.ingest_events[-9:], (reason, message)]
        self._background(
            self.reconciler.announce(
                self._refs(), type_="Warning", reason=reason, action="Sync", message=message
            )
        )

    def _replay_ingest_events(self, ref: reconciling.QuotaRef) -> None:
        for reason, message in self.ingest_events:
            self._background(
                self.reconciler.record(
                    ref, type_="Warning", reason=reason, action="Sync", message=message
                )
            )

    def _refs(self) -> list[reconciling.QuotaRef]:
        return [
            ref
            for namespace in self.quota_informer.namespaces()
            for ref in self.quota_informer.in_namespace(namespace)
        ]


def of(memo: kopf.Memo) -> Runtime:
    """The runtime stored in kopf's memo by the start-up handler."""
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return runtime
