"""kopf handler for DatabaseClaim: the claim's status.

``claim_status`` writes ``estimatedMonthlyCost``, ``pricing`` and the ``Admitted``
condition from the reservation its admission took (waiting briefly for it when the
admission came from escrow), and asks the quota to reconcile so the reservation learns the
claim's uid. Admission itself is the webhook's (:mod:`dbquota.handlers.webhook`, through
:func:`dbquota.handlers.operating.admit_claims`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from dbquota.domain import claims, conditions, pricing, reservations
from dbquota.handlers import runtime as runtime_

GROUP, VERSION = "dbquota.io", "v1alpha1"
HOLD_PATIENCE = 10.0
"""Seconds after a claim's creation during which its status waits for its reservation
(an admission from escrow writes it within a fraction of a second)."""
HOLD_POLL = 0.1
"""Seconds between two looks for that reservation."""


@kopf.on.resume(GROUP, VERSION, "databaseclaims")
@kopf.on.create(GROUP, VERSION, "databaseclaims")
@kopf.on.update(GROUP, VERSION, "databaseclaims", field="spec")
async def claim_status(
    *,
    spec: kopf.Spec,
    namespace: str | None,
    name: str | None,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Publish the claim's price and how it was priced; let its quotas learn its uid."""
    runtime = runtime_.of(memo)
    generation = int(meta.get("generation", 0))
    parsed = claims.parse_claim(namespace=namespace or "", name=name or "", spec=spec)
    quota_entries = await runtime.quota_entries(namespace or "")
    quota_names = [q.name for q in quota_entries]
    held = await runtime.find_reservation(
        namespace=namespace or "", claim=name or "", quotas=quota_names
    )
    # Admitted from a replica's escrow, its reservation is written a moment after it.
    patience = reservations.from_rfc3339(str(meta.get("creationTimestamp", ""))) + HOLD_PATIENCE
    while held is None and quota_names and time.time() < patience:
        await asyncio.sleep(HOLD_POLL)
        held = await runtime.find_reservation(
            namespace=namespace or "", claim=name or "", quotas=quota_names
        )
    snapshot = runtime.snapshot()
    if held is not None:
        cost, mode = float(held.get("cost", 0.0)), str(held.get("pricing", "Live"))
    else:
        live = (
            pricing.project_cost(claim=parsed, prices=snapshot.prices)
            if (snapshot.prices)
            else None
        )
        cost, mode = (live or 0.0), ("Live" if live is not None else "Conservative")
    now = conditions.now()
    message = f"admitted at {cost:,.2f}/month ({mode} pricing)"
    if not quota_entries:
        message = "admitted: the namespace has no DatabaseQuota"
    patch.status["estimatedMonthlyCost"] = round(cost, 2)
    if mode in pricing.PRICING_MODES:
        patch.status["pricing"] = mode
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = conditions.set_condition(
        list(status.get("conditions", [])),
        type_="Admitted",
        status="True",
        reason=f"{mode}Pricing" if quota_entries else "NoQuota",
        message=message,
        generation=generation,
        now=now,
    )
    for entry in quota_entries:
        await runtime.reconcile(entry)
