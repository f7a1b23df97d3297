"""A quota's status, recomputed from its claims, its reservations in flight and billing.

Checks that a claim counts at the price on its status until billing samples its cluster
after the charge, then at its billed cost; that reservations end silently once their
claim shows the price, stay while in flight, and are released after the grace; that the
escrow of a replica whose lease lapsed is let go and, in the same status, the claims it
admitted without writing a reservation are adopted (while a live replica's escrow may
still cover them, only old ones are); the conditions (``Ready`` is about whether prices
can be trusted, not about the budget); budget crossings; and that a refresh that only
ages the figures is not material.
"""

from __future__ import annotations

from typing import Any

from dbquota.domain import billing, reservations, statuses
from dbquota.domain.resources import Escrow, QuotaObject, Reservation
from dbquota.kits import timestamps
from tests.unit.domain import samples

STAMP = "2026-11-27T09:00:00Z"
T0 = timestamps.from_rfc3339(STAMP)


def quota(*held: Reservation, escrow: list[Escrow] | None = None, **spec: Any) -> QuotaObject:
    body: dict[str, Any] = {"monthlyBudget": 5000, **spec}
    status: dict[str, Any] = {"reservations": list(held)}
    if escrow is not None:
        status["escrow"] = escrow
    return QuotaObject(
        metadata={"name": "team-a", "namespace": "team-a", "generation": 1},
        spec=body,
        status=status,  # type: ignore[typeddict-item]
    )


def claim(name: str = "orders", **fields: Any) -> reservations.ClaimRef:
    base: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "cluster_id": f"{name}-db",
        "storage_gib": 100,
        "reserved_at": T0,
        "spec": samples.claim(),
    }
    base.update(fields)
    return reservations.ClaimRef(**base)


def hold(name: str = "orders", cost: float = 165.0, at: str = STAMP) -> Reservation:
    return Reservation(
        claim=name,
        uid=f"uid-{name}",
        generation=1,
        cost=cost,
        delta=cost,
        storageGiB=100,
        newClaim=True,
        reservedAt=at,
    )


def sampled(at: float, total: float = 170.0) -> billing.BillingSnapshot:
    cost = billing.ClusterCost(cluster_id="orders-db", compute=total, storage=0.0, observed_at=at)
    return billing.BillingSnapshot(costs={"orders-db": cost})


def refresh(
    quota_obj: QuotaObject,
    claims: list[reservations.ClaimRef],
    snapshot: billing.BillingSnapshot | None = None,
    *,
    now: float = T0 + 5,
    live: Any = lambda _: True,
) -> statuses.Refresh:
    return statuses.quota_status(
        quota=quota_obj,
        snapshot=snapshot or billing.BillingSnapshot(),
        claims=claims,
        now=now,
        grace=10,
        live=live,
    )


def test_a_claim_counts_at_its_price_until_billing_samples_it_after_the_charge() -> None:
    priced = claim(cost=165.0, priced_generation=1)
    before = refresh(quota(), [priced], sampled(T0 - 30)).status["spend"]
    assert before == {"observed": 0.0, "reserved": 165.0, "remaining": 4835.0}
    after = refresh(quota(), [priced], sampled(T0 + 2)).status["spend"]
    assert after == {"observed": 170.0, "reserved": 0.0, "remaining": 4830.0}


def test_reservations_end_when_their_claim_shows_the_price() -> None:
    got = refresh(
        quota(hold("priced"), hold("unpriced"), hold("never", at="2026-11-27T08:59:00Z")),
        [claim("priced", cost=165.0, priced_generation=1), claim("unpriced")],
    )
    assert [r["claim"] for r in got.status["reservations"]] == ["unpriced"]
    assert got.confirmed == 1
    assert [(r["claim"], why) for r, why in got.released] == [("never", "NeverCreated")]
    assert got.status["spend"]["reserved"] == 165.0 + 165.0
    assert got.status["used"]["claims"] == 2


def test_a_lapsed_replicas_escrow_goes_and_what_it_admitted_is_adopted() -> None:
    orphan = claim(created=T0)
    got = refresh(
        quota(escrow=[Escrow(holder="crashed", cost=1000.0), Escrow(holder="alive", cost=500.0)]),
        [orphan],
        samples.healthy(),
        now=samples.NOW,
        live=lambda holder: holder == "alive",
    )
    assert [e["holder"] for e in got.expired] == ["crashed"]
    assert [e["holder"] for e in got.status["escrow"]] == ["alive"]
    assert [r["claim"] for r in got.adopted] == ["orders"]
    assert got.adopted[0]["cost"] == 410.4  # priced at the live catalog
    assert got.status["spend"]["reserved"] == 410.4


def test_live_escrow_may_still_cover_a_young_orphan() -> None:
    young = claim(created=T0)
    old = claim("old", created=T0 - reservations.ADOPT_AFTER - 1)
    got = refresh(quota(escrow=[Escrow(holder="alive", cost=500.0)]), [young, old], now=T0)
    assert [r["claim"] for r in got.adopted] == ["old"]
    assert "escrow" not in got.status  # nothing lapsed: the ledgers' entries stay as they are


def conditions(got: statuses.Refresh) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in got.status["conditions"]}


def test_ready_is_about_trusting_prices_not_about_the_budget() -> None:
    now = samples.NOW
    fresh = conditions(refresh(quota(), [], samples.healthy(), now=now))
    assert fresh["Ready"] == ("True", "Reconciled")
    tripped = conditions(refresh(quota(), [], samples.degraded(age=30.0), now=now))
    assert tripped["Ready"] == ("True", "Reconciled")  # data still fresh: prices hold
    assert tripped["BillingAvailable"] == ("False", "CircuitOpen")
    stale = conditions(refresh(quota(), [], samples.degraded(age=1234.0), now=now))
    assert stale["Ready"] == ("False", "BillingUnavailable")
    never = conditions(refresh(quota(), [], billing.BillingSnapshot(), now=now))
    assert never["Ready"] == ("False", "BillingUnavailable")
    over = refresh(quota(monthlyBudget=100), [claim(cost=165.0)], samples.healthy(), now=now)
    assert conditions(over)["Ready"] == ("True", "Reconciled")
    assert conditions(over)["BudgetExceeded"] == ("True", "OverBudget")
    assert over.budget_crossed is True


def test_an_invalid_spec_is_not_ready() -> None:
    got = refresh(quota(monthlyBudget=-1), [])
    assert conditions(got)["Ready"] == ("False", "InvalidSpec")
    assert conditions(got)["BillingAvailable"][0] == "Unknown"


def test_a_refresh_that_only_ages_the_figures_is_not_material() -> None:
    a = refresh(quota(), [], samples.healthy(age=10), now=samples.NOW).status
    seen = quota()
    seen["status"] = a
    b = refresh(seen, [], samples.healthy(age=10), now=samples.NOW + 30).status
    assert a != b
    assert statuses.material(a) == statuses.material(b)
    c = refresh(quota(), [claim(cost=1.0)], samples.healthy(age=10), now=samples.NOW).status
    assert statuses.material(a) != statuses.material(c)
