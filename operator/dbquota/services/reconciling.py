"""Reconciliation of DatabaseQuota status: spend, billing health, reservations, conditions.

Called by the quota handlers (on create/update/resume and on a timer) with the claims
kopf's index holds for the namespace. The status is computed by
:func:`dbquota.domain.statuses.quota_status` from the quota *as read inside the ledger's
compare-and-swap*, so a reconcile never overwrites a reservation that an admission took a
moment earlier. Events follow the write: budget crossings and released reservations on
the quota, and (via :meth:`Reconciler.announce_transition`) circuit breaker transitions
on every quota, so ``kubectl describe databasequota`` tells the story. Each written status
is also published as the quota's ``dbquota_quota_*`` metrics
(:func:`dbquota.adapters.metrics.publish_quota`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dbquota.adapters import metrics
from dbquota.adapters.kube import Kube
from dbquota.domain import billing, reservations, statuses
from dbquota.domain.resources import QuotaObject, QuotaStatus
from dbquota.errors import KubeError, NotFound
from dbquota.services import reserving

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaRef:
    """Which quota to post an Event on."""

    namespace: str
    name: str
    uid: str


class Reconciler:
    """Writes quota status through the ledgers; see the module docstring."""

    def __init__(
        self,
        *,
        kube: Kube,
        ledgers: reserving.Ledgers,
        snapshot: Callable[[], billing.BillingSnapshot],
        clock: Callable[[], float],
        grace: float,
    ) -> None:
        self._kube = kube
        self._ledgers = ledgers
        self._snapshot = snapshot
        self._clock = clock
        self._grace = grace
        self._announcing = asyncio.Lock()

    async def reconcile(
        self, *, quota: QuotaRef, claims: Sequence[reservations.ClaimRef]
    ) -> statuses.Refresh | None:
        """Refresh one quota's status; returns what changed (None if the quota is gone)."""
        snapshot, now = self._snapshot(), self._clock()
        refreshed: list[statuses.Refresh] = []
        read: list[QuotaObject] = []

        def mutate(current: QuotaObject) -> QuotaStatus:
            refresh = statuses.quota_status(
                quota=current, snapshot=snapshot, claims=claims, now=now, grace=self._grace
            )
            refreshed[:] = [refresh]
            read[:] = [current]
            return refresh.status

        ledger = self._ledgers.of(namespace=quota.namespace, name=quota.name)
        ledger.forget()  # read afresh: a reconcile is also when we catch up with others
        try:
            await ledger.update(mutate)
        except NotFound:
            self._ledgers.drop(namespace=quota.namespace, name=quota.name)
            return None
        refresh = refreshed[0]
        metrics.publish_quota(
            namespace=quota.namespace,
            name=quota.name,
            spec=read[0].get("spec", {}),
            status=refresh.status,
            escrow_expired=len(refresh.expired),
        )
        for held, why in refresh.released:
            await self._event(
                quota,
                "Normal",
                "ReservationReleased",
                f"released {held.get('cost', 0.0):,.2f} held for claim "
                f"{held.get('claim')}: {_RELEASE_WHY[why]}",
            )
        for held in refresh.adopted:
            await self._event(
                quota,
                "Warning",
                "ReservationAdopted",
                f"holding {held.get('cost', 0.0):,.2f} for claim {held.get('claim')}, which "
                "exists with no reservation and is not billed yet (admitted by a replica that "
                "stopped before writing it, or created while the webhook was bypassed)",
            )
        for lapsed in refresh.expired:
            await self._event(
                quota,
                "Warning",
                "EscrowExpired",
                f"let go of {lapsed.get('cost', 0.0):,.2f} held in escrow by replica "
                f"{lapsed.get('holder')}, which stopped renewing it at {lapsed.get('expiresAt')}",
            )
        if refresh.budget_crossed is not None:
            conds = {c["type"]: c for c in refresh.status.get("conditions", [])}
            message = conds["BudgetExceeded"]["message"]
            if refresh.budget_crossed:
                await self._event(quota, "Warning", "BudgetExceeded", message)
            else:
                await self._event(quota, "Normal", "WithinBudget", message)
        return refresh

    async def announce_transition(
        self, quotas: Sequence[QuotaRef], *, old: str, new: str, reason: str
    ) -> None:
        """Post a circuit breaker transition as an Event on every quota."""
        await self.announce(
            quotas,
            type_="Normal" if new == "Closed" else "Warning",
            reason=f"Circuit{new}",
            message=f"billing circuit breaker {old} -> {new}: {reason}",
        )

    async def announce(
        self, quotas: Sequence[QuotaRef], *, type_: str, reason: str, message: str
    ) -> None:
        """Post the same Event on every quota (news about billing concerns them all).

        Announcements are posted one after another, in the order they were made: breaker
        transitions come milliseconds apart (HalfOpen, then Closed), each posted from its
        own background task, and without the lock a slow first POST let the later Event
        be created first, so ``kubectl get events`` told the story out of order.
        """
        async with self._announcing:
            for quota in quotas:
                await self._event(quota, type_, reason, message)

    async def record(self, quota: QuotaRef, *, type_: str, reason: str, message: str) -> None:
        """Post one Event on a quota (failures are logged, not raised)."""
        await self._event(quota, type_, reason, message)

    async def _event(self, quota: QuotaRef, type_: str, reason: str, message: str) -> None:
        try:
            await self._kube.post_event(
                namespace=quota.namespace,
                kind="DatabaseQuota",
                name=quota.name,
                uid=quota.uid,
                type_=type_,
                reason=reason,
                message=message,
            )
        except KubeError as exc:  # an Event is worth a log line, not a failed reconcile
            logger.warning(
                "could not post %s Event on %s/%s: %s", reason, quota.namespace, quota.name, exc
            )


_RELEASE_WHY: dict[reservations.ReleaseReason, str] = {
    "Billed": "billing now shows its cost",
    "ClaimDeleted": "the claim was deleted",
    "NeverCreated": "the claim never appeared after admission",
}
