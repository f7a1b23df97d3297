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
from dbquota.domain import billing
from dbquota.kits import clock as clock_
from dbquota.settings import CacheSettings

logger = logging.getLogger(__name__)

COMPACT_EVERY = 3600.0
"""Seconds between two compactions of the cache's history."""

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
        """Drop history older than the retention, at most every :data:`COMPACT_EVERY` s."""
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
            rows = await self._cache.write_sync(record)
        except errors.CacheCorrupt as exc:
            self._announce(await self._cache.rebuild(str(exc)))
            rows = await self._restore(record, memory=memory)
        except errors.CacheError as exc:
            logger.error("billing cache write failed; the snapshot is updated anyway: %s", exc)  # noqa: TRY400 - the message says it all
            return memory.highest
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

    async def _restore(self, record: cache_.SyncRecord, *, memory: billing.BillingSnapshot) -> int:
        """Into the new cache: the highest and latest prices known, then every cost."""
        merged = {**memory.costs, **{c.cluster_id: c for c in record.costs}}
        books = [p for p in (memory.highest, memory.prices) if p is not None]
        rows = 0
        try:
            for book in books:  # keep the highest known prices across the rebuild
                rows += await self._cache.write_sync(
                    dataclasses.replace(record, ok=False, costs=[], prices=book, error="restored")
                )
            rows += await self._cache.write_sync(
                dataclasses.replace(record, costs=list(merged.values()))
            )
        except errors.CacheError as exc:
            logger.error("the rebuilt billing cache failed too: %s", exc)  # noqa: TRY400
        return rows

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
