"""The heart of admission: one pure function from a quota, its usage and a request to an outcome.

:func:`admit` decides one admission request against one DatabaseQuota::

    admit(quota, usage, escrow of others, request, held, snapshot, now) -> Outcome

- ``usage`` is the quota's totals as its status records them (:mod:`dbquota.domain.usage`)
  with the reservations this replica has admitted since; ``others`` is the escrow other
  webhook replicas hold (:mod:`dbquota.domain.escrow`), counted as used;
- the decision itself (hard caps, pricing, the degradation policy, enforcement, the words)
  is :func:`dbquota.domain.verdicts.decide`;
- an admitted request that adds cost or storage holds a reservation
  (:func:`dbquota.domain.reservations.hold`), draws ``take`` on the quota's room, and leaves
  ``room``; ``escrow_ok`` says whether a replica may admit it from its escrow without a
  write (CREATEs only, and under degraded billing only if the policy's rule allows it:
  :attr:`dbquota.domain.policies.Rule.escrow`; StrictCap's allowance does not).

The reservation service calls it for every request, inside a compare-and-swap round or
against its escrow; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace

from dbquota.domain import billing, claims, escrow, policies, quotas, reservations, verdicts
from dbquota.domain.resources import Reservation


@dataclass(frozen=True, kw_only=True)
class Request:
    """One admission request for one object, reduced to what the decision reads."""

    name: str
    uid: str
    generation: int
    claim: claims.ClaimSpec
    old: claims.ClaimSpec | None
    """The object before an UPDATE; None for a CREATE."""
    charged: float = 0.0
    """What the object is counted at already (its status price before an UPDATE)."""
    dry_run: bool = False

    @property
    def creating(self) -> bool:
        """Whether this is a CREATE."""
        return self.old is None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one quota says about one request, and what admitting it holds and draws."""

    decision: verdicts.Decision
    hold: Reservation | None = None
    """The reservation to add (replacing one of the same uid); None holds nothing."""
    take: escrow.Allowance = escrow.NOTHING
    """What the reservation draws on the quota's room."""
    room: escrow.Allowance | None = None
    """The room left after it (escrow is granted from this)."""
    escrow_ok: bool = False
    """Whether a replica may admit a request like this from its escrow."""
    backpressure: bool = False
    """A refusal for too many in flight: it says "try again", and a fresher copy of the
    quota would change it only by what the watch shows a moment later, so a replica
    answers it from what it last saw, without a round (:mod:`dbquota.services.reserving`)."""

    @property
    def admitted(self) -> bool:
        """Whether the quota admits the request."""
        return self.decision.allowed


class InFlightCount:
    """The count :func:`admit` compares with its ``in_flight_limit``, kept between reviews
    of one quota (the reservation ledger keeps one per quota).

    Counting walks the reservations, and once the limit's worth are held every CREATE
    would pay for that walk. Between reviews against the same ``held`` mapping (the
    ledger's view, which grows in place as it admits from escrow) the count can only grow
    by the entries added since, so while the last count plus those stays under the limit
    the walk is skipped; at the limit, or against another mapping (a newer copy of the
    quota, several a second when busy), it counts again. So a claim deleted while its
    reservation is in flight counts again with the next copy, not at once.
    """

    def __init__(self) -> None:
        self._held: Mapping[str, Reservation] | None = None
        self._count = 0
        self._size = 0

    def at_most(self, held: Mapping[str, Reservation]) -> int | None:
        """An upper bound of the count for ``held`` without walking it; None: walk it."""
        if held is not self._held:
            return None
        return self._count + max(0, len(held) - self._size)

    def counted(self, held: Mapping[str, Reservation], count: int) -> None:
        """``held`` was walked and ``count`` of its reservations are in flight."""
        self._held, self._count, self._size = held, count, len(held)


def admit(
    *,
    quota: quotas.QuotaSpec,
    usage: quotas.Usage,
    others: escrow.Allowance,
    request: Request,
    held: Mapping[str, Reservation],
    snapshot: billing.BillingSnapshot,
    now: float,
    holder: str,
    in_flight_limit: int | None = None,
    present: Callable[[], Collection[str]] = frozenset,
    in_flight: InFlightCount | None = None,
) -> Outcome:
    """Decide ``request`` against ``quota`` (module docstring).

    ``held`` are the reservations in flight by uid (an UPDATE of an object whose own
    reservation is still in flight builds on it); ``holder`` names the replica deciding.
    A CREATE is refused while ``in_flight_limit`` reservations are held for objects that
    have not appeared (not among ``present()``, the uids of the objects this replica's
    watches have seen): only objects that really appear keep budget, and reviews nobody
    follows with an object (forged, or failing later) cannot pile up, while a burst whose
    claims exist but are not priced yet is not held back. No request adds a reservation
    once ``reservations.MOST_HELD`` are held (the status must stay writable). Under
    ``Warn`` and ``DryRun``, which never deny, such a request is decided as usual and holds
    nothing; ``in_flight``, kept per quota, spares the count.
    """
    enforced, full = quota.enforcement == "Enforce", _full(request, held)
    if full and enforced and request.creating:  # no count, no price: it is refused anyway
        return _too_full(quota, len(held))
    unseen = _crowding(request, held, limit=in_flight_limit, present=present, memo=in_flight)
    if unseen is not None and enforced:
        return _too_many(quota, unseen)
    counted = escrow.with_held(usage, others)
    decision = verdicts.decide(
        quota=quota,
        claim=request.claim,
        old_claim=request.old,
        usage=counted,
        snapshot=snapshot,
        now=now,
    )
    if not decision.allowed or unseen is not None:
        return Outcome(decision=decision)
    if not request.creating and decision.cost <= 0 and decision.storage_gib <= 0:
        return Outcome(decision=decision)  # an update that adds nothing holds nothing
    if full:  # an UPDATE that grows; or Warn and DryRun, which admit it holding nothing
        return _too_full(quota, len(held)) if enforced else Outcome(decision=decision)
    previous = held.get(request.uid)
    hold = _hold(request, decision, holder=holder, now=now, previous=previous)
    take = escrow.take(
        cost=decision.cost, new_claims=decision.new_claims, storage_gib=decision.storage_gib
    )
    return Outcome(
        decision=decision,
        hold=hold,
        take=take,
        room=escrow.free(quota=quota, usage=counted).minus(take),
        escrow_ok=_escrow_ok(request, decision, previous=previous),
    )


