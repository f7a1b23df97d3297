"""The billing ingestion worker: keeps the cache and the in-memory snapshot fresh.

:func:`running` opens the cache (quarantining a corrupt file), loads what it holds into a
:class:`~dbquota.domain.billing.BillingSnapshot`, and runs a loop whose first turn is the
warm-up sync; :attr:`Ingestor.ready` turns true once that sync finished with success, or
with failure but with cached data to serve. Each sync::

    prices    GET /pricing (in HalfOpen this call is the breaker's single probe)
    costs     the bulk listing page by page, when the provider has one; then per-cluster
              fetches for tracked ids the listing missed, or for every tracked id when
              there is no listing (bounded concurrency, coalesced per id)
    cache     everything valid in ONE transaction, with a journal row
    snapshot  a new immutable snapshot swapped in (admission reads only this)

Every provider call goes through the circuit breaker (:mod:`dbquota.kits.breaker`) inside
retries (:mod:`dbquota.kits.retrying`: full jitter, Retry-After, attempt and time caps);
the provider adapter adds the client-side rate limit. Rejected payloads are counted and
logged with their cluster id, never cached. Breaker transitions reach listeners (for
Kubernetes Events), metrics and the snapshot at once. Called by the operator's start-up
code; the enforcement side reads :meth:`Ingestor.snapshot` and reports decisions with
:meth:`Ingestor.record_decision`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

import httpx

from dbquota import errors
from dbquota.adapters import billing as billing_adapter
from dbquota.adapters import cache as cache_
from dbquota.adapters import metrics
from dbquota.domain import billing
from dbquota.kits import breaker, coalescing, retrying
from dbquota.kits import clock as clock_
from dbquota.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

DECISION_WINDOW = 1000
"""Admission decisions that the fallback hit rate is computed over (the most recent)."""
COMPACT_EVERY = 3600.0
"""Seconds between two compactions of the cache's history."""
MAX_PAGES = 100_000
"""Most pages of one bulk listing (a provider that never ends its listing is broken)."""
UNKNOWN_BACKOFF = 60.0
"""Seconds before a cluster the provider answered 404 for is asked for again; doubled at
each further 404, up to :data:`UNKNOWN_BACKOFF_MAX`."""
NEW_PER_SYNC = 50
"""With a bulk listing, most tracked clusters no listing has shown yet asked for one by one
in one sync (the rest in later syncs)."""
UNKNOWN_BACKOFF_MAX = 3600.0
"""Longest wait before asking again for a cluster the provider keeps not knowing."""

TransitionListener = Callable[[str, str, str], None]
EventListener = Callable[[str, str], None]
SyncListener = Callable[[], None]


class BillingProvider(Protocol):
    """What the worker needs from a billing provider (HTTP today; OpenCost, files later)."""

    def refresh_credentials(self) -> None:
        """Re-read credentials before a sync; ConfigurationError if they are unusable."""
        ...

    async def fetch_cost(self, cluster_id: str) -> billing.ClusterCost:
        """One cluster's cost (UnknownCluster if the provider has none)."""
        ...

    async def list_costs(self, page_token: str | None) -> billing.CostPage:
        """One page of the bulk listing (NoBulkListing if there is none)."""
        ...

    async def fetch_prices(self) -> billing.PriceBook:
        """The current price catalog."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _trips(exc: BaseException) -> bool:
    return exc.trips_breaker if isinstance(exc, errors.BillingError) else True


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, errors.BillingUnavailable)


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, errors.RateLimited) else None


_OUTCOMES: tuple[tuple[type[errors.BillingError], str], ...] = (
    (errors.RateLimited, "rate_limited"),
    (errors.BillingUnavailable, "unavailable"),
    (errors.MalformedPayload, "malformed"),
    (errors.UnknownCluster, "unknown_cluster"),
    (errors.NoBulkListing, "no_bulk_listing"),
    (errors.BillingClientError, "client_error"),
)


def _outcome(exc: BaseException) -> str:
    for cls, name in _OUTCOMES:
        if isinstance(exc, cls):
            return name
    return "error"


def breaker_config(cfg: Settings) -> breaker.Config:
    """The breaker's thresholds from settings."""
    b = cfg.breaker
    return breaker.Config(
        failure_threshold=b.failure_threshold,
        recovery_timeout=b.recovery_timeout,
        window_size=b.window_size,
        minimum_calls=b.minimum_calls,
        failure_rate_threshold=b.failure_rate_threshold,
        slow_call_duration=b.slow_call_duration,
        slow_call_rate_threshold=b.slow_call_rate_threshold,
    )


