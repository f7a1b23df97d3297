"""Long pure computations done a slice at a time, so that an event loop serves others between.

A computation that walks every claim of a namespace is written as a generator that
yields after each slice of :data:`SLICE` items (:func:`slices`). :func:`finish` runs it
at once (tests, callers with no event loop); :func:`paced` runs it on the event loop and
lets every callback that is ready run between two slices. The reconciler recounts a
quota from its namespace's claims (:func:`dbquota.domain.statuses.quota_status`):
10,000 claims take about 7 ms of a core in one piece, longer on a busy machine, and every
admission review that arrived meanwhile waited for all of it (``bench/README.md``).
Sliced, a review waits for one slice at most.

Why by hand: asyncio has no way to yield from inside synchronous code. A thread would
not help: pure Python holds the GIL, which the event loop would get back only every
``sys.getswitchinterval()`` (5 ms), each time it let go of it (every read and write).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterator, Sequence
from typing import TypeAlias, TypeVar

T = TypeVar("T")

Steps: TypeAlias = Generator[None, None, T]
"""A computation that yields between slices and returns its result."""

SLICE = 500
"""Items per slice: a few hundred microseconds of work on this project's bench machine."""


def slices(items: Sequence[T], size: int = SLICE) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def finish(work: Steps[T]) -> T:
    """Run ``work`` to its end at once and return its result."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def paced(work: Steps[T]) -> T:
    """Run ``work``, letting the event loop run whatever is ready after each slice."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)
