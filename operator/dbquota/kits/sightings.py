"""How long this process has seen something, on its own monotonic clock.

A wall-clock stamp written by another process says when that process thought something
began, and two nodes' clocks can differ by seconds or minutes (NTP can also step either).
How long this process has seen something, counted from its first sight on its monotonic
clock, needs no other clock: it is a lower bound of the real age (the thing began before
it was seen), and no skew can make it longer. A process that starts looking late (a new
leader) counts from its first look.

:class:`Sightings` keeps, per scope (one object's things), when each key was first seen.
Each :meth:`Sightings.look` ages the keys asked of it at one instant and, once it ends
(:meth:`Look.end`), forgets the keys of that scope it was not asked about: what is kept
is bounded by what the last look saw. The reconciler ages reservations and claims so, and
times how long confirmed reservations wait to be dropped
(:mod:`dbquota.services.reconciling`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)
K = TypeVar("K", bound=Hashable)


class Look(Generic[K]):
    """One look at a scope: :meth:`__call__` gives each key's age at the look's instant."""

    def __init__(
        self,
        before: dict[K, float],
        *,
        now: float,
        keep: Callable[[dict[K, float]], None],
    ) -> None:
        self._before = before
        self._now = now
        self._keep = keep
        self._seen: dict[K, float] = {}

    def __call__(self, key: K) -> float:
        """Seconds since ``key`` was first seen (0.0 on its first sight)."""
        first = self._seen.get(key)
        if first is None:
            first = self._seen[key] = self._before.get(key, self._now)
        return self._now - first

    def end(self) -> None:
        """Keep the keys asked about in this look, and only those."""
        self._keep(self._seen)


class Sightings(Generic[S, K]):
    """When each key of each scope was first seen (module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first: dict[S, tuple[str, dict[K, float]]] = {}

    def look(self, scope: S, incarnation: str = "") -> Look[K]:
        """A look at ``scope`` now. Sightings made under another ``incarnation`` (the
        scope's object deleted and made again under its name) do not carry over."""
        kept = self._first.get(scope)
        before = kept[1] if kept is not None and kept[0] == incarnation else {}
        keep = functools.partial(self._keep, scope, incarnation)
        return Look(before, now=self._clock(), keep=keep)

    def _keep(self, scope: S, incarnation: str, seen: dict[K, float]) -> None:
        if seen:
            self._first[scope] = (incarnation, seen)
        else:
            self._first.pop(scope, None)

    def forget(self, scope: S, incarnation: str = "") -> None:
        """``scope`` is gone (only its sightings under ``incarnation``, when given)."""
        kept = self._first.get(scope)
        if kept is not None and (not incarnation or kept[0] == incarnation):
            del self._first[scope]

    def __len__(self) -> int:
        """Keys remembered, over all scopes."""
        return sum(len(seen) for _, seen in self._first.values())
