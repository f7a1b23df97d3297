"""A bill priced never costs more than can be counted, nor a number that is not one.

Checks that :func:`bills.cost` and :func:`bills.growth` give a finite amount of at most
:data:`bills.MOST` whatever the quantities and prices (hypothesis, up to the largest
floats): an overflow to infinity counts as ``MOST``, and an UPDATE's growth that comes to
infinity minus infinity (NaN, which ``max(0.0, …)`` used to turn into a free 0.0) too;
and, through the admission core, that such a request is denied under Enforce, and holds a
finite cost that JSON can carry under Warn (where an infinite one was written as null),
and that a quota's recount with such an object still gives a status.
"""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import admission, bills, claims, escrow, quotas, statuses
from dbquota.domain.kinds import Demand, Volume
from dbquota.domain.reservations import ClaimRef
from dbquota.domain.resources import QuotaObject
from dbquota.kits import steps
from tests.unit.domain import samples

VCPU, MEMORY = bills.Unit("vcpu-hours"), bills.Unit("memory-hours")
SNAPSHOT = samples.healthy(prices=samples.REQUESTS, highest=samples.REQUESTS_HIGHEST)

_amounts = st.floats(min_value=0.0, allow_nan=False) | st.just(1e308)
_units = st.sampled_from([VCPU, MEMORY, bills.Unit("class-months", "gp3")])
_bills = st.dictionaries(_units, _amounts, max_size=3)


def pods(cpu: float, memory_gib: float = 1.0) -> claims.ClaimSpec:
    """A CloudNativePG-like claim of one instance, built directly (the readers refuse
    a cpu too large to count, so only a demand made by hand has one)."""
    demand = Demand(
        instances=1,
        instance_class=None,
        cpu=cpu,
        memory_gib=memory_gib,
        volumes=(Volume("gp3", 10.0),),
        namespace="team-a",
    )
    return claims.of_demand(kind="Cluster", demand=demand, cluster_id="team-a/pg")


def admit(
    claim: claims.ClaimSpec, old: claims.ClaimSpec | None = None, **spec: object
) -> admission.Outcome:
    return admission.admit(
        quota=samples.quota(**spec),
        usage=quotas.Usage(),
        others=escrow.NOTHING,
        request=admission.Request(name="Cluster/pg", uid="u1", generation=1, claim=claim, old=old),
        held={},
        snapshot=SNAPSHOT,
        now=samples.NOW,
        holder="r1",
    )


@given(bill=_bills, prices=st.dictionaries(_units, _amounts))
def test_a_cost_is_always_a_finite_number_up_to_most(
    bill: dict[bills.Unit, float], prices: dict[bills.Unit, float]
) -> None:
    priced = {unit: prices.get(unit, 1.0) for unit in bill}
    got = bills.cost(bill, priced)
    assert math.isfinite(got)
    assert 0.0 <= got <= bills.MOST


@given(new=_bills, old=_bills, high=st.dictionaries(_units, _amounts), low=_amounts)
def test_a_growth_is_always_a_finite_number_up_to_most(
    new: dict[bills.Unit, float],
    old: dict[bills.Unit, float],
    high: dict[bills.Unit, float],
    low: float,
) -> None:
    priced = {unit: high.get(unit, 1.0) for unit in bills.ordered(new, old)}
    got = bills.growth(new=new, old=old, high=priced, low=dict.fromkeys(old, low))
    assert math.isfinite(got)
    assert 0.0 <= got <= bills.MOST


def test_infinity_minus_infinity_is_no_free_growth() -> None:
    """vCPU grows by 1e308 (at 10: infinite), memory shrinks by 1e308 (a credit at 10:
    minus infinite). The growth is unknown, so it costs the most, not nothing."""
    got = bills.growth(
        new={VCPU: 1e308}, old={MEMORY: 1e308}, high={VCPU: 10.0, MEMORY: 10.0}, low={MEMORY: 10.0}
    )
    assert got > 0.0
    assert got == bills.MOST


def test_an_update_of_an_infinitely_priced_object_is_not_free() -> None:
    """The audit's UPDATE: cpu 1e308 both before and after, more memory after."""
    outcome = admit(pods(1e308, memory_gib=100.0), old=pods(1e308))
    assert not outcome.decision.allowed
    assert outcome.decision.reason == "BudgetExceeded"
    assert outcome.decision.cost == bills.MOST


def test_an_infinite_amount_at_a_price_of_zero_is_denied() -> None:
    """730 h x 1e308 vCPU is infinite; at a vCPU price of 0 that was NaN."""
    claim = pods(1e308)
    got = bills.cost(claim.bill, dict.fromkeys(claim.bill, 0.0))
    assert math.isfinite(got)
    assert got == bills.MOST
    assert not admit(claim, monthlyBudget=1e12).decision.allowed


def test_under_warn_a_huge_object_holds_a_finite_cost() -> None:
    """An infinite cost was held as ``inf``, which the status patch wrote as null (422)."""
    outcome = admit(pods(1e308), enforcement="Warn")
    assert outcome.decision.allowed
    assert outcome.hold is not None
    json.dumps(outcome.hold, allow_nan=False)
    assert outcome.hold["cost"] == bills.MOST


def test_a_recount_with_a_huge_object_still_gives_a_status() -> None:
    """An object priced at infinity made every recount of its quota raise (``usage
    reserved must be a finite number``): the status froze at its last write."""
    huge = ClaimRef(
        name="Cluster/pg",
        uid="u1",
        cluster_id="team-a/pg",
        storage_gib=10,
        spec=pods(1e308),
        owned=False,
        namespace="team-a",
    )
    quota: QuotaObject = {
        "metadata": {"name": "team-a", "namespace": "team-a", "generation": 1},
        "spec": {"monthlyBudget": 5000},
    }
    refresh = steps.finish(
        statuses.quota_status(
            quota=quota,
            snapshot=SNAPSHOT,
            claims=[huge],
            now=samples.NOW,
            grace=60,
            ages=lambda _key: 0.0,
        )
    )
    reserved = refresh.status["spend"]["reserved"]
    assert math.isfinite(reserved)
    assert reserved >= bills.MOST
