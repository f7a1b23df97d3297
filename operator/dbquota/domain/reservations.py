"""Reservations: the budget an admission holds while it is in flight, and what ends it.

The objects are the ledger. Once a claim exists and its status shows the price its
admission charged (``status.estimatedMonthlyCost`` for that ``generation``), every quota of
its namespace counts it at that price until billing shows its cluster (see
:mod:`dbquota.domain.usage`). Between the webhook's answer and that moment the price lives
on the quota as a *reservation* (``status.reservations``): one entry per admission in
flight, so the quota's size does not grow with its claims, as ResourceQuota keeps totals
and not objects.

A reservation ends (:func:`settle`) when

- ``Confirmed``: its claim exists and its status shows, for the reservation's generation,
  a price that covers the reservation's ``cost``; the claim now carries the cost (no
  Event: this is the normal path). A newer generation alone is not enough: a status that
  moved its generation at the old price (the claim's publisher saw no reservation for
  the UPDATE: its quota's watch was behind) must not end the reservation of the UPDATE's
  growth, which would then be counted nowhere. The publisher raises such a price instead
  (:func:`owed`);
- ``ClaimDeleted``: its claim was deleted before it was confirmed;
- ``NeverCreated``: no object with its uid appeared within the grace period (another
  webhook denied the request, the client gave up, or someone forged the review);
- ``NeverApplied``: its object exists, but after the grace period still at a generation
  below the reservation's: dbquota admitted the UPDATE, and another webhook (or etcd)
  refused it after. It goes only once the claim shows, for the generation it stays at,
  a price that covers what the reservation built on (:func:`seen`): an UPDATE's
  reservation may have replaced, built on it, the reservation of an earlier admission
  still in flight (below), and until that price is written the earlier part counts
  nowhere else (an unpriced claim counts in the caps only; a price moved ahead without
  it shows less). The publisher writes that part from this very reservation, the only
  one left (:func:`owed`), and the UPDATE's growth only once the object takes it.
  Generation numbers repeat (the next spec change that succeeds gets the same one), so
  nothing is concluded once the object is at the reservation's generation or beyond.

The grace is measured on the reconciler's own monotonic clock, from when it first saw
the reservation (``ages``, :mod:`dbquota.kits.sightings`), never from ``reservedAt``:
that is the admitting replica's wall clock, and with nodes' clocks further apart than
the grace a leader ahead released reservations of claims still on their way (which
then counted nowhere until adopted again), and one behind held never-created ones for
as long as it lagged. ``reservedAt`` stays for people (``kubectl dbquota``) and for
:func:`merged`. A new leader counts from its first sight: a reservation it inherits
lives at most one grace longer than it would have.

An object of a kind dbquota does not own (CloudNativePG, Zalando, Crossplane RDS; see
:mod:`dbquota.domain.kinds`) shows no price of ours, so nothing on it can confirm what its
admission charged. Its reservation, named ``Kind/name``, ends once the object exists at
the reservation's generation (``Counted``, no Event): from then on every recount prices
the object from its spec (:func:`dbquota.domain.usage.recount`), as ResourceQuota counts
requests from the pods, until billing shows its cluster, then at its billed cost. It is
released if the object is deleted first (``ClaimDeleted``), never appears
(``NeverCreated``), or stays below that generation (``NeverApplied``: the recount prices
it from the spec it kept). The quota thus holds no entry per existing object, of any kind,
whether or not billing ever shows it; earlier releases kept such a reservation
*standing* until billing did, one entry per object for good when billing never does
(an in-cluster Postgres that a cloud bill does not list).

Admissions of one object are normally one reservation: an UPDATE builds on the
reservation of its object still in flight and replaces it. One admission can be invisible
to the next, though: a CREATE a replica admitted from its escrow is on no quota until
that replica writes it (up to 5 s later on the leader), and an UPDATE decided meanwhile
by another replica knows only the claim's status price (0 if none yet: the reservation is
then *blind*, :func:`blind`). When the CREATE's reservation is written after the
UPDATE's, it joins it (:func:`merged`) rather than replacing it; a blind one is not
confirmed while its claim is young enough for an escrow to hold its CREATE still.
"Young" there compares the apiserver's ``creationTimestamp`` with the leader's clock;
skew only moves when a blind reservation ends, never what is counted: confirmed early,
a CREATE written later raises the claim's price instead (:func:`owes`).

And the converse, :func:`adopt`: a claim that exists with no price and no reservation
(its replica admitted it from escrow and died before writing the reservation, or it was
created while the webhook was bypassed) gets a reservation at a price the reconciler
computes, so that it is counted from then on. Until :data:`ADOPT_AFTER` such a claim may
be in a live replica's escrow, counted there only; it is that young only while both the
apiserver's clock (its ``creationTimestamp``) and the reconciler's sight of it say so, so
that a leader whose clock lags the apiserver's leaves it uncounted no longer. (A leader
ahead may adopt one an escrow still holds: the CREATE's reservation, written a moment
later, replaces the adoption.)

Pure functions; the reservation service (:mod:`dbquota.services.reserving`) builds holds,
the reconciler (:mod:`dbquota.services.reconciling`) settles and adopts, the claims'
publisher (:mod:`dbquota.services.publishing`) writes what :func:`owed` says.

Size: how a reservation begins (:func:`hold`, :func:`adopt`), joins another of its object
(:func:`merged`), ends (:func:`confirmed_by`, :func:`settle`) and what its claim must show
(:func:`owed`) in one module, because confirming and owing are one rule read from two
sides: a claim owes exactly what lets each of its reservations be confirmed (a property
test holds them to that), and kept apart the two would drift.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dbquota.domain import claims, kinds
from dbquota.domain.resources import Reservation
from dbquota.kits import timestamps

ReleaseReason = Literal["ClaimDeleted", "NeverCreated", "NeverApplied"]

Ages = Callable[[Hashable], float]
"""Seconds the reconciler has seen something in flight, on its own monotonic clock: a
reservation by its :func:`identity`, an unpriced claim by its uid (module docstring).
Asked of every reservation, and of every unpriced claim with none, at each visit
(:class:`dbquota.kits.sightings.Look` forgets what it is not asked)."""

MOST_HELD = 2_000
"""Most reservations one quota holds. They live in its status, and etcd refuses a write of
an object over its request limit (``--max-request-bytes``, 1.5 MiB by default): every
admission waiting for that write would then fail, not about budget. A reservation takes
about 220-260 bytes of JSON with short claim names, about 530 with a name of 253
characters, so 2,000 stay near 1 MiB even then. They pile up when claims wait for their
prices to be written (an apiserver too slow for the rate of creates), or objects to
appear; at the bound, admission refuses new holds, ``TooManyInFlight``, until some end
(:func:`dbquota.domain.admission.admit`). Each replica checks its own view (what the
quota holds and what it admitted and has not written yet)."""
ADOPT_AT_ONCE = 200
"""Most orphans one reconcile adopts: their reservations live on the quota's status until
their claims carry the price, and an object over etcd's request limit (about 1.5 MiB)
cannot be written at all. The rest wait for the next visits, counted at their price."""
ADOPT_AFTER = 30.0
"""Seconds a claim may exist with no price and no reservation before :func:`adopt` gives it
one even though some replica's escrow may still cover it (a live replica writes what it
admitted from escrow within a fraction of a second, or within 5 s on the leader, which
prices its own admissions from memory)."""

ADOPTED = "adopted"
"""The ``holder`` of reservations the reconciler made for claims that had none."""
HALF_CENT = 0.005
"""Prices are compared as the statuses show them: in whole cents."""


@dataclass(frozen=True, kw_only=True)
class ClaimRef:
    """What bookkeeping needs to know of one existing claim (kept by the claim informer)."""

    name: str
    uid: str
    cluster_id: str
    storage_gib: int
    generation: int = 1
    created: float = 0.0
    """``metadata.creationTimestamp`` as epoch seconds (0.0: unknown, i.e. long ago)."""
    cost: float | None = None
    """``status.estimatedMonthlyCost``: the price the claim is counted at, once written."""
    priced_generation: int = 0
    """``status.observedGeneration``: the generation ``cost`` was charged for."""
    reserved_at: float = 0.0
    """``status.reservedAt``: when that price was charged (billing samples from before do
    not show it yet)."""
    pricing: str | None = None
    """``status.pricing``: how the cost was priced."""
    degraded: bool = False
    """``status.degraded``: admitted while billing was degraded (StrictCap counts it)."""
    spec: claims.ClaimSpec | None = None
    """The parsed spec, to price the claim when no admission did (:func:`adopt`)."""
    owned: bool = True
    """Whether the object's status shows its price (a DatabaseClaim); False for another
    operator's object, counted from its spec (module docstring)."""
    namespace: str = ""
    """The tenant namespace it counts in (a cluster-scoped object's from its label)."""

    @property
    def priced(self) -> bool:
        """Whether the status shows a price for the current generation."""
        return self.cost is not None and self.priced_generation >= self.generation


