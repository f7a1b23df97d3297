"""Requests prices (vCPU, memory, per storage class) from the real simulator process.

Each test starts ``dbquota billing-sim`` on a free port (with a price period far longer
than the test, so ``GET /pricing`` and the sync see one catalog). Checks: a sync brings the
requests prices into the snapshot and the SQLite cache exactly as the simulator serves
them (the default class under None); a restart with the provider down serves them from the
cache, highest-known included; a catalog whose requests price is malformed (negative,
absurd, a string, null, or vCPU without memory) is rejected, counted in
``dbquota_billing_rejected_payloads_total{endpoint="pricing"}`` and never replaces the
prices already known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbquota import settings
from dbquota.adapters import cache as cache_
from dbquota.adapters import metrics
from dbquota.domain import billing, pricing
from dbquota.kits import retrying
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting
from tests.simulating import Simulator

pytestmark = pytest.mark.integration

LONG_PERIOD = "--price-period=1000000"


@pytest.fixture(autouse=True)
def no_backoff_sleeps() -> object:
    with retrying.testing():
        yield


def config(sim: Simulator, cache: Path) -> settings.Settings:
    base = settings.Settings()
    return replace(
        base,
        billing=replace(base.billing, url=sim.url, rate_limit=0, retry_attempts=1),
        cache=replace(base.cache, path=cache),
    )


def served(sim: Simulator) -> dict[str, Any]:
    catalog: dict[str, Any] = httpx.get(f"{sim.url}/pricing", timeout=5).json()
    return catalog


def rejected() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "dbquota_billing_rejected_payloads_total", {"endpoint": "pricing"}
    )
    return value or 0.0


def expected_classes(catalog: dict[str, Any]) -> dict[str | None, float]:
    return {
        **catalog["storage_class_gib_month"],
        billing.DEFAULT_STORAGE_CLASS: catalog["default_storage_class_gib_month"],
    }


async def test_a_sync_stores_the_requests_prices_and_a_restart_keeps_them(
    start_simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = start_simulator(LONG_PERIOD)
    catalog = served(sim)
    assert set(catalog["storage_class_gib_month"]) == {"gp3", "premium-rwo", "standard"}
    cache_path = tmp_path / "cache.sqlite3"
    async with ingesting.running(config(sim, cache_path), clock=FakeClock()) as ing:
        await ing.wait_ready()
        prices = ing.snapshot().prices
    assert prices is not None
    assert (prices.vcpu_hourly, prices.memory_gib_hourly) == (
        catalog["vcpu_hourly"],
        catalog["memory_gib_hourly"],
    )
    assert dict(prices.storage_class_gib_month) == expected_classes(catalog)

    assert prices.currency == "USD"
    cache = await cache_.Cache.open(cache_path)
    # The cache keeps every price and the currency the catalog named.
    assert await cache.latest_prices() == prices
    await cache.close()

    sim.fault(mode="outage", endpoints=["pricing", "bulk", "cluster"])
    async with ingesting.running(config(sim, cache_path), clock=FakeClock()) as ing:
        await ing.wait_ready()
        snap = ing.snapshot()
    assert snap.health.last_error  # the provider was down for this start …
    assert snap.prices is not None  # … and the prices came from the cache
    assert snap.prices.vcpu_hourly == catalog["vcpu_hourly"]
    assert dict(snap.prices.storage_class_gib_month) == expected_classes(catalog)
    highest = pricing.highest_known_requests(snap.highest, snap.prices)
    assert highest is not None
    cost = pricing.conservative_requests_cost(
        instances=3,
        cpu=2,
        memory_gib=8,
        volumes=[(None, 100), ("gp3", 20)],
        highest=highest,
        margin=1.2,
    )
    compute = (2 * catalog["vcpu_hourly"] + 8 * catalog["memory_gib_hourly"]) * 730
    storage = 100 * catalog["default_storage_class_gib_month"]
    storage += 20 * catalog["storage_class_gib_month"]["gp3"]
    assert cost == pytest.approx(1.2 * 3 * (compute + storage))


@pytest.mark.parametrize(
    ("field", "style"),
    [
        ("vcpu_hourly", "negative"),
        ("memory_gib_hourly", "absurd"),
        ("memory_gib_hourly", "missing"),  # vCPU without memory
        ("storage_class_gib_month", "string"),
        ("default_storage_class_gib_month", "nan"),  # null is not "absent"
    ],
)
async def test_a_malformed_requests_price_is_rejected_counted_and_never_cached(
    start_simulator: Callable[..., Simulator], tmp_path: Path, field: str, style: str
) -> None:
    sim = start_simulator(LONG_PERIOD)
    good = served(sim)
    cache_path = tmp_path / "cache.sqlite3"
    clock = FakeClock()
    async with ingesting.running(config(sim, cache_path), clock=clock) as ing:
        await ing.wait_ready()
        known = ing.snapshot().prices
        assert known is not None
        before = rejected()
        sim.reset_stats()
        sim.fault(mode="malformed", style=style, field=field, endpoints=["pricing"])
        clock.advance(60)
        await ing.sync_once()
        snap = ing.snapshot()
        assert rejected() == before + 1
        assert sim.outcomes("pricing") == {"malformed": 1}
        assert "price catalog" in snap.health.last_error
        assert snap.prices == known  # the last good catalog stays in force
    cache = await cache_.Cache.open(cache_path)
    latest = await cache.latest_prices()
    await cache.close()
    assert latest == known  # the currency included
    assert latest.vcpu_hourly == good["vcpu_hourly"]
