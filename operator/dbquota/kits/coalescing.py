"""Coalesce concurrent calls for the same key into one (a "single flight").

While a call for ``key`` is in flight, later callers for that key await the same result
instead of starting their own; once it finishes, the next caller starts a fresh one. The
shared work runs in its own task, so one caller being cancelled does not cancel it for the
others. Used by :mod:`dbquota.services.fetching` for per-cluster billing fetches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()  # mark it retrieved even when every waiter went away


class Coalescer(Generic[K, V]):
    """One in-flight call per key; concurrent callers share its outcome."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        """Calls in flight now."""
        return len(self._inflight)

    async def run(self, key: K, fn: Callable[[], Awaitable[V]]) -> V:
        """The outcome of ``fn()``, or of the call for ``key`` already in flight."""
        task = self._inflight.get(key)
        if task is None:

            async def work() -> V:
                try:
                    return await fn()
                finally:
                    self._inflight.pop(key, None)

            task = asyncio.ensure_future(work())
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        return await asyncio.shield(task)
