"""Which clusters' costs one billing sync asks for, and how.

The fetch strategy of the ingestion worker (:mod:`dbquota.services.ingesting`)::

    bulk listing      page by page (at most MAX_PAGES; a repeated page token is malformed),
                      while the provider has one; its first 404 says it has none, and
                      from then on only per-cluster fetches are made. A cluster listed
                      twice (the listing shifted while paged) counts at its highest cost
    per cluster       without a listing, every tracked id; with one, the tracked ids it
                      showed before and leaves out now (a partial listing, counted as
                      left_out), and at most NEW_PER_SYNC of those no listing showed in
                      the UNKNOWN_BACKOFF seconds since a claim first named them (new
                      claims the provider does not bill yet show up in a later listing:
                      asking for each at once would cost a request per new claim and make
                      a sync as long as a burst of claims is large); --max-concurrency at
                      a time, concurrent
                      fetches of one id sharing one request; the ids whose cost is
                      oldest first (a sync cut off at its deadline leaves the next one
                      those it did not reach); stops at the first refusal
                      by the breaker, and at the first 429 (its Retry-After holds every
                      call: guarding.py)
    404s              an id the provider does not know is not asked again for
                      UNKNOWN_BACKOFF seconds, doubled at each further 404 up to
                      UNKNOWN_BACKOFF_MAX, until it shows up or nobody tracks it

*Tracked* ids are the ``clusterId`` of every DatabaseClaim, reference-counted: the claim
informer calls :meth:`Fetcher.track` for each claim that appears and
:meth:`Fetcher.untrack` for each that goes away, and an id is fetched while any claim
names it. Every call goes through the provider it is given, a guarded one
(:class:`~dbquota.services.guarding.GuardedProvider`). The result of one round is a
:class:`Fetched`: the costs, what was rejected or unknown, and the errors; it is filled
as answers come, so a round cut short keeps what it brought.

A listing paged while clusters come and go can show one cluster on two pages, at two
costs (one of them possibly the 0 of a cluster not accruing yet). Whichever entry came
last used to win. The highest wins now: for a quota, counting a cluster over for one
sync is safe, counting it under frees budget. Each extra entry is counted
(``dbquota_billing_duplicate_entries_total``) and one WARNING per sync says how many.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping

from dbquota import errors
from dbquota.adapters import metrics
from dbquota.domain import billing
from dbquota.kits import clock as clock_
from dbquota.kits import coalescing
from dbquota.services.providers import BillingProvider

logger = logging.getLogger(__name__)

MAX_PAGES = 100_000
"""Most pages of one bulk listing (a provider that never ends its listing is broken)."""
UNKNOWN_BACKOFF = 60.0
"""Seconds before a cluster the provider answered 404 for is asked for again; doubled at
each further 404, up to :data:`UNKNOWN_BACKOFF_MAX`."""
UNKNOWN_BACKOFF_MAX = 3600.0
"""Longest wait before asking again for a cluster the provider keeps not knowing."""
NEW_PER_SYNC = 50
"""With a bulk listing, most tracked clusters no listing has shown yet asked for one by one
in one sync (the rest in later syncs)."""


@dataclasses.dataclass
class Fetched:
    """What one round of fetching brought."""

    costs: dict[str, billing.ClusterCost] = dataclasses.field(default_factory=dict)
    rejected: int = 0
    """Payloads (bulk entries or per-cluster answers) that failed validation."""
    unknown: int = 0
    """Tracked ids the provider answered 404 for."""
    left_out: int = 0
    """Tracked ids the bulk listing showed before (they are ``known``) and left out now."""
    duplicates: int = 0
    """Entries of the bulk listing naming a cluster an earlier entry named (module
    docstring: the highest cost was kept)."""
    errors: list[str] = dataclasses.field(default_factory=list)
    """What failed, for the health report; empty when the round succeeded."""


class Fetcher:
    """The fetch strategy (module docstring) over one provider."""

    def __init__(
        self, provider: BillingProvider, *, max_concurrency: int, clock: clock_.Clock
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._provider = provider
        self._max_concurrency = max_concurrency
        self._clock = clock
        self._coalescer: coalescing.Coalescer[str, billing.ClusterCost] = coalescing.Coalescer()
        self._tracked: dict[str, int] = {}  # cluster id -> claims that name it
        self._since: dict[str, float] = {}  # cluster id -> when a claim first named it
        self._unknown: dict[str, tuple[float, float]] = {}  # id -> (retry at, backoff)
        self._bulk: bool | None = None  # unknown until the provider tells us

    # -- tracking -----------------------------------------------------------------------

    def track(self, cluster_ids: Iterable[str]) -> None:
        """Count one more claim naming each of these cluster ids."""
        now = self._clock.monotonic()
        for cid in cluster_ids:
            if cid:
                self._tracked[cid] = self._tracked.get(cid, 0) + 1
                self._since.setdefault(cid, now)
        metrics.tracked_clusters.set(len(self._tracked))

    def untrack(self, cluster_ids: Iterable[str]) -> None:
        """Count one claim less for each id; an id no claim names any more is no longer
        fetched (its last cost stays in the snapshot)."""
        for cid in cluster_ids:
            left = self._tracked.get(cid, 0) - 1
            if left > 0:
                self._tracked[cid] = left
            else:
                self._tracked.pop(cid, None)
                self._since.pop(cid, None)
                self._unknown.pop(cid, None)
        metrics.tracked_clusters.set(len(self._tracked))
        metrics.unknown_clusters.set(len(self._unknown))

    @property
    def tracked(self) -> frozenset[str]:
        """The cluster ids some claim names."""
        return frozenset(self._tracked)

    @property
    def unknown(self) -> frozenset[str]:
        """Tracked ids the provider answered 404 for, not asked again until their backoff ends."""
        return frozenset(self._unknown)

    # -- fetching -----------------------------------------------------------------------

    async def fetch(self, cluster_id: str) -> billing.ClusterCost:
        """One cluster's cost; concurrent calls for one id share a single request."""
        return await self._coalescer.run(cluster_id, lambda: self._provider.fetch_cost(cluster_id))

    async def fetch_costs(
        self, *, known: Mapping[str, billing.ClusterCost], into: Fetched | None = None
    ) -> Fetched:
        """One round: the bulk listing if there is one, then the tracked ids it missed.

        ``known`` are the costs the worker holds (a listing or a fetch showed them before).
        The round fills ``into`` (a new :class:`Fetched` if none) as answers come: a caller
        that cuts the round short keeps what it brought.
        """
        fetched = into if into is not None else Fetched()
        if self._bulk is not False:
            try:
                await self._list_all(fetched)
            except errors.NoBulkListing:
                logger.info("the billing provider has no bulk listing; fetching per cluster")
                self._bulk = False
            except errors.DbquotaError as exc:
                fetched.errors.append(f"bulk listing: {exc}")
                return fetched
        for cid in fetched.costs:
            self._unknown.pop(cid, None)
        missing = self._to_fetch_one_by_one(fetched, known=known)
        if missing:
            await self._fetch_each(missing, fetched)
        return fetched

    def _to_fetch_one_by_one(
        self, fetched: Fetched, *, known: Mapping[str, billing.ClusterCost]
    ) -> list[str]:
        """Tracked ids to fetch one by one after the listing (if any), as the module
        docstring says, the oldest cost first (none at all: first of all); never one the
        provider answered 404 for until its backoff ends."""
        now = self._clock.monotonic()

        def age(cid: str) -> tuple[float, str]:
            cost = known.get(cid)
            return (-math.inf if cost is None else cost.observed_at, cid)

        due = sorted(
            (
                cid
                for cid in self._tracked
                if cid not in fetched.costs and self._unknown.get(cid, (0.0, 0.0))[0] <= now
            ),
            key=age,
        )
        if not self._bulk:
            return due
        left_out = [c for c in due if c in known]
        fetched.left_out = len(left_out)
        settled = [
            c for c in due if c not in known and now - self._since.get(c, now) >= UNKNOWN_BACKOFF
        ]
        return left_out + settled[:NEW_PER_SYNC]

    async def _list_all(self, fetched: Fetched) -> None:
        token: str | None = None
        seen: set[str] = set()
        twice: str | None = None  # the first cluster listed twice, for the log
        try:
            for _ in range(MAX_PAGES):
                page = await self._provider.list_costs(token)
                self._bulk = True
                for cost in page.costs:
                    if not _kept_highest(fetched.costs, cost):
                        fetched.duplicates += 1
                        twice = twice or cost.cluster_id
                fetched.rejected += len(page.rejected)
                token = page.next_page_token
                if token is None:
                    return
                if token in seen:
                    raise errors.MalformedPayload(f"the bulk listing repeats page token {token!r}")
                seen.add(token)
            raise errors.MalformedPayload(f"the bulk listing has more than {MAX_PAGES} pages")
        finally:  # what the pages brought is kept even if a later one failed: say it too
            if fetched.duplicates:
                metrics.duplicate_entries.inc(fetched.duplicates)
                logger.warning(
                    "the billing provider's bulk listing named clusters more than once "
                    "(%d extra entries, %s the first); each counts at its highest cost",
                    fetched.duplicates,
                    twice,
                )

    async def _fetch_each(self, cluster_ids: list[str], fetched: Fetched) -> None:
        pending = iter(cluster_ids)
        failures: list[str] = []
        stop = False

        async def worker() -> None:
            nonlocal stop
            for cid in pending:
                if stop:
                    return
                try:
                    fetched.costs[cid] = await self.fetch(cid)
                    self._unknown.pop(cid, None)
                except errors.UnknownCluster:
                    fetched.unknown += 1
                    self._forget_for_a_while(cid)
                except errors.MalformedPayload:
                    fetched.rejected += 1
                except errors.CircuitOpen as exc:
                    stop = True
                    failures.append(str(exc))
                except errors.RateLimited as exc:
                    stop = True  # the provider asked for quiet: this round sends no more
                    failures.append(f"{cid}: {exc}")
                except errors.BillingError as exc:
                    failures.append(f"{cid}: {exc}")

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._max_concurrency, len(cluster_ids))):
                group.create_task(worker())
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            fetched.errors.append(f"per-cluster fetches: {failures[-1]}{more}")

    def _forget_for_a_while(self, cluster_id: str) -> None:
        """Negative-cache a 404: ask again after a backoff that doubles each time."""
        _, backoff = self._unknown.get(cluster_id, (0.0, UNKNOWN_BACKOFF / 2))
        backoff = min(UNKNOWN_BACKOFF_MAX, backoff * 2)
        self._unknown[cluster_id] = (self._clock.monotonic() + backoff, backoff)
        metrics.unknown_clusters.set(len(self._unknown))


def _kept_highest(costs: dict[str, billing.ClusterCost], cost: billing.ClusterCost) -> bool:
    """Put ``cost`` into ``costs`` unless its cluster is there already (then keep the higher
    total, the earlier on a tie); whether the cluster was new (module docstring)."""
    kept = costs.get(cost.cluster_id)
    if kept is None or cost.total > kept.total:
        costs[cost.cluster_id] = cost
    return kept is None
