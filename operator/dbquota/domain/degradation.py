"""Whether billing data is degraded for one quota, why, and how healthy data is served.

This is the one definition of *degraded* (README, "How admission decides, and how it
degrades"): admission decisions and quota status both ask :func:`assess`. Billing is
degraded for a quota when any of these holds:

- the circuit breaker is not Closed (Open, or HalfOpen while its one probe decides);
- the last successful sync is older than the quota's ``maxStaleness`` (or there never was
  one);
- there are no prices (no catalog, or an empty one).

While degraded, the quota's policy decides (:mod:`dbquota.domain.policies`).
When not degraded, prices are ``Live`` if the last sync succeeded and ``Cached`` if the
latest syncs failed but the cache is still within ``maxStaleness``.

Called by :mod:`dbquota.domain.verdicts` and by status publishing (``status.billing``).
Pure: no I/O; the caller passes ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from dbquota.domain import billing

HealthyMode = Literal["Live", "Cached"]


@dataclass(frozen=True, kw_only=True)
class Degradation:
    """The billing state as one quota sees it at one instant."""

    degraded: bool
    """Whether the quota's degradation policy applies."""
    causes: tuple[str, ...]
    """Why, for people: e.g. ``circuit Open``, ``data 1,234s old > maxStaleness 900s``."""
    staleness: float
    """Seconds since the last successful sync (infinity if there never was one)."""
    healthy_mode: HealthyMode
    """Live or Cached: how prices are served when not degraded."""

    def describe(self) -> str:
        """``billing degraded (circuit Open, data 1,234s old > maxStaleness 900s)``."""
        if not self.degraded:
            return "billing healthy"
        return f"billing degraded ({', '.join(self.causes)})"


def seconds(value: float) -> str:
    """A number of seconds for messages: ``1,234s``, ``0.5s``."""
    if value >= 10 or float(value).is_integer():
        return f"{math.floor(value):,}s"
    return f"{value:g}s"


def has_prices(snapshot: billing.BillingSnapshot) -> bool:
    """Whether the snapshot has a current catalog with at least one instance class."""
    return snapshot.prices is not None and bool(snapshot.prices.instance_hourly)


def assess(*, snapshot: billing.BillingSnapshot, max_staleness: float, now: float) -> Degradation:
    """Assess ``snapshot`` against a quota's ``max_staleness`` (seconds) at ``now``."""
    health = snapshot.health
    staleness = health.staleness(now=now)
    causes: list[str] = []
    if health.circuit_state != "Closed":
        causes.append(f"circuit {health.circuit_state}")
    if health.last_success is None:
        causes.append("no successful sync yet")
    elif staleness > max_staleness:
        causes.append(f"data {seconds(staleness)} old > maxStaleness {seconds(max_staleness)}")
    if not has_prices(snapshot):
        causes.append("no prices")
    return Degradation(
        degraded=bool(causes),
        causes=tuple(causes),
        staleness=staleness,
        healthy_mode="Cached" if health.consecutive_failures > 0 else "Live",
    )


def describe_age(value: float) -> str:
    """An age for people: ``42 seconds``, ``1 minute``, ``12 minutes``, ``3 hours``, ``2 days``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if value >= size:
            count = math.floor(value / size)
            return f"{count:,} {unit}{'' if count == 1 else 's'}"
    count = max(0, math.floor(value))
    return f"{count} second{'' if count == 1 else 's'}"
