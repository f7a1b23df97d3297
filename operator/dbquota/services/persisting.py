"""The billing cache as the ingestion worker keeps it: loaded at start, written every sync,
rebuilt from memory when it turns out corrupt, compacted hourly.

:class:`CacheKeeper` owns the :class:`~dbquota.adapters.cache.Cache` for the ingestion
worker (:mod:`dbquota.services.ingesting`):

- :meth:`~CacheKeeper.load`: the snapshot the cache holds (costs, latest and highest
  prices of the window, the last success), so a restarted replica serves at once;
- :meth:`~CacheKeeper.persist`: one sync in one transaction, then the highest prices of
  the window (what Conservative pricing reads). A write is finished even if the worker
  stops meanwhile (:meth:`~CacheKeeper.drain` waits for it). A cache error never stops
  ingestion: it is logged and the snapshot is updated from memory anyway;
- recovery: a file that is corrupt when opened (the adapter quarantines it) or when
  written is moved aside as ``<name>.corrupt-<epoch>`` and a new cache is started; a write that
  hit the corruption is rebuilt from what the worker holds in memory (every cost, and the
  latest and highest price books, so Conservative pricing loses nothing) and written
  again. Each quarantine is a ``CacheQuarantined`` event for the listeners, replayed to a
  listener added later (the operator posts it as a Warning Event on every quota);
- compaction of history older than ``--cache-retention``, at most every
  :data:`COMPACT_EVERY` seconds. Like a write, it is finished even if the worker stops
  meanwhile: a transaction cut short would hold the file's write lock until the
  connection closed, and the checkpoint on closing would fail.

**A cache that fails while running** (a lock held elsewhere past the busy timeout, a full
disk, a file the process may only read, an I/O error) is an *outage*: one ERROR line when
it starts, one line an hour (:data:`REMIND_EVERY`) while it lasts, an INFO line when it
ends. Each sync retries (after a new connection when the adapter asks for one); the syncs
not written are kept (their journal rows and price catalogs, at most
:data:`MAX_UNWRITTEN`; costs come from memory, newest per cluster) and written first when a
write works again, so a restart after the outage finds what a restart without it would:
the costs, the latest and the highest prices of the window, the last success. Only the
hourly history samples the outage skipped are not made up. A cache file **deleted or
replaced** under the running process (on Linux the connection would go on writing to the
deleted file, and a restart would find nothing) is noticed by a stat before each sync: a
WARNING, the path opened again (a new file if nothing is there), and what memory holds
written into it, as after a quarantine. What was not written when the process stops is
lost with it: it was never committed.

**A cache that cannot be used at all** (its folder unwritable, the disk full, a corrupt
file that cannot be moved aside) does not stop the operator: :func:`open_cache` falls
back to a fresh cache in the temporary folder, else to one in memory, and says so loudly
(``CacheFallback``, a Warning Event on every quota, an ERROR line and the
``dbquota_cache_fallback`` gauge). The billing data is then kept only until the process
ends; the admission path never needed the file, only the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dbquota import errors
from dbquota.adapters import cache as cache_
from dbquota.adapters import metrics
from dbquota.domain import billing, pricing
from dbquota.kits import clock as clock_
from dbquota.settings import CacheSettings

logger = logging.getLogger(__name__)

COMPACT_EVERY = 3600.0
"""Seconds between two compactions of the cache's history."""

REMIND_EVERY = 3600.0
"""Seconds between two log lines about one outage of the cache (the first says it began)."""

MAX_UNWRITTEN = 1440
"""Syncs kept for writing after an outage (a day at the default interval). Beyond it the
oldest are dropped, and the highest prices known are written in their place."""

RESTORED_BEFORE = 0.001
"""Seconds before the latest price catalog at which a restore stores the highest prices of
the window: at the same time, one would replace the other (one row per item and time).
The window then counts them from there: a restore may keep a high price up to one window
longer than its history would have, never shorter."""

EventListener = Callable[[str, str], None]

T = TypeVar("T")


async def open_cache(path: Path) -> tuple[cache_.Cache, str | None]:
    """The cache at ``path``, or a fallback one (module docstring) and why it is used."""
    try:
        return await cache_.Cache.open(path), None
    except errors.CacheError as exc:
        problem = str(exc)
    fallback = Path(tempfile.gettempdir()) / f"dbquota-fallback-{os.getpid()}-{path.name}"
    for where in (fallback, Path(":memory:")):
        try:
            cache = await cache_.Cache.open(where)
        except errors.CacheError as exc:
            problem = f"{problem}; the fallback at {where} failed too: {exc}"
            continue
        shown = "memory" if str(where) == ":memory:" else str(where)
        message = (
            f"the billing cache at {path} cannot be used ({problem}); using a fresh cache "
            f"in {shown} instead, so billing data is not kept across restarts until that "
            "is fixed"
        )
        logger.error("BILLING CACHE FALLBACK: %s", message)
        metrics.cache_fallback.set(1)
        return cache, message
    raise errors.CacheError(problem)


