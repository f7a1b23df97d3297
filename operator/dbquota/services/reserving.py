"""Reservations on a DatabaseQuota's status, written by compare-and-swap, batched per quota.

This is how parallel admissions through several webhook replicas never over-admit, the
method of Kubernetes' ResourceQuota admission plugin: read the quota (and its
``resourceVersion``), decide every pending request against the reservations already held
*plus those admitted earlier in the same batch*, and write the new reservation list with a
merge patch that carries the ``resourceVersion`` read. If another writer got there first,
the apiserver answers 409; we re-read and decide the whole batch again.

Batching (one writer task per quota, taking every request queued while the previous write
was in flight) is what keeps throughput up under bursts: N concurrent claims cost one
read-and-write round instead of N rounds with N-1 conflicts each (kubernetes#67761).
Requests marked dry-run are decided in order with the others but reserve nothing.

The reconciler's status updates go through the same ledger (:meth:`Ledger.update`) so the
process never conflicts with itself. Called by :mod:`dbquota.services.admitting` and
:mod:`dbquota.services.reconciling`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from dbquota.adapters.kube import Kube
from dbquota.domain.resources import QuotaObject, QuotaStatus, Reservation
from dbquota.errors import Conflict, KubeError

logger = logging.getLogger(__name__)

R = TypeVar("R")  # what a decision returns to its caller

MAX_ATTEMPTS = 8
"""CAS rounds per batch before giving up (ResourceQuota uses 3; our batches are larger)."""


class ReservationConflictError(KubeError):
    """The quota kept changing under us for every attempt: the caller should deny and retry."""


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """A decision on one request: what to tell its caller and the reservation to hold.

    ``reservation`` replaces any earlier reservation of the same claim name; ``None`` holds
    nothing (a denial, or a dry-run decision).
    """

    result: R
    reservation: Reservation | None = None


Decide = Callable[[QuotaObject, Sequence[Reservation]], Outcome[R]]
"""Decide one request given the quota as read and the reservations held so far."""

Mutate = Callable[[QuotaObject], QuotaStatus | None]
"""Compute a status patch from the quota as read; ``None`` means nothing to write."""


@dataclass
class _Pending(Generic[R]):
    decide: Decide[R] | None
    mutate: Mutate | None
    dry_run: bool
    future: asyncio.Future[R | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


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


class Ledger:
    """Serialises the status writes of one DatabaseQuota; see the module docstring."""

    def __init__(self, *, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._queue: list[_Pending[object]] = []
        self._writer: asyncio.Task[None] | None = None
        self._latest: QuotaObject | None = None
        self.writes = 0
        self.conflicts = 0

    def forget(self) -> None:
        """Drop the cached copy (e.g. after someone else changed the quota)."""
        self._latest = None

    def expect_generation(self, generation: int) -> None:
        """Drop the cached copy if the quota's spec changed since it was read.

        Status writes do not bump ``metadata.generation``, spec changes do: a denial
        (which writes nothing, so no conflict would tell us) must see a raised budget.
        """
        if self._latest is not None:
            cached = int(self._latest.get("metadata", {}).get("generation", 0))
            if cached < generation:
                self._latest = None

    async def reserve(self, decide: Decide[R], *, dry_run: bool) -> R:
        """Decide one request in the next batch and hold its reservation unless dry-run."""
        pending: _Pending[R] = _Pending(decide=decide, mutate=None, dry_run=dry_run)
        result = await self._enqueue(pending)
        assert result is not None
        return result

    async def update(self, mutate: Mutate) -> None:
        """Apply a status patch computed from the freshest quota, by CAS, in queue order."""
        await self._enqueue(_Pending(decide=None, mutate=mutate, dry_run=False))

    async def _enqueue(self, pending: _Pending[R]) -> R | None:
        self._queue.append(pending)  # type: ignore[arg-type]
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=f"ledger {self.name}")
        return await asyncio.shield(pending.future)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._process(batch)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)

    async def _read(self) -> QuotaObject:
        if self._latest is None:
            self._latest = await self.kube.get_quota(namespace=self.namespace, name=self.name)
        return self._latest

    async def _process(self, batch: list[_Pending[object]]) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            quota = await self._read()
            base: dict[str, Any] = dict(quota.get("status") or {})
            working: dict[str, Any] = dict(base)  # the status as it will be after this batch
            results: list[object] = []
            for p in batch:
                view = cast(QuotaObject, {**quota, "status": working})
                if p.decide is not None:
                    outcome = p.decide(view, list(working.get("reservations", [])))
                    if outcome.reservation is not None and not p.dry_run:
                        working["reservations"] = upsert(
                            working.get("reservations", []), outcome.reservation
                        )
                    results.append(outcome.result)
                else:
                    assert p.mutate is not None
                    working.update(p.mutate(view) or {})
                    results.append(None)
            if working != base:  # reserved and remaining follow from what changed
                view = cast(QuotaObject, {**quota, "status": working})
                working.update(totals(quota=view, reservations=working.get("reservations", [])))
            patch = {k: v for k, v in working.items() if base.get(k) != v}
            if patch:
                try:
                    self._latest = await self.kube.patch_quota_status(
                        namespace=self.namespace,
                        name=self.name,
                        status=patch,
                        resource_version=quota.get("metadata", {}).get("resourceVersion"),
                    )
                    self.writes += 1
                except Conflict:
                    self.conflicts += 1
                    self._latest = None
                    continue
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
            return
        raise ReservationConflictError(
            f"DatabaseQuota {self.namespace}/{self.name} changed under every one of "
            f"{MAX_ATTEMPTS} compare-and-swap attempts; try again"
        )


class Ledgers:
    """One :class:`Ledger` per quota, created on first use."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._ledgers: dict[tuple[str, str], Ledger] = {}

    def of(self, *, namespace: str, name: str) -> Ledger:
        """The ledger of quota ``namespace/name``."""
        key = (namespace, name)
        ledger = self._ledgers.get(key)
        if ledger is None:
            ledger = self._ledgers[key] = Ledger(kube=self.kube, namespace=namespace, name=name)
        return ledger

    def drop(self, *, namespace: str, name: str) -> None:
        """Forget a deleted quota."""
        self._ledgers.pop((namespace, name), None)
