"""A generic circuit breaker (Resilience4j's model) with an injectable clock.

States and transitions::

    Closed ──(consecutive failures ≥ threshold, or failure rate / slow-call rate of a
    │         full-enough count-based window ≥ its threshold)──▶ Open
    Open ──(recovery timeout elapsed, on the next acquire)──▶ HalfOpen
    HalfOpen ──(the single probe succeeds)──▶ Closed
    HalfOpen ──(the single probe fails, or is slow while slow calls count)──▶ Open

In ``HalfOpen`` exactly one caller holds the probe permit; every other caller is refused
with :class:`Refused` at once, however many arrive, until the probe reports. A permit taken
in an earlier state (a call still in flight when the breaker opened) no longer moves the
state when it reports. A call cancelled before it reports releases its permit without
counting, so a cancelled probe lets the next caller probe.

Callers decide what a failure is (``is_failure``); exceptions that are not failures count
as successes, because the protected service answered. Listeners receive every
:class:`Transition`. :func:`set_testing` turns the recovery wait off (an Open breaker admits
its probe on the next call), as :func:`dbquota.kits.retrying.set_testing` does for retries.

Used by :mod:`dbquota.services.guarding` around every billing provider call.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from dbquota.kits import clock as clock_

logger = logging.getLogger(__name__)

State = Literal["Closed", "Open", "HalfOpen"]
T = TypeVar("T")

_testing = False


def set_testing(on: bool) -> None:
    """Turn the recovery wait off (``True``) or back on, for every breaker in the process."""
    global _testing  # noqa: PLW0603 - one process-wide test switch
    _testing = on


def is_testing() -> bool:
    """Whether :func:`set_testing` turned the recovery wait off."""
    return _testing


@contextlib.contextmanager
def testing() -> Iterator[None]:
    """Within the block, Open breakers admit a probe without waiting."""
    old = _testing
    set_testing(True)
    try:
        yield
    finally:
        set_testing(old)


class Refused(Exception):
    """The breaker refused the call locally: it is Open, or another caller is probing."""

    def __init__(self, state: State, retry_in: float) -> None:
        super().__init__(f"circuit {state}; next probe in {retry_in:.1f}s")
        self.state = state
        self.retry_in = retry_in


@dataclass(frozen=True, kw_only=True)
class Config:
    """The breaker's thresholds; see Resilience4j's CircuitBreakerConfig for the model."""

    failure_threshold: int = 5
    """Consecutive failures that open the breaker (counted in Closed)."""
    recovery_timeout: float = 30.0
    """Seconds the breaker stays Open before it admits one probe."""
    window_size: int = 20
    """Most recent calls kept in the count-based window."""
    minimum_calls: int = 10
    """Calls the window needs before its rates can open the breaker."""
    failure_rate_threshold: float = 0.5
    """Share (0..1] of failed calls in the window that opens the breaker."""
    slow_call_duration: float = 3.0
    """Seconds after which a call counts as slow."""
    slow_call_rate_threshold: float = 1.0
    """Share (0..1) of slow calls in the window that opens the breaker; 1.0 or more = off."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.window_size < 1 or not self.minimum_calls >= 1:
            raise ValueError("window_size and minimum_calls must be at least 1")
        if not 0.0 < self.failure_rate_threshold <= 1.0:
            raise ValueError("failure_rate_threshold must be in (0, 1]")
        if self.recovery_timeout < 0 or self.slow_call_duration <= 0:
            raise ValueError("recovery_timeout must be >= 0 and slow_call_duration > 0")

    @property
    def counts_slow_calls(self) -> bool:
        """Whether slow calls can open the breaker at all."""
        return self.slow_call_rate_threshold < 1.0


@dataclass(frozen=True)
class Transition:
    """One change of state, as listeners receive it."""

    old: State
    new: State
    reason: str
    at: float


Listener = Callable[[Transition], None]


