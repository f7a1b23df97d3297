"""Keys that fall due at given times, handed out earliest first: :class:`DueQueue`.

The reconciler (:mod:`dbquota.services.reconciling`) keeps one entry per dirty quota,
due once its minimum interval since the last refresh has passed. Scanning every dirty
quota on every wake-up cost O(quotas) per event: with 100 busy quotas that scan was a
tenth of the operator's CPU (``bench/README.md``). Here a key costs O(log n) when it is
put and when it falls due.

Why by hand: ``heapq`` orders entries but cannot move one, and ``sched`` runs callbacks
in a blocking loop. Moving a key earlier pushes a new entry and leaves the old one to be
skipped when it surfaces (the lazy deletion of the ``heapq`` documentation's priority
queue recipe), so a key is handed out once, at the earliest time it was put for.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DueQueue(Generic[K]):
    """Keys, each due at a time; :meth:`pop_due` hands out those due, earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._at: dict[K, float] = {}  # the live entry's time, per key
        self._seq = itertools.count()  # ties in time go first in, first out

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def put(self, key: K, at: float) -> bool:
        """``key`` falls due at ``at``, unless it already falls due no later; whether
        that made it due earlier (or added it)."""
        if at >= self._at.get(key, math.inf):
            return False
        self._at[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        return True

    def discard(self, key: K) -> None:
        """``key`` no longer falls due (its entry is skipped when it surfaces)."""
        self._at.pop(key, None)

    def next_at(self) -> float | None:
        """When the earliest key falls due; None when there is none."""
        self._skip_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> K | None:
        """The earliest key due at ``now``, taken out; None when none is."""
        self._skip_stale()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, key = heapq.heappop(self._heap)
        del self._at[key]
        return key

    def _skip_stale(self) -> None:
        heap = self._heap
        while heap and self._at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