def deriver(
    kind: kinds.Kind, *, namespace_label: str = ""
) -> Callable[[Mapping[str, Any]], ClaimRef | None]:
    """The claim informer's ``derive`` for ``kind``: :func:`claim_ref` or :func:`foreign_ref`."""
    if kind.owned:
        return claim_ref
    return functools.partial(foreign_ref, kind=kind, namespace_label=namespace_label)


def foreign_ref(
    obj: Mapping[str, Any], *, kind: kinds.Kind, namespace_label: str
) -> ClaimRef | None:
    """What bookkeeping needs of another operator's object (named ``Kind/name``); None for
    one it cannot read or that names no tenant (not counted by any quota)."""
    meta = obj.get("metadata") or {}
    try:
        tenant, parsed = kind.read(obj, namespace_label=namespace_label)
    except ValueError:
        return None
    if not tenant:
        return None
    generation = meta.get("generation")
    return ClaimRef(
        name=kind.ref(str(meta.get("name", ""))),
        uid=str(meta.get("uid", "")),
        cluster_id=parsed.cluster_id,
        storage_gib=parsed.storage_gib,
        generation=generation if isinstance(generation, int) else 1,
        created=timestamps.from_rfc3339(meta.get("creationTimestamp")),
        spec=parsed,
        owned=False,
        namespace=tenant,
    )


