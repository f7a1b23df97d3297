"""How often other tasks got to run: :func:`counting`, for tests of code that must not hold
the event loop (admission reviews are served by the same loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Turns:
    """The number of times a task that does nothing but yield was run."""

    def __init__(self) -> None:
        self.count = 0


@asynccontextmanager
async def counting() -> AsyncIterator[Turns]:
    """Count, within the block, the turns of a task that yields at every turn."""
    turns = Turns()

    async def ticker() -> None:
        while True:
            turns.count += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    turns.count = 0
    try:
        yield turns
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