class CacheKeeper:
    """The ingestion worker's cache (module docstring)."""

    def __init__(
        self,
        cache: cache_.Cache,
        *,
        cfg: CacheSettings,
        clock: clock_.Clock,
        fallback: str | None = None,
    ) -> None:
        self._cache = cache
        self._cfg = cfg
        self._clock = clock
        self._events: deque[tuple[str, str]] = deque(maxlen=50)
        self._listeners: list[EventListener] = []
        self._in_progress: asyncio.Future[Any] | None = None
        self._last_compaction = -COMPACT_EVERY
        self._outage: _Outage | None = None
        self._unwritten: deque[cache_.SyncRecord] = deque()
        self._dropped = 0  # syncs dropped from _unwritten during this outage
        self._restore_due = False  # a new file: write everything memory holds into it
        if fallback is not None:
            self._tell("CacheFallback", fallback)

    def add_event_listener(self, cb: EventListener) -> None:
        """Call ``cb(reason, message)`` for Event-worthy happenings (a quarantined cache);
        those that happened before the listener was added are replayed to it at once."""
        self._listeners.append(cb)
        for reason, message in list(self._events):
            cb(reason, message)

    async def load(self) -> billing.BillingSnapshot:
        """What the cache holds, as a snapshot; announces a cache quarantined on opening."""
        if self._cache.quarantined is not None:
            self._announce(self._cache.quarantined)
        window_start = self._clock.time() - self._cfg.price_window
        snapshot = billing.BillingSnapshot(
            health=billing.BillingHealth(last_success=await self._cache.last_success()),
            prices=await self._cache.latest_prices(),
            highest=await self._cache.highest_prices(since=window_start),
            costs=await self._cache.latest(),
        )
        logger.info("billing cache %s loaded: %d clusters", self._cache.path, len(snapshot.costs))
        return snapshot

    async def persist(
        self, record: cache_.SyncRecord, *, memory: billing.BillingSnapshot
    ) -> billing.PriceBook | None:
        """Write ``record``; the highest prices of the window after it (``memory.highest``
        when the cache cannot say). ``memory`` is what the worker holds, for a rebuild."""
        written = asyncio.ensure_future(self._persist(record, memory=memory))
        return await self._finished(written)

    async def drain(self) -> None:
        """Wait for a write or a compaction in progress, if any."""
        if self._in_progress is not None and not self._in_progress.done():
            with contextlib.suppress(errors.DbquotaError):  # it was logged where it failed
                await self._in_progress

    async def maybe_compact(self, *, now: float) -> None:
        """Drop history older than the retention, at most every :data:`COMPACT_EVERY` s;
        not during an outage (it would fail the same way, and say so again): the first
        sync written after it compacts."""
        if self._outage is not None:
            return
        if self._clock.monotonic() - self._last_compaction < COMPACT_EVERY:
            return
        self._last_compaction = self._clock.monotonic()
        await self._finished(asyncio.ensure_future(self._compact(before=now - self._cfg.retention)))

    async def _finished(self, work: asyncio.Future[T]) -> T:
        """Await ``work``, shielded: a stop() meanwhile lets its transaction finish, and
        :meth:`drain` waits for it."""
        self._in_progress = work
        return await asyncio.shield(work)

    async def _compact(self, *, before: float) -> None:
        try:
            deleted = await self._cache.compact(before=before)
        except errors.CacheError as exc:
            logger.error("billing cache compaction failed: %s", exc)  # noqa: TRY400
            return
        if deleted:
            logger.info("billing cache compaction removed %d old rows", deleted)

    async def _persist(
        self, record: cache_.SyncRecord, *, memory: billing.BillingSnapshot
    ) -> billing.PriceBook | None:
        try:
            await self._check_file()
            rows = await self._write(record, memory=memory)
        except errors.CacheCorrupt as exc:
            try:
                self._announce(await self._cache.rebuild(str(exc)))
                self._restore_due = True
                rows = await self._write(record, memory=memory)
            except errors.CacheError as again:
                return self._failed(record, again, memory=memory)
        except errors.CacheError as exc:
            return self._failed(record, exc, memory=memory)
        self._recovered()
        metrics.cache_rows_written.inc(rows)
        try:
            window_start = record.finished_at - self._cfg.price_window
            highest = await self._cache.highest_prices(since=window_start)
            for table, count in (await self._cache.row_counts()).items():
                metrics.cache_rows.labels(table=table).set(count)
        except errors.CacheError as exc:
            logger.error("billing cache read failed: %s", exc)  # noqa: TRY400
            return memory.highest
        return highest

    async def _check_file(self) -> None:
        """Before a write: open the file again if the path no longer names it (WARNING,
        and memory is written into the new one) or if the adapter asks for it."""
        if await self._cache.replaced():
            logger.warning(
                "the billing cache file %s was deleted or replaced while the operator ran; "
                "opening what the path names now and writing the billing data held in "
                "memory into it",
                self._cache.path,
            )
            metrics.cache_errors.labels(kind="replaced").inc()
            self._restore_due = True
        elif not self._cache.needs_reopen:
            return
        quarantine = await self._cache.reopen()
        if quarantine is not None:
            self._announce(quarantine)
            self._restore_due = True

    async def _write(self, record: cache_.SyncRecord, *, memory: billing.BillingSnapshot) -> int:
        """Write ``record``; after an outage or onto a new file, first what is missing."""
        if self._outage is None and not self._restore_due:
            return await self._cache.write_sync(record)
        rows = 0
        if self._restore_due or self._dropped:
            rows += await self._restore(record, memory=memory)
            self._restore_due, self._dropped = False, 0
        while self._unwritten:
            try:
                rows += await self._cache.write_sync(self._unwritten[0])
            except cache_.CacheRowsRefused as exc:
                logger.error("billing cache refused a sync kept for it: %s", exc)  # noqa: TRY400
            self._unwritten.popleft()
        # The costs of the syncs not written are in memory, newest per cluster.
        costs = {**memory.costs, **{c.cluster_id: c for c in record.costs}}
        counted = len(record.costs) if record.clusters is None else record.clusters
        merged = dataclasses.replace(record, costs=list(costs.values()), clusters=counted)
        return rows + await self._cache.write_sync(merged)

    async def _restore(self, record: cache_.SyncRecord, *, memory: billing.BillingSnapshot) -> int:
        """Into a new (or outdated) file: the highest prices of the window, the latest
        prices and the last success that memory holds; the costs follow with the sync."""
        latest, highest = memory.prices, memory.highest
        books: list[billing.PriceBook] = []
        if highest is not None:
            if latest is not None and highest.observed_at >= latest.observed_at:
                highest = dataclasses.replace(
                    highest, observed_at=latest.observed_at - RESTORED_BEFORE
                )
            books.append(highest)
        books += [latest] if latest is not None else []
        restored = dataclasses.replace(
            record, ok=False, costs=[], clusters=0, rejected=0, error="restored"
        )
        rows = 0
        for book in books:
            rows += await self._cache.write_sync(dataclasses.replace(restored, prices=book))
        success = memory.health.last_success
        if success is not None:
            last = dataclasses.replace(
                restored, ok=True, prices=None, started_at=success, finished_at=success
            )
            rows += await self._cache.write_sync(last)
        return rows

    def _failed(
        self, record: cache_.SyncRecord, exc: errors.CacheError, *, memory: billing.BillingSnapshot
    ) -> billing.PriceBook | None:
        """A write failed: keep the sync for later and say so once per outage (module
        docstring); the highest prices for the snapshot, as if the write had worked (else a
        price spike met only during the outage would be forgotten by its next sync)."""
        # What a written sync would have made of the highest prices: memory's and its own.
        highest = memory.highest
        if record.prices is not None:
            books = (memory.highest, record.prices)
            merged = pricing.highest_known(*books) or pricing.highest_known_requests(*books)
            highest = merged or highest
        refused = isinstance(exc, cache_.CacheRowsRefused)
        metrics.cache_errors.labels(kind="refused" if refused else "write").inc()
        if refused:  # it would be refused again
            logger.error("billing cache refused a sync; the snapshot is updated anyway: %s", exc)
            return highest
        if len(self._unwritten) >= MAX_UNWRITTEN:
            self._unwritten.popleft()
            self._dropped += 1
        counted = len(record.costs) if record.clusters is None else record.clusters
        self._unwritten.append(dataclasses.replace(record, costs=[], clusters=counted))
        now = self._clock.monotonic()
        outage = self._outage
        if outage is None:
            self._outage = _Outage(since=now, told=now)
            logger.error(
                "billing cache write failed; enforcement goes on from memory, and each sync "
                "retries and keeps what it could not write until the cache works again "
                "(said again hourly while this lasts): %s",
                exc,
            )
        else:
            outage.failed += 1
            if now - outage.told >= REMIND_EVERY:
                outage.told = now
                logger.error(
                    "billing cache writes still failing after %.0f s (%d syncs not written): %s",
                    now - outage.since,
                    outage.failed,
                    exc,
                )
        return highest

    def _recovered(self) -> None:
        if self._outage is not None:
            logger.info(
                "billing cache writes work again after %.0f s; the %d syncs not written "
                "meanwhile have been written",
                self._clock.monotonic() - self._outage.since,
                self._outage.failed,
            )
            self._outage = None

    def _announce(self, quarantine: cache_.Quarantine) -> None:
        metrics.cache_quarantines.inc()
        message = (
            f"the billing cache was unusable ({quarantine.reason}); it was moved to "
            f"{quarantine.moved_to} and a new cache was started"
        )
        self._tell("CacheQuarantined", message)

    def _tell(self, reason: str, message: str) -> None:
        self._events.append((reason, message))
        for cb in list(self._listeners):
            try:
                cb(reason, message)
            except Exception:
                logger.exception("an event listener failed")


@dataclasses.dataclass
class _Outage:
    """Writes to the cache failing: since when (monotonic), when it was last said, how many
    syncs failed."""

    since: float
    told: float
    failed: int = 1