def claim_ref(obj: Mapping[str, Any]) -> ClaimRef | None:
    """What bookkeeping needs of a DatabaseClaim object; None for one it cannot read."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    try:
        parsed = claims.from_object(obj)
    except ValueError:
        return None
    cost = status.get("estimatedMonthlyCost")
    generation = meta.get("generation")
    priced_generation = status.get("observedGeneration")
    return ClaimRef(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        cluster_id=parsed.cluster_id,
        storage_gib=parsed.storage_gib,
        generation=generation if isinstance(generation, int) else 1,
        created=timestamps.from_rfc3339(meta.get("creationTimestamp")),
        cost=float(cost) if isinstance(cost, int | float) and cost >= 0 else None,
        priced_generation=priced_generation if isinstance(priced_generation, int) else 0,
        reserved_at=timestamps.from_rfc3339(status.get("reservedAt")),
        pricing=str(status["pricing"]) if status.get("pricing") else None,
        degraded=status.get("degraded") is True,
        spec=parsed,
        namespace=str(meta.get("namespace", "")),
    )


def hold(
    *,
    claim_name: str,
    uid: str,
    generation: int,
    charged: float,
    cost: float,
    storage_gib: int,
    pricing: str | None,
    degraded: bool,
    new_claim: bool,
    holder: str,
    now: float,
    previous: Reservation | None = None,
) -> Reservation:
    """The reservation an admission takes.

    ``charged`` is what the claim is already counted at (its status price, 0 for a
    CREATE); ``cost`` is what this admission adds. An UPDATE of a claim whose own
    reservation is still in flight (``previous``) builds on it and replaces it.
    """
    base_delta = float(previous.get("delta", 0.0)) if previous else 0.0
    base_storage = int(previous.get("storageGiB", 0)) if previous else 0
    if previous:
        charged = float(previous.get("cost", 0.0))
    added = max(0.0, cost)
    held = Reservation(
        claim=claim_name,
        uid=uid,
        generation=generation,
        cost=round(charged + added, 2),
        delta=round(base_delta + added, 2),
        storageGiB=base_storage + max(0, storage_gib),
        pricing=pricing or "None",
        reservedAt=timestamps.to_rfc3339(now),
        holder=holder,
    )
    # What it built on of older generations (:func:`seen`): not another admission for
    # the same one, which it stands beside (only one of them can reach the object).
    if previous and _generation(previous) < generation:
        held["builtOn"] = round(charged, 2)
    elif previous and "builtOn" in previous:
        held["builtOn"] = previous["builtOn"]
    # Flags only when set: a quota holds hundreds of these during a burst.
    if degraded or (previous and previous.get("degraded")):
        held["degraded"] = True
    if new_claim or (previous and previous.get("newClaim")):
        held["newClaim"] = True
    return held


def by_uid(held: Iterable[Reservation]) -> dict[str, Reservation]:
    """Reservations by the uid of their object (the last one wins)."""
    return {str(r.get("uid", "")): r for r in held}


def identity(res: Reservation) -> tuple[str, int, str]:
    """What tells one admission's reservation from the next of the same object (an UPDATE
    replacing a CREATE's, a later UPDATE given a failed one's generation): each is aged
    from its own first sight (:data:`Ages`)."""
    return str(res.get("uid", "")), _generation(res), str(res.get("reservedAt", ""))


def _cost(res: Reservation) -> float:
    return float(res.get("cost", 0.0))


def _generation(res: Reservation) -> int:
    return int(res.get("generation", 1))


def basis(res: Reservation) -> float:
    """What the object was counted at when the admission of ``res`` built on it (its
    status price, or its reservation then in flight): ``cost - delta``."""
    return round(_cost(res) - float(res.get("delta", 0.0)), 2)


def seen(res: Reservation) -> float:
    """The most of its object's price ``res`` has seen: its :func:`basis`, or the cost of
    the reservation in flight it built on (``builtOn``), whose own basis may be older: an
    UPDATE built on an UPDATE still in flight has seen that one's price. Only of older
    generations: an admission built on another for the same generation stands beside it
    (one of them at most reaches the object; a reservation of a refused UPDATE, still
    held, is built on by the next UPDATE, which gets its generation number), and what it
    has seen is what that one had."""
    return max(basis(res), float(res.get("builtOn", 0.0)))


def blind(res: Reservation) -> bool:
    """Whether ``res`` is an UPDATE's reservation decided knowing no price of its object
    (module docstring): its ``cost`` is the growth alone, and the CREATE's reservation
    may still be in some replica's escrow."""
    return not res.get("newClaim") and basis(res) < HALF_CENT


