"""The ingestion worker's cache when its SQLite file fails while the operator runs.

Real files, real SQLite faults (:mod:`tests.unit.adapters.sqlite_faults`), a provider
behind httpx's MockTransport on a fake clock. For a file the operator may only read, a
full disk and a write lock another process holds: every sync still reaches the snapshot
(enforcement goes on from memory); the outage is logged once when it starts, once an hour
while it lasts and once when it ends, never once per sync; once the fault clears, the next
sync writes what the failed ones brought, even if that sync itself got nothing from the
provider, so a restart then finds what memory held (costs, latest and highest prices, last
success). A file deleted or replaced under the running operator is noticed at the next
sync (one WARNING), made anew at its path and filled from memory. Each failed write and
each replaced file is counted in ``dbquota_cache_errors_total{kind}``. A cache rebuilt after
corruption keeps the highest prices of the window and the last success, and a rebuild that
cannot move the file aside still lets the snapshot be updated and writes later. When
neither the file nor the temporary folder can be used, the in-memory fallback opens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dbquota import errors, settings
from dbquota.adapters import cache as cache_
from dbquota.adapters.billing import HttpBillingProvider
from dbquota.domain import billing
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting, persisting
from tests.unit.adapters.sqlite_faults import (
    ReadOnly,
    fill_disk,
    free_disk,
    hold_write_lock,
    pragma,
)
from tests.unit.services.billing_api import Provider, make_cfg, sample

LARGE = "db.r6g.large"


@dataclass
class Running:
    """One operator's ingestion side, synced by hand (no loop)."""

    ing: ingesting.Ingestor
    cache: cache_.Cache
    provider: Provider
    client: HttpBillingProvider

    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.ing.stop()
            await self.client.aclose()
            await self.cache.close()


Start = Callable[[settings.Settings, Provider], Awaitable[Running]]


@pytest.fixture
async def start(clock: FakeClock) -> AsyncIterator[Start]:
    """``await start(cfg, provider)``: the cache opened and loaded, as at start-up; all
    stopped after the test."""
    started: list[Running] = []

    async def run(cfg: settings.Settings, provider: Provider) -> Running:
        cache = await cache_.Cache.open(cfg.cache.path)
        client = HttpBillingProvider(
            cfg.billing, clock=clock, transport=httpx.MockTransport(provider)
        )
        ing = await ingesting.load(cfg, provider=client, cache=cache, clock=clock)
        started.append(Running(ing, cache, provider, client))
        return started[-1]

    yield run
    for running in started:  # each one, even after a failure: a connection left open
        with contextlib.suppress(Exception):  # would keep the test process from exiting
            await running.stop()


async def restarted(cfg: settings.Settings, clock: FakeClock) -> billing.BillingSnapshot:
    """What a restarted operator loads from the file."""
    cache = await cache_.Cache.open(cfg.cache.path)
    try:
        return await persisting.CacheKeeper(cache, cfg=cfg.cache, clock=clock).load()
    finally:
        await cache.close()


def assert_kept(loaded: billing.BillingSnapshot, memory: billing.BillingSnapshot) -> None:
    assert set(loaded.costs) == set(memory.costs)
    assert loaded.costs == memory.costs
    assert loaded.prices == memory.prices
    assert loaded.highest == memory.highest
    assert loaded.health.last_success == memory.health.last_success


def cache_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == persisting.__name__ and r.levelno >= level
    ]


def more_clusters(provider: Provider, prefix: str) -> None:
    """300 clusters more: a sync that needs new pages in the file."""
    provider.costs.update({f"{prefix}{i}": (10.0 + i, 1.0) for i in range(300)})


async def through_an_outage(
    run: Running,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    clear: Callable[[], Awaitable[None]],
) -> billing.BillingSnapshot:
    """With the fault on: syncs that bring clusters and a price spike reach the snapshot
    and are logged once (and once more an hour on); ``clear()``; then a sync that gets
    nothing from the provider writes what they brought. Memory at the end."""
    provider = run.provider
    caplog.set_level(logging.INFO, logger=persisting.__name__)
    caplog.clear()
    more_clusters(provider, "s")
    provider.large = 0.9
    clock.advance(60)
    await run.ing.sync_once()
    snap = run.ing.snapshot()
    assert snap.prices is not None
    assert snap.prices.instance_hourly[LARGE] == 0.9  # enforcement goes on from memory
    assert "s299" in snap.costs
    more_clusters(provider, "n")
    provider.large = 0.3
    clock.advance(60)
    await run.ing.sync_once()
    assert "n299" in run.ing.snapshot().costs
    highest = run.ing.snapshot().highest
    assert highest is not None
    assert highest.instance_hourly[LARGE] == 0.9  # the spike, though it was never written
    lines = cache_lines(caplog)
    assert len(lines) == 1, lines  # one line for the outage, not one per sync
    assert "write failed" in lines[0]
    clock.advance(persisting.REMIND_EVERY)
    await run.ing.sync_once()
    await run.ing.sync_once()
    assert len(cache_lines(caplog)) == 2  # an hour on, said once more
    assert "still failing" in cache_lines(caplog)[1]
    await clear()
    provider.mode = "down"  # the sync that writes them brings nothing itself
    clock.advance(60)
    await run.ing.sync_once()
    assert "work again" in cache_lines(caplog)[-1]
    assert len(cache_lines(caplog)) == 3
    memory = run.ing.snapshot()
    highest = memory.highest
    assert highest is not None
    assert highest.instance_hourly[LARGE] == 0.9
    return memory


