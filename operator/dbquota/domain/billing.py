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
class PriceBook:
    """Unit prices: hourly per instance class, and per GiB-month of storage."""

    instance_hourly: Mapping[str, float]
    storage_gib_month: float
    observed_at: float

    def highest_instance_hourly(self) -> float:
        """The most expensive class's hourly price (0.0 for an empty book)."""
        return max(self.instance_hourly.values(), default=0.0)


@dataclass(frozen=True, kw_only=True)
class BillingHealth:
    """How far the billing data can be trusted right now: published to every quota status."""

    circuit_state: CircuitState = "Closed"
    last_success: float | None = None
    consecutive_failures: int = 0
    last_error: str = ""
    fallback_hit_rate: float = 0.0

    def staleness(self, *, now: float) -> float:
        """Seconds since the last successful sync; infinity when there never was one."""
        return math.inf if self.last_success is None else max(0.0, now - self.last_success)


@dataclass(frozen=True, kw_only=True)
class BillingSnapshot:
    """Everything admission and status publishing read, taken at one instant.

    ``prices`` is the latest catalog; ``highest`` holds, per instance class and for storage,
    the highest unit price seen in the price history window (what Conservative pricing uses).
    """

    health: BillingHealth = field(default_factory=BillingHealth)
    prices: PriceBook | None = None
    highest: PriceBook | None = None
    costs: Mapping[str, ClusterCost] = field(default_factory=dict)
