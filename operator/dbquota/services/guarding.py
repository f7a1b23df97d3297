"""A billing provider behind a circuit breaker, retries, a rate limit and call metrics.

:class:`GuardedProvider` wraps any :class:`~dbquota.services.providers.BillingProvider`
and is one itself. Every call, per attempt::

    retries (kits.retrying: full jitter, Retry-After, attempt and time caps; only
    │        BillingUnavailable and RateLimited are retried)
    └─ the provider's hold (a 429's Retry-After: no request until it ends)
    └─ circuit breaker (kits.breaker: refused at once while Open, one probe in HalfOpen)
       └─ client-side rate limit (aiolimiter, --rate-limit requests/s, fractions too; 0 = off)
          └─ the attempt's time limit (--connect-timeout plus --request-timeout, for
             │  the whole attempt; past it: BillingUnavailable, which trips the breaker)
             └─ the wrapped provider's call (one request)

The time limit is the whole attempt's because a provider's own timeouts need not be:
httpx's read timeout is per read, so a provider that sends its answer a byte at a time,
each within the read timeout, kept one attempt (and the sync, and the warm-up that
readiness waits for) going for as long as it trickled, with the breaker Closed and no
error shown. Past the limit, a trickling provider fails like one that is down.

Each attempt is counted in ``dbquota_billing_calls_total`` by endpoint (``pricing``,
``bulk``, ``cluster``) and outcome; every rejected payload (a malformed answer, or a bad
entry of a bulk page) is counted and logged with its cluster id. A refusal by the breaker
leaves as :class:`~dbquota.errors.CircuitOpen`. What trips the breaker is the error's
``trips_breaker`` (a 404 or a 401 does not), and nothing does once :meth:`quiet` was called:
a call cut short by our own shutdown is not news about the provider. Breaker transitions
are logged, exported as metrics and handed to listeners, in the order they happen.

A 429 that says ``Retry-After`` is about this client, not one call: until it ends (at
most :data:`MAX_HOLD`), every call of every endpoint fails at once with
:class:`~dbquota.errors.Held`, sending nothing and counted as outcome ``held``. A retry
whose wait fits in ``--retry-timeout`` waits the hold out and goes on; one that does not
gives up, and the ingestion worker's next sync waits for the hold's end
(:meth:`GuardedProvider.held_for`). Without the hold, the other calls of a sync (up to
``--max-concurrency`` per-cluster fetches at once, the next sync, the breaker's probe)
would go on sending to a provider that asked for quiet, each earning another 429. Such a
429 does not trip the breaker (the provider answered; the hold is the quiet it asked for);
one without ``Retry-After`` does.

Used by the ingestion worker (:mod:`dbquota.services.ingesting`), which reads the breaker's
state for the snapshot's health and the loop's next wake-up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiolimiter

from dbquota import errors
from dbquota.adapters import metrics
from dbquota.domain import billing
from dbquota.kits import breaker, retrying
from dbquota.kits import clock as clock_
from dbquota.services.providers import BillingProvider
from dbquota.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_HOLD = 3600.0
"""Most seconds one ``Retry-After`` holds every call; a provider asking for more is asked
again after this."""

TransitionListener = Callable[[breaker.Transition], None]

_OUTCOMES: tuple[tuple[type[errors.BillingError], str], ...] = (
    (errors.Held, "held"),
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


def attempt_limit(cfg: Settings) -> float:
    """Most seconds one attempt may take: to connect, then to read the whole answer."""
    return cfg.billing.connect_timeout + cfg.billing.request_timeout


def call_limit(cfg: Settings) -> float:
    """Most seconds the attempts of one call take: the last one starts within
    ``--retry-timeout`` of the first and lasts :func:`attempt_limit` at most (waits for
    the client-side rate limit come on top)."""
    return cfg.billing.retry_timeout + attempt_limit(cfg)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, errors.BillingUnavailable)


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, errors.RateLimited) else None


def _limiter(rate: float) -> aiolimiter.AsyncLimiter | None:
    """``rate`` requests per second (0: no limiter), in bursts of up to ``rate``; below one
    a second, one request per ``1 / rate`` seconds (a limiter holds at least one)."""
    if not rate >= 0:
        raise ValueError(f"rate must be at least 0, got {rate}")
    if rate == 0:
        return None
    burst = max(1.0, rate)
    return aiolimiter.AsyncLimiter(burst, burst / rate)


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


def reject(*, endpoint: str, cluster_id: str | None, reason: str) -> None:
    """Count and log one rejected payload (it is never cached)."""
    metrics.rejected_payloads.labels(endpoint=endpoint).inc()
    logger.warning(
        "rejected a billing payload (endpoint %s, cluster %s): %s",
        endpoint,
        cluster_id or "-",
        reason,
    )


class GuardedProvider:
    """A :class:`BillingProvider` that guards another one (module docstring)."""

    def __init__(self, provider: BillingProvider, *, cfg: Settings, clock: clock_.Clock) -> None:
        self._provider = provider
        self._clock = clock
        self._quiet = False
        self._held_until = 0.0  # monotonic time a 429's Retry-After holds calls until
        self._listeners: list[TransitionListener] = []
        self._policy = retrying.Policy(
            attempts=cfg.billing.retry_attempts, timeout=cfg.billing.retry_timeout
        )
        self._limiter = _limiter(cfg.billing.rate_limit)
        self._attempt_limit = attempt_limit(cfg)
        self.breaker = breaker.CircuitBreaker(breaker_config(cfg), clock=clock)
        """The breaker every call goes through (read its state; do not call through it)."""
        self.breaker.add_listener(self._on_transition)
        metrics.set_circuit_state(self.breaker.state)

    # -- the BillingProvider calls ------------------------------------------------------

    def refresh_credentials(self) -> None:
        """The wrapped provider's, unguarded (it reads local files, not the provider)."""
        self._provider.refresh_credentials()

    async def fetch_cost(self, cluster_id: str) -> billing.ClusterCost:
        """One cluster's cost, guarded (endpoint ``cluster``)."""
        return await self._call("cluster", functools.partial(self._provider.fetch_cost, cluster_id))

    async def list_costs(self, page_token: str | None) -> billing.CostPage:
        """One page of the bulk listing, guarded (endpoint ``bulk``); its rejected entries
        are counted and logged here."""
        page = await self._call("bulk", functools.partial(self._provider.list_costs, page_token))
        for rejection in page.rejected:
            reject(endpoint="bulk", cluster_id=rejection.cluster_id, reason=rejection.reason)
        return page

    async def fetch_prices(self) -> billing.PriceBook:
        """The price catalog, guarded (endpoint ``pricing``)."""
        return await self._call("pricing", self._provider.fetch_prices)

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self._provider.aclose()

    def held_for(self) -> float:
        """Seconds left of the hold of the last 429's ``Retry-After`` (0: no hold)."""
        return max(0.0, self._held_until - self._clock.monotonic())

    def _hold(self, exc: errors.RateLimited) -> None:
        if exc.retry_after:
            until = self._clock.monotonic() + min(exc.retry_after, MAX_HOLD)
            self._held_until = max(self._held_until, until)

    # -- the breaker's news -------------------------------------------------------------

    def add_transition_listener(self, cb: TransitionListener) -> None:
        """Call ``cb(transition)`` on every breaker transition, after the metrics and the
        log line, in the order listeners were added; a listener that raises is logged."""
        self._listeners.append(cb)

    def quiet(self) -> None:
        """From now on failures do not count against the provider and transitions are not
        announced (our own shutdown is under way)."""
        self._quiet = True

    def _on_transition(self, transition: breaker.Transition) -> None:
        if self._quiet:
            return
        metrics.set_circuit_state(transition.new)
        metrics.circuit_transitions.labels(from_state=transition.old, to_state=transition.new).inc()
        log = logger.warning if transition.new == "Open" else logger.info
        log(
            "billing circuit breaker %s -> %s: %s",
            transition.old,
            transition.new,
            transition.reason,
        )
        for cb in list(self._listeners):
            try:
                cb(transition)
            except Exception:
                logger.exception("a breaker transition listener failed")

    # -- one guarded call ---------------------------------------------------------------

    async def _call(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        async def limited() -> T:
            if self._limiter is not None:
                await self._limiter.acquire()
            return await self._within_limit(endpoint, fn)

        async def attempt() -> T:
            held = self.held_for()
            if held > 0:
                metrics.billing_calls.labels(endpoint=endpoint, outcome="held").inc()
                raise errors.Held(
                    f"not sent: the provider's Retry-After holds billing calls {held:.1f}s more",
                    retry_after=held,
                )
            try:
                result = await self.breaker.call(limited, is_failure=self._trips)
            except breaker.Refused as exc:
                metrics.billing_calls.labels(endpoint=endpoint, outcome="circuit_open").inc()
                raise errors.CircuitOpen(f"billing circuit breaker: {exc}") from exc
            except errors.BillingError as exc:
                metrics.billing_calls.labels(endpoint=endpoint, outcome=_outcome(exc)).inc()
                if isinstance(exc, errors.MalformedPayload):
                    reject(endpoint=endpoint, cluster_id=exc.cluster_id, reason=str(exc))
                if isinstance(exc, errors.RateLimited):
                    self._hold(exc)
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

    async def _within_limit(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()``, cut off at the attempt's time limit (module docstring)."""
        limit = asyncio.timeout(self._attempt_limit)
        try:
            async with limit:
                return await fn()
        except TimeoutError as exc:
            if not limit.expired():
                raise  # the provider's own, not ours
            raise errors.BillingUnavailable(
                f"billing {endpoint} call: timed out, no complete answer within "
                f"{self._attempt_limit:g}s (--connect-timeout plus --request-timeout)"
            ) from exc

    def _trips(self, exc: BaseException) -> bool:
        """Whether a failed call counts against the provider (never once quiet)."""
        if self._quiet:
            return False
        return exc.trips_breaker if isinstance(exc, errors.BillingError) else True
