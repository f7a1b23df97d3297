"""Reservation bookkeeping: what a namespace uses, and when held budget is let go.

A reservation holds an admitted claim's projected cost on its quota's status until the
billing data shows the claim, so that claims admitted seconds apart are all counted (the
billing API lags by minutes to hours). Pure functions; the reservation service
(:mod:`dbquota.services.reserving`) and the reconciler call them inside their
compare-and-swap writes.

Release rules (checked on every reconcile):

- ``Billed``: billing shows the claim's cluster with a sample taken after the reservation;
  its cost is now in ``observed``, so holding it too would count it twice.
- ``ClaimDeleted``: the claim existed (the reservation learned its uid) and is gone.
- ``NeverCreated``: no claim of that name appeared within the grace period; the request
  was admitted but failed later (another webhook denied it, the client gave up). This is
  ResourceQuota's "replenishment" of charges for objects that never got created.

And the converse, :func:`adopt`: a claim that exists with no reservation and that billing
does not show yet (its replica crashed between admitting it from escrow and writing the
reservation, or it was created while the webhook was bypassed) gets one, at the price its
status shows, once it is :data:`ADOPT_AFTER` old, so that its cost is counted until
billing shows it.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dbquota.domain import billing, claims, quotas
from dbquota.domain.resources import QuotaStatus, Reservation

ReleaseReason = Literal["Billed", "ClaimDeleted", "NeverCreated"]

ADOPT_AFTER = 30.0
"""Seconds a claim may exist without a reservation before :func:`adopt` gives it one. An
admission from escrow writes its reservation within a fraction of a second; this leaves
room for a slow write without counting a claim twice for long."""


@dataclass(frozen=True, kw_only=True)
class ClaimRef:
    """What reservation bookkeeping needs to know of one existing DatabaseClaim."""

    name: str
    uid: str
    cluster_id: str
    storage_gib: int
    created: float = 0.0
    """``metadata.creationTimestamp`` as epoch seconds (0.0: unknown, i.e. long ago)."""
    cost: float | None = None
    """``status.estimatedMonthlyCost``, once the operator has written it."""
    pricing: str | None = None
    """``status.pricing``: how that cost was priced."""


def claim_ref(obj: Mapping[str, Any]) -> ClaimRef | None:
    """What bookkeeping needs of a DatabaseClaim object; None for one it cannot read."""
    meta = obj.get("metadata", {})
    status = obj.get("status") or {}
    try:
        parsed = claims.from_object(obj)
    except ValueError:
        return None
    cost = status.get("estimatedMonthlyCost")
    return ClaimRef(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        cluster_id=parsed.cluster_id,
        storage_gib=parsed.storage_gib,
        created=from_rfc3339(str(meta.get("creationTimestamp", ""))),
        cost=float(cost) if isinstance(cost, int | float) else None,
        pricing=str(status["pricing"]) if status.get("pricing") else None,
    )


def to_rfc3339(epoch: float) -> str:
    """Epoch seconds as the API's timestamp format."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: str) -> float:
    """The API's timestamp format as epoch seconds (0.0 for junk, i.e. "long ago")."""
    try:
        return datetime.datetime.fromisoformat(text).timestamp()  # 3.11 reads the trailing Z
    except (TypeError, ValueError):
        return 0.0


def observed_spend(
    *,
    claims: Iterable[ClaimRef],
    costs: Mapping[str, billing.ClusterCost],
    reserved: Collection[str] = (),
) -> float:
    """The monthly run-rate billing shows for the namespace's claims.

    Claims named in ``reserved`` are left out: a new claim's reservation holds its whole
    cost until billing samples its cluster after the reservation (then :func:`settle`
    releases it), so a sample from before (a cluster that existed before its claim, or a
    deleted claim's under the same clusterId) would count it twice.
    """
    seen: set[str] = set()
    total = 0.0
    for claim in claims:
        if claim.name in reserved:
            continue
        if claim.cluster_id in costs and claim.cluster_id not in seen:
            seen.add(claim.cluster_id)
            total += costs[claim.cluster_id].total
    return round(total, 2)