def confirmed_by(res: Reservation, claim: ClaimRef | None, *, now: float | None = None) -> bool:
    """Whether ``claim`` counts what ``res`` charged, so that ``res`` can go with the
    totals unchanged (``Confirmed`` and ``Counted`` in the module docstring): an object
    dbquota owns once it shows, for that generation, a price that covers ``res``'s cost;
    another operator's once it exists at that generation (the recount prices it from its
    spec). A :func:`blind` reservation only given ``now``, once its claim is
    :data:`ADOPT_AFTER` old: until then the CREATE it did not see may still come from an
    escrow, and must find it to join (:func:`merged`)."""
    if claim is None:
        return False
    generation = _generation(res)
    if not claim.owned:
        return claim.generation >= generation
    if claim.cost is None or claim.priced_generation < generation:
        return False
    if claim.cost < _cost(res) - HALF_CENT:
        return False
    return not blind(res) or (now is not None and now - claim.created >= ADOPT_AFTER)


def merged(earlier: Reservation, later: Reservation) -> Reservation | None:
    """``later`` as its admission would have held it had it seen ``earlier``, a reservation
    of the same object for an older generation that is written only now (module
    docstring): on top of it, as :func:`hold` builds on a reservation in flight. None when
    ``later`` has it already: built on a price that covers it (:func:`seen`), or
    holding the object's one CREATE itself (``earlier`` again, or an adoption standing
    for it)."""
    if seen(later) >= _cost(earlier) - HALF_CENT:
        return None
    if later.get("newClaim") and earlier.get("newClaim"):
        return None
    return hold(
        claim_name=str(later.get("claim", "")),
        uid=str(later.get("uid", "")),
        generation=_generation(later),
        charged=0.0,
        cost=float(later.get("delta", 0.0)),
        storage_gib=int(later.get("storageGiB", 0)),
        pricing=later.get("pricing"),
        degraded=bool(later.get("degraded")),
        new_claim=bool(later.get("newClaim")),
        holder=str(later.get("holder", "")),
        now=timestamps.from_rfc3339(later.get("reservedAt")),
        previous=earlier,
    )


