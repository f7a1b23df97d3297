"""The billing ingestion worker: keeps the cache and the in-memory snapshot fresh.

:func:`running` opens the cache and the provider, loads what the cache holds into a
:class:`~dbquota.domain.billing.BillingSnapshot`, and runs a loop whose first turn is the
warm-up sync; :attr:`Ingestor.ready` turns true once that sync ended, however it ended:
with success, with failure, refused by an open breaker, or cut off at its deadline
(there is cached data to serve, or the quotas' degradation policies decide).
Each sync, every ``--sync-interval`` (sooner when the breaker will admit a probe, never
before the end of a hold a 429's ``Retry-After`` put on the provider)::

    prices    GET /pricing (in HalfOpen this call is the breaker's single probe)
    costs     the fetch strategy: bulk listing, then per-cluster fetches  fetching.py
              (prices and costs together within the sync's deadline)
    cache     everything valid in ONE transaction, with a journal row     persisting.py
    snapshot  a new immutable snapshot swapped in (admission reads only this)

Each attempt of a provider call has a time limit (guarding.py), but answers each just
within it could still keep one sync going for hours: the data growing stale and, until the
first sync ends, no replica ready. So fetching stops at :func:`sync_deadline`, twice the
longer of ``--sync-interval`` and one call with its retries: room for the price call and
a listing with all their retries, while a sync still running at twice its interval is
stuck, or too large for the interval. Cut off, a sync fails (its error names the
deadline) and keeps what it fetched; the next one fetches the oldest costs first.

Every provider call goes through a
:class:`~dbquota.services.guarding.GuardedProvider` (circuit breaker, retries, rate limit,
call metrics) around the configured :class:`~dbquota.services.providers.BillingProvider`.
The snapshot's health (breaker state, last success, consecutive failures, the last error
while something is failing, tracked clusters a partial listing left out) changes with
every sync and every breaker transition; the fallback hit rate is admission's
(:mod:`dbquota.services.fallbacks`). Breaker transitions reach listeners (for Kubernetes
Events) with the snapshot already updated.

Called by the operator's start-up code (:mod:`dbquota.handlers.operating`); the
enforcement side reads :meth:`Ingestor.snapshot` and tells it which cluster ids claims
name (:meth:`Ingestor.track`, :meth:`Ingestor.untrack`).

Size: over 400 lines because the worker's public face, its lifecycle, one sync and the
health it reports share one snapshot and one breaker; split, each part would reach into
the others' private state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterable

import httpx

from dbquota import errors
from dbquota.adapters import billing as billing_adapter
from dbquota.adapters import cache as cache_
from dbquota.adapters import metrics
from dbquota.domain import billing
from dbquota.kits import breaker, supervising
from dbquota.kits import clock as clock_
from dbquota.services import fetching, guarding, persisting
from dbquota.services.providers import BillingProvider
from dbquota.settings import Settings

logger = logging.getLogger(__name__)

TransitionListener = Callable[[str, str, str], None]
SyncListener = Callable[[], None]


def sync_deadline(cfg: Settings) -> float:
    """Most seconds one sync may spend fetching (module docstring)."""
    return 2 * max(cfg.billing.sync_interval, guarding.call_limit(cfg))


@dataclasses.dataclass
class _Gathered:
    """What one sync fetched so far; kept when its deadline cuts it off."""

    prices: billing.PriceBook | None = None
    fetched: fetching.Fetched = dataclasses.field(default_factory=fetching.Fetched)
    failed: list[str] = dataclasses.field(default_factory=list)  # besides fetched.errors


class Ingestor:
    """The billing worker's state and its public face to the enforcement side."""

    def __init__(
        self,
        cfg: Settings,
        *,
        provider: BillingProvider,
        keeper: persisting.CacheKeeper,
        clock: clock_.Clock,
        initial: billing.BillingSnapshot | None = None,
    ) -> None:
        self._cfg = cfg
        self._deadline = sync_deadline(cfg)
        self._clock = clock
        self._keeper = keeper
        self._guard = guarding.GuardedProvider(provider, cfg=cfg, clock=clock)
        self._guard.add_transition_listener(self._on_transition)  # first: the snapshot
        self._fetcher = fetching.Fetcher(
            self._guard, max_concurrency=cfg.billing.max_concurrency, clock=clock
        )
        snap = initial or billing.BillingSnapshot()
        self._last_success = snap.health.last_success
        self._last_error = ""
        self._last_sync_ok = False
        self._left_out = 0
        self._snapshot = dataclasses.replace(snap, health=self._health())
        self._ready = False
        self._ready_event = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._sync_listeners: list[SyncListener] = []
        self._task: asyncio.Task[None] | None = None

    # -- what the enforcement side calls ------------------------------------------------

    def snapshot(self) -> billing.BillingSnapshot:
        """The current snapshot: in memory, O(1), never touches the network or the cache."""
        return self._snapshot

    @property
    def ready(self) -> bool:
        """True once the first sync ended, however it ended (see ``_warmed``)."""
        return self._ready

    async def wait_ready(self) -> None:
        """Return once :attr:`ready` is true."""
        await self._ready_event.wait()

    def track(self, cluster_ids: Iterable[str]) -> None:
        """Count one more claim naming each of these cluster ids: they are fetched one by
        one when the provider has no bulk listing (or when its listing leaves them out).
        The claim informer calls this for every claim that appears."""
        self._fetcher.track(cluster_ids)

    def untrack(self, cluster_ids: Iterable[str]) -> None:
        """Count one claim less for each id; an id no claim names any more is no longer
        fetched (its last cost stays in the snapshot). Called when a claim goes away."""
        self._fetcher.untrack(cluster_ids)

    @property
    def tracked(self) -> frozenset[str]:
        """The cluster ids some claim names."""
        return self._fetcher.tracked

    @property
    def unknown(self) -> frozenset[str]:
        """Tracked ids the provider answered 404 for, not asked again until their backoff ends."""
        return self._fetcher.unknown

    def add_transition_listener(self, cb: TransitionListener) -> None:
        """Call ``cb(old_state, new_state, reason)`` on every breaker transition."""
        self._guard.add_transition_listener(lambda t: cb(t.old, t.new, t.reason))

    def add_sync_listener(self, cb: SyncListener) -> None:
        """Call ``cb()`` after every sync (its results are in the snapshot by then)."""
        self._sync_listeners.append(cb)

    def add_event_listener(self, cb: persisting.EventListener) -> None:
        """Call ``cb(reason, message)`` for Event-worthy happenings (a quarantined cache);
        those that happened before the listener was added are replayed to it at once."""
        self._keeper.add_event_listener(cb)

    async def fetch(self, cluster_id: str) -> billing.ClusterCost:
        """One cluster's cost from the provider, guarded; concurrent calls for one id share
        a single request."""
        return await self._fetcher.fetch(cluster_id)

    async def sync_once(self) -> None:
        """One sync of prices and costs into the cache and the snapshot (never raises a
        billing or cache error: they go to the health report)."""
        async with self._sync_lock:
            try:
                await self._sync()
            except Exception:
                self._warmed()  # a bug, logged by the loop: no reason to stay unready
                raise
            self._warmed()

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
        self._guard.quiet()
        if self._task is not None:
            self._task.cancel()
            # if we are cancelled here, a later stop() waits again
            await supervising.stop(self._task, what="the billing sync loop")
            self._task = None
            stopped_at = self._last_success_timestamp()  # a fact still: keep it, unbound
            metrics.last_success.set_function(lambda: stopped_at)
        await self._keeper.drain()

    def _last_success_timestamp(self) -> float:
        """Unix time of the last successful sync, 0.0 before the first (for metrics)."""
        return self._last_success if self._last_success is not None else 0.0

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:
                logger.exception("billing sync failed unexpectedly; the loop goes on")
            await self._clock.sleep(self._next_delay())

    def _next_delay(self) -> float:
        """The interval; sooner when the breaker will admit a probe; never before the end
        of a hold that a 429's ``Retry-After`` put on every call."""
        delay = self._cfg.billing.sync_interval
        circuit = self._guard.breaker
        if circuit.state == "Open":
            delay = min(delay, circuit.retry_in() + 0.01)
        return max(delay, self._guard.held_for())

    # -- one sync -----------------------------------------------------------------------

    async def _sync(self) -> None:
        started_mono = self._clock.monotonic()
        started = self._clock.time()
        gathered = await self._gather_until_deadline()
        prices, fetched = gathered.prices, gathered.fetched
        failed = gathered.failed + fetched.errors
        ok = not failed
        finished = self._clock.time()
        error = "; ".join(failed)[:2000]
        record = cache_.SyncRecord(
            started_at=started,
            finished_at=finished,
            ok=ok,
            costs=list(fetched.costs.values()),
            prices=prices,
            rejected=fetched.rejected,
            error=error,
        )
        highest = await self._keeper.persist(record, memory=self._snapshot)
        self._apply(
            fetched.costs,
            prices=prices,
            highest=highest,
            left_out=fetched.left_out,
            ok=ok,
            finished=finished,
            error=error,
        )
        duration = self._clock.monotonic() - started_mono
        metrics.sync_duration.labels(result="ok" if ok else "failed").observe(duration)
        logger.log(
            logging.INFO if ok else logging.WARNING,
            "billing sync %s in %.2fs: %d clusters, %d rejected, %d unknown%s",
            "succeeded" if ok else "failed",
            duration,
            len(fetched.costs),
            fetched.rejected,
            fetched.unknown,
            f"; {error}" if error else "",
        )
        for cb in list(self._sync_listeners):
            try:
                cb()
            except Exception:
                logger.exception("a sync listener failed")
        await self._keeper.maybe_compact(now=finished)

    async def _gather_until_deadline(self) -> _Gathered:
        """Prices and costs, cut off at the sync's deadline with what came until then."""
        gathered = _Gathered()
        deadline = asyncio.timeout(self._deadline)
        try:
            async with deadline:
                await self._gather(gathered)
        except TimeoutError:
            if not deadline.expired():
                raise
            gathered.failed.append(
                f"sync cut off at its deadline of {self._deadline:g}s (twice the longer of "
                "--sync-interval and one billing call with its retries); what it fetched "
                "until then is kept"
            )
        return gathered

    async def _gather(self, gathered: _Gathered) -> None:
        """Prices, then costs, into ``gathered`` as they come."""
        try:
            self._guard.refresh_credentials()
            gathered.prices = await self._guard.fetch_prices()
        except errors.CircuitOpen as exc:
            gathered.failed.append(str(exc))
        except errors.DbquotaError as exc:
            gathered.failed.append(f"pricing: {exc}")
        if not gathered.failed or self._guard.breaker.state == "Closed":
            await self._fetcher.fetch_costs(known=self._snapshot.costs, into=gathered.fetched)

    def _apply(
        self,
        costs: dict[str, billing.ClusterCost],
        *,
        prices: billing.PriceBook | None,
        highest: billing.PriceBook | None,
        left_out: int,
        ok: bool,
        finished: float,
        error: str,
    ) -> None:
        old = self._snapshot
        if ok:
            self._last_success = finished
        if error:
            self._last_error = error
        self._last_sync_ok = ok
        self._left_out = left_out
        self._snapshot = billing.BillingSnapshot(
            health=self._health(),
            prices=prices or old.prices,
            highest=highest or old.highest,
            costs={**old.costs, **costs},
        )
        metrics.consecutive_failures.set(self._guard.breaker.consecutive_failures)

    def _warmed(self) -> None:
        """Ready once the first sync ended, whatever it got: the cache was loaded before
        it, and a provider that is down, or too slow to finish a sync by its deadline, is
        what the quotas' degradation policies are for. Waiting for it would keep every
        webhook pod unready, and failurePolicy Fail would then refuse every claim."""
        if self._ready:
            return
        self._ready = True
        self._ready_event.set()
        if self._last_sync_ok:
            logger.info("billing cache is warm (%d clusters)", len(self._snapshot.costs))
        else:
            logger.warning(
                "warm-up sync failed; serving degraded from %d cached clusters",
                len(self._snapshot.costs),
            )

    # -- health -------------------------------------------------------------------------

    def _health(self) -> billing.BillingHealth:
        # The last error is news only while something is failing: once the breaker is
        # Closed with no failure since and the last sync succeeded, an old error shown
        # beside a healthy breaker in every quota's status would only mislead.
        circuit = self._guard.breaker
        failing = circuit.state != "Closed" or circuit.consecutive_failures > 0
        failing = failing or not self._last_sync_ok
        return billing.BillingHealth(
            circuit_state=circuit.state,
            last_success=self._last_success,
            consecutive_failures=circuit.consecutive_failures,
            last_error=(self._last_error or circuit.last_error) if failing else "",
            left_out=self._left_out,
        )

    def _on_transition(self, transition: breaker.Transition) -> None:
        if transition.new == "Closed":
            # The probe succeeded: the failed syncs before it are no longer news (their
            # error would otherwise sit beside "Closed" until this sync finishes).
            self._last_sync_ok = True
        self._snapshot = dataclasses.replace(self._snapshot, health=self._health())


async def load(
    cfg: Settings,
    *,
    provider: BillingProvider,
    cache: cache_.Cache,
    clock: clock_.Clock,
    fallback: str | None = None,
) -> Ingestor:
    """An :class:`Ingestor` whose snapshot starts from what the cache holds; it guards
    ``provider`` itself. ``fallback`` says why a fallback cache is used, if one is."""
    keeper = persisting.CacheKeeper(cache, cfg=cfg.cache, clock=clock, fallback=fallback)
    snapshot = await keeper.load()
    return Ingestor(cfg, provider=provider, keeper=keeper, clock=clock, initial=snapshot)


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
    cache, fallback = await persisting.open_cache(cfg.cache.path)
    try:
        provider = billing_adapter.HttpBillingProvider(cfg.billing, clock=clk, transport=transport)
        try:
            ingestor = await load(cfg, provider=provider, cache=cache, clock=clk, fallback=fallback)
            ingestor.start()
            try:
                yield ingestor
            finally:
                await ingestor.stop()
        finally:
            await provider.aclose()
    finally:
        await cache.close()