@dataclasses.dataclass
class _SyncTally:
    costs: dict[str, billing.ClusterCost] = dataclasses.field(default_factory=dict)
    prices: billing.PriceBook | None = None
    rejected: int = 0
    unknown: int = 0
    left_out: int = 0  # tracked clusters a bulk listing showed before and left out now
    errors: list[str] = dataclasses.field(default_factory=list)


class Ingestor:
    """The billing worker's state and its public face to the enforcement side."""

    def __init__(
        self,
        cfg: Settings,
        *,
        provider: BillingProvider,
        cache: cache_.Cache,
        clock: clock_.Clock,
        initial: billing.BillingSnapshot | None = None,
    ) -> None:
        self._cfg = cfg
        self._provider = provider
        self._cache = cache
        self._clock = clock
        self._breaker = breaker.CircuitBreaker(breaker_config(cfg), clock=clock)
        self._breaker.add_listener(self._on_transition)
        self._policy = retrying.Policy(
            attempts=max(1, cfg.billing.retry_attempts), timeout=cfg.billing.retry_timeout
        )
        self._coalescer: coalescing.Coalescer[str, billing.ClusterCost] = coalescing.Coalescer()
        self._tracked: dict[str, int] = {}  # cluster id -> claims that name it
        self._unknown: dict[str, tuple[float, float]] = {}  # id -> (retry at, backoff)
        self._stopping = False
        self._left_out = 0
        self._bulk: bool | None = None  # unknown until the provider tells us
        snap = initial or billing.BillingSnapshot()
        self._last_success = snap.health.last_success
        self._last_error = ""
        self._last_sync_ok = False
        self._decisions: deque[bool] = deque(maxlen=DECISION_WINDOW)
        self._from_cache = 0
        self._snapshot = snap
        self._stale_health = True
        self._ready = False
        self._ready_event = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._transition_listeners: list[TransitionListener] = []
        self._event_listeners: list[EventListener] = []
        self._sync_listeners: list[SyncListener] = []
        self._events: deque[tuple[str, str]] = deque(maxlen=50)
        self._last_compaction = -COMPACT_EVERY
        self._task: asyncio.Task[None] | None = None
        self._persisting: asyncio.Future[billing.PriceBook | None] | None = None
        metrics.set_circuit_state(self._breaker.state)

    # -- what the enforcement side calls ------------------------------------------------

    def snapshot(self) -> billing.BillingSnapshot:
        """The current snapshot: in memory, O(1), never touches the network or the cache."""
        if self._stale_health:
            self._snapshot = dataclasses.replace(self._snapshot, health=self._health())
            self._stale_health = False
        return self._snapshot

    @property
    def ready(self) -> bool:
        """True once the warm-up sync was attempted (success or not; see ``_apply``)."""
        return self._ready

    async def wait_ready(self) -> None:
        """Return once :attr:`ready` is true."""
        await self._ready_event.wait()

    def track(self, cluster_ids: Iterable[str]) -> None:
        """Count one more claim naming each of these cluster ids: they are fetched one by
        one when the provider has no bulk listing (or when its listing leaves them out).
        The claim informer calls this for every claim that appears."""
        for cid in cluster_ids:
            if cid:
                self._tracked[cid] = self._tracked.get(cid, 0) + 1
        metrics.tracked_clusters.set(len(self._tracked))

    def untrack(self, cluster_ids: Iterable[str]) -> None:
        """Count one claim less for each id; an id no claim names any more is no longer
        fetched (its last cost stays in the snapshot). Called when a claim goes away."""
        for cid in cluster_ids:
            left = self._tracked.get(cid, 0) - 1
            if left > 0:
                self._tracked[cid] = left
            else:
                self._tracked.pop(cid, None)
                self._unknown.pop(cid, None)
        metrics.tracked_clusters.set(len(self._tracked))
        metrics.unknown_clusters.set(len(self._unknown))

    @property
    def tracked(self) -> frozenset[str]:
        """The cluster ids some claim names."""
        return frozenset(self._tracked)

    @property
    def unknown(self) -> frozenset[str]:
        """Tracked ids the provider answered 404 for, not asked again until their backoff ends."""
        return frozenset(self._unknown)

    def record_decision(self, *, from_cache: bool) -> None:
        """Count one admission decision; feeds the fallback hit rate (last 1000 decisions)."""
        if len(self._decisions) == self._decisions.maxlen and self._decisions[0]:
            self._from_cache -= 1
        self._decisions.append(from_cache)
        self._from_cache += int(from_cache)
        metrics.fallback_ratio.set(self._fallback_hit_rate())
        self._stale_health = True

    def add_transition_listener(self, cb: TransitionListener) -> None:
        """Call ``cb(old_state, new_state, reason)`` on every breaker transition."""
        self._transition_listeners.append(cb)

    def add_sync_listener(self, cb: SyncListener) -> None:
        """Call ``cb()`` after every sync (its results are in the snapshot by then)."""
        self._sync_listeners.append(cb)

    def add_event_listener(self, cb: EventListener) -> None:
        """Call ``cb(reason, message)`` for Event-worthy happenings (a quarantined cache);
        those that happened before the listener was added are replayed to it at once."""
        self._event_listeners.append(cb)
        for reason, message in list(self._events):
            cb(reason, message)

    def staleness(self) -> float:
        """Seconds since the last successful sync (infinity before the first)."""
        return self.snapshot().health.staleness(now=self._clock.time())

    def _last_success_timestamp(self) -> float:
        """Unix time of the last successful sync, 0.0 before the first (for metrics)."""
        return self._last_success if self._last_success is not None else 0.0

    def is_degraded(self, *, max_staleness: float) -> bool:
        """Whether a quota with this ``maxStaleness`` must use its degradation policy."""
        return self.snapshot().health.degraded(now=self._clock.time(), max_staleness=max_staleness)

    async def fetch(self, cluster_id: str) -> billing.ClusterCost:
        """One cluster's cost from the provider, guarded; concurrent calls for one id share
        a single request."""
        return await self._coalescer.run(
            cluster_id,
            lambda: self._call("cluster", functools.partial(self._provider.fetch_cost, cluster_id)),
        )

    async def sync_once(self) -> None:
        """One sync of prices and costs into the cache and the snapshot (never raises a
        billing or cache error: they go to the health report)."""
        async with self._sync_lock:
            await self._sync()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic loop (its first turn is the warm-up sync)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="dbquota-billing-sync")
            metrics.last_success.set_function(self._last_success_timestamp)

    async def stop(self) -> None:
        """Stop the loop and wait for it (a cache write in progress is finished first).

        From here on the breaker's transitions are neither announced nor published: a
        call cut short by our own shutdown is not news about the provider.
        """
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            stopped_at = self._last_success_timestamp()  # a fact still: keep it, unbound
            metrics.last_success.set_function(lambda: stopped_at)
        if self._persisting is not None and not self._persisting.done():
            with contextlib.suppress(errors.DbquotaError):
                await self._persisting

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:
                logger.exception("billing sync failed unexpectedly; the loop goes on")
            await self._clock.sleep(self._next_delay())

    def _next_delay(self) -> float:
        interval = self._cfg.billing.sync_interval
        if self._breaker.state == "Open":
            return min(interval, self._breaker.retry_in() + 0.01)
        return interval

    # -- one sync -----------------------------------------------------------------------

    async def _sync(self) -> None:
        started_mono = self._clock.monotonic()
        started = self._clock.time()
        tally = _SyncTally()
        try:
            self._provider.refresh_credentials()
            tally.prices = await self._call("pricing", self._provider.fetch_prices)
        except errors.CircuitOpen as exc:
            tally.errors.append(str(exc))
        except errors.DbquotaError as exc:
            tally.errors.append(f"pricing: {exc}")
        if not tally.errors or self._breaker.state == "Closed":
            await self._fetch_costs(tally)
        ok = not tally.errors
        finished = self._clock.time()
        error = "; ".join(tally.errors)[:2000]
        record = cache_.SyncRecord(
            started_at=started,
            finished_at=finished,
            ok=ok,
            costs=list(tally.costs.values()),
            prices=tally.prices,
            rejected=tally.rejected,
            error=error,
        )
        # Shielded: a stop() during the write lets the transaction finish, then waits for it.
        self._persisting = asyncio.ensure_future(self._persist(record))
        highest = await asyncio.shield(self._persisting)
        self._apply(tally, ok=ok, finished=finished, error=error, highest=highest)
        duration = self._clock.monotonic() - started_mono
        metrics.sync_duration.labels(result="ok" if ok else "failed").observe(duration)
        level = logging.INFO if ok else logging.WARNING
        logger.log(
            level,
            "billing sync %s in %.2fs: %d clusters, %d rejected, %d unknown%s",
            "succeeded" if ok else "failed",
            duration,
            len(tally.costs),
            tally.rejected,
            tally.unknown,
            f"; {error}" if error else "",
        )
        for cb in list(self._sync_listeners):
            try:
                cb()
            except Exception:
                logger.exception("a sync listener failed")
        await self._maybe_compact(now=finished)

    async def _fetch_costs(self, tally: _SyncTally) -> None:
        if self._bulk is not False:
            try:
                await self._list_all(tally)
            except errors.NoBulkListing:
                logger.info("the billing provider has no bulk listing; fetching per cluster")
                self._bulk = False
            except errors.DbquotaError as exc:
                tally.errors.append(f"bulk listing: {exc}")
                return
        for cid in tally.costs:
            self._unknown.pop(cid, None)
        missing = self._to_fetch_one_by_one(tally)
        if missing:
            await self._fetch_each(missing, tally)

    def _to_fetch_one_by_one(self, tally: _SyncTally) -> list[str]:
        """Tracked clusters to fetch one by one after the listing (if any).

        With a bulk listing: those it showed before and leaves out now (a partial listing,
        counted in the health as ``left_out``), and at most :data:`NEW_PER_SYNC` of those
        no listing ever showed. Those are mostly new claims the provider does not bill yet,
        which a later listing shows: asking for each at once would make a sync as long as
        a burst of claims is large. Without a listing, every tracked cluster. Either way,
        never one the provider answered 404 for until its backoff ends.
        """
        now = self._clock.monotonic()
        due = sorted(
            cid
            for cid in self._tracked
            if cid not in tally.costs and self._unknown.get(cid, (0.0, 0.0))[0] <= now
        )
        if not self._bulk:
            return due
        known = self._snapshot.costs
        left_out = [c for c in due if c in known]
        tally.left_out = len(left_out)
        return left_out + [c for c in due if c not in known][:NEW_PER_SYNC]

    async def _list_all(self, tally: _SyncTally) -> None:
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = await self._call("bulk", functools.partial(self._provider.list_costs, token))
            self._bulk = True
            for cost in page.costs:
                tally.costs[cost.cluster_id] = cost
            for rejection in page.rejected:
                self._reject("bulk", rejection.cluster_id, rejection.reason)
            tally.rejected += len(page.rejected)
            token = page.next_page_token
            if token is None:
                return
            if token in seen:
                raise errors.MalformedPayload(f"the bulk listing repeats page token {token!r}")
            seen.add(token)
        raise errors.MalformedPayload(f"the bulk listing has more than {MAX_PAGES} pages")

    async def _fetch_each(self, cluster_ids: list[str], tally: _SyncTally) -> None:
        pending = iter(cluster_ids)
        failures: list[str] = []
        stop = False

        async def worker() -> None:
            nonlocal stop
            for cid in pending:
                if stop:
                    return
                try:
                    tally.costs[cid] = await self.fetch(cid)
                    self._unknown.pop(cid, None)
                except errors.UnknownCluster:
                    tally.unknown += 1
                    self._forget_for_a_while(cid)
                except errors.MalformedPayload:
                    tally.rejected += 1
                except errors.CircuitOpen as exc:
                    stop = True
                    failures.append(str(exc))
                except errors.BillingError as exc:
                    failures.append(f"{cid}: {exc}")

        workers = min(max(1, self._cfg.billing.max_concurrency), len(cluster_ids))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            tally.errors.append(f"per-cluster fetches: {failures[-1]}{more}")

    def _forget_for_a_while(self, cluster_id: str) -> None:
        """Negative-cache a 404: ask again after a backoff that doubles each time."""
        _, backoff = self._unknown.get(cluster_id, (0.0, UNKNOWN_BACKOFF / 2))
        backoff = min(UNKNOWN_BACKOFF_MAX, backoff * 2)
        self._unknown[cluster_id] = (self._clock.monotonic() + backoff, backoff)
        metrics.unknown_clusters.set(len(self._unknown))

    async def _persist(self, record: cache_.SyncRecord) -> billing.PriceBook | None:
        """Write the sync; on a corrupt file, quarantine, rebuild from memory, write again."""
        try:
            rows = await self._cache.write_sync(record)
        except errors.CacheCorrupt as exc:
            quarantine = await self._cache.rebuild(str(exc))
            self._announce_quarantine(quarantine)
            rows = await self._restore_into_new_cache(record)
        except errors.CacheError as exc:
            logger.error("billing cache write failed; the snapshot is updated anyway: %s", exc)  # noqa: TRY400 - the message says it all
            return self._snapshot.highest
        metrics.cache_rows_written.inc(rows)
        try:
            window_start = record.finished_at - self._cfg.cache.price_window
            highest = await self._cache.highest_prices(since=window_start)
            for table, count in (await self._cache.row_counts()).items():
                metrics.cache_rows.labels(table=table).set(count)
        except errors.CacheError as exc:
            logger.error("billing cache read failed: %s", exc)  # noqa: TRY400
            return self._snapshot.highest
        return highest

    async def _restore_into_new_cache(self, record: cache_.SyncRecord) -> int:
        old = self._snapshot
        merged = {**old.costs, **{c.cluster_id: c for c in record.costs}}
        prices = [p for p in (old.highest, old.prices) if p is not None]
        rows = 0
        try:
            for book in prices:  # keep the highest known prices across the rebuild
                rows += await self._cache.write_sync(
                    dataclasses.replace(record, ok=False, costs=[], prices=book, error="restored")
                )
            rows += await self._cache.write_sync(
                dataclasses.replace(record, costs=list(merged.values()))
            )
        except errors.CacheError as exc:
            logger.error("the rebuilt billing cache failed too: %s", exc)  # noqa: TRY400
        return rows

    def _apply(
        self,
        tally: _SyncTally,
        *,
        ok: bool,
        finished: float,
        error: str,
        highest: billing.PriceBook | None,
    ) -> None:
        old = self._snapshot
        costs = dict(old.costs)
        costs.update(tally.costs)
        if ok:
            self._last_success = finished
        if error:
            self._last_error = error
        self._last_sync_ok = ok
        self._left_out = tally.left_out
        self._snapshot = billing.BillingSnapshot(
            health=self._health(),
            prices=tally.prices or old.prices,
            highest=highest or old.highest,
            costs=costs,
        )
        self._stale_health = False
        metrics.consecutive_failures.set(self._breaker.consecutive_failures)
        if not self._ready:
            # Ready once the warm-up sync was attempted, whatever it got: the cache was
            # loaded before it, and a provider that is down is what the quotas'
            # degradation policies are for. Waiting for it would keep every webhook pod
            # unready, and failurePolicy Fail would then refuse every claim.
            self._ready = True
            self._ready_event.set()
            if ok:
                logger.info("billing cache is warm (%d clusters)", len(costs))
            else:
                logger.warning(
                    "warm-up sync failed; serving degraded from %d cached clusters", len(costs)
                )

    async def _maybe_compact(self, *, now: float) -> None:
        if self._clock.monotonic() - self._last_compaction < COMPACT_EVERY:
            return
        self._last_compaction = self._clock.monotonic()
        try:
            deleted = await self._cache.compact(before=now - self._cfg.cache.retention)
        except errors.CacheError as exc:
            logger.error("billing cache compaction failed: %s", exc)  # noqa: TRY400
            return
        if deleted:
            logger.info("billing cache compaction removed %d old rows", deleted)

    # -- guarded calls ------------------------------------------------------------------

    async def _call(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                result = await self._breaker.call(fn, is_failure=self._trips)
            except breaker.Refused as exc:
                metrics.billing_calls.labels(endpoint=endpoint, outcome="circuit_open").inc()
                raise errors.CircuitOpen(f"billing circuit breaker: {exc}") from exc
            except errors.BillingError as exc:
                metrics.billing_calls.labels(endpoint=endpoint, outcome=_outcome(exc)).inc()
                if isinstance(exc, errors.MalformedPayload):
                    self._reject(endpoint, exc.cluster_id, str(exc))
                raise
            metrics.billing_calls.labels(endpoint=endpoint, outcome="ok").inc()
            return result

        def on_retry(attempt_no: int, exc: BaseException, wait: float) -> None:
            logger.info(
                "billing %s call failed (attempt %d: %s); retrying in %.2fs",
                endpoint,
                attempt_no,
                exc,
                wait,
            )

        return await retrying.call(
            attempt,
            policy=self._policy,
            retry_on=_retryable,
            hint=_retry_after,
            clock=self._clock,
            on_retry=on_retry,
        )

    def _trips(self, exc: BaseException) -> bool:
        """Whether a failed call counts against the provider (never during our shutdown)."""
        return not self._stopping and _trips(exc)

    def _reject(self, endpoint: str, cluster_id: str | None, reason: str) -> None:
        metrics.rejected_payloads.labels(endpoint=endpoint).inc()
        logger.warning(
            "rejected a billing payload (endpoint %s, cluster %s): %s",
            endpoint,
            cluster_id or "-",
            reason,
        )

    # -- health -------------------------------------------------------------------------

    def _fallback_hit_rate(self) -> float:
        return self._from_cache / len(self._decisions) if self._decisions else 0.0

    def _health(self) -> billing.BillingHealth:
        # The last error is news only while something is failing: once the breaker is
        # Closed with no failure since and the last sync succeeded, an old error shown
        # beside a healthy breaker in every quota's status would only mislead.
        failing = (
            self._breaker.state != "Closed"
            or self._breaker.consecutive_failures > 0
            or not self._last_sync_ok
        )
        return billing.BillingHealth(
            circuit_state=self._breaker.state,
            last_success=self._last_success,
            consecutive_failures=self._breaker.consecutive_failures,
            last_error=(self._last_error or self._breaker.last_error) if failing else "",
            fallback_hit_rate=self._fallback_hit_rate(),
            left_out=self._left_out,
        )

    def _on_transition(self, transition: breaker.Transition) -> None:
        if self._stopping:
            return
        if transition.new == "Closed":
            # The probe succeeded: the failed syncs before it are no longer news (their
            # error would otherwise sit beside "Closed" until this sync finishes).
            self._last_sync_ok = True
        metrics.set_circuit_state(transition.new)
        metrics.circuit_transitions.labels(from_state=transition.old, to_state=transition.new).inc()
        log = logger.warning if transition.new == "Open" else logger.info
        log(
            "billing circuit breaker %s -> %s: %s",
            transition.old,
            transition.new,
            transition.reason,
        )
        self._snapshot = dataclasses.replace(self._snapshot, health=self._health())
        self._stale_health = False
        for cb in list(self._transition_listeners):
            try:
                cb(transition.old, transition.new, transition.reason)
            except Exception:
                logger.exception("a breaker transition listener failed")

    def _announce_quarantine(self, quarantine: cache_.Quarantine) -> None:
        metrics.cache_quarantines.inc()
        message = (
            f"the billing cache was unusable ({quarantine.reason}); it was moved to "
            f"{quarantine.moved_to} and a new cache was started"
        )
        self._events.append(("CacheQuarantined", message))
        for cb in list(self._event_listeners):
            try:
                cb("CacheQuarantined", message)
            except Exception:
                logger.exception("an event listener failed")


async def load(
    cfg: Settings, *, provider: BillingProvider, cache: cache_.Cache, clock: clock_.Clock
) -> Ingestor:
    """An :class:`Ingestor` whose snapshot starts from what the cache holds."""
    window_start = clock.time() - cfg.cache.price_window
    snapshot = billing.BillingSnapshot(
        health=billing.BillingHealth(last_success=await cache.last_success()),
        prices=await cache.latest_prices(),
        highest=await cache.highest_prices(since=window_start),
        costs=await cache.latest(),
    )
    ingestor = Ingestor(cfg, provider=provider, cache=cache, clock=clock, initial=snapshot)
    if cache.quarantined is not None:
        ingestor._announce_quarantine(cache.quarantined)
    logger.info("billing cache %s loaded: %d clusters", cache.path, len(snapshot.costs))
    return ingestor


@contextlib.asynccontextmanager
async def running(
    cfg: Settings,
    *,
    clock: clock_.Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Ingestor]:
    """Open the cache and the provider, start the loop (warm-up first); close all on exit.

    Yields at once: await :meth:`Ingestor.wait_ready` (or poll :attr:`Ingestor.ready`,
    as ``/readyz`` does) to know when the warm-up sync finished.
    """
    clk: clock_.Clock = clock if clock is not None else clock_.SystemClock()
    cache = await cache_.Cache.open(cfg.cache.path)
    try:
        provider = billing_adapter.HttpBillingProvider(cfg.billing, clock=clk, transport=transport)
        try:
            ingestor = await load(cfg, provider=provider, cache=cache, clock=clk)
            ingestor.start()
            try:
                yield ingestor
            finally:
                await ingestor.stop()
        finally:
            await provider.aclose()
    finally:
        await cache.close()
