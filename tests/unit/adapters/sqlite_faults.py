"""Ways to make a real SQLite cache file fail under a running process (not a test module):
what the tests of the cache adapter and of the ingestion worker's cache keeper share.

Each fault is one SQLite really raises, on a real file; nothing of sqlite3 is replaced:

- :class:`ReadOnly`: the file is one this process may only read. Where file modes stop
  this process, ``chmod 0444`` (SQLite then opens it read-only). Root (with
  ``CAP_DAC_OVERRIDE``) is not stopped by them, so there every connection opened meanwhile
  gets ``PRAGMA query_only``, under which SQLite refuses writes with the same
  ``SQLITE_READONLY``. Which one applies is probed (:data:`MODES_BIND`), not guessed from
  the user id: root without that capability is bound by modes too;
- :func:`fill_disk`: ``PRAGMA max_page_count`` at the file's size, so that a write which
  needs a new page fails with ``SQLITE_FULL``, "database or disk is full": the result code
  SQLite's Unix VFS gives a write that met ``ENOSPC``;
- :func:`hold_write_lock`: another process holding ``BEGIN IMMEDIATE`` on the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from dbquota.adapters import cache as cache_


def _modes_bind() -> bool:
    """Whether a file's mode stops this process writing it (not so for root, as a rule)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("")
        probe.chmod(0o444)
        try:
            with probe.open("a"):
                return False
        except PermissionError:
            return True


MODES_BIND = _modes_bind()


def connection(cache: cache_.Cache) -> aiosqlite.Connection:
    """The cache's open connection (the tests set per-connection pragmas on it)."""
    conn = cache._conn
    assert conn is not None, "the cache is not open"
    return conn


async def pragma(cache: cache_.Cache, sql: str) -> object:
    """Run a ``PRAGMA`` on the cache's connection; its first value."""
    async with connection(cache).execute(sql) as cursor:
        row = await cursor.fetchone()
    return None if row is None else row[0]


async def fill_disk(cache: cache_.Cache) -> None:
    """From now on a write that needs one more page fails with SQLITE_FULL."""
    await pragma(cache, "PRAGMA max_page_count = 1")  # SQLite keeps the current size


async def free_disk(cache: cache_.Cache) -> None:
    """Room again."""
    await pragma(cache, "PRAGMA max_page_count = 1073741823")


class ReadOnly:
    """The cache file made read-only for connections opened from now on (module
    docstring), and writable again."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.active = False
        if not MODES_BIND:
            original = cache_._prepare

            async def prepare(conn: aiosqlite.Connection) -> None:
                await original(conn)
                if self.active:
                    await conn.execute("PRAGMA query_only = ON")

            monkeypatch.setattr(cache_, "_prepare", prepare)

    def on(self) -> None:
        self.active = True
        if MODES_BIND:
            self.path.chmod(0o444)

    def off(self) -> None:
        """Writable again, as ``chmod u+w cache.sqlite3*`` makes it: a read-only
        connection creates the -wal and -shm with the database file's mode, and SQLite
        refuses writes while they are read-only too."""
        self.active = False
        if MODES_BIND:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").chmod(0o644)


_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextlib.asynccontextmanager
async def hold_write_lock(path: Path) -> AsyncIterator[None]:
    """Another process holds the file's write lock until the block ends."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"locked\n"
        yield
    finally:
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        assert await asyncio.wait_for(holder.wait(), 30) == 0
