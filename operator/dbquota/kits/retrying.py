"""Retries with exponential backoff and full jitter, capped in attempts and total time.

A thin policy over tenacity: attempt ``n`` (1-based) that failed with a retryable error
waits ``uniform(0, min(cap, initial * 2 ** (n - 1)))`` seconds (AWS's "full jitter"), or
at least the server's hint (``Retry-After``) when the error carries one. Retrying stops
after ``attempts`` attempts, or before a wait that would end past ``timeout`` seconds
since the first attempt; the last error is then raised as it was. ``timeout`` bounds when
attempts start, not how long one lasts: an attempt under way is never interrupted, so
bounding one is the caller's (:mod:`dbquota.services.guarding` does, for every attempt).

:func:`set_testing` turns waiting off (attempts and hints are still honoured, the sleeps
are skipped) for every retry in the process, so tests of retrying code need no patching
(the retry library stamina offers the same switch). Used by :mod:`dbquota.services.guarding`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from dbquota.kits import clock as clock_

T = TypeVar("T")

_testing = False


def set_testing(on: bool) -> None:
    """Skip every backoff sleep (``True``) or sleep again (``False``), process-wide."""
    global _testing  # noqa: PLW0603 - one process-wide test switch
    _testing = on


@contextlib.contextmanager
def testing() -> Iterator[None]:
    """Within the block, retries do not sleep."""
    old = _testing
    set_testing(True)
    try:
        yield
    finally:
        set_testing(old)


@dataclass(frozen=True, kw_only=True)
class Policy:
    """How often and how long to retry one call."""

    attempts: int = 4
    """Most attempts, the first included (1 = no retry)."""
    timeout: float = 20.0
    """Most seconds from the first attempt to the start of the last."""
    initial: float = 0.1
    """Backoff window of the first retry, in seconds."""
    cap: float = 5.0
    """Largest backoff window, in seconds (a server's hint may exceed it)."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.timeout < 0 or self.initial <= 0 or self.cap <= 0:
            raise ValueError("attempts >= 1, timeout >= 0, initial > 0 and cap > 0 are needed")

    def backoff(self, attempt: int, *, hint: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (full jitter)."""
        window = min(self.cap, self.initial * 2 ** (attempt - 1))
        wait = random.uniform(0.0, window)  # noqa: S311 - jitter, not cryptography
        return wait if hint is None else max(hint, wait)


async def call(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: Policy,
    retry_on: Callable[[BaseException], bool],
    hint: Callable[[BaseException], float | None] = lambda _: None,
    clock: clock_.Clock | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, retrying errors for which ``retry_on`` is true.

    ``hint`` extracts a server's minimum wait from an error (``Retry-After``);
    ``on_retry(attempt, error, wait)`` is told about each retry before its wait.
    """
    clk = clock if clock is not None else clock_.SystemClock()

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return policy.backoff(state.attempt_number, hint=hint(exc) if exc else None)

    async def sleep(seconds: float) -> None:
        if not _testing:
            await clk.sleep(seconds)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc, state.upcoming_sleep)

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_before_delay(policy.timeout),
        wait=wait,
        retry=tenacity.retry_if_exception(retry_on),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    result: T = await retrying(fn)
    return result
