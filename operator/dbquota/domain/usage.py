"""A quota's usage as totals: read from its status, moved by admissions, recounted from claims.

The status of a DatabaseQuota carries totals, as ResourceQuota's ``status.used`` does:

- ``spend.observed``: what billing shows for the namespace's claims;
- ``spend.reserved``: claims at the price their status shows, not billed yet, plus every
  reservation in flight (its ``delta``);
- ``used.claims`` / ``used.storageGiB``: existing claims plus admissions in flight (the
  hard caps), but not a claim that a replica's escrow still holds (admitted from it, its
  reservation not written yet: the escrow counts it until then);
- ``used.degradedClaims`` / ``used.degradedStorageGiB``: what was admitted while billing
  was degraded and is not billed yet (StrictCap's allowance).

Two writers keep them, both by compare-and-swap on the quota's ``resourceVersion``, so they
never disagree: an admission adds its reservation to the totals (:func:`add`), O(1) whatever
the number of claims; the reconciler recounts them from the claims, the reservations still
in flight and the billing snapshot (:func:`recount`). The webhook decides against
:func:`of_status`, never counting claims per review.

A reservation added replaces the one of its object already there, except one for an
older generation: a CREATE admitted from some replica's escrow and written only after
another replica wrote the object's UPDATE (:mod:`dbquota.domain.reservations`). That one
joins the UPDATE's reservation, or ends at once if the UPDATE was built on a price that
shows it; either way what it adds is counted. Replacing the UPDATE's reservation, as
releases before did, lost the UPDATE's growth for good: the claim was then confirmed at
its old price.

A billed cost stands in for a price only when it is positive
(:attr:`~dbquota.domain.billing.ClusterCost.accrues`): providers list a new cluster at 0
before it accrues, and a claim admitted at 500 counted then at 0 freed its whole price for
more claims. Billed at 0, a claim keeps counting at the price admission charged, and an
object of another kind at its spec's estimate; a positive bill replaces either, down as
well as up.

Pure; called by the reservation service and by :mod:`dbquota.domain.statuses`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from dbquota.domain import billing, quotas, reservations
from dbquota.domain.reservations import ClaimRef
from dbquota.domain.resources import QuotaStatus, Reservation, Spend, Used
from dbquota.kits import steps


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return max(0.0, float(value))


def _count(value: object) -> int:
    return int(_number(value))


def of_status(status: Mapping[str, Any]) -> quotas.Usage:
    """The usage a quota's status records (junk fields read as 0: the reconciler rewrites
    them on its next visit)."""
    spend = status.get("spend") or {}
    used = status.get("used") or {}
    return quotas.Usage(
        observed=_number(spend.get("observed")),
        reserved=_number(spend.get("reserved")),
        claims=_count(used.get("claims")),
        storage_gib=_count(used.get("storageGiB")),
        degraded_claims=_count(used.get("degradedClaims")),
        degraded_storage_gib=_count(used.get("degradedStorageGiB")),
    )


def fields(usage: quotas.Usage, *, budget: float) -> tuple[Spend, Used]:
    """``status.spend`` and ``status.used`` for ``usage`` under ``budget``."""
    observed, reserved = round(usage.observed, 2), round(usage.reserved, 2)
    return (
        Spend(
            observed=observed, reserved=reserved, remaining=round(budget - observed - reserved, 2)
        ),
        Used(
            claims=usage.claims,
            storageGiB=usage.storage_gib,
            degradedClaims=usage.degraded_claims,
            degradedStorageGiB=usage.degraded_storage_gib,
        ),
    )


def _step(hold: Reservation, replacing: Reservation | None) -> tuple[float, int, int, int, int]:
    """What ``hold`` adds in place of ``replacing``: reserved, claims, storage, degraded
    claims, degraded storage."""
    delta = _number(hold.get("delta")) - (_number(replacing.get("delta")) if replacing else 0.0)
    storage = _count(hold.get("storageGiB")) - (
        _count(replacing.get("storageGiB")) if replacing else 0
    )
    new = 1 if hold.get("newClaim") and not (replacing and replacing.get("newClaim")) else 0
    degraded_claims = degraded_storage = 0
    if hold.get("degraded"):
        was = bool(replacing and replacing.get("degraded"))
        degraded_claims = 1 if hold.get("newClaim") and not was else 0
        degraded_storage = _count(hold.get("storageGiB")) - (
            _count(replacing.get("storageGiB")) if replacing and was else 0
        )
    return delta, new, storage, degraded_claims, degraded_storage


def with_hold(
    usage: quotas.Usage, hold: Reservation, *, replacing: Reservation | None
) -> quotas.Usage:
    """``usage`` after ``hold`` joins the reservations (in place of ``replacing``, an earlier
    reservation of the same object that it builds on)."""
    return joined(usage, [hold], {} if replacing is None else {str(hold.get("uid", "")): replacing})


def _joining(
    hold: Reservation, replacing: Reservation | None
) -> tuple[Reservation, tuple[float, int, int, int, int]]:
    """What stands for ``hold``'s object once it joins, in place of ``replacing``, and what
    that adds (:func:`_step`). ``hold`` for an older generation than ``replacing`` was
    written late (module docstring): it joins ``replacing`` (:func:`reservations.merged`),
    or ends at once if ``replacing`` was built on a price that covers it; and adds nothing
    if ``replacing`` holds the object's CREATE already (``hold`` itself, written again, or
    an adoption that stood for it)."""
    if replacing is None or int(hold.get("generation", 1)) >= int(replacing.get("generation", 1)):
        return hold, _step(hold, replacing)
    if hold.get("newClaim") and replacing.get("newClaim"):
        return replacing, (0.0, 0, 0, 0, 0)
    later = reservations.merged(hold, replacing)
    if later is None:
        return replacing, _step(hold, None)
    return later, _step(later, replacing)


def joined(
    usage: quotas.Usage, holds: Iterable[Reservation], held: dict[str, Reservation]
) -> quotas.Usage:
    """``usage`` after ``holds`` join ``held``, the reservations by uid, which this updates
    in place (each replaces an earlier one of its uid, or joins a later one, and moves to
    the end as the newest: :func:`_joining`).

    One :class:`~dbquota.domain.quotas.Usage` for the lot, not one per hold: a replica
    rebuilds its view of a busy quota several times a second, with hundreds admitted and
    not written yet.
    """
    reserved, claims, storage = usage.reserved, usage.claims, usage.storage_gib
    degraded_claims, degraded_storage = usage.degraded_claims, usage.degraded_storage_gib
    for hold in holds:
        uid = str(hold.get("uid", ""))
        held[uid], step = _joining(hold, held.pop(uid, None))
        d_reserved, d_claims, d_storage, d_degraded, d_degraded_storage = step
        reserved = round(reserved + d_reserved, 2)
        claims += d_claims
        storage += d_storage
        degraded_claims += d_degraded
        degraded_storage += d_degraded_storage
    return quotas.Usage(
        observed=usage.observed,
        reserved=reserved,
        claims=claims,
        storage_gib=storage,
        degraded_claims=degraded_claims,
        degraded_storage_gib=degraded_storage,
        escrowed=usage.escrowed,
    )


def add(status: QuotaStatus, holds: Iterable[Reservation], *, budget: float) -> QuotaStatus:
    """``status`` with ``holds`` added to its reservations and totals (each replaces an
    earlier reservation of the same uid, or joins a later one: :func:`joined`)."""
    held = reservations.by_uid(status.get("reservations") or [])
    spend, used = fields(joined(of_status(status), holds, held), budget=budget)
    return cast(
        QuotaStatus, {**status, "reservations": list(held.values()), "spend": spend, "used": used}
    )


@dataclass(frozen=True)
class Recount:
    """The totals recounted from the objects, and which claims billing shows."""

    usage: quotas.Usage
    billed: frozenset[str]
    """Names of claims counted at their billed cost rather than their status price."""


def billed_after(claim: ClaimRef, costs: Mapping[str, billing.ClusterCost]) -> bool:
    """Whether billing shows ``claim``'s cluster accruing in a sample taken after its
    price was charged (``reservedAt`` has whole seconds: only a sample from the next
    second on is surely later; a run-rate of 0 shows nothing:
    :attr:`~dbquota.domain.billing.ClusterCost.accrues`)."""
    cost = costs.get(claim.cluster_id)
    return cost is not None and cost.accrues and cost.observed_at >= claim.reserved_at + 1.0


Estimate = Callable[[ClaimRef], tuple[float, bool]]
"""The price of an object dbquota does not own, from its spec, and whether it was priced
as billing is degraded (:func:`dbquota.domain.statuses.price_foreign`)."""


def unshared(cluster_id: str) -> bool:
    """The default of :func:`recount`'s ``shared``: no object outside the namespace names
    ``cluster_id``."""
    del cluster_id
    return False


def recount(
    *,
    claims: Sequence[ClaimRef],
    held: Sequence[Reservation],
    costs: Mapping[str, billing.ClusterCost],
    in_escrow: Collection[str] = (),
    estimate: Estimate | None = None,
    shared: Callable[[str], bool] = unshared,
) -> steps.Steps[Recount]:
    """The totals (module docstring) from the namespace's claims, the reservations in
    flight and the billing snapshot's costs. A priced claim counts at its price until
    billing shows it after the charge, then at its billed cost (if positive: module
    docstring); an unpriced one in the caps only, or not at all if ``in_escrow`` (an escrow
    holds it until its replica writes the reservation: :func:`add` adds it). Another
    kind's object counts at its billed cost once billing shows its cluster, else at
    ``estimate`` of its spec (degraded totals when priced so; caps only without it). A
    reservation counts its ``delta``, its claim and storage unless its claim exists,
    counted, at that generation (beyond it: :func:`_adds`). Yields after each slice.

    A billed cost stands in for one object only: a cluster id two objects name (here, or
    anywhere per ``shared``) counts each at its price, as ids are the tenant's to choose."""
    observed, count, storage = 0.0, 0, 0
    unbilled = (0.0, 0, 0)  # reserved, degraded claims, their storage
    billed, twinned = dict[str, ClaimRef](), set[str]()  # by cluster id
    holding = {str(r.get("uid", "")) for r in held}
    owners: dict[str, ClaimRef] = {}  # the claims of the reservations in flight, by uid
    priced: list[ClaimRef] = []
    for part in steps.slices(claims):
        for claim in part:
            if claim.uid in in_escrow:  # an escrow counts it: no owner (counted) either
                continue
            if claim.uid in holding:
                owners[claim.uid] = claim
            count += 1
            storage += claim.storage_gib
            cid = claim.cluster_id
            if _shows(claim, costs) and cid not in twinned and not shared(cid):
                first = billed.pop(cid, None)
                if first is None:
                    billed[cid] = claim
                    observed += costs[cid].total
                    continue
                twinned.add(cid)  # a second object names the cluster: both at their price
                observed -= costs[cid].total
                priced.append(first)
            priced.append(claim)
        unbilled = _priced(priced, estimate, unbilled)
        priced.clear()
        yield
    reserved, degraded_claims, degraded_storage = unbilled
    counted = quotas.Usage(
        observed=round(observed, 2),
        reserved=reserved,
        claims=count,
        storage_gib=storage,
        degraded_claims=degraded_claims,
        degraded_storage_gib=degraded_storage,
    )
    names = frozenset(claim.name for claim in billed.values())
    return Recount(usage=_plus_in_flight(counted, held, owners), billed=names)


