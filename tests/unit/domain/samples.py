"""Builders and hypothesis strategies shared by the domain tests (not a test module).

Builders give readable examples (``claim(storage_gib=100)``, ``healthy()``,
``degraded(circuit="Open")``); strategies generate quotas, claims, usage and price books
whose highest-known prices are at or above the current ones, as ingestion guarantees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hypothesis import strategies as st

from dbquota.domain import billing, claims, quotas

NOW = 1_000_000.0
"""The instant every example decides at (epoch seconds)."""

CLASSES = ("db.t3.micro", "db.r6g.large", "db.r6g.xlarge", "db.m5.2xlarge")
UNKNOWN_CLASS = "db.x9.huge"

PRICES = billing.PriceBook(
    instance_hourly={"db.t3.micro": 0.02, "db.r6g.large": 0.5, "db.r6g.xlarge": 1.0},
    storage_gib_month=0.454,
    observed_at=NOW - 60,
)
"""Current catalog: db.r6g.large with 100 GiB costs 0.5 x 730 + 100 x 0.454 = 410.40."""

HIGHEST = billing.PriceBook(
    instance_hourly={"db.t3.micro": 0.03, "db.r6g.large": 0.6, "db.r6g.xlarge": 1.0},
    storage_gib_month=0.5,
    observed_at=NOW - 86400,
)
"""Highest prices of the history window: db.r6g.large/100 GiB at these x 1.2 is 585.60."""

REQUESTS = replace(
    PRICES,
    vcpu_hourly=0.03,
    memory_gib_hourly=0.004,
    storage_class_gib_month={"gp3": 0.08, "premium-rwo": 0.17, "standard": 0.04, None: 0.1},
)
"""The current catalog with requests prices: for pods (CloudNativePG, Zalando)."""
REQUESTS_HIGHEST = replace(
    HIGHEST,
    vcpu_hourly=0.04,
    memory_gib_hourly=0.005,
    storage_class_gib_month={"gp3": 0.09, "premium-rwo": 0.2, "standard": 0.05, None: 0.1},
)
"""The highest known prices with requests prices."""


def quota(name: str = "team-a", /, **spec: object) -> quotas.QuotaSpec:
    """A quota from spec fields (monthlyBudget 5000 unless given)."""
    body: dict[str, object] = {"monthlyBudget": 5000}
    body.update(spec)
    return quotas.parse_quota(name=name, spec=body)


def with_policy(policy: quotas.Policy, **spec: object) -> quotas.QuotaSpec:
    """A quota with degradation policy ``policy`` (plus ``spec``)."""
    degradation = dict(_as_mapping(spec.pop("degradation", {})))
    degradation["policy"] = policy
    return quota(degradation=degradation, **spec)


def _as_mapping(value: object) -> Mapping[str, object]:
    assert isinstance(value, dict)
    return value


def claim(
    instance_class: str = "db.r6g.large", *, storage_gib: int = 100, replicas: int = 1
) -> claims.ClaimSpec:
    """A postgres claim ``team-a/orders``."""
    return claims.ClaimSpec(
        engine="postgres",
        instance_class=instance_class,
        storage_gib=storage_gib,
        replicas=replicas,
        cluster_id="team-a/orders",
    )


def healthy(
    *,
    prices: billing.PriceBook | None = PRICES,
    highest: billing.PriceBook | None = HIGHEST,
    age: float = 30.0,
    failures: int = 0,
) -> billing.BillingSnapshot:
    """Breaker Closed, last success ``age`` seconds before NOW."""
    return billing.BillingSnapshot(
        health=billing.BillingHealth(
            circuit_state="Closed", last_success=NOW - age, consecutive_failures=failures
        ),
        prices=prices,
        highest=highest,
    )


def degraded(
    *,
    circuit: billing.CircuitState = "Open",
    age: float | None = 1234.0,
    prices: billing.PriceBook | None = PRICES,
    highest: billing.PriceBook | None = HIGHEST,
) -> billing.BillingSnapshot:
    """Degraded billing: circuit ``circuit``, last success ``age`` s ago (None: never)."""
    return billing.BillingSnapshot(
        health=billing.BillingHealth(
            circuit_state=circuit,
            last_success=None if age is None else NOW - age,
            consecutive_failures=5,
            last_error="timeout",
        ),
        prices=prices,
        highest=highest,
    )


# -- strategies ---------------------------------------------------------------------------

price = st.floats(min_value=0.0, max_value=5.0, allow_nan=False, allow_infinity=False)
"""Hourly prices up to 5.00, about the dearest real database instances."""
storage_price = st.floats(min_value=0.0, max_value=2.0, allow_nan=False, allow_infinity=False)
money = st.floats(min_value=0.0, max_value=50_000.0, allow_nan=False, allow_infinity=False)
budgets = st.floats(
    min_value=1.0, max_value=50_000.0, allow_nan=False, allow_infinity=False
) | st.floats(min_value=50_000.0, max_value=1e9, allow_nan=False, allow_infinity=False)
margins = st.floats(min_value=1.0, max_value=10.0, allow_nan=False, allow_infinity=False)
policies = st.sampled_from(quotas.POLICIES)
instance_classes = st.sampled_from((*CLASSES, UNKNOWN_CLASS))


@st.composite
def claim_specs(draw: st.DrawFn, *, max_storage: int = 2000) -> claims.ClaimSpec:
    """Claims of a known or unknown class, 1..max_storage GiB, 1..15 replicas."""
    return claim(
        draw(instance_classes),
        storage_gib=draw(st.integers(min_value=1, max_value=max_storage)),
        replicas=draw(st.integers(min_value=1, max_value=15)),
    )


@st.composite
def price_books(draw: st.DrawFn) -> tuple[billing.PriceBook, billing.PriceBook]:
    """(current, highest known): highest >= current for every class and for storage.

    The current catalog may miss classes the history knows, and vice versa nothing: a
    class in the current catalog is always in the history (ingestion folds it in).
    """
    known = draw(st.lists(st.sampled_from(CLASSES), min_size=1, unique=True))
    current = {c: draw(price) for c in known}
    history_only = [c for c in CLASSES if c not in known and draw(st.booleans())]
    highest = {c: current[c] + draw(price) for c in known}
    highest.update({c: draw(price) for c in history_only})
    current_storage = draw(storage_price)
    return (
        billing.PriceBook(
            instance_hourly=current, storage_gib_month=current_storage, observed_at=NOW
        ),
        billing.PriceBook(
            instance_hourly=highest,
            storage_gib_month=current_storage + draw(storage_price),
            observed_at=NOW - 3600,
        ),
    )


@st.composite
def quota_specs(
    draw: st.DrawFn,
    *,
    policy: quotas.Policy | None = None,
    enforcement: quotas.Enforcement = "Enforce",
    hard: bool = True,
) -> quotas.QuotaSpec:
    """Quotas with any budget, margin, strict caps and hard caps (none if ``hard`` is False)."""
    caps = st.none() | st.integers(min_value=0, max_value=5000) if hard else st.none()
    return quotas.QuotaSpec(
        name="team-a",
        monthly_budget=draw(budgets),
        enforcement=enforcement,
        policy=draw(policies) if policy is None else policy,
        safety_margin=draw(margins),
        hard=quotas.HardCaps(claims=draw(caps), storage_gib=draw(caps)),
        strict_cap=quotas.StrictCap(
            claims=draw(st.integers(min_value=0, max_value=10)),
            storage_gib=draw(st.integers(min_value=0, max_value=5000)),
        ),
    )


@st.composite
def usages(draw: st.DrawFn) -> quotas.Usage:
    """Any namespace usage, degraded counters included."""
    return quotas.Usage(
        observed=draw(money),
        reserved=draw(money),
        claims=draw(st.integers(min_value=0, max_value=50)),
        storage_gib=draw(st.integers(min_value=0, max_value=10_000)),
        degraded_claims=draw(st.integers(min_value=0, max_value=10)),
        degraded_storage_gib=draw(st.integers(min_value=0, max_value=5000)),
    )


@st.composite
def updates(draw: st.DrawFn) -> tuple[claims.ClaimSpec, claims.ClaimSpec | None]:
    """(claim, old claim): a CREATE (old None) or an UPDATE of any kind."""
    new = draw(claim_specs())
    old = draw(st.none() | claim_specs())
    if old is not None and draw(st.booleans()):
        old = replace(old, instance_class=new.instance_class)  # same-class updates are common
    return new, old


@st.composite
def degraded_snapshots(
    draw: st.DrawFn, *, with_prices: bool | None = None
) -> billing.BillingSnapshot:
    """Degraded for a quota with maxStaleness 15m: breaker open, stale, or no prices."""
    current, highest = draw(price_books())
    cause = draw(st.sampled_from(("Open", "HalfOpen", "stale", "never", "no-prices")))
    has_prices = draw(st.booleans()) if with_prices is None else with_prices
    if cause == "no-prices" or not has_prices:
        return degraded(
            circuit="Closed",
            age=10.0,
            prices=None,
            highest=highest if has_prices else None,
        )
    if cause in ("Open", "HalfOpen"):
        circuit: billing.CircuitState = "Open" if cause == "Open" else "HalfOpen"
        return degraded(circuit=circuit, age=10.0, prices=current, highest=highest)
    age = None if cause == "never" else draw(st.floats(min_value=901, max_value=1e6))
    return degraded(circuit="Closed", age=age, prices=current, highest=highest)
