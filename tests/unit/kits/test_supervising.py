"""Supervised loops: one that ends is logged and started again, later each time.

Checks, on a fake clock, that a loop that raises is logged at ERROR with its traceback
and started again after 1 s, then 2 s, then 4 s, with ``on_restart`` run before each
restart; that one that keeps failing is reported (:meth:`Supervisor.problem`) until it has
run long enough again, and one not started again in time is reported too; that a loop
that returns, or raises ``CancelledError`` itself, is started again (an ``on_restart`` that
raises does not prevent it); and that cancelling its task stops it with nothing logged
and nothing reported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from dbquota.kits.clock import FakeClock
from dbquota.kits.supervising import Backoff, Supervisor


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (no real time passes)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def reach(runs: list[int], n: int) -> None:
    """Let the loop run until the worker has been started ``n`` times."""
    await until(lambda: runs[0] == n)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_failed_loop_is_logged_and_started_again_later_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    supervisor = Supervisor(clock=clock)
    runs, restarts = [0], [0]
    forever = asyncio.Event()

    async def worker() -> None:
        runs[0] += 1
        if runs[0] <= 3:
            raise KeyError("a bug")
        await forever.wait()

    def on_restart() -> None:
        restarts[0] += 1

    task = supervisor.spawn("worker", worker, on_restart=on_restart)
    for failures, delay in enumerate([1.0, 2.0, 4.0], start=1):
        await until(lambda: clock.sleepers == 1)
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR][failures - 1 :]
        assert record.getMessage() == (
            f"worker failed; starting it again in {delay:g}s ({failures} failure(s) in a row)"
        )
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], KeyError)
        clock.advance(delay - 0.01)
        await asyncio.sleep(0)
        assert (runs[0], restarts[0]) == (failures, failures - 1)  # not yet
        clock.advance(0.01)
        await reach(runs, failures + 1)
        assert restarts[0] == failures
    await until(lambda: clock.sleepers == 0)
    assert supervisor.problem() is None
    await stop(task)
    assert task.cancelled()
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 3
    assert supervisor.problem() is None


async def test_a_loop_that_keeps_failing_is_reported_until_it_runs_long_enough() -> None:
    clock = FakeClock()
    supervisor = Supervisor(backoff=Backoff(give_up=3, stable=60.0), clock=clock)
    failing = [True]
    runs = [0]

    async def worker() -> None:
        runs[0] += 1
        if failing[0]:
            raise OSError("no")
        await asyncio.Event().wait()

    task = supervisor.spawn("worker", worker)
    for run, delay in ((1, 1.0), (2, 2.0)):
        await until(lambda: clock.sleepers == 1)
        assert supervisor.problem() is None
        clock.advance(delay)
        await reach(runs, run + 1)
    await until(lambda: clock.sleepers == 1)
    assert supervisor.problem() == "worker failed 3 times in a row"
    failing[0] = False
    clock.advance(4.0)
    await until(lambda: runs[0] == 4)
    assert supervisor.problem() == "worker failed 3 times in a row"  # not cured yet
    clock.advance(60.0)
    assert supervisor.problem() is None
    await stop(task)


async def test_a_loop_not_started_again_in_time_is_reported() -> None:
    clock = FakeClock()
    supervisor = Supervisor(backoff=Backoff(overdue=5.0), clock=clock)

    async def worker() -> None:
        raise OSError("no")

    task = supervisor.spawn("worker", worker)
    await until(lambda: clock.sleepers == 1)
    clock.advance(6.5)  # its restart is due after 1 s: the event loop has not got to it
    assert supervisor.problem() == "worker has not been started again for 6s"
    await stop(task)


async def test_a_loop_that_returns_or_cancels_itself_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    supervisor = Supervisor(clock=clock)
    runs = [0]

    async def worker() -> None:
        runs[0] += 1
        if runs[0] == 2:
            raise asyncio.CancelledError  # an inner task's cancellation let through
        if runs[0] == 3:
            await asyncio.Event().wait()

    def on_restart() -> None:
        raise RuntimeError("rebuilding failed")

    task = supervisor.spawn("worker", worker, on_restart=on_restart)
    for run, delay in ((1, 1.0), (2, 2.0)):
        await until(lambda: clock.sleepers == 1)
        assert runs[0] == run
        clock.advance(delay)
        await reach(runs, run + 1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("worker ended; starting it again in 1s")
    assert messages[1] == "preparing worker to start again failed"
    assert messages[2].startswith("worker failed; starting it again in 2s")
    assert not task.done()
    await stop(task)
    assert task.cancelled()
    assert len(caplog.records) == 4  # the stop logged nothing
