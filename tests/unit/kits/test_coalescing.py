"""Coalescing: concurrent calls for one key share one call; other keys do not.

Checks that 50 concurrent callers of one key cause one call and all get its result (or
its error); that different keys run separately; that a finished call is not reused; and
that cancelling one waiter does not cancel the shared call for the others.
"""

from __future__ import annotations

import asyncio

import pytest

from dbquota.kits.coalescing import Coalescer


async def test_concurrent_callers_of_one_key_share_one_call() -> None:
    c: Coalescer[str, int] = Coalescer()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(c.run("k", work)) for _ in range(50)]
    await asyncio.sleep(0)
    assert len(c) == 1
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 50
    assert calls == 1
    assert len(c) == 0


async def test_different_keys_and_later_calls_are_separate() -> None:
    c: Coalescer[str, str] = Coalescer()
    calls: list[str] = []

    def work(key: str):  # type: ignore[no-untyped-def]
        async def run() -> str:
            calls.append(key)
            await asyncio.sleep(0)
            return key

        return run

    assert list(await asyncio.gather(c.run("a", work("a")), c.run("b", work("b")))) == ["a", "b"]
    assert await c.run("a", work("a")) == "a"
    assert calls == ["a", "b", "a"]


async def test_an_error_reaches_every_waiter() -> None:
    c: Coalescer[str, int] = Coalescer()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        raise ValueError("bad")

    tasks = [asyncio.create_task(c.run("k", work)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)


async def test_cancelling_one_waiter_leaves_the_call_running_for_the_others() -> None:
    c: Coalescer[str, int] = Coalescer()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 7

    first = asyncio.create_task(c.run("k", work))
    second = asyncio.create_task(c.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == 7