def usage(
    *,
    status: QuotaStatus,
    held: Sequence[Reservation],
    claims: Sequence[ClaimRef],
    claim_name: str,
    creating: bool,
) -> quotas.Usage:
    """A quota's usage as :func:`dbquota.domain.verdicts.decide` expects it.

    On CREATE the claim under review is left out (a reservation of the same name, from an
    earlier attempt, is replaced, not added to); on UPDATE it is counted.
    """

    def counts(name: str) -> bool:
        return not (creating and name == claim_name)

    existing = {c.name: c for c in claims if counts(c.name)}
    reservations = [r for r in held if counts(str(r.get("claim", "")))]
    pending = [r for r in reservations if r.get("claim") not in existing]
    degraded = [r for r in reservations if r.get("degraded")]
    return quotas.Usage(
        observed=max(0.0, float(status.get("spend", {}).get("observed", 0.0))),
        reserved=round(sum(max(0.0, float(r.get("cost", 0.0))) for r in reservations), 2),
        claims=len(existing) + len(pending),
        storage_gib=sum(c.storage_gib for c in existing.values())
        + sum(int(r.get("storageGiB", 0)) for r in pending),
        degraded_claims=sum(1 for r in degraded if r.get("newClaim")),
        degraded_storage_gib=sum(int(r.get("storageGiB", 0)) for r in degraded),
    )


def hold(
    *,
    previous: Reservation | None,
    claim_name: str,
    cost: float,
    storage_gib: int,
    pricing: str | None,
    degraded: bool,
    new_claim: bool,
    now: float,
) -> Reservation:
    """The reservation to keep after admitting a claim (or an update, on top of ``previous``)."""
    base_cost = float(previous.get("cost", 0.0)) if previous else 0.0
    base_storage = int(previous.get("storageGiB", 0)) if previous else 0
    held = Reservation(
        claim=claim_name,
        cost=round(base_cost + max(0.0, cost), 2),
        storageGiB=base_storage + max(0, storage_gib),
        pricing=pricing or "None",
        degraded=degraded or bool(previous and previous.get("degraded")),
        newClaim=new_claim or bool(previous and previous.get("newClaim")),
        reservedAt=to_rfc3339(now),
    )
    if previous and previous.get("uid"):
        held["uid"] = previous["uid"]
    return held


def settle(
    *,
    held: Sequence[Reservation],
    claims: Sequence[ClaimRef],
    costs: Mapping[str, billing.ClusterCost],
    now: float,
    grace: float,
) -> tuple[list[Reservation], list[tuple[Reservation, ReleaseReason]]]:
    """Split reservations into those still needed and those to release, with the reason.

    Reservations of existing claims learn the claim's uid here (so a later deletion is
    recognised at once).
    """
    by_name = {c.name: c for c in claims}
    kept: list[Reservation] = []
    released: list[tuple[Reservation, ReleaseReason]] = []
    for res in held:
        name = str(res.get("claim", ""))
        reserved_at = from_rfc3339(str(res.get("reservedAt", "")))
        claim = by_name.get(name)
        if claim is None:
            if res.get("uid"):
                released.append((res, "ClaimDeleted"))
            elif now - reserved_at > grace:
                released.append((res, "NeverCreated"))
            else:
                kept.append(res)
            continue
        if res.get("uid") and res["uid"] != claim.uid:  # deleted and created again
            released.append((res, "ClaimDeleted"))
            continue
        cost = costs.get(claim.cluster_id)
        # reservedAt has whole seconds (truncated): only a sample from the next second on
        # is surely taken after the reservation; one from the same second may predate it.
        if cost is not None and cost.observed_at >= reserved_at + 1.0:
            released.append((res, "Billed"))
            continue
        learned = res.copy()
        learned["uid"] = claim.uid
        kept.append(learned)
    return kept, released


def adopt(
    *,
    held: Sequence[Reservation],
    claims: Sequence[ClaimRef],
    costs: Mapping[str, billing.ClusterCost],
    now: float,
    after: float = ADOPT_AFTER,
) -> list[Reservation]:
    """Reservations for claims that exist, hold none and are not billed (module docstring).

    A claim is adopted once it is ``after`` seconds old and its status shows its price.
    """
    holding = {str(r.get("claim", "")) for r in held}
    adopted: list[Reservation] = []
    for claim in claims:
        if claim.name in holding or claim.cluster_id in costs or claim.cost is None:
            continue
        if now - claim.created < after:
            continue
        adopted.append(
            Reservation(
                claim=claim.name,
                uid=claim.uid,
                cost=round(max(0.0, claim.cost), 2),
                storageGiB=claim.storage_gib,
                pricing=claim.pricing or "None",
                degraded=False,
                newClaim=True,
                reservedAt=to_rfc3339(now),
            )
        )
    return adopted
