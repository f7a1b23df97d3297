"""First sightings on a monotonic clock.

Checks that a key's age counts from its first sight in its scope, not from any stamp;
that a look forgets the keys it was not asked about (memory bounded by the last look);
that a scope's object made again under its name starts afresh; and that a forgotten
scope keeps nothing.
"""

from __future__ import annotations

from dbquota.kits.sightings import Sightings


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_age_counts_from_the_first_sight_and_what_a_look_skips_is_forgotten() -> None:
    ticks = Ticks()
    seen: Sightings[str, str] = Sightings(ticks)
    first = seen.look("q")
    assert (first("a"), first("b")) == (0.0, 0.0)
    first.end()
    ticks.now += 7
    second = seen.look("q")
    assert (second("a"), second("a"), second("c")) == (7.0, 7.0, 0.0)
    second.end()  # "b" was not asked about: gone
    assert len(seen) == 2
    ticks.now += 1
    third = seen.look("q")
    assert (third("a"), third("b"), third("c")) == (8.0, 0.0, 1.0)
    third.end()


def test_a_new_incarnation_starts_afresh_and_a_forgotten_scope_keeps_nothing() -> None:
    ticks = Ticks()
    seen: Sightings[str, str] = Sightings(ticks)
    look = seen.look("q", "uid-1")
    look("a")
    look.end()
    ticks.now += 5
    again = seen.look("q", "uid-2")  # deleted and made again under its name
    assert again("a") == 0.0
    again.end()
    seen.forget("q", "uid-1")  # told late of the old one: the new one's stay
    assert len(seen) == 1
    seen.forget("q")
    assert len(seen) == 0
    empty = seen.look("q")
    empty.end()
    assert len(seen) == 0