def owed(claim: ClaimRef, held: Iterable[Reservation]) -> Reservation | None:
    """What ``claim``'s status must show (its ``cost``, and how it was priced) so that its
    reservations in ``held`` are all confirmed; None when it has no price and none.

    Generation by generation, the dearest: a newer reservation joined to the older one it
    did not see (:func:`merged`). The price the claim shows stands beside the reservations
    of its generation: it saw the older ones if it covers them, else they are added to it
    (an older admission written after the price was, or a price moved ahead without its
    admission's reservation). A newer reservation that holds the object's CREATE (an
    UPDATE built on the CREATE's reservation still in flight, after its price was written)
    is the object's whole price, the price shown included: never added to it (that
    charged an UPDATE from 100 to 300 GiB 199.13 + 219.98), only raised to it when a
    quota at a lower margin built on less.
    """
    mine = [_now(r, claim) for r in held if str(r.get("uid", "")) == claim.uid]
    shown = _shown(claim)
    if shown is not None:
        mine.append(shown)  # last: a reservation of the same cost is preferred
    due: Reservation | None = None
    past = False  # whether ``due`` is the price shown (raised or not)
    for _, group in itertools.groupby(sorted(mine, key=_generation), key=_generation):
        before, over = due, past
        options = ((_on(before, r, shown=r is shown, over=over), r is shown) for r in group)
        due, past = max(options, key=lambda option: _cost(option[0]))
    return due


def owes(claim: ClaimRef, held: Iterable[Reservation]) -> bool:
    """Whether ``claim`` shows a price for its generation below what :func:`owed` says it
    must, for the reservations in ``held``."""
    return raised(claim, held) is not None


def raised(claim: ClaimRef, held: Iterable[Reservation]) -> Reservation | None:
    """What :func:`owed` says ``claim`` must show, when it shows a price for its generation
    below that; None when it shows no price for its generation, or enough."""
    if not claim.priced:
        return None
    due = owed(claim, held)
    if due is None or _cost(due) <= (claim.cost or 0.0) + HALF_CENT:
        return None
    return due


