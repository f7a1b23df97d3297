"""The Kubernetes objects dbquota reads and writes, typed as the API serves them (JSON dicts).

``TypedDict`` shapes only, no behaviour: the Kubernetes adapter returns these, services
and handlers read them, and nothing needs ``Any`` to do so. ``total=False`` where the API
may omit a field (a new object has no status yet).
"""

from __future__ import annotations

from typing import TypedDict

from dbquota.domain.conditions import Condition


class ObjectMeta(TypedDict, total=False):
    """The parts of ``metadata`` dbquota uses."""

    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str


class Reservation(TypedDict, total=False):
    """Budget held on a quota for an admitted claim until billing shows it."""

    claim: str
    uid: str
    cost: float
    storageGiB: int
    pricing: str
    degraded: bool
    newClaim: bool
    reservedAt: str


class Escrow(TypedDict, total=False):
    """Budget one webhook replica holds ahead of admissions (see :mod:`dbquota.domain.escrow`)."""

    holder: str
    cost: float
    claims: int
    storageGiB: int
    generation: int
    expiresAt: str


class Spend(TypedDict, total=False):
    """``status.spend`` of a DatabaseQuota."""

    observed: float
    reserved: float
    remaining: float


class BillingStatus(TypedDict, total=False):
    """``status.billing`` of a DatabaseQuota."""

    circuitState: str
    degraded: bool
    degradedReason: str
    lastSuccessfulSync: str
    stalenessSeconds: int
    fallbackHitRate: float
    consecutiveFailures: int
    lastError: str


class QuotaStatus(TypedDict, total=False):
    """``status`` of a DatabaseQuota."""

    observedGeneration: int
    spend: Spend
    billing: BillingStatus
    reservations: list[Reservation]
    escrow: list[Escrow]
    conditions: list[Condition]


class QuotaObject(TypedDict, total=False):
    """A DatabaseQuota as the API returns it."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, object]
    status: QuotaStatus
