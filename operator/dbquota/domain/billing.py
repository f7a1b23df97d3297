"""Billing data as the rest of dbquota sees it: validated, immutable, provider-neutral.

The ingestion service (:mod:`dbquota.services.ingesting`) builds these from the cache and
swaps a new :class:`BillingSnapshot` in after every sync; admission and status publishing
only ever read the current snapshot, so nothing on the admission path touches the network
or the database. Times are epoch seconds (floats) so that pure code needs no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

CircuitState = Literal["Closed", "Open", "HalfOpen"]

HOURS_PER_MONTH = 730.0
"""Hours in a billing month as cloud price lists count them (365 x 24 / 12)."""


@dataclass(frozen=True, kw_only=True)
class ClusterCost:
    """The monthly run-rate the provider bills for one cluster id."""

    cluster_id: str
    compute: float
    storage: float
    observed_at: float

    @property
    def total(self) -> float:
        """Compute plus storage, per month."""
        return self.compute + self.storage


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """A provider record that failed validation and was not cached: whose, and why."""

    cluster_id: str | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class CostPage:
    """One page of a provider's bulk listing, validated entry by entry."""

    costs: tuple[ClusterCost, ...]
    rejected: tuple[Rejection, ...] = ()
    next_page_token: str | None = None


DEFAULT_STORAGE_CLASS = None
"""The key of :attr:`PriceBook.storage_class_gib_month` for volumes that name no storage
class (they get the cluster's default class)."""


@dataclass(frozen=True, kw_only=True)
class PriceBook:
    """Unit prices: hourly per instance class, and per GiB-month of storage.

    Pricing by requests (databases that run as pods: CloudNativePG, Zalando) adds three
    optional parts; a provider that does not price requests leaves them at None / empty:

    - ``vcpu_hourly``: one vCPU requested, per hour;
    - ``memory_gib_hourly``: one GiB of memory requested, per hour;
    - ``storage_class_gib_month``: one GiB-month of a volume, per storage class name,
      with :data:`DEFAULT_STORAGE_CLASS` (None) for volumes that name no class.
    """

    instance_hourly: Mapping[str, float]
    storage_gib_month: float
    observed_at: float
    vcpu_hourly: float | None = None
    memory_gib_hourly: float | None = None
    storage_class_gib_month: Mapping[str | None, float] = field(default_factory=dict)

    def highest_instance_hourly(self) -> float:
        """The most expensive class's hourly price (0.0 for an empty book)."""
        return max(self.instance_hourly.values(), default=0.0)

    def prices_requests(self) -> bool:
        """Whether the book prices requests: vCPU and memory both known."""
        return self.vcpu_hourly is not None and self.memory_gib_hourly is not None


@dataclass(frozen=True, kw_only=True)
class BillingHealth:
    """How far the billing data can be trusted right now: published to every quota status.

    Whether that makes billing *degraded* for a quota is decided in one place only,
    :func:`dbquota.domain.degradation.assess`. The ingestion worker keeps every field but
    ``fallback_hit_rate``, which admission measures (:mod:`dbquota.services.fallbacks`)
    and puts in before the status is written.
    """

    circuit_state: CircuitState = "Closed"
    last_success: float | None = None
    consecutive_failures: int = 0
    last_error: str = ""
    fallback_hit_rate: float = 0.0
    left_out: int = 0
    """Tracked clusters the last bulk listing left out though an earlier one showed them
    (a partial listing: they were fetched one by one)."""

    def staleness(self, *, now: float) -> float:
        """Seconds since the last successful sync; infinity when there never was one."""
        return math.inf if self.last_success is None else max(0.0, now - self.last_success)


@dataclass(frozen=True, kw_only=True)
class BillingSnapshot:
    """Everything admission and status publishing read, taken at one instant.

    ``prices`` is the latest catalog; ``highest`` holds, per instance class, for storage,
    per vCPU and GiB of memory and per storage class, the highest unit price seen in the
    price history window (what Conservative pricing uses).
    """

    health: BillingHealth = field(default_factory=BillingHealth)
    prices: PriceBook | None = None
    highest: PriceBook | None = None
    costs: Mapping[str, ClusterCost] = field(default_factory=dict)
