"""The ingestion worker against a provider that trickles its answers, over real sockets.

The simulator has no trickle fault, so a tiny HTTP server in the test sends headers, then
its body one byte at a time, each byte well within the read timeout: httpx's read timeout
is per read and never fires. Checks: each attempt is cut off at its time limit (connect
plus request timeout), counted as the provider being unavailable, so the breaker opens
after the threshold as it does for a provider that is down, and the warm-up sync ends
(the worker is ready) with the error shown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dbquota import settings
from dbquota.kits import retrying
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting
from tests.unit.services.billing_api import make_cfg

pytestmark = pytest.mark.integration

THRESHOLD = 3  # make_cfg's breaker: Open at the third failure


class Trickle:
    """An HTTP server that answers 200 and then a byte every 20 ms, for ever."""

    def __init__(self) -> None:
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: 1000000\r\n\r\n")
            while not writer.is_closing():
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(trickle: Trickle) -> AsyncIterator[str]:
    server = await asyncio.start_server(trickle.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in trickle.writers:
            writer.close()
        await server.wait_closed()


@pytest.fixture(autouse=True)
def no_backoff_sleeps() -> object:
    with retrying.testing():
        yield


def config(url: str, tmp_path: Path) -> settings.Settings:
    """Two attempts per call, the breaker opening at its third failure (:func:`make_cfg`)."""
    return make_cfg(
        tmp_path,
        url=url,
        request_timeout=0.3,  # per read: each byte comes in 0.02 s
        connect_timeout=0.2,
    )


async def test_a_trickling_provider_opens_the_breaker_like_a_down_one(tmp_path: Path) -> None:
    trickle = Trickle()
    async with (
        serving(trickle) as url,
        ingesting.running(config(url, tmp_path), clock=FakeClock()) as ing,
    ):
        # the bound only keeps a regression from hanging the suite (three attempts of 0.5 s)
        await asyncio.wait_for(ing.wait_ready(), timeout=30)
        health = ing.snapshot().health
        assert health.circuit_state == "Open"
        assert "no complete answer within 0.5s" in health.last_error
        assert trickle.requests == THRESHOLD  # pricing twice, the listing once: then Open
