"""Time as an injectable dependency: the real clock, and a fake one for tests.

Everything that measures or waits (the circuit breaker, the ingestion loop, staleness)
takes a :class:`Clock`, so tests move time forward with :meth:`FakeClock.advance` instead
of sleeping. ``monotonic`` is for durations and deadlines; ``time`` is wall-clock epoch
seconds, for timestamps that are stored or published.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What dbquota needs from a clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for stored timestamps)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when told to; ``sleep`` waits until someone advances it.

    ``sleep`` yields to the event loop until :meth:`advance` has moved the time past its
    deadline, so a background loop that sleeps between iterations runs one iteration per
    ``advance`` in tests, with no real waiting.
    """

    def __init__(self, *, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._changed = asyncio.Event()
        self._sleepers = 0

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers whose deadline passed."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def sleepers(self) -> int:
        """Coroutines sleeping on this clock now (tests wait for a loop to be idle)."""
        return self._sleepers

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + max(0.0, seconds)
        self._sleepers += 1
        try:
            await asyncio.sleep(0)
            while self._now < deadline:
                await self._changed.wait()
        finally:
            self._sleepers -= 1
