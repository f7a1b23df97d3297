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
    """Budget held on a quota for an admission still *in flight*: the webhook admitted it,
    and the object does not show its price yet (see :mod:`dbquota.domain.reservations`)."""

    claim: str
    """The object's name."""
    uid: str
    """The object's uid (the apiserver assigns it before admission)."""
    generation: int
    """The object's ``metadata.generation`` this admission was for."""
    cost: float
    """The object's whole monthly price once this admission is in."""
    delta: float
    """What this admission adds to ``spend.reserved``: the whole cost for a CREATE, the
    growth for an UPDATE."""
    storageGiB: int
    """Storage this admission adds, in GiB."""
    pricing: str
    degraded: bool
    newClaim: bool
    builtOn: float
    """The cost of the reservation of its object still in flight that this admission built
    on, and replaced (written only then): what it has seen of the object's price."""
    reservedAt: str
    holder: str
    """The webhook replica that took it, or ``adopted``."""
    standing: bool
    """Written by earlier releases only, and read by none: its object (of a kind dbquota
    does not own) exists, so the next write of the quota ends the entry
    (:func:`dbquota.domain.reservations.confirmed_by`)."""


class Escrow(TypedDict, total=False):
    """Budget one webhook replica holds ahead of admissions (see :mod:`dbquota.domain.escrow`)."""

    holder: str
    cost: float
    claims: int
    storageGiB: int
    generation: int


class Spend(TypedDict, total=False):
    """``status.spend`` of a DatabaseQuota."""

    observed: float
    reserved: float
    remaining: float


class Used(TypedDict, total=False):
    """``status.used`` of a DatabaseQuota: counts the hard caps and StrictCap limit."""

    claims: int
    storageGiB: int
    degradedClaims: int
    degradedStorageGiB: int


class BillingStatus(TypedDict, total=False):
    """``status.billing`` of a DatabaseQuota."""

    circuitState: str
    degraded: bool
    degradedReason: str
    lastSuccessfulSync: str | None
    """None only in a patch: no replica's last sync is known (JSON null removes the field)."""
    stalenessSeconds: int | None
    """The same."""
    fallbackHitRate: float
    consecutiveFailures: int
    lastError: str
    leftOutOfListing: int


class Alerts(TypedDict, total=False):
    """``status.alerts`` of a DatabaseQuota: which budget threshold was last announced, so
    that a restarted operator or a new leader does not announce it again."""

    reached: int
    """The highest of ``spec.alerts.thresholds`` that observed + reserved spend has reached,
    in percent of the budget; 0 below the lowest (or with no thresholds)."""


class QuotaStatus(TypedDict, total=False):
    """``status`` of a DatabaseQuota."""

    observedGeneration: int
    spend: Spend
    used: Used
    billing: BillingStatus
    reservations: list[Reservation]
    escrow: list[Escrow]
    alerts: Alerts
    conditions: list[Condition]


class QuotaObject(TypedDict, total=False):
    """A DatabaseQuota as the API returns it."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, object]
    status: QuotaStatus


class ClaimStatus(TypedDict, total=False):
    """``status`` of a DatabaseClaim: the price its admission charged, which is what every
    quota of its namespace counts it at until billing shows it."""

    observedGeneration: int
    estimatedMonthlyCost: float
    pricing: str
    reservedAt: str
    degraded: bool
    conditions: list[Condition]


class ObjectReference(TypedDict, total=False):
    """What an Event is about (``regarding``): enough to find the object, and its uid so
    that an Event about a deleted object is not shown on a new one of the same name."""

    apiVersion: str
    kind: str
    namespace: str
    name: str
    uid: str


class EventSeries(TypedDict):
    """``series`` of an ``events.k8s.io/v1`` Event that happened more than once."""

    count: int
    """Occurrences so far (at least 2)."""
    lastObservedTime: str
    """When the latest occurred (MicroTime)."""


class Event(TypedDict, total=False):
    """An ``events.k8s.io/v1`` Event as dbquota writes it (see
    :mod:`dbquota.services.recording`)."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    eventTime: str
    """When it first occurred (MicroTime)."""
    action: str
    """What dbquota was doing: ``Reconcile``, ``Admit`` or ``Sync``."""
    reason: str
    note: str
    type: str
    """``Normal`` or ``Warning``."""
    regarding: ObjectReference
    reportingController: str
    reportingInstance: str
    series: EventSeries
