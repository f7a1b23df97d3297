"""The circuit breaker: Closed -> Open -> HalfOpen -> exactly one probe -> Closed or Open.

Checks the consecutive-failure threshold, the count-based window (minimum calls, failure
rate, slow-call rate), that only failures the caller classifies as failures count, that
after the recovery timeout 50 concurrent callers produce exactly one probe (not 50), that
a cancelled probe frees the slot, that late results of calls made before a transition do
not move the state, listeners, and the testing switch. Time comes from a fake clock:
nothing sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from dbquota.kits import breaker
from dbquota.kits.clock import FakeClock


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


def state_of(b: breaker.CircuitBreaker) -> breaker.State:
    """The state, read through a call so that mypy does not narrow it between steps."""
    return b.state


def is_failure(exc: BaseException) -> bool:
    return isinstance(exc, Boom)


async def fail() -> None:
    raise Boom("down")


async def ok() -> str:
    return "ok"


def make(clock: FakeClock, **kw: float) -> breaker.CircuitBreaker:
    cfg = {"failure_threshold": 3, "recovery_timeout": 30.0, "window_size": 10}
    cfg.update(kw)
    cfg.setdefault("minimum_calls", 10)
    return breaker.CircuitBreaker(breaker.Config(**cfg), clock=clock)  # type: ignore[arg-type]


async def trip(b: breaker.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            await b.call(fail, is_failure=is_failure)


async def test_opens_at_the_consecutive_failure_threshold_and_refuses_without_calling() -> None:
    b = make(FakeClock())
    await trip(b, 2)
    assert state_of(b) == "Closed"
    await trip(b, 1)
    assert state_of(b) == "Open"
    called = False

    async def spy() -> None:
        nonlocal called
        called = True

    with pytest.raises(breaker.Refused) as refused:
        await b.call(spy, is_failure=is_failure)
    assert not called
    assert refused.value.retry_in == pytest.approx(30.0)


async def test_a_success_resets_the_consecutive_count() -> None:
    b = make(FakeClock())
    await trip(b, 2)
    assert await b.call(ok, is_failure=is_failure) == "ok"
    await trip(b, 2)
    assert state_of(b) == "Closed"
    assert b.consecutive_failures == 2


async def test_errors_that_are_not_failures_count_as_successes() -> None:
    b = make(FakeClock())

    async def client_error() -> None:
        raise Ignored("404")

    for _ in range(10):
        with pytest.raises(Ignored):
            await b.call(client_error, is_failure=is_failure)
    assert state_of(b) == "Closed"
    assert b.consecutive_failures == 0


async def test_half_open_after_the_recovery_timeout_and_a_good_probe_closes() -> None:
    clock = FakeClock()
    b = make(clock)
    await trip(b, 3)
    clock.advance(29.9)
    with pytest.raises(breaker.Refused):
        b.acquire()
    clock.advance(0.1)
    assert await b.call(ok, is_failure=is_failure) == "ok"
    assert state_of(b) == "Closed"


async def test_a_failed_probe_reopens_for_another_full_timeout() -> None:
    clock = FakeClock()
    b = make(clock)
    await trip(b, 3)
    clock.advance(30)
    await trip(b, 1)
    assert state_of(b) == "Open"
    assert b.retry_in() == pytest.approx(30.0)


async def test_fifty_concurrent_callers_after_the_timeout_make_exactly_one_probe() -> None:
    clock = FakeClock()
    b = make(clock)
    await trip(b, 3)
    clock.advance(31)
    calls = 0
    release = asyncio.Event()

    async def slow_ok() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "ok"

    async def caller() -> str:
        try:
            return await b.call(slow_ok, is_failure=is_failure)
        except breaker.Refused:
            return "refused"

    tasks = [asyncio.create_task(caller()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert results.count("ok") == 1
    assert results.count("refused") == 49
    assert state_of(b) == "Closed"


async def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    clock = FakeClock()
    b = make(clock)
    await trip(b, 3)
    clock.advance(30)
    hang = asyncio.Event()

    async def hanging() -> None:
        await hang.wait()

    probe = asyncio.create_task(b.call(hanging, is_failure=is_failure))
    await asyncio.sleep(0)
    assert state_of(b) == "HalfOpen"
    with pytest.raises(breaker.Refused):
        b.acquire()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await b.call(ok, is_failure=is_failure) == "ok"
    assert state_of(b) == "Closed"


async def test_late_results_from_before_a_transition_do_not_move_the_state() -> None:
    clock = FakeClock()
    b = make(clock)
    early = b.acquire()  # in flight while the breaker opens
    await trip(b, 3)
    clock.advance(30)
    probe = b.acquire()
    early.success()  # must not close the breaker: only the probe decides
    assert state_of(b) == "HalfOpen"
    probe.failure("still down")
    assert state_of(b) == "Open"


async def test_failure_rate_over_the_window_needs_the_minimum_calls() -> None:
    b = make(FakeClock(), failure_threshold=100, minimum_calls=6, window_size=6)
    for outcome in ("ok", "fail", "ok", "fail", "ok"):
        if outcome == "ok":
            await b.call(ok, is_failure=is_failure)
        else:
            await trip(b, 1)
    assert state_of(b) == "Closed"  # 2 of 5: below the minimum number of calls
    await trip(b, 1)
    assert state_of(b) == "Open"  # 3 of 6 = 50 %


async def test_slow_calls_open_the_breaker_when_the_slow_rate_is_on() -> None:
    clock = FakeClock()
    b = make(
        clock,
        minimum_calls=4,
        window_size=4,
        slow_call_duration=2.0,
        slow_call_rate_threshold=0.75,
    )

    async def slow() -> str:
        clock.advance(2.5)
        return "ok"

    for _ in range(3):
        await b.call(slow, is_failure=is_failure)
    await b.call(ok, is_failure=is_failure)
    assert state_of(b) == "Open"


async def test_slow_calls_do_not_count_when_the_slow_rate_is_off() -> None:
    clock = FakeClock()
    b = make(clock, minimum_calls=2, window_size=4, slow_call_duration=1.0)

    async def slow() -> str:
        clock.advance(5)
        return "ok"

    for _ in range(8):
        await b.call(slow, is_failure=is_failure)
    assert state_of(b) == "Closed"


async def test_listeners_hear_every_transition_with_a_reason() -> None:
    clock = FakeClock()
    b = make(clock)
    seen: list[tuple[str, str, str]] = []
    b.add_listener(lambda t: seen.append((t.old, t.new, t.reason)))
    await trip(b, 3)
    clock.advance(30)
    await b.call(ok, is_failure=is_failure)
    assert [(o, n) for o, n, _ in seen] == [
        ("Closed", "Open"),
        ("Open", "HalfOpen"),
        ("HalfOpen", "Closed"),
    ]
    assert "3 consecutive failures" in seen[0][2]
    assert "down" in seen[0][2]


async def test_a_failing_listener_does_not_break_the_breaker() -> None:
    b = make(FakeClock())

    def bad(_: breaker.Transition) -> None:
        raise RuntimeError("listener bug")

    b.add_listener(bad)
    await trip(b, 3)
    assert state_of(b) == "Open"


async def test_testing_switch_turns_the_recovery_wait_off() -> None:
    b = make(FakeClock())
    await trip(b, 3)
    with pytest.raises(breaker.Refused):
        b.acquire()
    with breaker.testing():
        assert breaker.is_testing()
        assert await b.call(ok, is_failure=is_failure) == "ok"
    assert not breaker.is_testing()
    assert state_of(b) == "Closed"


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        breaker.Config(failure_threshold=0)
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        breaker.Config(failure_rate_threshold=0.0)
