"""Escrow: budget a webhook replica holds ahead of time, so admissions need no write first.

Reserving every admission by compare-and-swap on the quota's status before answering
(:mod:`dbquota.services.reserving`) is exact, but it puts one apiserver write on every
review's path. Escrow takes it off (O'Neil's escrow method, as in sharded rate limiters):
a replica carves a share of the quota's free room out *by compare-and-swap*, recorded on
the status as an :class:`Escrow` entry in its own name, and then admits claims that fit in
what is left of its share from memory, writing their reservations in batches a moment
later. The invariant the exact path keeps still holds on the apiserver at every instant:

    observed + reserved + every replica's escrow <= budget (and the hard caps)

because each local admission moves an amount from the replica's escrow to a reservation,
and one status write moves it on the apiserver (reservations up, escrow down, together).
Other replicas count every escrow but their own as used, so no two replicas can promise
the same budget.

An escrow is only as good as its holder. Each replica renews a Lease
(:mod:`dbquota.services.leasing`) and admits from its escrow only while its last renewal
is younger than the renew deadline, which is shorter than the lease duration by more
than any clock skew. Once the lease has lapsed, as seen by the reconciler, the holder
cannot be admitting from it any more: the reconciler drops the entry (:func:`prune`) and,
in the same write, *adopts* the claims that exist with no price and no reservation
(:func:`dbquota.domain.reservations.orphans`), which is what covers admissions whose
reservations the holder never wrote.

Dimensions: money always; the claim count and storage only when the quota caps them
(:class:`Allowance` keeps ``None`` for an uncapped dimension). Admissions that StrictCap
prices while billing is degraded, and every denial, take the exact path: escrow never
holds StrictCap's degraded allowance, so its counts come from written reservations only.

Pure functions over the status as read; the reservation service calls them inside its
compare-and-swap rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dbquota.domain import quotas
from dbquota.domain.resources import Escrow


@dataclass(frozen=True)
class Allowance:
    """An amount in every dimension a quota limits; ``None``: the quota does not cap it."""

    cost: float = 0.0
    claims: int | None = None
    storage_gib: int | None = None

    def fits(self, take: Allowance) -> bool:
        """Whether ``take`` fits in this allowance in every capped dimension."""
        return (
            take.cost <= self.cost + 1e-9
            and (self.claims is None or (take.claims or 0) <= self.claims)
            and (self.storage_gib is None or (take.storage_gib or 0) <= self.storage_gib)
        )

    def minus(self, take: Allowance) -> Allowance:
        """What is left after ``take`` (which must fit)."""
        return Allowance(
            cost=round(max(0.0, self.cost - take.cost), 2),
            claims=None if self.claims is None else max(0, self.claims - (take.claims or 0)),
            storage_gib=(
                None
                if self.storage_gib is None
                else max(0, self.storage_gib - (take.storage_gib or 0))
            ),
        )

    def plus(self, more: Allowance) -> Allowance:
        """Both together (a dimension capped in either counts in the sum)."""
        if more == NOTHING:
            return self
        claims = None if self.claims is None and more.claims is None else 0
        storage = None if self.storage_gib is None and more.storage_gib is None else 0
        return Allowance(
            cost=round(self.cost + more.cost, 2),
            claims=None if claims is None else (self.claims or 0) + (more.claims or 0),
            storage_gib=(
                None if storage is None else (self.storage_gib or 0) + (more.storage_gib or 0)
            ),
        )

    @property
    def empty(self) -> bool:
        """Whether it holds nothing worth keeping (no money, or no claim it could admit)."""
        return self.cost <= 0.0 or self.claims == 0

    @property
    def nothing(self) -> bool:
        """Whether it holds nothing at all in any dimension."""
        return self.cost <= 0.0 and not self.claims and not self.storage_gib


NOTHING = Allowance()


def take(*, cost: float, new_claims: int, storage_gib: int) -> Allowance:
    """What admitting one request draws: its cost, the claims and GiB it adds."""
    return Allowance(
        cost=max(0.0, cost), claims=max(0, new_claims), storage_gib=max(0, storage_gib)
    )


def entry(*, holder: str, allowance: Allowance, generation: int) -> Escrow:
    """The status entry recording ``allowance`` as held by ``holder``."""
    held = Escrow(holder=holder, cost=round(allowance.cost, 2), generation=generation)
    if allowance.claims is not None:
        held["claims"] = allowance.claims
    if allowance.storage_gib is not None:
        held["storageGiB"] = allowance.storage_gib
    return held


def held_by_others(entries: Iterable[Escrow], *, holder: str) -> Allowance:
    """The sum of every escrow on the status but ``holder``'s, lapsed holders' included.

    A lapsed holder's escrow still counts: it may have admitted claims whose reservations
    it never wrote. Only the reconciler lets it go (:func:`prune`), adopting those claims
    in the same write.
    """
    cost, claims, storage = 0.0, 0, 0
    for held in entries:
        if held.get("holder") == holder:
            continue
        cost += max(0.0, float(held.get("cost", 0.0)))
        claims += max(0, int(held.get("claims", 0)))
        storage += max(0, int(held.get("storageGiB", 0)))
    return Allowance(cost=round(cost, 2), claims=claims, storage_gib=storage)


def with_held(usage: quotas.Usage, held: Allowance) -> quotas.Usage:
    """``usage`` with ``held`` (other replicas' escrow) counted as reserved."""
    if held == NOTHING:
        return usage
    return replace(
        usage,
        reserved=round(usage.reserved + held.cost, 2),
        escrowed=round(usage.escrowed + held.cost, 2),
        claims=usage.claims + (held.claims or 0),
        storage_gib=usage.storage_gib + (held.storage_gib or 0),
    )


def free(*, quota: quotas.QuotaSpec, usage: quotas.Usage) -> Allowance:
    """The room left under the budget and the hard caps, given ``usage`` (escrow included)."""
    hard = quota.hard
    return Allowance(
        cost=round(max(0.0, quotas.remaining(quota=quota, usage=usage)), 2),
        claims=None if hard.claims is None else max(0, hard.claims - usage.claims),
        storage_gib=(
            None if hard.storage_gib is None else max(0, hard.storage_gib - usage.storage_gib)
        ),
    )


def grant(*, room: Allowance, share: float, typical: Allowance) -> Allowance:
    """The escrow to take out of ``room``: ``share`` of it in every dimension.

    Nothing when that share would not fit a ``typical`` admission (the last one seen): an
    escrow too small to use only keeps budget from the other replicas.
    """
    if share <= 0.0:
        return NOTHING
    granted = Allowance(
        cost=math.floor(room.cost * share * 100) / 100,
        claims=None if room.claims is None else math.floor(room.claims * share),
        storage_gib=None if room.storage_gib is None else math.floor(room.storage_gib * share),
    )
    if granted.empty or not granted.fits(typical):
        return NOTHING
    return granted


def prune(
    entries: Iterable[Escrow], *, live: Callable[[str], bool]
) -> tuple[list[Escrow], list[Escrow]]:
    """Split escrow entries into those of live holders and those of holders whose lease
    has lapsed (``live(holder)`` is false)."""
    kept: list[Escrow] = []
    dropped: list[Escrow] = []
    for held in entries:
        (kept if live(str(held.get("holder", ""))) else dropped).append(held)
    return kept, dropped


def entries_of(status: Mapping[str, Any]) -> list[Escrow]:
    """The escrow entries of a quota status (none on an older status)."""
    return list(status.get("escrow") or [])
