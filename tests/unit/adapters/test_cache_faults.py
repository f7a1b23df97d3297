"""The SQLite billing cache when its file fails under a running process, on real files.

Checks: a full disk (``SQLITE_FULL``, what the Unix VFS makes of ``ENOSPC``) and a write
lock another process holds past the busy timeout fail a write whole, keep the connection,
and the next write after the fault works; a file made read-only (or a directory) while it
is open is still written through the open connection; a connection that cannot write (the
file was read-only when opened) asks for a reopen, and a reopen once the file is
writable writes again; a file deleted (with its ``-wal``, or only one of them) or replaced
under the open connection is noticed, and a reopen writes where a restart will look; a
reopen that fails leaves the cache closed, answering CacheError (not a crash) until a
reopen works. The faults themselves: :mod:`tests.unit.adapters.sqlite_faults`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dbquota import errors
from dbquota.adapters import cache as cache_
from dbquota.domain.billing import ClusterCost
from tests.unit.adapters.sqlite_faults import (
    MODES_BIND,
    ReadOnly,
    fill_disk,
    free_disk,
    hold_write_lock,
    pragma,
)


def record(n: int, at: float, *, prefix: str = "c") -> cache_.SyncRecord:
    costs = [
        ClusterCost(cluster_id=f"{prefix}{i}", compute=1.0, storage=1.0, observed_at=at)
        for i in range(n)
    ]
    return cache_.SyncRecord(started_at=at, finished_at=at, ok=True, costs=costs, prices=None)


Opener = Callable[[Path], Awaitable[cache_.Cache]]


@pytest.fixture
async def opened() -> AsyncIterator[Opener]:
    """``await opened(path)``: Cache.open, closed after the test even if it failed (an
    open connection's thread would keep the test process from exiting)."""
    caches: list[cache_.Cache] = []

    async def open_(path: Path) -> cache_.Cache:
        caches.append(await cache_.Cache.open(path))
        return caches[-1]

    yield open_
    for cache in caches:
        with contextlib.suppress(Exception):
            await cache.close()


def asks_reopen(cache: cache_.Cache) -> bool:
    """``cache.needs_reopen``, read anew (mypy would keep an earlier assert's narrowing)."""
    return cache.needs_reopen


def rows_on_disk(path: Path) -> int:
    """Clusters in the file, as a restart (a new connection) finds them."""
    with sqlite3.connect(path) as raw:
        return int(raw.execute("SELECT COUNT(*) FROM latest").fetchone()[0])


async def test_a_full_disk_fails_the_write_whole_and_it_works_once_there_is_room(
    opened: Opener,
    tmp_path: Path,
) -> None:
    """Already held before the runtime-fault work: recorded here as the adapter's part."""
    cache = await opened(tmp_path / "c.sqlite3")
    await cache.write_sync(record(10, 1))
    await fill_disk(cache)
    with pytest.raises(errors.CacheError, match="database or disk is full") as failed:
        await cache.write_sync(record(500, 2, prefix="new"))
    cause = failed.value.__cause__
    assert isinstance(cause, sqlite3.OperationalError)
    assert cause.sqlite_errorcode == sqlite3.SQLITE_FULL  # as ENOSPC in the Unix VFS
    assert not isinstance(failed.value, errors.CacheCorrupt)
    assert len(await cache.latest()) == 10  # nothing of the failed sync
    await free_disk(cache)
    await cache.write_sync(record(500, 2, prefix="new"))
    assert len(await cache.latest()) == 510
    await cache.close()
    assert rows_on_disk(tmp_path / "c.sqlite3") == 510


async def test_a_full_disk_or_a_held_lock_keeps_the_connection(
    opened: Opener, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite3"
    cache = await opened(path)
    await cache.write_sync(record(1, 1))
    await fill_disk(cache)
    with pytest.raises(errors.CacheError):
        await cache.write_sync(record(500, 2))
    assert not asks_reopen(cache)  # a new connection would meet the same full disk
    await free_disk(cache)
    await pragma(cache, "PRAGMA busy_timeout = 100")
    async with hold_write_lock(path):
        with pytest.raises(errors.CacheError, match="locked"):
            await cache.write_sync(record(2, 3))
        assert not asks_reopen(cache)
    await cache.close()


async def test_a_lock_held_past_the_busy_timeout_fails_the_write_until_released(
    opened: Opener,
    tmp_path: Path,
) -> None:
    """Already held before the runtime-fault work: recorded here as the adapter's part."""
    path = tmp_path / "c.sqlite3"
    cache = await opened(path)
    await pragma(cache, "PRAGMA busy_timeout = 100")
    async with hold_write_lock(path):
        with pytest.raises(errors.CacheError, match="database is locked"):
            await cache.write_sync(record(3, 1))
        assert await cache.latest() == {}  # readers are not blocked in WAL mode
    await cache.write_sync(record(3, 1))
    await cache.close()
    assert rows_on_disk(path) == 3


async def test_a_file_made_read_only_while_open_is_still_written(
    opened: Opener, tmp_path: Path
) -> None:
    """Already held: permissions are checked when a file is opened, so the open
    connection (and its -wal) go on working; a restart is what meets them."""
    folder = tmp_path / "data"
    path = folder / "c.sqlite3"
    cache = await opened(path)
    await cache.write_sync(record(1, 1))
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        await cache.write_sync(record(5, 2))
        await cache.close()
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)
    assert rows_on_disk(path) == 5


async def test_a_connection_that_cannot_write_is_reopened_once_the_file_can_be_written(
    opened: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.sqlite3"
    cache = await opened(path)
    await cache.write_sync(record(2, 1))
    await cache.close()
    read_only = ReadOnly(path, monkeypatch)
    read_only.on()
    cache = await opened(path)
    assert len(await cache.latest()) == 2  # it can be read
    with pytest.raises(errors.CacheError, match="readonly") as failed:
        await cache.write_sync(record(4, 2))
    assert ("not writable here" in str(failed.value)) is MODES_BIND  # which files, if modes
    assert asks_reopen(cache)
    await cache.reopen()
    with pytest.raises(errors.CacheError, match="readonly"):  # still read-only
        await cache.write_sync(record(4, 2))
    read_only.off()
    await cache.reopen()
    assert not asks_reopen(cache)
    await cache.write_sync(record(4, 2))
    await cache.close()
    assert rows_on_disk(path) == 4


@pytest.mark.parametrize("deleted", ["database and -wal", "database", "-wal", "replaced"])
async def test_a_file_deleted_or_replaced_under_the_connection_is_noticed_and_reopened(
    opened: Opener, tmp_path: Path, deleted: str
) -> None:
    path = tmp_path / "c.sqlite3"
    cache = await opened(path)
    await cache.write_sync(record(2, 1))
    assert not await cache.replaced()
    if deleted == "replaced":  # an older copy put in its place
        shutil.copy(path, tmp_path / "copy")
        os.replace(tmp_path / "copy", path)
    else:
        for suffix in {"database and -wal": ("", "-wal", "-shm"), "database": ("",)}.get(
            deleted, ("-wal",)
        ):
            os.unlink(f"{path}{suffix}")
    assert await cache.replaced()
    await cache.write_sync(record(3, 2))  # SQLite itself notices nothing
    assert await cache.reopen() is None
    assert not await cache.replaced()
    await cache.write_sync(record(4, 3))
    await cache.close()
    assert rows_on_disk(path) == 4  # what a restart finds


async def test_a_reopen_that_fails_leaves_the_cache_closed_and_answering_errors(
    opened: Opener,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    path = folder / "c.sqlite3"
    cache = await opened(path)
    shutil.rmtree(folder)
    folder.write_text("a file where the cache's folder was")
    assert await cache.replaced()
    with pytest.raises(errors.CacheError, match="cannot open"):
        await cache.reopen()
    assert asks_reopen(cache)
    with pytest.raises(errors.CacheError, match="not open"):
        await cache.write_sync(record(1, 1))
    with pytest.raises(errors.CacheError, match="not open"):
        await cache.latest()
    folder.unlink()
    await cache.reopen()
    await cache.write_sync(record(1, 1))
    await cache.close()
    await cache.close()  # twice is harmless
    assert rows_on_disk(path) == 1
