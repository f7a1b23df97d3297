"""The fetch strategy, through the ingestion worker, against a provider behind httpx's
MockTransport on a fake clock.

Checks: without a bulk listing, tracked clusters are fetched one by one (the missing
listing is learned once); a cluster is tracked while any claim names it; a cluster the
provider does not know (404) is asked again only after a backoff that doubles, and is
forgotten once it shows up; tracked clusters a partial listing left out are fetched and
counted in the health; clusters no listing ever showed are asked for a few per sync; a
cluster a shifting listing shows twice counts at the higher of its costs, in the snapshot
and the cache, each extra entry counted and one line logged per sync; no concurrency at
all is refused, not read as one; clusters are fetched one by one the oldest cost first,
into the caller's :class:`~dbquota.services.fetching.Fetched`.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from dbquota import errors
from dbquota.domain import billing
from dbquota.kits.clock import FakeClock
from dbquota.services import fetching
from tests.unit.services.billing_api import Provider, Run, sample


async def test_without_a_bulk_listing_tracked_clusters_are_fetched_one_by_one(
    start: Run,
) -> None:
    provider = Provider(5, bulk=False)
    ing = await start(provider)
    ing.track(["c1", "c2", "c4"])
    await ing.sync_once()
    assert sorted(ing.snapshot().costs) == ["c1", "c2", "c4"]
    assert provider.requests["bulk"] == 1  # learned once that there is no listing
    assert provider.requests["cluster"] == 3
    ing.untrack(["c2"])
    await ing.sync_once()
    assert ing.tracked == {"c1", "c4"}
    assert provider.requests["cluster"] == 5


async def test_a_cluster_is_tracked_while_any_claim_names_it(start: Run) -> None:
    provider = Provider(5, bulk=False)
    ing = await start(provider)
    ing.track(["c1", "c1"])  # two claims share one clusterId
    ing.untrack(["c1"])
    assert ing.tracked == {"c1"}
    ing.untrack(["c1"])
    assert ing.tracked == set()
    ing.untrack(["never-tracked"])  # harmless
    await ing.sync_once()
    assert provider.requests["cluster"] == 0


async def test_a_cluster_the_provider_does_not_know_is_asked_again_only_after_a_backoff(
    start: Run, clock: FakeClock
) -> None:
    provider = Provider(2, bulk=False)
    ing = await start(provider)
    ing.track(["c0", "gone"])
    await ing.sync_once()
    assert provider.asked["gone"] == 1
    assert ing.unknown == {"gone"}
    for _ in range(3):  # syncs within the backoff do not ask again
        await ing.sync_once()
    assert provider.asked["gone"] == 1
    assert provider.asked["c0"] == 4
    clock.advance(fetching.UNKNOWN_BACKOFF + 1)
    await ing.sync_once()
    assert provider.asked["gone"] == 2  # asked again, then backs off twice as long
    clock.advance(fetching.UNKNOWN_BACKOFF + 1)
    await ing.sync_once()
    assert provider.asked["gone"] == 2
    provider.costs["gone"] = (5.0, 1.0)  # the provider learns of it
    clock.advance(2 * fetching.UNKNOWN_BACKOFF)
    await ing.sync_once()
    assert "gone" in ing.snapshot().costs
    assert ing.unknown == set()
    ing.untrack(["gone"])
    assert ing.tracked == {"c0"}


async def test_tracked_clusters_missing_from_a_partial_listing_are_fetched(start: Run) -> None:
    provider = Provider(5)
    ing = await start(provider)  # a listing shows every cluster
    ing.track(["c2"])
    provider.hidden = {"c2", "c3"}  # the next listing leaves some out
    await ing.sync_once()
    assert "c2" in ing.snapshot().costs
    assert provider.asked == {"c2": 1}  # not c3: no claim names it
    assert ing.snapshot().health.left_out == 1  # a partial listing shows in the health


async def test_clusters_no_listing_showed_are_asked_for_a_few_at_a_time(
    start: Run, clock: FakeClock
) -> None:
    provider = Provider(5)
    ing = await start(provider)
    new = [f"new-{i}" for i in range(2 * fetching.NEW_PER_SYNC)]  # a burst of new claims
    ing.track(new)
    await ing.sync_once()  # new claims are left to the listing for a while
    assert sum(provider.asked.values()) == 0
    clock.advance(fetching.UNKNOWN_BACKOFF)
    await ing.sync_once()  # still not listed: asked, a few per sync
    assert sum(provider.asked.values()) == fetching.NEW_PER_SYNC
    await ing.sync_once()
    assert sum(provider.asked.values()) == 2 * fetching.NEW_PER_SYNC
    await ing.sync_once()  # each answered 404: none asked again before its backoff
    assert sum(provider.asked.values()) == 2 * fetching.NEW_PER_SYNC
    assert ing.unknown == set(new)
    assert ing.snapshot().health.left_out == 0


async def test_a_cluster_the_listing_shows_twice_counts_at_its_highest_cost(
    start: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A listing that shifts while it is paged shows some clusters twice. The last entry
    used to win: a cluster listed at 111, then at 0 on a later page, counted 0. The highest
    counts (over-counting for one sync is safe, under-counting is not)."""
    provider = Provider(5)  # c0..c4 at 100 + i compute and 10 storage
    ing = await start(provider)
    provider.relisted = {"c1": (0.0, 0.0), "c3": (500.0, 10.0), "c4": (104.0, 10.0)}
    before = sample("dbquota_billing_duplicate_entries_total")
    caplog.set_level(logging.WARNING, logger="dbquota.services.fetching")
    await ing.sync_once()
    assert provider.requests["bulk"] == 3  # the warm-up's page, then two pages
    costs = ing.snapshot().costs
    assert (costs["c1"].total, costs["c3"].total, costs["c4"].total) == (111.0, 510.0, 114.0)
    with sqlite3.connect(tmp_path / "cache.sqlite3") as raw:  # what a restart reads
        cached = dict(raw.execute("SELECT cluster_id, compute FROM latest").fetchall())
    assert (cached["c1"], cached["c3"]) == (101.0, 500.0)
    assert sample("dbquota_billing_duplicate_entries_total") - before == 3
    said = [r for r in caplog.records if "more than once" in r.getMessage()]
    assert len(said) == 1  # one line per sync, not one per duplicate


