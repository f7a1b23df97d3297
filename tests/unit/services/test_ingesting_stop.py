"""Stopping the ingestion worker.

Checks: a caller of ``stop()`` that is itself cancelled while the loop winds down is
cancelled (its cut-off is not swallowed), and a later ``stop()`` still waits for the
loop; a loop that had died is logged by ``stop()``, not raised out of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting
from tests.unit.services.billing_api import Provider, make_cfg


class SlowToUnwind:
    """A provider whose first request hangs and, once cancelled, takes until ``release``
    to unwind (a transport closing its connection, say)."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.unwinding = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.unwinding.set()
            await self.release.wait()
            raise
        raise AssertionError("unreachable")


async def test_a_stop_cancelled_while_the_loop_winds_down_is_cancelled(
    tmp_path: Path, clock: FakeClock
) -> None:
    provider = SlowToUnwind()
    async with ingesting.running(
        make_cfg(tmp_path), clock=clock, transport=httpx.MockTransport(provider)
    ) as ing:
        await asyncio.wait_for(provider.sent.wait(), timeout=10)  # the warm-up's request
        stopper = asyncio.create_task(ing.stop())
        await asyncio.wait_for(provider.unwinding.wait(), timeout=10)
        stopper.cancel()  # our caller's shutdown is cut off
        for _ in range(10):
            await asyncio.sleep(0)
        provider.release.set()
        await asyncio.wait({stopper})
        assert stopper.cancelled()
    # leaving the block stopped it again, waiting for the loop this time


class Breaking(FakeClock):
    """A clock that breaks the first time the loop sleeps (a bug kills the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.broke = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.broke.set()
        raise RuntimeError("the clock broke")


async def test_a_loop_that_had_died_is_logged_by_stop_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Breaking()
    async with ingesting.running(
        make_cfg(tmp_path), clock=clock, transport=httpx.MockTransport(Provider(2))
    ):
        await asyncio.wait_for(clock.broke.wait(), timeout=10)  # the loop raises as it sets it
    assert "the billing sync loop had died" in caplog.text
    assert "the clock broke" in caplog.text