async def test_a_file_the_operator_may_only_read_is_written_again_once_it_can_be(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    start: Start,
) -> None:
    cfg = make_cfg(tmp_path)
    run = await start(cfg, Provider(2))
    await run.ing.sync_once()
    await run.stop()
    read_only = ReadOnly(cfg.cache.path, monkeypatch)
    read_only.on()  # e.g. a restart onto a volume whose owner changed
    run = await start(cfg, run.provider)
    assert set(run.ing.snapshot().costs) == {"c0", "c1"}  # read from the file

    async def clear() -> None:
        read_only.off()

    memory = await through_an_outage(run, clock, caplog, clear)
    assert "readonly" in cache_lines(caplog)[0]
    await run.stop()
    assert_kept(await restarted(cfg, clock), memory)


async def test_a_full_disk_is_written_again_once_there_is_room(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, start: Start
) -> None:
    cfg = make_cfg(tmp_path)
    run = await start(cfg, Provider(2))
    await run.ing.sync_once()
    await fill_disk(run.cache)
    before = sample("dbquota_cache_errors_total", kind="write")

    async def clear() -> None:
        await free_disk(run.cache)

    memory = await through_an_outage(run, clock, caplog, clear)
    assert "database or disk is full" in cache_lines(caplog)[0]
    assert sample("dbquota_cache_errors_total", kind="write") > before  # one per failed sync
    await run.stop()
    assert_kept(await restarted(cfg, clock), memory)


async def test_a_lock_held_by_another_process_is_written_again_once_released(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, start: Start
) -> None:
    cfg = make_cfg(tmp_path)
    run = await start(cfg, Provider(2))
    await run.ing.sync_once()
    await pragma(run.cache, "PRAGMA busy_timeout = 100")  # not 5 s per failing sync
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(hold_write_lock(cfg.cache.path))
        memory = await through_an_outage(run, clock, caplog, held.aclose)
    assert "database is locked" in cache_lines(caplog)[0]
    await run.stop()
    assert_kept(await restarted(cfg, clock), memory)


@pytest.mark.parametrize("suffixes", [("", "-wal", "-shm"), ("",), ("-wal",)])
async def test_a_file_deleted_while_running_is_made_anew_from_memory(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    start: Start,
    suffixes: tuple[str, ...],
) -> None:
    cfg = make_cfg(tmp_path)
    provider = Provider(3)
    provider.large = 0.9
    run = await start(cfg, provider)
    await run.ing.sync_once()
    provider.large = 0.3
    clock.advance(60)
    await run.ing.sync_once()
    for suffix in suffixes:
        os.unlink(f"{cfg.cache.path}{suffix}")
    caplog.clear()
    provider.costs["c9"] = (9.0, 1.0)
    clock.advance(60)
    before = sample("dbquota_cache_errors_total", kind="replaced")
    await run.ing.sync_once()
    lines = cache_lines(caplog)
    assert len(lines) == 1, lines
    assert "deleted or replaced" in lines[0]
    assert sample("dbquota_cache_errors_total", kind="replaced") == before + 1
    assert cfg.cache.path.exists()
    await run.ing.sync_once()  # noticed once: the new file is the one open now
    assert len(cache_lines(caplog)) == 1
    memory = run.ing.snapshot()
    highest = memory.highest
    assert highest is not None
    assert highest.instance_hourly[LARGE] == 0.9
    await run.stop()
    assert_kept(await restarted(cfg, clock), memory)


class CorruptOnce(cache_.Cache):
    """Its next write finds the file corrupt (a real corruption is what the adapter's
    tests make; here the keeper's answer to it is what is tested)."""

    fail = True

    async def write_sync(self, record: cache_.SyncRecord) -> int:
        if self.fail:
            self.fail = False
            raise errors.CacheCorrupt("database disk image is malformed")
        return await super().write_sync(record)


