"""The billing cache: one SQLite file (aiosqlite, WAL) that outlives restarts and outages.

Tables (schema version in ``PRAGMA user_version``, upgraded by :data:`MIGRATIONS`)::

    latest   one row per cluster: its newest cost and when it was observed
    samples  history of costs, one row per cluster per hour (HISTORY_BUCKET), newest wins
    prices   the price catalog with history: (kind, name, observed_at) -> unit price,
             kind 'instance' (hourly, name = class) or 'storage' (per GiB-month, name ''),
             and for pricing requests (schema v3): 'vcpu' and 'memory' (hourly, per vCPU
             and per GiB, name '') and 'storage_class' (per GiB-month, name = class, ''
             for the default class)
    syncs    one row per sync: when, whether it succeeded, how many rows, the error
    catalogs one row per price catalog stored (schema v4): when it was observed and the
             currency it named (NULL when it named none), so that prices read back after a
             restart still say what currency they are in, and the highest prices of the
             window compare prices of one currency only

Each sync is written by :meth:`Cache.write_sync` in ONE transaction (``BEGIN IMMEDIATE``
… ``COMMIT``, ``executemany``), so a crash (even ``kill -9``) loses at most the sync in
progress and never leaves a half-written one; WAL with ``synchronous=NORMAL`` keeps every
committed transaction across a process crash.

On open, a file that is not a database, fails ``PRAGMA quick_check`` or has a schema newer
than this code is *quarantined*: renamed to ``<name>.corrupt-<epoch>`` (with its ``-wal``
and ``-shm``), kept for post-mortems, and replaced by a new empty cache;
:attr:`Cache.quarantined` tells the caller, who logs loudly and posts an Event. sqlite3
errors leave as :class:`dbquota.errors.CacheError` / :class:`~dbquota.errors.CacheCorrupt`
(:class:`CacheRowsRefused` when SQLite refused the rows themselves).
Used by the ingestion worker only (:mod:`dbquota.services.persisting` keeps it).

While running, the file can fail under the connection without being corrupt. A lock held
elsewhere past the busy timeout (5 s) or a full disk (``SQLITE_FULL``; the Unix VFS maps
``ENOSPC`` to it) leave the connection as it is: it works again once the world changes.
Any other failure (a connection opened read-only because the file was, an I/O error such
as ``EROFS`` after a read-only remount) sets :attr:`Cache.needs_reopen`: a new connection
may succeed where this one cannot. On Linux a connection keeps writing to a file deleted
under it, and the rows go with the last descriptor: :meth:`Cache.replaced` says when the
path no longer names the open file (or its ``-wal``), and :meth:`Cache.reopen` opens
what the path names now (a new cache if nothing). A reopen that fails leaves the cache
closed: every call raises :class:`~dbquota.errors.CacheError` until one succeeds.

Size: over 400 lines on purpose. The schema and its migrations (:data:`MIGRATIONS`,
about 90 lines of SQL) stay beside the one class whose queries depend on them, so a
schema change and the queries it affects are read and reviewed together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from dbquota import errors
from dbquota.domain import billing

logger = logging.getLogger(__name__)

_Row = tuple[Any, ...]  # one row as sqlite3 returns it; typed where it becomes a domain value

HISTORY_BUCKET = 3600.0
"""Seconds per history sample of one cluster (the newest sample of a bucket wins)."""

MIGRATIONS: tuple[str, ...] = (
    # v1: latest costs, cost history, price history.
    """
    CREATE TABLE latest (
        cluster_id TEXT PRIMARY KEY,
        compute REAL NOT NULL,
        storage REAL NOT NULL,
        observed_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE samples (
        cluster_id TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        compute REAL NOT NULL,
        storage REAL NOT NULL,
        observed_at REAL NOT NULL,
        PRIMARY KEY (cluster_id, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE prices (
        kind TEXT NOT NULL CHECK (kind IN ('instance', 'storage')),
        name TEXT NOT NULL,
        observed_at REAL NOT NULL,
        unit_price REAL NOT NULL CHECK (unit_price >= 0),
        PRIMARY KEY (kind, name, observed_at)
    ) WITHOUT ROWID;
    """,
    # v2: a journal of syncs (last success survives restarts) and time indexes for
    # retention and the price window.
    """
    CREATE TABLE syncs (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        ok INTEGER NOT NULL,
        clusters INTEGER NOT NULL,
        rejected INTEGER NOT NULL,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX samples_by_time ON samples (observed_at);
    CREATE INDEX prices_by_time ON prices (observed_at);
    """,
    # v3: requests prices (vCPU, memory, per storage class) in the price history. SQLite
    # cannot widen a CHECK in place: copy into a new table, drop the old, rename.
    """
    CREATE TABLE prices_v3 (
        kind TEXT NOT NULL
            CHECK (kind IN ('instance', 'storage', 'vcpu', 'memory', 'storage_class')),
        name TEXT NOT NULL,
        observed_at REAL NOT NULL,
        unit_price REAL NOT NULL CHECK (unit_price >= 0),
        PRIMARY KEY (kind, name, observed_at)
    ) WITHOUT ROWID;
    INSERT INTO prices_v3 (kind, name, observed_at, unit_price)
        SELECT kind, name, observed_at, unit_price FROM prices;
    DROP TABLE prices;
    ALTER TABLE prices_v3 RENAME TO prices;
    CREATE INDEX prices_by_time ON prices (observed_at);
    """,
    # v4: the currency of each catalog stored (prices are kept by item; the currency is the
    # catalog's, one per observation). Catalogs stored before v4 have no row: unknown.
    """
    CREATE TABLE catalogs (
        observed_at REAL PRIMARY KEY,
        currency TEXT
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_CORRUPT_MARKERS = ("malformed", "not a database", "corrupt", "disk image")

_CONNECTION_FINE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL})
"""Primary result codes after which the connection is kept: a lock held elsewhere or a full
disk is not cured by a new connection, and reopening would only add work to each retry."""

_FileId = tuple[int, int]
"""(device, inode) of a file: what tells a file deleted or replaced under a path."""


class CacheRowsRefused(errors.CacheError):
    """SQLite refused the rows themselves (a constraint failed): the same rows would be
    refused again, so there is no point keeping them for a retry."""


@dataclass(frozen=True)
class Quarantine:
    """A cache file that was moved aside: where to, and why."""

    moved_to: Path
    reason: str


@dataclass(frozen=True, kw_only=True)
class SyncRecord:
    """What one sync brought, as :meth:`Cache.write_sync` stores it."""

    started_at: float
    finished_at: float
    ok: bool
    costs: Sequence[billing.ClusterCost]
    prices: billing.PriceBook | None
    rejected: int = 0
    error: str = ""
    clusters: int | None = None
    """What the journal row counts (default ``len(costs)``): a sync written later, its costs
    merged into another record, still says how many clusters it brought."""


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    return any(marker in str(exc).lower() for marker in _CORRUPT_MARKERS)


class Cache:
    """An open billing cache; make one with :meth:`open`, end with :meth:`close`."""

    def __init__(self, path: Path, conn: aiosqlite.Connection | None) -> None:
        self.path = path
        self._conn = conn
        self._closed_because = "" if conn is not None else "not opened"
        self._ids = _file_ids(path) if conn is not None else None
        self._suspect = False
        self.quarantined: Quarantine | None = None

    # -- opening, quarantine, reopening ---------------------------------------------------

    @classmethod
    async def open(cls, path: Path) -> Cache:
        """Open (or create) the cache at ``path``, quarantining a corrupt file first."""
        cache = cls(path, None)
        cache.quarantined = await cache._open()
        return cache

    async def _open(self) -> Quarantine | None:
        """Connect to what :attr:`path` names, quarantining a bad file first; the
        quarantine, if there was one. CacheError if no cache can be opened there."""
        quarantine = None
        try:
            conn = await self._connect(self.path)
        except _Unusable as exc:
            quarantine = _quarantine(self.path, reason=str(exc))
            try:
                conn = await self._connect(self.path)
            except _Unusable as again:
                raise errors.CacheError(
                    f"cannot create a new cache at {self.path}: {again}"
                ) from again
        await self._attach(conn)
        return quarantine

    async def _attach(self, conn: aiosqlite.Connection) -> None:
        self._conn, self._suspect, self._closed_because = conn, False, ""
        self._ids = await asyncio.to_thread(_file_ids, self.path)

    async def _detach(self, why: str) -> None:
        """Close the connection without a checkpoint (it may be the one failing: a
        checkpoint would wait for the lock, or fail again); the cache stays closed."""
        conn, self._conn, self._ids, self._closed_because = self._conn, None, None, why
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                await conn.close()

    @staticmethod
    async def _connect(path: Path) -> aiosqlite.Connection:
        """A prepared connection; _Unusable for a bad file (quarantine it), CacheError for
        anything else (a folder we cannot write, a lock held elsewhere): that is not the
        file's fault, so it is left where it is."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.CacheError(f"cannot open the cache at {path}: {exc}") from exc
        connecting = aiosqlite.connect(path, isolation_level=None)
        try:
            conn = await connecting
        except sqlite3.Error as exc:
            # aiosqlite stops its worker thread without waiting for it; wait here, or the
            # thread may call back into an event loop that is gone by then.
            await asyncio.to_thread(connecting._thread.join, 10.0)
            raise errors.CacheError(f"cannot open the cache at {path}: {exc}") from exc
        try:
            await _prepare(conn)
        except sqlite3.DatabaseError as exc:
            await conn.close()
            if _is_corruption(exc):
                raise _Unusable(str(exc)) from exc
            raise errors.CacheError(f"cannot open the cache at {path}: {exc}") from exc
        except _Unusable:
            await conn.close()
            raise
        return conn

    async def rebuild(self, reason: str) -> Quarantine:
        """Quarantine this (now corrupt) file and continue on a new one."""
        await self._detach(f"a rebuild failed ({reason})")
        quarantine = _quarantine(self.path, reason=reason)
        try:
            conn = await self._connect(self.path)
        except _Unusable as exc:
            raise errors.CacheError(f"cannot create a new cache at {self.path}: {exc}") from exc
        await self._attach(conn)
        self.quarantined = quarantine
        return quarantine

    @property
    def needs_reopen(self) -> bool:
        """True when the cache is closed (a reopen failed) or its connection failed in a way
        a new connection may not (module docstring)."""
        return self._conn is None or self._suspect

    async def replaced(self) -> bool:
        """True when :attr:`path` (or its ``-wal``) no longer names the file this cache has
        open: deleted, or another put in its place. Two stats (in a thread: the event loop
        also answers admission reviews), cheap enough for every sync; the connection would
        otherwise go on writing rows no restart will find."""
        if self._conn is None or self._ids is None:
            return False  # closed, or nothing on disk to compare (":memory:")
        try:
            now = await asyncio.to_thread(_file_ids, self.path)
        except OSError:  # a folder we may not search: no news is no news
            return False
        return any(
            then is not None and seen != then for seen, then in zip(now, self._ids, strict=True)
        )

    async def reopen(self) -> Quarantine | None:
        """Close the connection and open what :attr:`path` names now (module docstring);
        the quarantine of a bad file found there, if any. Closing first matters: a
        connection to a deleted file deletes the ``-wal`` by name when it closes, and
        would take the new file's with it."""
        await self._detach("being reopened")
        try:
            quarantine = await self._open()
        except errors.CacheError as exc:
            self._closed_because = str(exc)
            raise
        if quarantine is not None:
            self.quarantined = quarantine
        return quarantine

    async def close(self) -> None:
        """Checkpoint the WAL and close."""
        if self._conn is None:
            return
        try:
            await self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            logger.warning("cache checkpoint on close failed: %s", exc)
        await self._conn.close()
        self._conn = None
        self._closed_because = "closed"

    def _live(self) -> aiosqlite.Connection:
        """The connection; CacheError while the cache is closed."""
        if self._conn is None:
            raise errors.CacheError(f"the cache at {self.path} is not open: {self._closed_because}")
        return self._conn

    # -- writing ------------------------------------------------------------------------

    async def write_sync(self, record: SyncRecord) -> int:
        """Store one sync's costs, prices and journal row in one transaction; rows written."""
        statements = _sync_statements(record)
        conn = self._live()
        try:
            if conn.in_transaction:  # a ROLLBACK that failed earlier left one open
                await conn.execute("ROLLBACK")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    await conn.executemany(sql, rows)
                await conn.execute("COMMIT")
            except BaseException:
                await self._rollback(conn)
                raise
        except sqlite3.IntegrityError as exc:
            raise CacheRowsRefused(f"cache refused a sync's rows: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise self._failure("write a sync", exc) from exc
        return sum(len(rows) for _, rows in statements)

    async def compact(self, *, before: float) -> int:
        """Delete history (samples, prices, syncs, catalogs) older than ``before``; rows
        deleted.

        The latest price of every item, the latest catalog's currency and the latest cost of
        every cluster are kept whatever their age: they are what a long outage falls back on.
        So is the currency of every price kept (:meth:`highest_prices` leaves out the
        prices of another currency; read as unknown, an old one would count again).
        """
        conn = self._live()
        try:
            await conn.execute("BEGIN IMMEDIATE")
            deleted = 0
            for sql in (
                "DELETE FROM samples WHERE observed_at < ?",
                "DELETE FROM prices WHERE observed_at < ? AND observed_at < "
                "(SELECT MAX(p.observed_at) FROM prices AS p "
                "WHERE p.kind = prices.kind AND p.name = prices.name)",
                "DELETE FROM syncs WHERE finished_at < ? AND id < (SELECT MAX(id) FROM syncs)",
                "DELETE FROM catalogs WHERE observed_at < ? AND observed_at < "
                "(SELECT MAX(observed_at) FROM catalogs) "
                "AND observed_at NOT IN (SELECT observed_at FROM prices)",
            ):
                cursor = await conn.execute(sql, (before,))
                deleted += max(0, cursor.rowcount)
            await conn.execute("COMMIT")
            await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.DatabaseError as exc:
            await self._rollback(conn)
            raise self._failure("compact", exc) from exc
        return deleted

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        """End a failed transaction; one that cannot be ended asks for a new connection
        (the next write would otherwise meet "a transaction within a transaction")."""
        if not conn.in_transaction:  # SQLite may have rolled it back itself (a full disk)
            return
        try:
            await conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            logger.debug("cache rollback failed: %s", exc)
            self._suspect = True

    def _failure(self, doing: str, exc: sqlite3.DatabaseError) -> errors.CacheError:
        """The error to raise for ``exc``; notes whether a new connection may cure it."""
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in _CONNECTION_FINE:
            self._suspect = True
        error = _cache_error(doing, exc)
        if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
            files = [f"{self.path}{s}" for s in ("", "-wal", "-shm")]
            refused = [f for f in files if os.path.exists(f) and not os.access(f, os.W_OK)]
            if refused:  # SQLite makes the -wal and -shm with the file's mode: say which
                error = errors.CacheError(f"{error} (not writable here: {', '.join(refused)})")
        return error

    # -- reading ------------------------------------------------------------------------

    async def latest(self) -> dict[str, billing.ClusterCost]:
        """The newest cost of every cluster."""
        rows = await self._fetchall("SELECT cluster_id, compute, storage, observed_at FROM latest")
        return {
            r[0]: billing.ClusterCost(cluster_id=r[0], compute=r[1], storage=r[2], observed_at=r[3])
            for r in rows
        }

    async def latest_prices(self) -> billing.PriceBook | None:
        """The most recently stored price catalog (None before the first), in the currency
        it named."""
        rows = await self._fetchall(
            "SELECT kind, name, unit_price, observed_at FROM prices "
            "WHERE observed_at = (SELECT MAX(observed_at) FROM prices)"
        )
        return _book(rows, currency=await self._currency())

    async def highest_prices(self, *, since: float) -> billing.PriceBook | None:
        """Per instance class, for storage, per vCPU and GiB of memory and per storage
        class, the highest unit price observed since ``since``, in one currency.

        The price in force at ``since`` counts too (the last one stored before it), so a
        window that starts between two price changes still sees the price then in effect.
        Prices of different currencies do not compare (0.5 EUR is not above 0.3 USD): only
        catalogs in the currency of the newest one that names a currency count, with
        those naming none (unknown, as every catalog stored before schema v4: not known to
        be in another), and the book says that currency. It is the unit of the latest
        catalog, which every live price is in; a quota in another one is told
        (``CurrencyMismatch``), as dbquota converts nothing
        (:func:`dbquota.domain.pricing.highest_known` merges books by the same rule).
        """
        unit = await self._unit()
        rows = await self._fetchall(
            "SELECT kind, name, MAX(unit_price), MAX(observed_at) FROM prices AS p "
            "WHERE observed_at >= COALESCE((SELECT MAX(q.observed_at) FROM prices AS q "
            "WHERE q.kind = p.kind AND q.name = p.name AND q.observed_at <= ?), ?) "
            "AND NOT EXISTS (SELECT 1 FROM catalogs AS k WHERE k.observed_at = p.observed_at "
            "AND k.currency IS NOT NULL AND k.currency != ?) "
            "GROUP BY kind, name",
            (since, since, unit),
        )
        return _book(rows, currency=unit)

    async def _unit(self) -> str | None:
        """The currency of the newest stored catalog that named one (None: none did)."""
        rows = await self._fetchall(
            "SELECT currency FROM catalogs WHERE currency IS NOT NULL "
            "ORDER BY observed_at DESC LIMIT 1"
        )
        return str(rows[0][0]) if rows else None

    async def _currency(self) -> str | None:
        """The currency the newest stored catalog named (None: it named none, or it was
        stored before schema v4)."""
        rows = await self._fetchall(
            "SELECT currency FROM catalogs WHERE observed_at = (SELECT MAX(observed_at) FROM "
            "prices)"
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    async def last_success(self) -> float | None:
        """When the last successful sync finished (None if none is recorded)."""
        value = await self._scalar("SELECT MAX(finished_at) FROM syncs WHERE ok = 1")
        return None if value is None else float(value)

    async def row_counts(self) -> dict[str, int]:
        """Rows per table (for the cache-rows gauge)."""
        counts: dict[str, int] = {}
        for table in ("latest", "samples", "prices", "syncs", "catalogs"):
            counts[table] = int(await self._scalar(f"SELECT COUNT(*) FROM {table}") or 0)  # noqa: S608 - fixed names
        return counts

    async def _fetchall(self, sql: str, params: Sequence[object] = ()) -> list[_Row]:
        conn = self._live()
        try:
            async with conn.execute(sql, params) as cursor:
                return [tuple(r) for r in await cursor.fetchall()]
        except sqlite3.DatabaseError as exc:
            raise self._failure("read", exc) from exc

    async def _scalar(self, sql: str) -> Any:
        conn = self._live()
        try:
            return await _scalar(conn, sql)
        except sqlite3.DatabaseError as exc:
            raise self._failure("read", exc) from exc


class _Unusable(Exception):
    """The file cannot serve as our cache (internal: leads to quarantine)."""


async def _prepare(conn: aiosqlite.Connection) -> None:
    """Set the pragmas, check the file and migrate its schema; _Unusable if we cannot."""
    await conn.execute("PRAGMA busy_timeout = 5000")
    mode = await _scalar(conn, "PRAGMA journal_mode = WAL")
    # "memory": the in-memory database of the last fallback, which has no WAL (a file's
    # journal mode can stay "memory" only within one connection, never on disk).
    if str(mode).lower() not in ("wal", "memory"):
        raise _Unusable(f"cannot switch to WAL (journal mode {mode})")
    await conn.execute("PRAGMA synchronous = NORMAL")
    check = await _scalar(conn, "PRAGMA quick_check")
    if check != "ok":
        raise _Unusable(f"quick_check: {check}")
    version = int(str(await _scalar(conn, "PRAGMA user_version") or 0))
    if version > SCHEMA_VERSION:
        raise _Unusable(f"schema version {version} is newer than {SCHEMA_VERSION}")
    await _migrate(conn, version)


async def _scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    async with conn.execute(sql) as cursor:
        row = await cursor.fetchone()
    return None if row is None else row[0]


async def _migrate(conn: aiosqlite.Connection, version: int) -> None:
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        statements = [s.strip() for s in script.split(";") if s.strip()]
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        logger.info("billing cache schema migrated to version %d", number)


def _sync_statements(record: SyncRecord) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The statements that store ``record`` (:meth:`Cache.write_sync`), each with its rows:
    latest costs, cost history, prices, the catalog's currency, the journal row."""
    costs = record.costs
    prices = record.prices
    return [
        (
            "INSERT INTO latest (cluster_id, compute, storage, observed_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (cluster_id) DO UPDATE SET "
            "compute = excluded.compute, storage = excluded.storage, "
            "observed_at = excluded.observed_at "
            "WHERE excluded.observed_at >= latest.observed_at",
            [(c.cluster_id, c.compute, c.storage, c.observed_at) for c in costs],
        ),
        (
            "INSERT INTO samples (cluster_id, bucket, compute, storage, observed_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (cluster_id, bucket) DO UPDATE SET "
            "compute = excluded.compute, storage = excluded.storage, "
            "observed_at = excluded.observed_at",
            [
                (
                    c.cluster_id,
                    int(c.observed_at // HISTORY_BUCKET),
                    c.compute,
                    c.storage,
                    c.observed_at,
                )
                for c in costs
            ],
        ),
        (
            "INSERT OR REPLACE INTO prices (kind, name, observed_at, unit_price) "
            "VALUES (?, ?, ?, ?)",
            list(_price_rows(prices)),
        ),
        (
            "INSERT OR REPLACE INTO catalogs (observed_at, currency) VALUES (?, ?)",
            [] if prices is None else [(prices.observed_at, prices.currency)],
        ),
        (
            "INSERT INTO syncs (started_at, finished_at, ok, clusters, rejected, error) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    record.started_at,
                    record.finished_at,
                    int(record.ok),
                    len(costs) if record.clusters is None else record.clusters,
                    record.rejected,
                    record.error[:1000],
                )
            ],
        ),
    ]


def _quarantine(path: Path, *, reason: str) -> Quarantine:
    target = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{int(time.time())}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        try:
            if source.exists():
                source.rename(Path(f"{target}{suffix}"))
        except OSError as exc:  # a folder we cannot write: the file stays where it is
            raise errors.CacheError(
                f"{path} is unusable ({reason}) and cannot be moved aside: {exc}"
            ) from exc
    logger.error(
        "BILLING CACHE QUARANTINED: %s is unusable (%s); moved it to %s and started a new, "
        "empty cache",
        path,
        reason,
        target,
    )
    return Quarantine(moved_to=target, reason=reason)


def _file_ids(path: Path) -> tuple[_FileId | None, _FileId | None]:
    """The ids of the database file at ``path`` and of its ``-wal`` (None: not there)."""
    ids: list[_FileId | None] = []
    for name in (str(path), f"{path}-wal"):
        try:
            st = os.stat(name)
        except (FileNotFoundError, NotADirectoryError):
            ids.append(None)
        else:
            ids.append((st.st_dev, st.st_ino))
    return ids[0], ids[1]


def _cache_error(doing: str, exc: sqlite3.DatabaseError) -> errors.CacheError:
    if _is_corruption(exc):
        return errors.CacheCorrupt(f"cache file is corrupt ({doing}): {exc}")
    return errors.CacheError(f"cache failed to {doing}: {exc}")


_DEFAULT_CLASS_NAME = ""
"""How the default storage class (None in a PriceBook) is named in the prices table."""


def _price_rows(prices: billing.PriceBook | None) -> Iterable[tuple[str, str, float, float]]:
    if prices is None:
        return
    at = prices.observed_at
    for name, price in prices.instance_hourly.items():
        yield ("instance", name, at, price)
    yield ("storage", "", at, prices.storage_gib_month)
    if prices.vcpu_hourly is not None:
        yield ("vcpu", "", at, prices.vcpu_hourly)
    if prices.memory_gib_hourly is not None:
        yield ("memory", "", at, prices.memory_gib_hourly)
    for storage_class, price in prices.storage_class_gib_month.items():
        yield ("storage_class", storage_class or _DEFAULT_CLASS_NAME, at, price)


def _book(rows: Iterable[_Row], *, currency: str | None) -> billing.PriceBook | None:
    hourly: dict[str, float] = {}
    classes: dict[str | None, float] = {}
    single: dict[str, float] = {}  # storage, vcpu, memory
    observed: float | None = None
    for kind, name, price, at in rows:
        observed = max(float(at), observed or 0.0)
        if kind == "instance":
            hourly[str(name)] = float(price)
        elif kind == "storage_class":
            classes[str(name) or billing.DEFAULT_STORAGE_CLASS] = float(price)
        else:
            single[str(kind)] = float(price)
    if observed is None:
        return None
    return billing.PriceBook(
        instance_hourly=hourly,
        storage_gib_month=single.get("storage", 0.0),
        observed_at=observed,
        vcpu_hourly=single.get("vcpu"),
        memory_gib_hourly=single.get("memory"),
        storage_class_gib_month=classes,
        currency=currency,
    )