def _shows(claim: ClaimRef, costs: Mapping[str, billing.ClusterCost]) -> bool:
    """Whether billing shows ``claim``'s cluster accruing, after its charge for a claim
    dbquota priced (:func:`recount`): the one test of whether a billed cost stands in."""
    if not claim.owned:
        cost = costs.get(claim.cluster_id)
        return cost is not None and cost.accrues
    return claim.cost is not None and billed_after(claim, costs)


def _priced(
    claims: Iterable[ClaimRef], estimate: Estimate | None, totals: tuple[float, int, int]
) -> tuple[float, int, int]:
    """``totals`` (reserved, degraded claims, their storage) plus unbilled ``claims``
    (:func:`recount`)."""
    reserved, count, storage = totals
    for claim in claims:
        cost, degraded = _price(claim, estimate)
        reserved += cost
        if degraded:
            count += 1
            storage += claim.storage_gib
    return reserved, count, storage


def _price(claim: ClaimRef, estimate: Estimate | None) -> tuple[float, bool]:
    """What an unbilled claim counts at in ``reserved``, and whether in the degraded totals
    (:func:`recount`)."""
    if not claim.owned:
        return estimate(claim) if estimate is not None else (0.0, False)
    if claim.cost is None:
        return 0.0, False
    return claim.cost, claim.degraded


