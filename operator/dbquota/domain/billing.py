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
from typing import Literal, cast

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

    @property
    def accrues(self) -> bool:
        """Whether the run-rate is positive: only then does it stand in for the price of the
        object naming the cluster (:func:`dbquota.domain.usage.recount`). Providers list a
        new cluster at 0 until it accrues (and a stopped one at 0 too): that 0 says nothing
        of what the cluster costs, and counting it would free the price admission charged.
        """
        return self.compute + self.storage > 0.0


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
    currency: str | None = None
    """ISO 4217 code the provider prices in (upper case); None when unknown: the catalog
    named none, or the book was read back from the cache (the next catalog names it)."""

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


def other_currency(prices: PriceBook | None, currency: str) -> str | None:
    """The currency ``prices`` are in when it is known and not ``currency`` (a quota's,
    an upper-case code as its CRD requires): dbquota does not convert currencies, so such
    prices misstate every claim."""
    found = None if prices is None else prices.currency
    return found if found and found != currency else None


_CIRCUIT_ORDER: Mapping[str, int] = {"Closed": 0, "HalfOpen": 1, "Open": 2}
MAX_SHARED_ERROR = 256
"""Characters of a replica's last error that it shares with the others (:func:`shared`)."""


def shared(health: BillingHealth) -> dict[str, object]:
    """``health`` as a replica shares it with the others (its liveness Lease carries it,
    :mod:`dbquota.services.leasing`): plain JSON values, the error cut short."""
    return {
        "circuitState": health.circuit_state,
        "lastSuccess": health.last_success,
        "consecutiveFailures": health.consecutive_failures,
        "lastError": health.last_error[:MAX_SHARED_ERROR],
        "fallbackHitRate": round(health.fallback_hit_rate, 4),
        "leftOut": health.left_out,
    }


def from_shared(data: object) -> BillingHealth | None:
    """What :func:`shared` wrote; None for anything else (another version, junk)."""
    if not isinstance(data, dict):
        return None
    state, error = data.get("circuitState"), data.get("lastError", "")
    numbers = [_number(data.get(k)) for k in ("consecutiveFailures", "fallbackHitRate", "leftOut")]
    last = data.get("lastSuccess")
    since = None if last is None else _number(last)
    if state not in _CIRCUIT_ORDER or not isinstance(error, str) or None in numbers:
        return None
    if last is not None and since is None:
        return None
    failures, rate, left_out = (n or 0.0 for n in numbers)
    return BillingHealth(
        circuit_state=cast(CircuitState, state),
        last_success=since,
        consecutive_failures=int(failures),
        last_error=error[:MAX_SHARED_ERROR],
        fallback_hit_rate=min(1.0, rate),
        left_out=int(left_out),
    )


def _number(value: object) -> float | None:
    """``value`` as a float if it is a finite, non-negative JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def worst(own: BillingHealth, others: Mapping[str, BillingHealth]) -> BillingHealth:
    """The health a quota's status shows when replicas (``others``, by name) decide beside
    this one: each admits from its own billing data, so the status says what the worst
    of them has. The least closed circuit, the oldest last success (none if one never
    had one), the most consecutive failures, the highest fallback rate; the last error
    of the replica worst off by circuit, then failures, then staleness, named when it is
    not this one."""
    if not others:
        return own
    every = [("", own), *sorted(others.items())]

    def badness(item: tuple[str, BillingHealth]) -> tuple[int, int, float]:
        h = item[1]
        stale = math.inf if h.last_success is None else -h.last_success
        return _CIRCUIT_ORDER[h.circuit_state], h.consecutive_failures, stale

    name, worst_off = max(every, key=badness)
    successes = [h.last_success for _, h in every]
    error = worst_off.last_error or own.last_error
    return BillingHealth(
        circuit_state=worst_off.circuit_state,
        last_success=None if None in successes else min(s for s in successes if s is not None),
        consecutive_failures=max(h.consecutive_failures for _, h in every),
        last_error=f"replica {name}: {error}" if name and worst_off.last_error else error,
        fallback_hit_rate=max(h.fallback_hit_rate for _, h in every),
        left_out=max(h.left_out for _, h in every),
    )


@dataclass(frozen=True, kw_only=True)
class BillingSnapshot:
    """Everything admission and status publishing read, taken at one instant.

    ``prices`` is the latest catalog; ``highest`` holds, per instance class, for storage,
    per vCPU and GiB of memory and per storage class, the highest unit price seen in the
    price history window (what Conservative pricing uses), over the catalogs in the
    latest one's currency only (the rule of :func:`dbquota.domain.pricing.highest_known`).
    """

    health: BillingHealth = field(default_factory=BillingHealth)
    prices: PriceBook | None = None
    highest: PriceBook | None = None
    costs: Mapping[str, ClusterCost] = field(default_factory=dict)