def _escrow_ok(
    request: Request, decision: verdicts.Decision, *, previous: Reservation | None
) -> bool:
    """Whether a replica may admit this from its escrow (module docstring)."""
    return (
        request.creating
        and previous is None
        and (decision.policy is None or policies.RULES[decision.policy].escrow)
    )


def _crowding(
    request: Request,
    held: Mapping[str, Reservation],
    *,
    limit: int | None,
    present: Callable[[], Collection[str]],
    memo: InFlightCount | None,
) -> int | None:
    """How many reservations are held for objects not seen yet, when that is at least
    ``limit`` and ``request`` is a CREATE that would add one; else None. The objects seen
    are only asked for when the reservations alone reach the limit, and ``memo``'s bound
    does not already rule it out."""
    if limit is None or not request.creating or request.dry_run or len(held) < limit:
        return None
    if memo is not None and (bound := memo.at_most(held)) is not None and bound < limit:
        return None
    seen = present()
    # The set difference runs in C over the reservations (a loop in Python was an eighth of
    # the operator's CPU at 200 creates/s). ``held.keys() - seen`` would walk ``seen``
    # instead, every object of the namespace: another seventh once thousands exist.
    unseen = len(set(held).difference(seen))
    if memo is not None:
        memo.counted(held, unseen)
    return unseen if unseen >= limit else None


def _hold(
    request: Request,
    decision: verdicts.Decision,
    *,
    holder: str,
    now: float,
    previous: Reservation | None,
) -> Reservation:
    """The reservation an admitted ``request`` holds (building on ``previous``, its own
    reservation still in flight)."""
    return reservations.hold(
        claim_name=request.name,
        uid=request.uid,
        generation=request.generation,
        charged=request.charged,
        cost=decision.cost,
        storage_gib=decision.storage_gib,
        pricing=decision.pricing,
        degraded=decision.degraded,
        new_claim=request.creating,
        holder=holder,
        now=now,
        previous=previous,
    )


def _refusal(quota: str, reason: verdicts.Reason, message: str) -> verdicts.Decision:
    """A denial decided before any pricing: it costs and holds nothing."""
    return verdicts.Decision(
        quota=quota,
        allowed=False,
        would_deny=True,
        cost=0.0,
        pricing=None,
        degraded=False,
        policy=None,
        reason=reason,
        message=message,
    )


def _too_many(quota: quotas.QuotaSpec, count: int) -> Outcome:
    return _backpressure(
        quota,
        f"not admitted by DatabaseQuota {quota.name}: {count:,} admissions are in flight "
        "(their claims have not shown up yet), the most it holds; try again in a few seconds",
    )


def _backpressure(quota: quotas.QuotaSpec, message: str) -> Outcome:
    """The refusal of a request for too many in flight (:attr:`Outcome.backpressure`)."""
    return Outcome(decision=_refusal(quota.name, "TooManyInFlight", message), backpressure=True)


def _full(request: Request, held: Mapping[str, Reservation]) -> bool:
    """Whether admitting ``request`` would add a reservation to the most a quota holds."""
    return len(held) >= reservations.MOST_HELD and not request.dry_run and request.uid not in held


def _too_full(quota: quotas.QuotaSpec, count: int) -> Outcome:
    return _backpressure(
        quota,
        f"not admitted by DatabaseQuota {quota.name}: it holds {count:,} admissions whose "
        "claims do not show their price yet, the most its status can keep; try again in a "
        "few seconds",
    )


def invalid_quota(name: str, error: ValueError) -> Outcome:
    """The outcome for a quota whose spec cannot be read (the CRD schema should prevent it)."""
    return Outcome(
        decision=_refusal(
            name, "InvalidQuota", f"denied: DatabaseQuota {name} is invalid ({error}); fix it first"
        )
    )


def dry(outcome: Outcome) -> Outcome:
    """``outcome`` holding nothing (a dry-run request is decided, never reserved)."""
    return replace(outcome, hold=None, take=escrow.NOTHING, escrow_ok=False)
