"""The sync's deadline and readiness, against providers slow enough never to finish.

Checks: a provider whose answers each come in time but whose listing never ends cuts the
warm-up sync off at its deadline (twice the longer of the interval and one call with its
retries), and the worker is then ready, the breaker Closed, the error naming the deadline
and the pages it fetched kept; a sync cut off keeps what it fetched and the next one
starts with the clusters it did not reach; a warm-up sync that fails with an unexpected
error makes the worker ready too.

The ``asyncio.wait_for`` bounds only keep a regression from hanging the suite: each is
many times the deadline it waits past.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from dbquota import settings
from dbquota.adapters import cache as cache_
from dbquota.domain import billing
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting
from tests.unit.services.billing_api import make_cfg

SLOW = {"sync_interval": 0.05, "retry_timeout": 0.0, "connect_timeout": 0.05}
"""Settings whose sync deadline is 0.2 s: twice one attempt of 0.05 + 0.05 s."""


def slow_cfg(tmp_path: Path, **billing: object) -> settings.Settings:
    return make_cfg(tmp_path, request_timeout=0.05, **{**SLOW, **billing})


def test_the_deadline_is_twice_the_longer_of_the_interval_and_one_call(tmp_path: Path) -> None:
    assert ingesting.sync_deadline(slow_cfg(tmp_path)) == pytest.approx(0.2)
    defaults = make_cfg(tmp_path)  # 60 s interval; 20 s of retries, 2 + 5 s per attempt
    assert ingesting.sync_deadline(defaults) == 120.0


class Endless:
    """A provider that answers every request promptly enough, but whose bulk listing never
    ends (one new cluster and a next page each time); no listing: one cluster at a time."""

    def __init__(self, *, bulk: bool = True) -> None:
        self.bulk = bulk
        self.asked: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.005)  # well within the attempt's 0.1 s
        path = request.url.path
        if path == "/pricing":
            return httpx.Response(
                200, json={"instance_hourly": {"db.r6g.large": 0.2}, "storage_gib_month": 0.1}
            )
        if path == "/metrics":
            if not self.bulk:
                return httpx.Response(404, json={})
            page = int(request.url.params.get("page_token") or 0)
            entry = {"cluster_id": f"p{page}", "compute_cost": 1.0, "storage_cost": 1.0}
            return httpx.Response(200, json={"clusters": [entry], "next_page_token": f"{page + 1}"})
        cid = path.removeprefix("/metrics/")
        self.asked.append(cid)
        return httpx.Response(200, json={"compute_cost": 1.0, "storage_cost": 1.0})


async def test_a_warm_up_that_never_ends_is_cut_off_at_its_deadline_and_then_ready(
    tmp_path: Path, clock: FakeClock
) -> None:
    provider = Endless()
    async with ingesting.running(
        slow_cfg(tmp_path), clock=clock, transport=httpx.MockTransport(provider)
    ) as ing:
        await asyncio.wait_for(ing.wait_ready(), timeout=20)
        assert ing.ready  # the degradation policies decide meanwhile
        health = ing.snapshot().health
        assert "deadline of 0.2s" in health.last_error
        assert health.circuit_state == "Closed"  # slow is not down
        assert health.last_success is None
        assert ing.snapshot().prices is not None
        pages = set(ing.snapshot().costs)
        assert pages  # what the listing brought until the deadline is kept
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    assert set(await cache.latest()) == pages  # and written
    await cache.close()


async def test_a_sync_cut_off_leaves_the_next_one_the_clusters_it_did_not_reach(
    tmp_path: Path, clock: FakeClock
) -> None:
    provider = Endless(bulk=False)
    tracked = [f"c{i:04d}" for i in range(2000)]  # 10 s at one 5 ms fetch at a time
    # A deadline of 2 s (an interval of 1 s): some fetches end in it even on a loaded
    # machine (in 0.2 s a clean-clone run's sync got none), yet not 2,000.
    cfg = slow_cfg(tmp_path, max_concurrency=1, sync_interval=1.0)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        await asyncio.wait_for(ing.wait_ready(), timeout=20)  # nothing tracked yet
        ing.track(tracked)
        await asyncio.wait_for(ing.sync_once(), timeout=20)
        first = set(ing.snapshot().costs)
        assert first
        assert len(first) < len(tracked)
        assert "deadline" in ing.snapshot().health.last_error
        provider.asked.clear()
        await asyncio.wait_for(ing.sync_once(), timeout=20)
        assert provider.asked
        assert not set(provider.asked) & first  # not the same first ids again


class Broken:
    """A provider whose credentials fail with an error no sync expects (a bug)."""

    def refresh_credentials(self) -> None:
        raise RuntimeError("a bug")

    async def fetch_cost(self, cluster_id: str) -> billing.ClusterCost:
        raise AssertionError("not asked for")

    async def list_costs(self, page_token: str | None) -> billing.CostPage:
        raise AssertionError("not asked for")

    async def fetch_prices(self) -> billing.PriceBook:
        raise AssertionError("not asked for")

    async def aclose(self) -> None:
        pass


async def test_a_warm_up_that_fails_unexpectedly_makes_the_worker_ready_too(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    ing = await ingesting.load(make_cfg(tmp_path), provider=Broken(), cache=cache, clock=clock)
    ing.start()
    try:
        await asyncio.wait_for(ing.wait_ready(), timeout=20)
        assert "billing sync failed unexpectedly" in caplog.text
    finally:
        await ing.stop()
        await cache.close()
