"""Loops that run for the life of the process, kept running: :class:`Supervisor`.

A loop such as a watch or a background writer runs in a task of its own. Before this
module, such a task that raised sat in a list that only shutdown awaited, with
``return_exceptions=True``, which marks the error retrieved: the loop was gone for good,
nothing was logged, and the probes stayed green. Here each loop runs inside a task that
outlives it:

- a loop that raises (or returns: these loops never should) is logged at ERROR with its
  traceback and started again after a delay that doubles with each failure in a row, from
  :attr:`Backoff.initial` to :attr:`Backoff.cap` seconds. A loop that had run for
  :attr:`Backoff.stable` seconds before it failed counts as failing for the first time.
  Before each restart ``on_restart`` runs: it rebuilds what the loop may have lost when it
  died (a key taken off a queue and not handled yet);
- cancelling the task (the process stopping) cancels the loop and ends the task, with
  nothing logged. A ``CancelledError`` that the loop raises itself, when no one cancelled
  its task, is a failure like any other;
- :meth:`Supervisor.problem` says what is wrong, for a liveness probe: a loop that has
  failed :attr:`Backoff.give_up` times in a row (restarting it in place did not help), one
  not started again well after its delay, or one whose task ended. The kubelet then
  restarts the container: a new process is the last resort, taken only once restarting
  the loop has not cured it.

Used by :mod:`dbquota.handlers.operating` for the watches, the reconciler and the claim
status publisher. :func:`stop` ends a loop that runs on its own (the billing sync, the
Leases' renewals) at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dbquota.kits import clock as clock_

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """When a loop that failed is started again, and when restarting no longer counts as a
    cure."""

    initial: float = 1.0
    """Seconds before the first restart after a failure."""
    cap: float = 30.0
    """Longest wait in seconds between a failure and the restart."""
    stable: float = 60.0
    """Seconds a loop must run for its next failure to count as its first again."""
    give_up: int = 5
    """Failures in a row that make :meth:`Supervisor.problem` report the loop (with the
    defaults, about 15 s after the first one for a loop that fails at once)."""
    overdue: float = 5.0
    """Seconds past its delay that a loop not started again is reported."""

    def delay(self, failures: int) -> float:
        """Seconds to wait before a restart after ``failures`` failures in a row."""
        return float(min(self.cap, self.initial * 2 ** max(0, failures - 1)))


@dataclass(eq=False)
class _Loop:
    """One supervised loop and how it has fared."""

    name: str
    run: Callable[[], Awaitable[None]]
    on_restart: Callable[[], None]
    started: float
    """When (monotonic) it was last started."""
    failures: int = 0
    """Failures in a row (reset by running :attr:`Backoff.stable` seconds)."""
    down_since: float | None = None
    """When it last failed, while it waits for its restart; None while it runs."""
    delay: float = 0.0
    """The wait before its pending restart."""
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Runs loops, each started again when it ends (module docstring)."""

    def __init__(self, *, backoff: Backoff | None = None, clock: clock_.Clock | None = None):
        self.backoff = backoff if backoff is not None else Backoff()
        self._clock = clock if clock is not None else clock_.SystemClock()
        self._loops: list[_Loop] = []

    def spawn(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        on_restart: Callable[[], None] = lambda: None,
    ) -> asyncio.Task[None]:
        """Start ``run()`` in a task named ``name`` that starts it again whenever it ends;
        cancel the task to stop it."""
        loop = _Loop(name=name, run=run, on_restart=on_restart, started=self._clock.monotonic())
        loop.task = asyncio.create_task(self._keep(loop), name=name)
        self._loops.append(loop)
        return loop.task

    def problem(self) -> str | None:
        """Why a loop cannot be counted on to run, or None while every loop runs or will be
        started again soon. A loop cancelled (stopped on purpose) is not a problem."""
        now = self._clock.monotonic()
        for loop in self._loops:
            if loop.task is None or loop.task.cancelled():
                continue
            if loop.task.done():
                return f"{loop.name} stopped for good"
            recent = loop.down_since is not None or now - loop.started < self.backoff.stable
            if recent and loop.failures >= self.backoff.give_up:
                return f"{loop.name} failed {loop.failures} times in a row"
            if loop.down_since is not None and (
                now - loop.down_since > loop.delay + self.backoff.overdue
            ):
                return f"{loop.name} has not been started again for {now - loop.down_since:.0f}s"
        return None

    async def _keep(self, loop: _Loop) -> None:
        while True:
            loop.started = self._clock.monotonic()
            failure = await self._run_once(loop)
            now = self._clock.monotonic()
            ran_long = now - loop.started >= self.backoff.stable
            loop.failures = 1 if ran_long else loop.failures + 1
            loop.delay = self.backoff.delay(loop.failures)
            loop.down_since = now
            logger.error(
                "%s %s; starting it again in %gs (%d failure(s) in a row)",
                loop.name,
                "ended" if failure is None else "failed",
                loop.delay,
                loop.failures,
                exc_info=failure,
            )
            del failure  # its traceback holds the loop's frames
            await self._clock.sleep(loop.delay)
            loop.down_since = None
            try:
                loop.on_restart()
            except Exception:  # the loop is started again all the same
                logger.exception("preparing %s to start again failed", loop.name)

    @staticmethod
    async def _run_once(loop: _Loop) -> BaseException | None:
        """Run the loop until it ends: its error, or None if it returned. A cancellation of
        this task goes through."""
        try:
            await loop.run()
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            return exc  # raised by the loop itself, not a stop
        except Exception as exc:  # noqa: BLE001 - any failure is logged and the loop restarted
            return exc
        return None


async def stop(task: asyncio.Task[None], *, what: str) -> None:
    """Cancel ``task``, a loop at shutdown, and wait until it has ended, so that nothing it
    does overlaps what the caller undoes next (a Lease deleted, a cache closed).

    The loop's own failure is logged as ``what`` having died, not raised: the caller still
    has its clean-up to do. A cancellation of the caller while it waits here is raised
    (``asyncio.wait`` does), where ``suppress(CancelledError)`` around ``await task``
    could not tell it from the task's own and swallowed it.
    """
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("%s had died: %s", what, exc, exc_info=exc)
