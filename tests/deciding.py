"""A stand-in admission decision for tests of the reservation ledger (unit and e2e).

It admits a claim of a fixed cost if observed spend, the reservations held, other
replicas' escrow and the claim fit the quota's budget, the way
:mod:`dbquota.services.admitting` decides, without pricing or policies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from dbquota.domain import escrow, reservations
from dbquota.domain.resources import QuotaObject, Reservation
from dbquota.services import reserving


def admit_if_it_fits(claim: str, cost: float, *, escrow_ok: bool = True) -> reserving.Decide[bool]:
    """``escrow_ok=False`` marks the admission as one escrow must not serve (an UPDATE's)."""

    def decide(
        q: QuotaObject, held: Sequence[Reservation], others: escrow.Allowance
    ) -> reserving.Outcome[bool]:
        budget = float(str(q.get("spec", {})["monthlyBudget"]))
        observed = float(q.get("status", {}).get("spend", {}).get("observed", 0.0))
        total = observed + sum(float(r.get("cost", 0.0)) for r in held) + others.cost + cost
        if total > budget + 1e-9:
            return reserving.Outcome(result=False, admitted=False)
        return reserving.Outcome(
            result=True,
            reservation=Reservation(
                claim=claim, cost=cost, reservedAt=reservations.to_rfc3339(time.time())
            ),
            take=escrow.Allowance(cost=cost),
            room=escrow.Allowance(cost=budget - total),
            escrow=escrow_ok,
        )

    return decide