async def test_a_rebuilt_cache_keeps_the_highest_prices_and_the_last_success(
    tmp_path: Path, clock: FakeClock, start: Start
) -> None:
    cfg = make_cfg(tmp_path)
    provider = Provider(3)
    provider.large = 0.9
    run = await start(cfg, provider)
    await run.ing.sync_once()
    provider.large = 0.3
    clock.advance(60)
    await run.ing.sync_once()
    run.cache.__class__ = CorruptOnce
    provider.mode = "down"
    clock.advance(60)
    await run.ing.sync_once()
    assert run.cache.quarantined is not None
    memory = run.ing.snapshot()
    highest = memory.highest
    assert highest is not None
    assert highest.instance_hourly[LARGE] == 0.9  # Conservative pricing loses nothing
    await run.stop()
    assert_kept(await restarted(cfg, clock), memory)


async def test_a_rebuild_that_cannot_move_the_file_aside_still_updates_the_snapshot(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    start: Start,
) -> None:
    cfg = make_cfg(tmp_path)
    provider = Provider(2)
    run = await start(cfg, provider)
    await run.ing.sync_once()
    run.cache.__class__ = CorruptOnce

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(f"read-only folder: {self}")

    monkeypatch.setattr(Path, "rename", refuse)
    caplog.set_level(logging.INFO, logger=persisting.__name__)
    caplog.clear()
    provider.costs["c9"] = (9.0, 1.0)
    clock.advance(60)
    await run.ing.sync_once()  # no CacheError out of the sync
    assert "c9" in run.ing.snapshot().costs
    assert len(cache_lines(caplog, logging.ERROR)) == 1
    monkeypatch.undo()
    clock.advance(60)
    await run.ing.sync_once()
    assert "work again" in cache_lines(caplog)[-1]
    memory = run.ing.snapshot()
    await run.stop()
    assert_kept(await restarted(cfg, clock), memory)


async def test_when_neither_the_file_nor_the_temporary_folder_can_be_used_memory_serves(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only root filesystem with the cache's volume missing: the last fallback, an
    in-memory cache, must open (it has no WAL to switch to)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where folders should be")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(blocker))
    cache, fallback = await persisting.open_cache(blocker / "cache.sqlite3")
    try:
        assert fallback is not None
        assert "in memory" in fallback
        assert "QUARANTINED" not in caplog.text
        keeper = persisting.CacheKeeper(cache, cfg=make_cfg(tmp_path).cache, clock=clock)
        memory = await keeper.load()
        cost = billing.ClusterCost(cluster_id="c0", compute=1.0, storage=1.0, observed_at=1.0)
        record = cache_.SyncRecord(started_at=1, finished_at=1, ok=True, costs=[cost], prices=None)
        await keeper.persist(record, memory=memory)
        assert set(await cache.latest()) == {"c0"}
    finally:
        await cache.close()


async def test_an_outage_longer_than_the_syncs_kept_still_keeps_the_highest_prices(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    start: Start,
) -> None:
    monkeypatch.setattr(persisting, "MAX_UNWRITTEN", 2)
    cfg = make_cfg(tmp_path)
    provider = Provider(2)
    run = await start(cfg, provider)
    await run.ing.sync_once()
    await fill_disk(run.cache)
    for n, price in enumerate((0.9, 0.3, 0.3, 0.3)):  # the spike's sync is dropped
        more_clusters(provider, f"x{n}-")
        provider.large = price
        clock.advance(60)
        await run.ing.sync_once()
    assert len(cache_lines(caplog, logging.ERROR)) == 1
    await free_disk(run.cache)
    provider.mode = "down"
    clock.advance(60)
    await run.ing.sync_once()
    memory = run.ing.snapshot()
    highest = memory.highest
    assert highest is not None
    assert highest.instance_hourly[LARGE] == 0.9
    await run.stop()
    assert_kept(await restarted(cfg, clock), memory)


async def test_rows_sqlite_refuses_are_not_kept_for_a_retry(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg(tmp_path)
    cache = await cache_.Cache.open(cfg.cache.path)
    try:
        keeper = persisting.CacheKeeper(cache, cfg=cfg.cache, clock=clock)
        memory = await keeper.load()
        bad = billing.PriceBook(instance_hourly={LARGE: -1.0}, storage_gib_month=0.1, observed_at=1)
        record = cache_.SyncRecord(started_at=1, finished_at=1, ok=True, costs=[], prices=bad)
        await keeper.persist(record, memory=memory)
        assert "refused" in cache_lines(caplog, logging.ERROR)[0]
        await keeper.persist(dataclasses.replace(record, prices=None), memory=memory)
        assert (await cache.row_counts())["syncs"] == 1  # not the refused one again
        assert len(cache_lines(caplog, logging.ERROR)) == 1
    finally:
        await cache.close()
