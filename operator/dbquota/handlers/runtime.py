"""The operator's long-lived parts, built once at start-up and shared by every handler.

kopf hands each handler the ``memo``; :func:`of` finds the :class:`Runtime` in it. The
runtime owns the Kubernetes connection, the ledgers, the ingestion worker, admission and
reconciliation, and the few glue steps between them that handlers need (reporting a
decision to metrics and to the fallback hit rate, finding a claim's reservation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from dbquota.adapters import metrics
from dbquota.adapters.kube import Informer, Kube
from dbquota.domain import billing, reservations, verdicts
from dbquota.domain.resources import Reservation
from dbquota.errors import KubeError
from dbquota.services import admitting, ingesting, reconciling, reserving
from dbquota.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaEntry:
    """What the quota index keeps of one DatabaseQuota."""

    namespace: str
    name: str
    uid: str
    generation: int

    @property
    def ref(self) -> reconciling.QuotaRef:
        """Which quota to post Events on."""
        return reconciling.QuotaRef(namespace=self.namespace, name=self.name, uid=self.uid)


@dataclass
class Runtime:
    """See the module docstring."""

    settings: Settings
    kube: Kube
    ledgers: reserving.Ledgers
    ingestor: ingesting.Ingestor
    admission: admitting.Admission
    reconciler: reconciling.Reconciler
    quota_informer: Informer[QuotaEntry]
    claim_informer: Informer[reservations.ClaimRef]
    quotas: dict[tuple[str, str], QuotaEntry] = field(default_factory=dict)
    ingest_events: list[tuple[str, str]] = field(default_factory=list)
    """Recent ingestion events, delivered to quotas this replica starts reconciling later
    (a cache quarantined at start-up happens before any quota is known)."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def snapshot(self) -> billing.BillingSnapshot:
        """The current billing snapshot (in memory)."""
        return self.ingestor.snapshot()

    def observe_admission(
        self,
        verdict: verdicts.Verdict,
        *,
        namespace: str,
        claim: str,
        seconds: float,
        dry_run: bool,
    ) -> None:
        """Count one admission in metrics and in the fallback hit rate; record what Warn and
        DryRun quotas let through as a ``WouldDeny`` Event on the quota (in the background,
        off the admission path)."""
        metrics.admission_seconds.observe(seconds)
        for decision in verdict.decisions:
            outcome = "admitted" if decision.allowed else "denied"
            if decision.allowed and decision.would_deny:
                outcome = "warned"
            metrics.admission_decisions.labels(
                outcome=outcome,
                pricing=decision.pricing or "None",
                reason=decision.reason,
                dry_run=str(dry_run).lower(),
            ).inc()
            if decision.pricing is not None:
                self.ingestor.record_decision(from_cache=decision.pricing != "Live")
            if decision.allowed and decision.would_deny and not dry_run:
                self._would_deny(namespace=namespace, claim=claim, decision=decision)

    def _would_deny(self, *, namespace: str, claim: str, decision: verdicts.Decision) -> None:
        entry = self.quota_informer.derived(namespace=namespace, name=decision.quota)
        if entry is None:
            return
        self._background(
            self.reconciler.record(
                entry.ref,
                type_="Warning",
                reason="WouldDeny",
                message=f"claim {claim} admitted by enforcement mode only: {decision.message}",
            )
        )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def quota_entries(self, namespace: str) -> list[QuotaEntry]:
        """The namespace's quotas as the informer holds them (waiting for its first list)."""
        await self._synced()
        entries = self.quota_informer.in_namespace(namespace)
        for entry in entries:
            self.ledgers.of(namespace=namespace, name=entry.name).expect_generation(
                entry.generation
            )
        return entries

    def claim_refs(self, namespace: str) -> list[reservations.ClaimRef]:
        """The namespace's claims as the informer holds them (parsed once per event)."""
        return self.claim_informer.in_namespace(namespace)

    async def _synced(self, patience: float = 10.0) -> None:
        for informer in (self.quota_informer, self.claim_informer):
            if not informer.synced.is_set():
                try:
                    await asyncio.wait_for(informer.synced.wait(), patience)
                except TimeoutError as exc:
                    raise KubeError(
                        f"the {informer.plural} informer has not listed yet; retry"
                    ) from exc

    def remember(self, entry: QuotaEntry) -> None:
        """Track a quota this replica reconciles (for breaker and ingestion Events).

        A spec change needs nothing here: the ledger drops its cached copy when the
        generation moves (:meth:`~dbquota.services.reserving.Ledger.expect_generation`).
        """
        key = (entry.namespace, entry.name)
        before = self.quotas.get(key)
        self.quotas[key] = entry
        if before is None:
            for reason, message in self.ingest_events:
                self._background(
                    self.reconciler.record(
                        entry.ref, type_="Warning", reason=reason, message=message
                    )
                )

    def forget(self, *, namespace: str, name: str) -> None:
        """A quota was deleted."""
        self.quotas.pop((namespace, name), None)
        self.ledgers.drop(namespace=namespace, name=name)

    async def reconcile(self, entry: QuotaEntry) -> None:
        """Refresh one quota's status (through its ledger)."""
        self.remember(entry)
        await self._synced()
        claims = self.claim_refs(entry.namespace)
        self.ingestor.track(ref.cluster_id for ref in claims)  # fetched one by one if no bulk
        await self.reconciler.reconcile(
            quota=entry.ref,
            claims=claims,
        )

    async def find_reservation(
        self, *, namespace: str, claim: str, quotas: Sequence[str]
    ) -> Reservation | None:
        """The reservation a claim's admission took on one of ``quotas``, if any.

        Read from the informer's copy of each quota; only if the hold is not there yet (its
        watch event still in flight) is the quota read from the apiserver.
        """
        for name in quotas:
            held = _held_for(claim, self.quota_informer.get(namespace=namespace, name=name))
            if held is None:
                try:
                    quota = await self.kube.get_quota(namespace=namespace, name=name)
                except KubeError:
                    continue
                held = _held_for(claim, dict(quota))
            if held is not None:
                return held
        return None

    def on_transition(self, old: str, new: str, reason: str) -> None:
        """Breaker transition: an Event on every quota this replica reconciles.

        Only the reconciling replica (the leader under ``--peering``) knows quotas here, so
        Events are not doubled by standbys; the status itself follows on the leader's next
        ``--resync-interval`` refresh.
        """
        self._background(
            self.reconciler.announce_transition(self._refs(), old=old, new=new, reason=reason)
        )

    def on_ingest_event(self, reason: str, message: str) -> None:
        """An ingestion event (e.g. ``CacheQuarantined``) as a Warning Event on every quota."""
        self.ingest_events = [*self.ingest_events[-9:], (reason, message)]
        self._background(
            self.reconciler.announce(self._refs(), type_="Warning", reason=reason, message=message)
        )

    def _refs(self) -> list[reconciling.QuotaRef]:
        return [q.ref for q in self.quotas.values()]


def quota_entry(obj: dict[str, Any]) -> QuotaEntry:
    """What the quota informer keeps of a DatabaseQuota object."""
    meta = obj.get("metadata", {})
    return QuotaEntry(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 0)),
    )


def _held_for(claim: str, quota: dict[str, Any] | None) -> Reservation | None:
    if quota is None:
        return None
    holds: list[Reservation] = quota.get("status", {}).get("reservations", [])
    return next((held for held in holds if held.get("claim") == claim), None)


def of(memo: kopf.Memo) -> Runtime:
    """The runtime stored in kopf's memo by the start-up handler."""
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return runtime
