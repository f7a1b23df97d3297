"""Admission of one DatabaseClaim: decide against each quota of its namespace and reserve.

Called by the webhook's admission adapter (:mod:`dbquota.handlers.operating`) with what
the informers hold (the namespace's quotas and claims) and the billing snapshot; it never
calls the billing API. For each quota, the decision runs inside the quota's ledger
(:mod:`dbquota.services.reserving`), against the quota as just read from the apiserver and
the reservations it holds, so that concurrent admissions through any number of replicas
are decided one after another and reserve by compare-and-swap; or, when the replica's
escrow covers a CREATE, at once against what the replica last read (the other replicas'
escrow counted as used).

With several quotas in a namespace every one must admit; they are visited in name order
and a denial stops the visit. A hold already taken on an earlier quota for a claim that a
later quota denies is released by the reconciler once the grace period shows the claim
never appeared (``NeverCreated``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dbquota.domain import billing, claims, escrow, quotas, reservations, verdicts
from dbquota.domain.resources import QuotaObject, Reservation
from dbquota.services import reserving
from dbquota.settings import NoQuotaPolicy

logger = logging.getLogger(__name__)

DecisionListener = Callable[[verdicts.Decision], None]


@dataclass(frozen=True, kw_only=True)
class Review:
    """One AdmissionReview of a DatabaseClaim, reduced to what admission needs."""

    namespace: str
    name: str
    spec: object
    """The claim's ``spec``: any JSON value; parsing denies a bad one in its own words."""
    old_spec: object | None
    """The previous ``spec`` of an UPDATE (any JSON value but null), None for a CREATE."""
    dry_run: bool


class Admission:
    """Decides and reserves; see the module docstring."""

    def __init__(
        self,
        *,
        ledgers: reserving.Ledgers,
        snapshot: Callable[[], billing.BillingSnapshot],
        clock: Callable[[], float],
        no_quota: NoQuotaPolicy,
        listeners: Sequence[DecisionListener] = (),
    ) -> None:
        self._ledgers = ledgers
        self._snapshot = snapshot
        self._clock = clock
        self._no_quota = no_quota
        self._listeners = list(listeners)

    async def review(
        self,
        review: Review,
        *,
        quota_names: Sequence[str],
        claim_refs: Sequence[reservations.ClaimRef],
    ) -> verdicts.Verdict:
        """The verdict on ``review``; admitted (non-dry-run) claims hold budget on each quota."""
        try:
            claim = claims.parse_claim(
                namespace=review.namespace, name=review.name, spec=review.spec
            )
            old = (
                None
                if review.old_spec is None
                else claims.parse_claim(
                    namespace=review.namespace,
                    name=review.name,
                    spec=review.old_spec,
                    field="oldObject.spec",
                )
            )
        except ValueError as exc:
            return verdicts.Verdict(allowed=False, message=f"invalid DatabaseClaim: {exc}")
        if not quota_names:
            if self._no_quota == "Deny":
                return verdicts.Verdict(
                    allowed=False,
                    message=(
                        f"denied: namespace {review.namespace} has no DatabaseQuota, and this "
                        "cluster requires one (--no-quota-policy=Deny)"
                    ),
                )
            return verdicts.Verdict(allowed=True)
        snapshot = self._snapshot()
        decisions: list[verdicts.Decision] = []
        for quota_name in sorted(quota_names):
            ledger = self._ledgers.of(namespace=review.namespace, name=quota_name)
            decide = self._decider(
                review=review, claim=claim, old=old, snapshot=snapshot, claim_refs=claim_refs
            )
            decision = await ledger.reserve(decide, dry_run=review.dry_run)
            decisions.append(decision)
            for listener in self._listeners:
                listener(decision)
            if not decision.allowed:
                break
        return verdicts.combine(decisions)

    def _decider(
        self,
        *,
        review: Review,
        claim: claims.ClaimSpec,
        old: claims.ClaimSpec | None,
        snapshot: billing.BillingSnapshot,
        claim_refs: Sequence[reservations.ClaimRef],
    ) -> reserving.Decide[verdicts.Decision]:
        def decide(
            quota_obj: QuotaObject, held: Sequence[Reservation], others: escrow.Allowance
        ) -> reserving.Outcome[verdicts.Decision]:
            name = quota_obj.get("metadata", {}).get("name", "?")
            try:
                quota = quotas.parse_quota(name=name, spec=quota_obj.get("spec", {}))
            except ValueError as exc:  # the CRD schema should make this impossible
                return reserving.Outcome(
                    admitted=False,
                    result=verdicts.Decision(
                        quota=name,
                        allowed=False,
                        would_deny=True,
                        cost=0.0,
                        pricing=None,
                        degraded=False,
                        policy=None,
                        reason="InvalidQuota",
                        message=f"denied: DatabaseQuota {name} is invalid ({exc}); fix it first",
                    ),
                )
            now = self._clock()
            usage = escrow.with_held(
                reservations.usage(
                    status=quota_obj.get("status", {}),
                    held=held,
                    claims=claim_refs,
                    claim_name=review.name,
                    creating=old is None,
                ),
                others,
            )
            decision = verdicts.decide(
                quota=quota, claim=claim, old_claim=old, usage=usage, snapshot=snapshot, now=now
            )
            if not decision.allowed:
                return reserving.Outcome(admitted=False, result=decision)
            previous = next((r for r in held if r.get("claim") == review.name), None)
            if old is None:
                previous = None  # a CREATE replaces a hold left by an earlier attempt
            elif decision.cost <= 0 and decision.storage_gib <= 0:
                return reserving.Outcome(result=decision)  # an update that adds nothing
            hold = reservations.hold(
                previous=previous,
                claim_name=review.name,
                cost=decision.cost,
                storage_gib=decision.storage_gib if old is not None else claim.storage_gib,
                pricing=decision.pricing,
                degraded=decision.degraded,
                new_claim=old is None,
                now=now,
            )
            take = escrow.take(
                cost=decision.cost, new_claims=decision.new_claims, storage_gib=decision.storage_gib
            )
            return reserving.Outcome(
                result=decision,
                reservation=hold,
                take=take,
                room=escrow.free(quota=quota, usage=usage).minus(take),
                # Escrow serves CREATEs only (an UPDATE's hold builds on the current one),
                # and never StrictCap's degraded allowance (module docstring of escrow).
                escrow=old is None and not (decision.degraded and quota.policy == "StrictCap"),
            )

        return decide
