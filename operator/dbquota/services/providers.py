"""The billing provider seam: what ingestion needs from any source of billing data.

:class:`BillingProvider` is a Protocol: the HTTP provider
(:class:`dbquota.adapters.billing.HttpBillingProvider`) implements it without naming it,
and so can a file reader, an OpenCost client or a test stub. Each call makes one attempt
and turns the source's errors into :mod:`dbquota.errors` types (``BillingUnavailable``,
``RateLimited``, ``MalformedPayload``, ``UnknownCluster``, ``NoBulkListing``,
``BillingClientError``): retries, the circuit breaker, the client-side rate limit and call
metrics are the :class:`~dbquota.services.guarding.GuardedProvider`'s, which wraps any
provider and is one itself. The ingestion worker (:mod:`dbquota.services.ingesting`) only
ever calls a guarded one.
"""

from __future__ import annotations

from typing import Protocol

from dbquota.domain import billing


class BillingProvider(Protocol):
    """What the ingestion worker needs from a billing provider (module docstring)."""

    def refresh_credentials(self) -> None:
        """Re-read credentials before a sync; ConfigurationError if they are unusable."""
        ...

    async def fetch_cost(self, cluster_id: str) -> billing.ClusterCost:
        """One cluster's cost (UnknownCluster if the provider has none)."""
        ...

    async def list_costs(self, page_token: str | None) -> billing.CostPage:
        """One page of the bulk listing (NoBulkListing if there is none)."""
        ...

    async def fetch_prices(self) -> billing.PriceBook:
        """The current price catalog."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
