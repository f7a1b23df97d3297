"""Retries: full-jitter backoff, attempt and time caps, Retry-After, the testing switch.

Checks that only retryable errors are retried, at most ``attempts`` times; that each wait
is drawn from [0, min(cap, initial x 2^(n-1))]; that a server's hint raises the wait to at
least the hint; that a wait which would end past the total timeout stops retrying; and
that the testing switch skips the sleeps but not the attempts. Sleeps go to a recording
clock: nothing waits for real.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest

from dbquota.kits import retrying


class Transient(Exception):
    def __init__(self, hint: float | None = None) -> None:
        super().__init__("transient")
        self.hint = hint


class Permanent(Exception):
    pass


class RecordingClock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return 0.0

    def time(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def flaky(failures: list[Exception]) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if failures:
            raise failures.pop(0)
        return "done"

    return calls, fn


def hint_of(exc: BaseException) -> float | None:
    return exc.hint if isinstance(exc, Transient) else None


def retry_transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient)


async def test_retries_transient_errors_until_success() -> None:
    clock = RecordingClock()
    calls, fn = flaky([Transient(), Transient()])
    policy = retrying.Policy(attempts=4, timeout=60)
    result = await retrying.call(fn, policy=policy, retry_on=retry_transient, clock=clock)
    assert result == "done"
    assert calls[0] == 3
    assert len(clock.slept) == 2


async def test_stops_after_the_attempt_cap_and_raises_the_last_error() -> None:
    clock = RecordingClock()
    calls, fn = flaky([Transient() for _ in range(10)])
    with pytest.raises(Transient):
        await retrying.call(
            fn,
            policy=retrying.Policy(attempts=3, timeout=60),
            retry_on=retry_transient,
            clock=clock,
        )
    assert calls[0] == 3


async def test_does_not_retry_other_errors() -> None:
    calls, fn = flaky([Permanent()])
    with pytest.raises(Permanent):
        await retrying.call(
            fn,
            policy=retrying.Policy(attempts=5),
            retry_on=retry_transient,
            clock=RecordingClock(),
        )
    assert calls[0] == 1


def test_backoff_is_full_jitter_within_the_exponential_window() -> None:
    random.seed(7)
    policy = retrying.Policy(initial=0.5, cap=4.0)
    for attempt, window in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        waits = [policy.backoff(attempt) for _ in range(300)]
        assert all(0.0 <= w <= window for w in waits)
        assert min(waits) < window * 0.1  # full jitter reaches down to ~0
        assert max(waits) > window * 0.9


async def test_retry_after_raises_the_wait_to_at_least_the_hint() -> None:
    clock = RecordingClock()
    calls, fn = flaky([Transient(hint=3.0), Transient(hint=2.0)])
    await retrying.call(
        fn,
        policy=retrying.Policy(attempts=5, timeout=60, initial=0.1, cap=0.2),
        retry_on=retry_transient,
        hint=hint_of,
        clock=clock,
    )
    assert calls[0] == 3
    assert clock.slept[0] >= 3.0
    assert clock.slept[1] >= 2.0


async def test_a_wait_past_the_total_timeout_stops_retrying() -> None:
    clock = RecordingClock()
    calls, fn = flaky([Transient(hint=30.0), Transient()])
    with pytest.raises(Transient):
        await retrying.call(
            fn,
            policy=retrying.Policy(attempts=5, timeout=10),
            retry_on=retry_transient,
            hint=hint_of,
            clock=clock,
        )
    assert calls[0] == 1
    assert clock.slept == []


async def test_on_retry_hears_each_retry_with_its_wait() -> None:
    seen: list[tuple[int, float]] = []
    _calls, fn = flaky([Transient(hint=1.5)])
    await retrying.call(
        fn,
        policy=retrying.Policy(attempts=3, timeout=60),
        retry_on=retry_transient,
        hint=hint_of,
        clock=RecordingClock(),
        on_retry=lambda n, _exc, wait: seen.append((n, wait)),
    )
    assert len(seen) == 1
    assert seen[0][0] == 1
    assert seen[0][1] >= 1.5


async def test_testing_switch_skips_sleeps_but_keeps_attempts() -> None:
    clock = RecordingClock()
    calls, fn = flaky([Transient(), Transient(), Transient()])
    with retrying.testing(), pytest.raises(Transient):
        await retrying.call(
            fn,
            policy=retrying.Policy(attempts=3, timeout=60),
            retry_on=retry_transient,
            clock=clock,
        )
    assert calls[0] == 3
    assert clock.slept == []


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        retrying.Policy(attempts=0)
