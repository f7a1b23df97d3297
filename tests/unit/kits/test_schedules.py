"""DueQueue: keys handed out when due, earliest first, once each, moved only earlier.

Checks: keys come out in time order (ties first in, first out) and only once due; putting
a key again for a later time changes nothing, for an earlier time moves it; a discarded
key never comes out; a key taken out can be put again; ``next_at`` skips entries left by
moves; and, against a dict of the earliest time per key, any sequence of puts, discards
and pops hands out the same keys at the same times (hypothesis).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dbquota.kits.schedules import DueQueue


def test_keys_come_out_when_due_earliest_first_ties_in_order() -> None:
    queue: DueQueue[str] = DueQueue()
    for key, at in (("c", 3.0), ("a", 1.0), ("b", 1.0), ("d", 9.0)):
        assert queue.put(key, at)
    assert queue.pop_due(0.5) is None
    assert [queue.pop_due(3.0) for _ in range(4)] == ["a", "b", "c", None]
    assert queue.next_at() == 9.0
    assert len(queue) == 1
    assert "d" in queue


def test_a_key_moves_only_earlier_and_comes_out_once() -> None:
    queue: DueQueue[str] = DueQueue()
    assert queue.put("k", 5.0)
    assert not queue.put("k", 7.0)  # later: it stays due at 5
    assert queue.put("k", 2.0)  # earlier: moved
    assert queue.next_at() == 2.0
    assert queue.pop_due(2.0) == "k"
    assert queue.pop_due(100.0) is None  # the entry at 5 was left behind, and skipped
    assert queue.next_at() is None


def test_a_discarded_key_never_comes_out_and_can_be_put_again() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.put("k", 1.0)
    queue.discard("k")
    queue.discard("never put")
    assert queue.pop_due(10.0) is None
    assert len(queue) == 0
    assert queue.put("k", 4.0)
    assert queue.pop_due(10.0) == "k"


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from("abcde"), st.integers(0, 20)),
        st.tuples(st.just("discard"), st.sampled_from("abcde"), st.just(0)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 20)),
    ),
    max_size=60,
)


@given(operations)
def test_it_agrees_with_the_earliest_time_per_key(ops: list[tuple[str, str, int]]) -> None:
    queue: DueQueue[str] = DueQueue()
    model: dict[str, tuple[float, int]] = {}  # key -> (time, order of the put that set it)
    for order, (op, key, value) in enumerate(ops):
        if op == "put":
            moved = value < model.get(key, (float("inf"), 0))[0]
            assert queue.put(key, float(value)) is moved
            if moved:
                model[key] = (float(value), order)
        elif op == "discard":
            queue.discard(key)
            model.pop(key, None)
        else:
            due = [k for k, at in model.items() if at[0] <= value]
            expected = min(due, key=lambda k: model[k]) if due else None
            assert queue.pop_due(float(value)) == expected
            if expected is not None:
                del model[expected]
        assert len(queue) == len(model)
        assert queue.next_at() == (min(at for at, _ in model.values()) if model else None)