def _adds(res: Reservation, owner: ClaimRef | None) -> tuple[float, int]:
    """What a reservation in flight adds to ``reserved`` and ``storageGiB`` beside its
    claim ``owner`` (None: not seen): its ``delta``, and its storage unless its claim is at
    its generation already. One that holds its object's CREATE (``newClaim``) holds the
    whole object, so beside its claim only what it holds beyond what the claim counts at:
    the price the claim shows, its storage. An UPDATE built on the CREATE's reservation
    still in flight, once the claim's price was written, counted the CREATE twice until
    the UPDATE's price was: 199.13 + 219.98 for a claim of 219.98, and 100 + 300 GiB for
    one growing to 300. Beside a price for its generation (written from another quota's
    reservation, at another margin, or moved ahead without it) an UPDATE's holds only
    what it charged beyond that price: its growth is in it as the other quota priced it
    (107.85 was counted 100.35 + 37.50)."""
    delta, gib = _number(res.get("delta")), _count(res.get("storageGiB"))
    if owner is None:
        return delta, gib
    generation = int(res.get("generation", 1))
    if owner.generation >= generation:
        gib = 0
    if not res.get("newClaim"):
        if owner.cost is not None and owner.priced_generation >= generation:
            return max(0.0, _number(res.get("cost")) - owner.cost), gib
        if owner.cost is None or reservations.seen(res) < owner.cost - reservations.HALF_CENT:
            return delta, gib
        return min(delta, max(0.0, _number(res.get("cost")) - owner.cost)), gib
    beyond = max(0, gib - owner.storage_gib)
    if not owner.owned or owner.cost is None:  # counted at no price of its own
        return delta, beyond
    return max(0.0, delta - owner.cost), beyond


def _plus_in_flight(
    counted: quotas.Usage, held: Sequence[Reservation], owners: Mapping[str, ClaimRef]
) -> quotas.Usage:
    """``counted`` plus the reservations in flight (:func:`recount`), ``reserved`` rounded."""
    reserved, count, storage = counted.reserved, counted.claims, counted.storage_gib
    degraded_claims, degraded_storage = counted.degraded_claims, counted.degraded_storage_gib
    for res in held:
        owner = owners.get(str(res.get("uid", "")))
        price, gib = _adds(res, owner)
        reserved += price
        count += 1 if res.get("newClaim") and owner is None else 0
        storage += gib
        if res.get("degraded"):
            degraded_claims += 1 if res.get("newClaim") else 0
            degraded_storage += _count(res.get("storageGiB"))
    return dataclasses.replace(
        counted,
        reserved=round(reserved, 2),
        claims=count,
        storage_gib=storage,
        degraded_claims=degraded_claims,
        degraded_storage_gib=degraded_storage,
    )
