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

A replica takes escrow only once a quota is busy: the second admission request within
:attr:`Account.idle_after` of the one before (:meth:`Account.demand`). A quota that sees
a claim less often is served by the exact path, one write per claim, where a grant would
cost two (the grant, and giving it back once idle). How long an escrow is kept without
admissions depends on how near the budget the quota is (:attr:`Account.roomy`, set by the
ledger from its view):

- *Near the budget* (what is free outside every escrow would not fit ``QUIET_MARGIN``
  admissions like the last one), ``idle_return``: another replica's request that only
  this escrow keeps out waits for it, so it goes back soon.
- *Far from it*, ``quiet_return``: nobody else can be kept out by it, so a quota that
  sees a claim every few seconds keeps its escrow between them. Its admissions then
  need no write before the answer, and with the leader's lazy flushes (below) several
  share one write.

What escrow admitted is written ``flush_interval`` after the last write, or on the
leader ``lazy_flush`` after it while each is a DatabaseClaim that exists (priced, or to
be) and fewer than ``lazy_most`` wait (each counts toward the most a quota holds until
written): the leader prices its own admissions from memory (:mod:`dbquota.services.
publishing`), so its write changes no sum. Another kind's object (its ``Priced`` Event
waits for the write), or a claim not there ``flush_interval`` after its admission (it may
never be created; only reservations on the quota are released), is written then.

Dimensions: money always; the claim count and storage only when the quota caps them
(:class:`Allowance` keeps ``None`` for an uncapped dimension). Admissions that StrictCap
prices while billing is degraded, and every denial, take the exact path: escrow never
holds StrictCap's degraded allowance, so its counts come from written reservations only.

