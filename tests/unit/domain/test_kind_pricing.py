"""Every kind priced through one bill of quantities, and what the claim-kind seam decides.

Checks: a DatabaseClaim's bill prices exactly as ``pricing.project_cost`` and
``pricing.growth_cost`` do (hypothesis, equal floats, across classes); the examples'
bills (CloudNativePG by requests and storage class, RDS by class and storage type x2 for
Multi-AZ, Zalando with its pooler); an unknown storage class priced as the dearest known
one x margin, with a warning naming it; properties over generated demands: a bigger demand
never costs less, degraded Conservative never reserves less than live, and an admitted
request never takes the quota over budget under Enforce; hard caps count another kind's
storage and the object itself; the registry refuses unknown kinds; a Crossplane object
without a tenant label has none.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dbquota.domain import billing, bills, claims, pricing, quotas, quotes, verdicts
from dbquota.domain.kinds import Demand, Volume, Workload, registry
from tests.unit.domain import samples

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

REQUESTS = samples.REQUESTS
HIGHEST = samples.REQUESTS_HIGHEST


def parsed(kind: str, file: str) -> claims.ClaimSpec:
    return registry.KINDS[kind].read(yaml.safe_load((EXAMPLES / file).read_text())).claim


def healthy() -> billing.BillingSnapshot:
    return samples.healthy(prices=REQUESTS, highest=HIGHEST)


def decide(
    claim: claims.ClaimSpec,
    old: claims.ClaimSpec | None = None,
    *,
    snapshot: billing.BillingSnapshot | None = None,
    quota: quotas.QuotaSpec | None = None,
    usage: quotas.Usage | None = None,
) -> verdicts.Decision:
    return verdicts.decide(
        quota=quota or samples.quota(),
        claim=claim,
        old_claim=old,
        usage=usage or quotas.Usage(),
        snapshot=snapshot or healthy(),
        now=samples.NOW,
    )


@settings(max_examples=300)
@given(samples.updates(), samples.price_books())
def test_a_database_claims_bill_prices_exactly_as_before(
    update: tuple[claims.ClaimSpec, claims.ClaimSpec | None],
    books: tuple[billing.PriceBook, billing.PriceBook],
) -> None:
    new, old = update
    current, _ = books
    live = bills.live_prices(new.bill, current)
    if live is None:
        assert pricing.project_cost(claim=new, prices=current) is None
        return
    assert bills.cost(new.bill, live) == pricing.project_cost(claim=new, prices=current)
    low = {} if old is None else bills.live_prices(old.bill, current) or {}
    high_unit = pricing.live_unit_prices(instance_class=new.instance_class, prices=current)
    assert high_unit is not None
    low_unit = (
        pricing.live_unit_prices(instance_class=old.instance_class, prices=current)
        if old is not None
        else None
    ) or pricing.ZERO
    assert bills.growth(
        new=new.bill, old=None if old is None else old.bill, high=live, low=low
    ) == (pricing.growth_cost(claim=new, old_claim=old, high=high_unit, low=low_unit))


def test_cnpg_is_priced_by_requests_and_storage_class() -> None:
    claim = parsed("cnpg", "cnpg-cluster.yaml")
    # 3 x (2 vCPU x 0.03 + 8 GiB x 0.004) x 730 + 3 x (120 GiB premium x 0.17 + 50 x 0.04)
    expected = 3 * (2 * 0.03 + 8 * 0.004) * 730 + 3 * (120 * 0.17 + 50 * 0.04)
    decision = decide(claim)
    assert decision.allowed
    assert decision.pricing == "Live"
    assert decision.cost == pytest.approx(expected)
    assert decision.storage_gib == 510  # every instance's volumes, for the hard cap


def test_rds_is_priced_by_class_and_storage_type_twice_with_multi_az() -> None:
    claim = parsed("rds", "rds-instance.yaml")
    decision = decide(claim)
    assert decision.cost == pytest.approx(2 * 0.5 * 730 + 2 * 200 * 0.08)
    assert claim.cluster_id == "team-a-billing-db"


def test_zalando_prices_its_pooler_with_its_instances() -> None:
    claim = parsed("zalando", "zalando-postgresql.yaml")
    pods = 2 * (0.5 * 0.03 + 2 * 0.004) * 730
    pooler = 2 * (0.25 * 0.03 + 0.125 * 0.004) * 730
    assert decide(claim).cost == pytest.approx(pods + pooler + 2 * 50 * 0.08)


def test_an_unknown_storage_class_is_priced_as_the_dearest_known_and_said() -> None:
    demand = Demand(
        instances=1, instance_class=None, cpu=1, memory_gib=1, volumes=(Volume("fast", 100),)
    )
    claim = claims.of_demand(kind="Cluster", demand=demand, cluster_id="a/b")
    decision = decide(claim, quota=samples.quota(degradation={"safetyMargin": 1.5}))
    assert decision.pricing == "Conservative"
    assert decision.cost == pytest.approx(1.5 * ((0.04 + 0.005) * 730 + 100 * 0.2))
    assert any("storage class fast is not in the price catalog" in w for w in decision.warnings)


def test_pods_with_no_requests_prices_ever_follow_the_policy() -> None:
    claim = parsed("cnpg", "cnpg-cluster.yaml")
    decision = decide(claim, snapshot=samples.healthy())  # a catalog without vCPU prices
    assert not decision.allowed
    assert decision.reason == "BillingUnavailable"


def test_hard_caps_count_another_kinds_storage_and_the_object() -> None:
    claim = parsed("cnpg", "cnpg-cluster.yaml")
    quota = samples.quota(hard={"claims": 3, "storageGiB": 600})
    decision = decide(claim, quota=quota, usage=quotas.Usage(claims=1, storage_gib=100))
    assert not decision.allowed
    assert decision.reason == "HardCapExceeded"
    assert decide(claim, quota=quota, usage=quotas.Usage(claims=2)).allowed


def test_the_registry_names_every_kind_and_refuses_others() -> None:
    assert list(registry.KINDS) == ["databaseclaims", "cnpg", "zalando", "rds"]
    assert registry.names(["cnpg", "cnpg", "rds"]) == ("cnpg", "rds")
    with pytest.raises(ValueError, match="unknown claim kind 'mysql'; known: databaseclaims"):
        registry.names(["mysql"])
    with pytest.raises(ValueError, match="no claim kind"):
        registry.names([])


def test_a_crossplane_object_without_the_label_has_no_tenant() -> None:
    obj = yaml.safe_load((EXAMPLES / "rds-instance.yaml").read_text())
    del obj["metadata"]["labels"]["crossplane.io/claim-namespace"]
    assert registry.KINDS["rds"].read(obj).tenant is None
    obj["metadata"]["labels"]["team"] = "team-b"
    assert registry.KINDS["rds"].read(obj, namespace_label="team").tenant == "team-b"


gib = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)
cores = st.floats(min_value=0.0, max_value=64.0, allow_nan=False)
storage_classes = st.sampled_from(("gp3", "premium-rwo", "standard", None, "fast"))


@st.composite
def demands(draw: st.DrawFn) -> Demand:
    """Pods by requests (with volumes of known, default or unknown classes and poolers),
    or cloud instances by a known or unknown class."""
    by_class = draw(st.booleans())
    return Demand(
        instances=draw(st.integers(min_value=1, max_value=9)),
        instance_class=draw(samples.instance_classes) if by_class else None,
        cpu=0.0 if by_class else draw(cores),
        memory_gib=0.0 if by_class else draw(gib),
        volumes=tuple(
            Volume(draw(storage_classes), draw(gib))
            for _ in range(draw(st.integers(min_value=0, max_value=3)))
        ),
        extras=()
        if by_class
        else tuple(
            Workload(name="pooler", instances=2, cpu=draw(cores), memory_gib=draw(gib))
            for _ in range(draw(st.integers(min_value=0, max_value=1)))
        ),
    )


def bigger(demand: Demand, factor: int) -> Demand:
    return replace(
        demand,
        instances=demand.instances * factor,
        volumes=tuple(Volume(v.storage_class, v.gib * 2) for v in demand.volumes),
    )


def spec(demand: Demand) -> claims.ClaimSpec:
    return claims.of_demand(kind="Cluster", demand=demand, cluster_id="a/b")


@settings(max_examples=200)
@given(demands(), st.integers(min_value=1, max_value=4))
def test_a_bigger_demand_never_costs_less(demand: Demand, factor: int) -> None:
    small = decide(spec(demand))
    large = decide(spec(bigger(demand, factor)))
    assert large.cost >= small.cost - 1e-6 * max(1.0, small.cost)


@settings(max_examples=200)
@given(demands())
def test_degraded_conservative_never_reserves_less_than_live(demand: Demand) -> None:
    claim = spec(demand)
    live = decide(claim)
    conservative = quotes.conservative(
        quota=samples.quota(), claim=claim, old_claim=None, snapshot=healthy()
    )
    assert conservative is not None
    assert conservative.cost >= live.cost - 1e-6 * max(1.0, live.cost)


@settings(max_examples=200)
@given(demands(), samples.budgets, samples.money, samples.policies)
def test_an_admitted_request_never_takes_the_quota_over_budget(
    demand: Demand, budget: float, spent: float, policy: quotas.Policy
) -> None:
    quota = samples.with_policy(policy, monthlyBudget=budget)
    usage = quotas.Usage(observed=spent)
    for snapshot in (healthy(), samples.degraded(prices=REQUESTS, highest=HIGHEST)):
        decision = decide(spec(demand), quota=quota, usage=usage, snapshot=snapshot)
        if decision.allowed and decision.pricing not in (None, "FailOpen", "StrictCap"):
            assert spent + decision.cost <= budget + 1e-6 * budget