def _now(res: Reservation, claim: ClaimRef) -> Reservation:
    """What ``res`` asks of ``claim``'s price at the generation the object is at
    (:func:`owed`): all of it, unless it is of a newer generation, an UPDATE the object has
    not taken yet (or never will: ``NeverApplied``). Such a reservation asks now only for
    what it built on (:func:`seen`): an earlier admission still in flight that it replaced,
    which counts nowhere else. Written whole for the older generation, its growth was
    added again once the object moved (100 -> 200 GiB built on 50 -> 100 GiB in flight: a
    claim of 146.28 charged 236.28); left out, the earlier part was lost when the UPDATE
    was refused. One that built on no price (:func:`blind`) asks for all of it, as the
    only price there is, but at the object's generation too: the claim shows it then."""
    if _generation(res) <= claim.generation:
        return res
    part = Reservation(**res)
    part["generation"] = claim.generation
    before = seen(res)
    if before >= HALF_CENT:  # a part that adds nothing: its basis is what it has seen
        part["cost"], part["delta"] = before, 0.0
        part.pop("builtOn", None)
    return part


def _shown(claim: ClaimRef) -> Reservation | None:
    """The price ``claim``'s status shows, as a reservation of its generation (:func:`owed`)."""
    if claim.cost is None:
        return None
    # It stands for the object's CREATE (:func:`owed`), as an adoption does: the publisher
    # wrote it from the CREATE's reservation, or from blind ones that stay held, each
    # counted on its own, until the CREATE's joins them.
    shown = Reservation(
        claim=claim.name,
        uid=claim.uid,
        generation=claim.priced_generation,
        cost=claim.cost,
        delta=claim.cost,
        pricing=claim.pricing or "None",
        newClaim=True,
        reservedAt=timestamps.to_rfc3339(claim.reserved_at),
    )
    if claim.degraded:
        shown["degraded"] = True
    return shown


def _on(before: Reservation | None, res: Reservation, *, shown: bool, over: bool) -> Reservation:
    """``res`` after ``before``, what the generations older than its own come to (:func:`owed`;
    ``over``: ``before`` is the price the claim shows)."""
    if before is None:
        return res
    if over and not shown and not res.get("newClaim"):
        # The price shown for an older generation has what an UPDATE's reservation
        # built on, as far as it covers that (a quota at a higher margin prices the same
        # admissions higher): the reservation adds beyond it only its own growth.
        return _at_least(res, _cost(before) + _cost(res) - seen(res))
    if not shown:
        return merged(before, res) or _at_least(res, _cost(before))
    if _cost(res) >= _cost(before) - HALF_CENT:
        return res
    added = _cost(res) + float(before.get("delta", 0.0))
    raised = Reservation(**before)
    raised.update(res)  # the price's generation and charge time, the flags of either
    raised["cost"] = round(max(added, _cost(before)), 2)
    return raised


def _at_least(res: Reservation, cost: float) -> Reservation:
    """``res`` costing ``cost`` if it costs less: one that holds the object's CREATE has
    seen an older price of it, but a quota pricing at a lower margin builds on less than
    another quota's (:func:`owed`)."""
    if _cost(res) >= cost - HALF_CENT:
        return res
    raised = Reservation(**res)
    raised["cost"] = round(cost, 2)
    return raised


