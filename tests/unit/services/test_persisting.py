"""The ingestion worker's cache: kept across restarts, quarantined and rebuilt when corrupt.

Against a provider behind httpx's MockTransport on a fake clock: a restart keeps the data
and the last success, and is ready from the cache while the provider is down; a cache
quarantined on opening is announced to event listeners (and counted); a cache that turns
corrupt mid-run is rebuilt from memory, highest prices included; the snapshot keeps the
highest price of the window; a cache that cannot be used at all (its folder cannot be made,
a corrupt file cannot be moved aside) falls back to a fresh cache elsewhere, announced as
``CacheFallback``, and ingestion goes on; a stop during a compaction lets it finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

import httpx
import pytest

from dbquota import errors
from dbquota.adapters import cache as cache_
from dbquota.adapters.billing import HttpBillingProvider
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting, persisting
from tests.unit.services.billing_api import Provider, Run, make_cfg, sample


async def test_restart_keeps_data_and_is_ready_from_the_cache_while_down(
    tmp_path: Path, clock: FakeClock
) -> None:
    provider = Provider(4)
    cfg = make_cfg(tmp_path)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        await ing.wait_ready()
        first_success = ing.snapshot().health.last_success
    provider.mode = "down"
    clock.advance(100)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        assert len(ing.snapshot().costs) == 4  # loaded before any sync
        await ing.wait_ready()  # warm-up failed, but cached data makes it ready
        assert ing.snapshot().health.last_success == first_success
        assert ing.snapshot().health.staleness(now=clock.time()) == pytest.approx(100)
        assert ing.snapshot().prices is not None


async def test_a_quarantined_cache_is_announced_to_event_listeners(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "cache.sqlite3").write_bytes(b"garbage" * 1000)
    before = sample("dbquota_cache_quarantines_total")
    cfg = make_cfg(tmp_path)
    provider = Provider(1)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        events: list[tuple[str, str]] = []
        ing.add_event_listener(lambda reason, message: events.append((reason, message)))
        await ing.wait_ready()
    assert [reason for reason, _ in events] == ["CacheQuarantined"]
    assert "corrupt-" in events[0][1]
    assert sample("dbquota_cache_quarantines_total") - before == 1


async def run_with(cfg_path: Path, clock: FakeClock) -> list[tuple[str, str]]:
    """Run ingestion with its cache at ``cfg_path``; the events it announced."""
    cfg = make_cfg(cfg_path.parent)
    cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, path=cfg_path))
    events: list[tuple[str, str]] = []
    provider = Provider(2)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        ing.add_event_listener(lambda reason, message: events.append((reason, message)))
        await ing.wait_ready()
        assert len(ing.snapshot().costs) == 2  # ingestion goes on
    return events


async def test_a_folder_that_cannot_be_made_falls_back_to_a_fresh_cache(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the cache's folder should be")
    events = await run_with(tmp_path / "not-a-folder" / "cache.sqlite3", clock)
    assert [reason for reason, _ in events] == ["CacheFallback"]
    assert "cannot be used" in events[0][1]
    assert sample("dbquota_cache_fallback") == 1


async def test_a_corrupt_file_that_cannot_be_moved_aside_falls_back(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache.sqlite3"
    cache.write_bytes(b"garbage" * 1000)

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(f"read-only folder: {self}")

    monkeypatch.setattr(Path, "rename", refuse)
    events = await run_with(cache, clock)
    assert [reason for reason, _ in events] == ["CacheFallback"]
    assert "cannot be moved aside" in events[0][1]
    assert cache.read_bytes() == b"garbage" * 1000  # the evidence stays where it was


class CorruptOnce(cache_.Cache):
    fail = True

    async def write_sync(self, record: cache_.SyncRecord) -> int:
        if CorruptOnce.fail:
            CorruptOnce.fail = False
            raise errors.CacheCorrupt("database disk image is malformed")
        return await super().write_sync(record)


async def test_a_cache_corrupt_mid_run_is_rebuilt_from_memory(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = make_cfg(tmp_path)
    provider = Provider(3)
    cache = await cache_.Cache.open(cfg.cache.path)
    prov = HttpBillingProvider(cfg.billing, clock=clock, transport=httpx.MockTransport(provider))
    ing = await ingesting.load(cfg, provider=prov, cache=cache, clock=clock)
    await ing.sync_once()
    cache.__class__ = CorruptOnce
    provider.costs["c9"] = (9.0, 1.0)
    await ing.sync_once()
    assert cache.quarantined is not None
    assert set(await cache.latest()) == {"c0", "c1", "c2", "c9"}
    assert await cache.highest_prices(since=0) is not None
    await prov.aclose()
    await cache.close()


async def test_snapshot_keeps_the_highest_price_of_the_window(start: Run, clock: FakeClock) -> None:
    provider = Provider(1)
    ing = await start(provider)
    provider.large = 0.9
    clock.advance(60)
    await ing.sync_once()
    provider.large = 0.3
    clock.advance(60)
    await ing.sync_once()
    snap = ing.snapshot()
    assert snap.prices is not None
    assert snap.highest is not None
    assert snap.prices.instance_hourly["db.r6g.large"] == 0.3
    assert snap.highest.instance_hourly["db.r6g.large"] == 0.9


async def test_a_stop_during_a_compaction_lets_it_finish(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg(tmp_path)
    cache = await cache_.Cache.open(cfg.cache.path)
    keeper = persisting.CacheKeeper(cache, cfg=cfg.cache, clock=clock)
    compaction = asyncio.create_task(keeper.maybe_compact(now=clock.time()))
    await asyncio.sleep(0)  # it has begun its transaction
    compaction.cancel()  # as the worker's stop() does
    with contextlib.suppress(asyncio.CancelledError):
        await compaction
    await keeper.drain()
    with caplog.at_level(logging.WARNING):
        await cache.close()  # it checkpoints: it would fail inside an open transaction
    assert caplog.messages == []