class Permit:
    """The right to make one call; report its outcome exactly once."""

    __slots__ = ("_breaker", "_done", "_generation", "_probe", "_started")

    def __init__(self, breaker: CircuitBreaker, *, generation: int, probe: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self._probe = probe
        self._started = breaker.clock.monotonic()
        self._done = False

    @property
    def probe(self) -> bool:
        """Whether this permit is the single HalfOpen probe."""
        return self._probe

    def success(self) -> None:
        """The call succeeded (or failed in a way that does not count)."""
        self._report(failed=False, error="")

    def failure(self, error: str) -> None:
        """The call failed in a way that counts; ``error`` says how (for health reports)."""
        self._report(failed=True, error=error)

    def release(self) -> None:
        """The call was abandoned (cancelled): it counts neither way."""
        if not self._done:
            self._done = True
            self._breaker._release(self)

    def _report(self, *, failed: bool, error: str) -> None:
        if self._done:
            return
        self._done = True
        duration = self._breaker.clock.monotonic() - self._started
        self._breaker._record(self, failed=failed, duration=duration, error=error)


class CircuitBreaker:
    """A circuit breaker: ``acquire()`` a permit, or ``await call(fn)``."""

    def __init__(self, config: Config, *, clock: clock_.Clock | None = None) -> None:
        self.config = config
        self.clock: clock_.Clock = clock if clock is not None else clock_.SystemClock()
        self._state: State = "Closed"
        self._generation = 0
        self._opened_at = 0.0
        self._probing = False
        self._window: deque[tuple[bool, bool]] = deque(maxlen=config.window_size)
        self._run_of_failures = 0  # consecutive failures in Closed, drives the threshold
        self._consecutive_failures = 0  # any state, reset by any success: for reports
        self._last_error = ""
        self._listeners: list[Listener] = []

    # -- what observers read -------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state (an Open breaker becomes HalfOpen only when a call arrives)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success, whatever the state."""
        return self._consecutive_failures

    @property
    def last_error(self) -> str:
        """What the most recent failure said ('' before any)."""
        return self._last_error

    def retry_in(self) -> float:
        """Seconds until an Open breaker admits its probe (0 when not Open)."""
        if self._state != "Open" or _testing:
            return 0.0
        elapsed = self.clock.monotonic() - self._opened_at
        return max(0.0, self.config.recovery_timeout - elapsed)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every transition, synchronously, in order."""
        self._listeners.append(listener)

    # -- calls ---------------------------------------------------------------------------

    def acquire(self) -> Permit:
        """A permit for one call, or :class:`Refused` without delay."""
        if self._state == "Open":
            if self.retry_in() > 0.0:
                raise Refused("Open", self.retry_in())
            self._move("HalfOpen", "recovery timeout elapsed")
        if self._state == "HalfOpen":
            if self._probing:
                raise Refused("HalfOpen", 0.0)
            self._probing = True
            return Permit(self, generation=self._generation, probe=True)
        return Permit(self, generation=self._generation, probe=False)

    async def call(
        self, fn: Callable[[], Awaitable[T]], *, is_failure: Callable[[BaseException], bool]
    ) -> T:
        """Run ``fn`` under a permit; exceptions pass through after being recorded."""
        permit = self.acquire()
        try:
            result = await fn()
        except Exception as exc:
            if is_failure(exc):
                permit.failure(f"{type(exc).__name__}: {exc}")
            else:
                permit.success()
            raise
        except BaseException:
            permit.release()
            raise
        permit.success()
        return result

    # -- bookkeeping ---------------------------------------------------------------------

    def _release(self, permit: Permit) -> None:
        if permit.probe and permit._generation == self._generation:
            self._probing = False

    def _record(self, permit: Permit, *, failed: bool, duration: float, error: str) -> None:
        if failed:
            self._consecutive_failures += 1
            self._last_error = error
        else:
            self._consecutive_failures = 0
        if permit._generation != self._generation:
            return
        slow = duration >= self.config.slow_call_duration
        if permit.probe:
            self._probing = False
            if failed:
                self._move("Open", f"probe failed: {error}")
            elif slow and self.config.counts_slow_calls:
                self._move("Open", f"probe was slow ({duration:.1f}s)")
            else:
                self._move("Closed", "probe succeeded")
            return
        self._window.append((failed, slow))
        self._run_of_failures = self._run_of_failures + 1 if failed else 0
        reason = self._why_open()
        if reason:
            self._move("Open", f"{reason}; last error: {error}" if failed else reason)

    def _why_open(self) -> str:
        cfg = self.config
        if self._run_of_failures >= cfg.failure_threshold:
            return f"{self._run_of_failures} consecutive failures"
        calls = len(self._window)
        if calls < cfg.minimum_calls:
            return ""
        failures = sum(1 for failed, _ in self._window if failed)
        if failures / calls >= cfg.failure_rate_threshold:
            return f"failure rate {failures}/{calls} in the window"
        slow = sum(1 for _, slow in self._window if slow)
        if cfg.counts_slow_calls and slow / calls >= cfg.slow_call_rate_threshold:
            return f"slow-call rate {slow}/{calls} in the window"
        return ""

    def _move(self, new: State, reason: str) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._probing = False
        now = self.clock.monotonic()
        if new == "Open":
            self._opened_at = now
        if new == "Closed":
            self._window.clear()
            self._run_of_failures = 0
        transition = Transition(old=old, new=new, reason=reason, at=now)
        for listener in list(self._listeners):
            try:
                listener(transition)
            except Exception:
                logger.exception("a circuit breaker listener failed on %s -> %s", old, new)