def settle(
    *,
    held: Sequence[Reservation],
    claims: Mapping[str, ClaimRef],
    deleted: Collection[str] = (),
    now: float,
    grace: float,
    ages: Ages,
    current: bool = True,
) -> tuple[list[Reservation], list[Reservation], list[tuple[Reservation, ReleaseReason]]]:
    """Split reservations into those still in flight, those confirmed by their claim, and
    those to release with the reason (module docstring). ``claims`` are the namespace's
    claims by uid (only those of ``held`` are looked up), ``deleted`` the uids of claims
    seen deleted recently. A reservation is released as never created or never applied
    only once ``ages`` says the reconciler has seen it for ``grace``, and only while
    ``claims`` is ``current`` (the watch that lists them is up to date): else a claim's
    absence, or its generation, proves nothing. The reservation of an object dbquota does
    not own is confirmed once its object exists at the reservation's generation
    (``Counted``: the recount prices it from its spec); a blind one once its claim is old
    enough (:func:`confirmed_by` at ``now``)."""
    kept: list[Reservation] = []
    confirmed: list[Reservation] = []
    released: list[tuple[Reservation, ReleaseReason]] = []
    for res in held:
        uid = str(res.get("uid", ""))
        claim = claims.get(uid)
        aged = ages(identity(res)) > grace and current  # asked of each: see Ages
        if claim is not None:
            if confirmed_by(res, claim, now=now):
                confirmed.append(res)
            elif aged and never_applied(res, claim):
                released.append((res, "NeverApplied"))
            else:
                kept.append(res)
        elif uid in deleted:
            released.append((res, "ClaimDeleted"))
        elif aged:
            released.append((res, "NeverCreated"))
        else:
            kept.append(res)
    return kept, confirmed, released


def never_applied(res: Reservation, claim: ClaimRef) -> bool:
    """Whether ``claim`` is below ``res``'s generation and counted without ``res``: from its
    spec (another operator's object), or at the price its status shows for the generation
    it is at, if that covers what ``res`` built on (module docstring: until then ``res``
    may be what counts it; a price moved ahead without the reservation it replaced left
    50 -> 100 GiB counted nowhere once 100 -> 200 GiB, built on it, was refused)."""
    if claim.generation >= _generation(res):
        return False
    if not claim.owned:
        return True
    return claim.priced and (claim.cost or 0.0) >= seen(res) - HALF_CENT


def orphans(
    *,
    held: Sequence[Reservation],
    claims: Sequence[ClaimRef],
    now: float,
    covered: bool,
    ages: Ages,
) -> list[ClaimRef]:
    """Claims that exist with no price for their generation and no reservation in flight.

    While ``covered`` (some live replica's escrow may still hold their cost, their
    reservation not written yet) only those no longer young count (:func:`_young`). An
    object dbquota does not own is never one: the recount prices it from its spec, or
    counts its billed cost.
    """
    holding = {str(r.get("uid", "")) for r in held}
    return [
        c
        for c in claims
        if c.owned
        and c.cost is None
        and c.uid not in holding
        and (not _young(c, now=now, ages=ages) or not covered)
    ]


def in_escrow(
    *, held: Sequence[Reservation], claims: Sequence[ClaimRef], now: float, ages: Ages
) -> frozenset[str]:
    """Uids of the claims that some live replica's escrow may still hold: dbquota's own,
    with no price and no reservation, young (:func:`_young`; the claims :func:`orphans`
    leaves alone while escrow covers them)."""
    holding = {str(r.get("uid", "")) for r in held}
    return frozenset(
        c.uid
        for c in claims
        if c.owned and c.cost is None and c.uid not in holding and _young(c, now=now, ages=ages)
    )


def _young(claim: ClaimRef, *, now: float, ages: Ages) -> bool:
    """Whether ``claim`` may still be in an escrow: younger than :data:`ADOPT_AFTER` by the
    apiserver's clock (``created``) and by the reconciler's sight of it (module docstring).
    Its age is asked first, so that its sighting is kept at every visit."""
    return ages(claim.uid) < ADOPT_AFTER and now - claim.created < ADOPT_AFTER


def adopt(*, claim: ClaimRef, cost: float, pricing: str | None, now: float) -> Reservation:
    """The reservation the reconciler takes for an orphan claim, priced ``cost``."""
    return hold(
        claim_name=claim.name,
        uid=claim.uid,
        generation=claim.generation,
        charged=0.0,
        cost=cost,
        storage_gib=claim.storage_gib,
        pricing=pricing,
        degraded=False,
        new_claim=True,
        holder=ADOPTED,
        now=now,
    )
