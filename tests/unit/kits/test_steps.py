"""A computation done a slice at a time: the slices, and its two runners.

Checks: slices cover the items in order, the last one short; ``finish`` returns the
result at once; ``paced`` lets other tasks run between two slices and returns the same.
"""

from __future__ import annotations

from dbquota.kits import steps
from tests.unit import turns


def total(items: list[int]) -> steps.Steps[int]:
    got = 0
    for part in steps.slices(items, size=3):
        got += sum(part)
        yield
    return got


def test_slices_cover_the_items_in_order() -> None:
    assert [list(p) for p in steps.slices(list(range(7)), size=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(steps.slices([], size=3)) == []


def test_finish_returns_the_result_at_once() -> None:
    assert steps.finish(total(list(range(10)))) == 45


async def test_paced_lets_other_tasks_run_between_slices() -> None:
    async with turns.counting() as seen:
        assert await steps.paced(total(list(range(10)))) == 45  # four slices
    assert seen.count >= 3
