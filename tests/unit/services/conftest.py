"""Fixtures for the ingestion worker's tests: a fake clock, backoff sleeps off, and
``start``, which runs :func:`dbquota.services.ingesting.running` against a
:class:`~tests.unit.services.billing_api.Provider` and stops it after the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dbquota.kits import retrying
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting
from tests.unit.services.billing_api import Provider, make_cfg


@pytest.fixture(autouse=True)
def no_backoff_sleeps() -> Iterator[None]:
    with retrying.testing():
        yield


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def start(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Callable[..., object]]:
    stack: list[object] = []

    async def run(provider: Provider, **billing: object) -> ingesting.Ingestor:
        cm = ingesting.running(
            make_cfg(tmp_path, **billing), clock=clock, transport=httpx.MockTransport(provider)
        )
        ingestor = await cm.__aenter__()
        stack.append(cm)
        await ingestor.wait_ready() if provider.mode == "ok" else await asyncio.sleep(0.05)
        return ingestor

    yield run
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)  # type: ignore[attr-defined]
