"""The ingestion worker as the operator runs it, against a provider behind httpx's
MockTransport on a fake clock.

Checks: the warm-up sync fills the cache and swaps in a snapshot; a non-JSON 200 never
escapes a sync and is reported in the health; data older than maxStaleness is degraded
(as :func:`dbquota.domain.degradation.assess` decides) and the exported last-success
timestamp says how old; the worker is ready after a failed warm-up even with an empty
cache, and a later success clears the error; snapshot() needs no I/O; the loop syncs
again after the interval.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from dbquota.adapters import cache as cache_
from dbquota.domain import degradation
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting
from tests.unit.services.billing_api import Provider, Run, make_cfg, sample, until


def assess(ing: ingesting.Ingestor, clock: FakeClock) -> degradation.Degradation:
    """The billing state as a quota with maxStaleness 15m sees it now."""
    return degradation.assess(snapshot=ing.snapshot(), max_staleness=900, now=clock.time())


async def test_warm_up_sync_fills_cache_and_snapshot(start: Run, tmp_path: Path) -> None:
    provider = Provider(5)
    ing = await start(provider)
    assert ing.ready
    snap = ing.snapshot()
    assert sorted(snap.costs) == [f"c{i}" for i in range(5)]
    assert snap.costs["c3"].compute == 103.0
    assert snap.prices is not None
    assert snap.prices.instance_hourly == {"db.r6g.large": 0.2}
    assert snap.health.circuit_state == "Closed"
    assert snap.health.last_success is not None
    assert provider.requests == {"pricing": 1, "bulk": 1}
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    assert len(await cache.latest()) == 5
    await cache.close()


async def test_a_non_json_200_does_not_escape_and_is_reported(start: Run) -> None:
    provider = Provider(3)
    ing = await start(provider)
    provider.mode = "non_json"
    await ing.sync_once()  # does not raise
    health = ing.snapshot().health
    assert "MalformedPayload" in health.last_error or "pricing" in health.last_error
    assert health.consecutive_failures >= 1
    assert len(ing.snapshot().costs) == 3  # last good data kept


async def test_data_older_than_max_staleness_is_degraded(start: Run, clock: FakeClock) -> None:
    provider = Provider(2)
    ing = await start(provider)
    assert not assess(ing, clock).degraded
    provider.mode = "down"
    clock.advance(901)
    await ing.sync_once()
    assert assess(ing, clock).staleness == pytest.approx(901)
    last_success = sample("dbquota_billing_last_success_timestamp_seconds")
    assert clock.time() - last_success == pytest.approx(901)  # staleness, as PromQL reads it
    assert assess(ing, clock).degraded
    assert ing.snapshot().costs["c0"].compute == 100.0  # still there for Conservative pricing


async def test_ready_after_a_failed_warm_up_even_with_an_empty_cache(
    start: Run, clock: FakeClock
) -> None:
    provider = Provider(2)
    provider.mode = "down"
    ing = await start(provider)
    assert ing.ready  # degraded, per the quotas' policies, rather than refusing everything
    snapshot = ing.snapshot()
    assert snapshot.prices is None
    assert snapshot.health.last_success is None
    assert snapshot.health.last_error  # the failure is news while it lasts
    provider.mode = "ok"
    clock.advance(30)  # the failed warm-up opened the breaker
    await ing.sync_once()
    health = ing.snapshot().health
    assert health.last_success is not None
    assert health.circuit_state == "Closed"
    assert health.last_error == ""  # no stale error beside a healthy breaker


async def test_snapshot_needs_no_io(tmp_path: Path, clock: FakeClock) -> None:
    provider = Provider(2)
    async with ingesting.running(
        make_cfg(tmp_path), clock=clock, transport=httpx.MockTransport(provider)
    ) as ing:
        await ing.wait_ready()
    calls = sum(provider.requests.values())
    snap = ing.snapshot()  # provider and cache are closed now
    assert len(snap.costs) == 2
    assert snap.health.circuit_state == "Closed"
    assert sum(provider.requests.values()) == calls


async def test_the_loop_syncs_again_after_the_interval(start: Run, clock: FakeClock) -> None:
    provider = Provider(1)
    await start(provider)
    assert provider.requests["pricing"] == 1
    await until(lambda: clock.sleepers == 1)  # the loop sleeps after its warm-up turn
    clock.advance(59)
    await asyncio.sleep(0.05)
    assert provider.requests["pricing"] == 1
    clock.advance(1)
    for _ in range(500):  # bounded wait for the loop's turn, not a timing assertion
        await asyncio.sleep(0.01)
        if provider.requests["pricing"] == 2:
            break
    assert provider.requests["pricing"] == 2