Pure functions over the status as read; the reservation service calls them inside its
compare-and-swap rounds.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dbquota.domain import quotas
from dbquota.domain.resources import Escrow, Reservation


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

    def times(self, n: int) -> Allowance:
        """``n`` of this allowance together."""
        return Allowance(
            cost=round(self.cost * n, 2),
            claims=None if self.claims is None else self.claims * n,
            storage_gib=None if self.storage_gib is None else self.storage_gib * n,
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

QUIET_MARGIN = 4
"""A quota is far from its budget while what is free outside every escrow fits this many
admissions like the last one (:attr:`Account.roomy`)."""


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


@dataclass
class Account:
    """One replica's escrow on one quota, and the admissions it served not yet written.

    The state machine of the escrow path, apart from the compare-and-swap writer that
    moves it to the apiserver (:class:`dbquota.services.reserving.Ledger`): what the
    replica may still admit from memory, under which quota generation, whether an entry
    of its own is on the status, what it admitted and has not written, and when it last
    admitted (to give the escrow back when idle). Times are the caller's monotonic
    seconds; nothing here reads a clock.
    """

    share: float
    """The share of the quota's free room to take (``--escrow-share``; 0: no escrow)."""
    flush_interval: float
    """Seconds between two writes of what was admitted from escrow."""
    idle_return: float
    """Seconds without admissions after which the escrow is given back near the budget."""
    lazy_flush: float = 0.0
    """Seconds between those writes while this replica leads (0: ``flush_interval``)."""
    lazy_most: int = 0
    """Admissions waiting past which the leader does not wait ``lazy_flush`` (0: none)."""
    quiet_return: float = 0.0
    """Seconds without admissions after which the escrow is given back far from the
    budget (0: ``idle_return``)."""
    roomy: bool = False
    """Whether the quota is far from its budget (module docstring), as last seen."""
    allowance: Allowance = NOTHING
    """What may still be admitted from memory."""
    generation: int = -1
    """The quota generation the allowance was granted under."""
    on_server: bool = False
    """Whether the quota's status holds an escrow entry of ours."""
    unwritten: dict[str, Reservation] = field(default_factory=dict)
    """Reservations admitted from escrow, by uid, not written yet."""
    unseen: deque[tuple[str, float]] = field(default_factory=deque)
    """Those admissions (uid, when) in order, popped from the front once their claim appears."""
    typical: Allowance = NOTHING
    """What the last admission took (a grant too small for one is no use)."""
    active: float = 0.0
    """When the last admission happened."""
    busy: bool = False
    """Whether the last request came within :attr:`idle_after` of the one before it (a
    grant is taken only then)."""
    last_write: float = 0.0
    """When the last write went through."""
    closing: bool = False

    def covers(self, take: Allowance, *, generation: int, alive: bool) -> bool:
        """Whether this escrow covers an admission drawing ``take`` on a quota at
        ``generation`` (the caller checks the admission may come from escrow at all)."""
        return (
            not self.closing
            and alive
            and not self.allowance.empty
            and generation == self.generation
            and self.allowance.fits(take)
        )

    def admit(self, *, hold: Reservation, take: Allowance, now: float) -> None:
        """Serve one admission from the allowance; its reservation waits for the next write."""
        self.allowance = self.allowance.minus(take)
        uid = str(hold.get("uid", ""))
        self.unwritten[uid] = hold
        self.unseen.append((uid, now))
        self.typical = take
        self.active = now

    @property
    def idle_after(self) -> float:
        """Seconds without admissions after which the escrow goes back (module docstring)."""
        return max(self.quiet_return, self.idle_return) if self.roomy else self.idle_return

    def room_seen(self, free: Allowance) -> None:
        """What is free outside every escrow, as the view shows it now (sets :attr:`roomy`)."""
        self.roomy = free.fits(self.typical.times(QUIET_MARGIN))

    def demand(self, now: float) -> None:
        """A request that may hold budget arrived at ``now`` (before it is decided)."""
        self.busy = now - self.active < self.idle_after
        self.active = now

    def spec_changed(self, generation: int) -> None:
        """A newer quota generation: what was granted under the old spec admits no more."""
        if self.generation < generation:
            self.allowance = NOTHING

    def close(self) -> None:
        """Shutting down: admit nothing more; the next write returns the entry."""
        self.closing = True
        self.allowance = NOTHING

    @property
    def owes_a_write(self) -> bool:
        """Whether something must still reach the apiserver (reservations or a return)."""
        return bool(self.unwritten) or self.on_server

    def next_delay(
        self,
        now: float,
        *,
        leading: bool = False,
        appeared: Callable[[str], bool] = lambda _: False,
    ) -> float | None:
        """Seconds until the next write this account needs (<= 0: now); None: none.
        ``leading``: this replica leads, so what escrow admitted may wait :attr:`lazy_flush`
        while ``appeared(uid)`` says each claim exists, priced or to be priced from memory
        (module docstring)."""
        if self.closing and self.owes_a_write:
            return 0.0
        back = self.active + self.idle_after if self.on_server else math.inf
        if not self.unwritten:
            return None if back == math.inf else back - now
        due = self.last_write + self.flush_interval
        if leading and self.lazy_flush and not 0 < self.lazy_most <= len(self.unwritten):
            while self.unseen and (
                self.unseen[0][0] not in self.unwritten or appeared(self.unseen[0][0])
            ):
                self.unseen.popleft()  # each entry once: O(1) per admission
            if not self.unseen:
                due = self.last_write + self.lazy_flush
            else:
                due = max(due, self.unseen[0][1] + self.flush_interval)
        return min(due, back) - now

    def idle(self, now: float) -> bool:
        """Whether no admission happened for :attr:`idle_after`."""
        return now - self.active >= self.idle_after

    def renews(self, *, generation: int, exact: bool, now: float, alive: bool) -> bool:
        """Whether a round should give back what is left and take a fresh share: the spec
        changed, idle, closing, the lease not trusted, or an exact request came while
        what is left would not cover an admission like the last one."""
        return (
            generation != self.generation
            or self.closing
            or self.idle(now)
            or not alive
            or (exact and not self.allowance.fits(self.typical))
        )

    def grant(self, room: Allowance) -> Allowance:
        """The share of ``room`` to take (see :func:`grant`)."""
        return grant(room=room, share=self.share, typical=self.typical)

    def written(
        self,
        flushing: Mapping[str, Reservation],
        *,
        renewed: Allowance | None,
        generation: int,
        on_server: bool,
        now: float | None,
    ) -> None:
        """A round's patch reached the apiserver at ``now`` (None: it needed none): the
        reservations it carried are no longer owed; a renewed grant (``renewed``) becomes
        the allowance."""
        for uid, reservation in flushing.items():
            if self.unwritten.get(uid) is reservation:
                del self.unwritten[uid]
        while self.unseen and self.unseen[0][0] not in self.unwritten:
            self.unseen.popleft()  # written: the oldest first
        self.on_server = on_server
        if now is not None:
            self.last_write = now
        if renewed is not None:
            self.allowance = renewed
            self.generation = generation