async def test_a_concurrency_below_one_is_refused(start: Run) -> None:
    # --max-concurrency is at least 1 (dbquota.settings); Settings built in code are checked too
    with pytest.raises(ValueError, match="max_concurrency must be at least 1, got 0"):
        await start(Provider(1), max_concurrency=0)


class InOrder:
    """A provider with no bulk listing that notes the order clusters are asked for in."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def refresh_credentials(self) -> None:
        pass

    async def fetch_cost(self, cluster_id: str) -> billing.ClusterCost:
        self.asked.append(cluster_id)
        return billing.ClusterCost(cluster_id=cluster_id, compute=1.0, storage=0.0, observed_at=0)

    async def list_costs(self, page_token: str | None) -> billing.CostPage:
        raise errors.NoBulkListing("none")

    async def fetch_prices(self) -> billing.PriceBook:
        raise AssertionError("not asked for")

    async def aclose(self) -> None:
        pass


async def test_clusters_are_fetched_the_oldest_cost_first_and_the_round_fills_into() -> None:
    """A sync cut off at its deadline keeps what it fetched (ingesting.py): the next one
    starts with the clusters it did not reach, not from the same first ids again."""
    provider = InOrder()
    fetcher = fetching.Fetcher(provider, max_concurrency=1, clock=FakeClock())
    fetcher.track(["a", "b", "c", "d"])
    known = {
        cid: billing.ClusterCost(cluster_id=cid, compute=1.0, storage=0.0, observed_at=at)
        for cid, at in (("a", 300.0), ("b", 100.0), ("c", 200.0))
    }
    into = fetching.Fetched()
    fetched = await fetcher.fetch_costs(known=known, into=into)
    assert provider.asked == ["d", "b", "c", "a"]  # no cost yet first, then by age
    assert fetched is into
    assert sorted(into.costs) == ["a", "b", "c", "d"]
