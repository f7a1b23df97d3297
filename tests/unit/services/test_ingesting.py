"""The ingestion worker against a provider behind httpx's MockTransport, on a fake clock.

Checks, one behaviour each: a sync fills the cache and swaps in a snapshot (bulk listing,
per-cluster when there is none, per-cluster for tracked ids a partial listing left out);
malformed payloads are never cached, are counted and logged with their cluster id (seed
defect 2) and a non-JSON 200 never escapes (defect 3); 404s for unknown clusters leave the
breaker Closed (defect 4); data older than maxStaleness is degraded (defect 5) and the
exported last-success timestamp says how old; an outage opens the breaker, listeners hear
"Closed"/"Open"/"HalfOpen" words, and after the recovery timeout 50 concurrent fetches
make exactly one request (defect 1); readiness after the warm-up; a restart keeps the data
and the last success; the fallback hit rate (and ``dbquota_fallback_ratio``); a
quarantined cache is announced as an Event; a cache that turns corrupt mid-run is rebuilt
from memory; the highest price over the window; snapshot() touches no I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbquota import errors, settings
from dbquota.adapters import cache as cache_
from dbquota.adapters import metrics
from dbquota.adapters.billing import HttpBillingProvider
from dbquota.kits import retrying
from dbquota.kits.clock import FakeClock
from dbquota.services import ingesting


class Provider:
    """A programmable provider API; ``mode`` picks what every response looks like."""

    def __init__(self, n: int = 5, *, bulk: bool = True) -> None:
        self.costs = {f"c{i}": (100.0 + i, 10.0) for i in range(n)}
        self.bulk = bulk
        self.mode = "ok"
        self.large = 0.2
        self.hidden: set[str] = set()
        self.bad: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.asked: Counter[str] = Counter()  # per-cluster requests by cluster id
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        endpoint = "pricing" if path == "/pricing" else "bulk" if path == "/metrics" else "cluster"
        self.requests[endpoint] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "down":
            return httpx.Response(503, json={"error": "down"})
        if self.mode == "non_json":
            return httpx.Response(200, content=b"<html>oops</html>")
        if endpoint == "pricing":
            return httpx.Response(
                200,
                json={"instance_hourly": {"db.r6g.large": self.large}, "storage_gib_month": 0.1},
            )
        if endpoint == "bulk":
            if not self.bulk:
                return httpx.Response(404, json={})
            entries = [
                {"cluster_id": cid, "compute_cost": c, "storage_cost": s}
                for cid, (c, s) in self.costs.items()
                if cid not in self.hidden and cid not in self.bad
            ]
            raw = ",".join(
                [json.dumps(e) for e in entries] + [b.decode() for b in self.bad.values()]
            )
            return httpx.Response(200, content=f'{{"clusters": [{raw}]}}'.encode())
        cid = path.removeprefix("/metrics/")
        self.asked[cid] += 1
        if cid in self.bad:
            return httpx.Response(200, content=self.bad[cid])
        if cid not in self.costs:
            return httpx.Response(404, json={"error": "unknown cluster"})
        c, s = self.costs[cid]
        return httpx.Response(200, json={"compute_cost": c, "storage_cost": s})


def make_cfg(tmp_path: Path, **billing: Any) -> settings.Settings:
    base = settings.Settings()
    return replace(
        base,
        billing=replace(
            base.billing, url="http://billing.test", rate_limit=0, retry_attempts=2, **billing
        ),
        breaker=replace(base.breaker, failure_threshold=3, recovery_timeout=30.0),
        cache=replace(base.cache, path=tmp_path / "cache.sqlite3"),
    )


Run = Callable[..., Awaitable[ingesting.Ingestor]]


@pytest.fixture(autouse=True)
def no_backoff_sleeps() -> object:
    with retrying.testing():
        yield


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def start(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Callable[..., object]]:
    stack: list[object] = []

    async def run(provider: Provider, **billing: object) -> ingesting.Ingestor:
        cm = ingesting.running(
            make_cfg(tmp_path, **billing), clock=clock, transport=httpx.MockTransport(provider)
        )
        ingestor = await cm.__aenter__()
        stack.append(cm)
        await ingestor.wait_ready() if provider.mode == "ok" else await asyncio.sleep(0.05)
        return ingestor

    yield run
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)  # type: ignore[attr-defined]


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition()`` holds; fails the test if it never does."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_warm_up_sync_fills_cache_and_snapshot(start: Run, tmp_path: Path) -> None:
    provider = Provider(5)
    ing = await start(provider)
    assert ing.ready
    snap = ing.snapshot()
    assert sorted(snap.costs) == [f"c{i}" for i in range(5)]
    assert snap.costs["c3"].compute == 103.0
    assert snap.prices is not None
    assert snap.prices.instance_hourly == {"db.r6g.large": 0.2}
    assert snap.health.circuit_state == "Closed"
    assert snap.health.last_success is not None
    assert provider.requests == {"pricing": 1, "bulk": 1}
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    assert len(await cache.latest()) == 5
    await cache.close()


async def test_without_a_bulk_listing_tracked_clusters_are_fetched_one_by_one(
    start: Run,
) -> None:
    provider = Provider(5, bulk=False)
    ing = await start(provider)
    ing.track(["c1", "c2", "c4"])
    await ing.sync_once()
    assert sorted(ing.snapshot().costs) == ["c1", "c2", "c4"]
    assert provider.requests["bulk"] == 1  # learned once that there is no listing
    assert provider.requests["cluster"] == 3
    ing.untrack(["c2"])
    await ing.sync_once()
    assert ing.tracked == {"c1", "c4"}
    assert provider.requests["cluster"] == 5


async def test_a_cluster_is_tracked_while_any_claim_names_it(start: Run) -> None:
    provider = Provider(5, bulk=False)
    ing = await start(provider)
    ing.track(["c1", "c1"])  # two claims share one clusterId
    ing.untrack(["c1"])
    assert ing.tracked == {"c1"}
    ing.untrack(["c1"])
    assert ing.tracked == set()
    ing.untrack(["never-tracked"])  # harmless
    await ing.sync_once()
    assert provider.requests["cluster"] == 0


async def test_a_cluster_the_provider_does_not_know_is_asked_again_only_after_a_backoff(
    start: Run, clock: FakeClock
) -> None:
    provider = Provider(2, bulk=False)
    ing = await start(provider)
    ing.track(["c0", "gone"])
    await ing.sync_once()
    assert provider.asked["gone"] == 1
    assert ing.unknown == {"gone"}
    for _ in range(3):  # syncs within the backoff do not ask again
        await ing.sync_once()
    assert provider.asked["gone"] == 1
    assert provider.asked["c0"] == 4
    clock.advance(ingesting.UNKNOWN_BACKOFF + 1)
    await ing.sync_once()
    assert provider.asked["gone"] == 2  # asked again, then backs off twice as long
    clock.advance(ingesting.UNKNOWN_BACKOFF + 1)
    await ing.sync_once()
    assert provider.asked["gone"] == 2
    provider.costs["gone"] = (5.0, 1.0)  # the provider learns of it
    clock.advance(2 * ingesting.UNKNOWN_BACKOFF)
    await ing.sync_once()
    assert "gone" in ing.snapshot().costs
    assert ing.unknown == set()
    ing.untrack(["gone"])
    assert ing.tracked == {"c0"}


async def test_tracked_clusters_missing_from_a_partial_listing_are_fetched(start: Run) -> None:
    provider = Provider(5)
    ing = await start(provider)  # a listing shows every cluster
    ing.track(["c2"])
    provider.hidden = {"c2", "c3"}  # the next listing leaves some out
    await ing.sync_once()
    assert "c2" in ing.snapshot().costs
    assert provider.asked == {"c2": 1}  # not c3: no claim names it
    assert ing.snapshot().health.left_out == 1  # a partial listing shows in the health


async def test_clusters_no_listing_showed_are_asked_for_a_few_at_a_time(start: Run) -> None:
    provider = Provider(5)
    ing = await start(provider)
    new = [f"new-{i}" for i in range(2 * ingesting.NEW_PER_SYNC)]  # a burst of new claims
    ing.track(new)
    await ing.sync_once()
    assert sum(provider.asked.values()) == ingesting.NEW_PER_SYNC
    await ing.sync_once()
    assert sum(provider.asked.values()) == 2 * ingesting.NEW_PER_SYNC
    await ing.sync_once()  # each answered 404: none asked again before its backoff
    assert sum(provider.asked.values()) == 2 * ingesting.NEW_PER_SYNC
    assert ing.unknown == set(new)
    assert ing.snapshot().health.left_out == 0


async def test_malformed_payloads_are_counted_logged_and_never_cached(
    start: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider(3)
    provider.bad = {
        "nan-ish": b'{"cluster_id": "nan-ish", "compute_cost": "NaN-ish", "storage_cost": 1}',
        "negative": b'{"cluster_id": "negative", "compute_cost": -40, "storage_cost": 1}',
    }
    before = sample("dbquota_billing_rejected_payloads_total", endpoint="bulk")
    caplog.set_level(logging.WARNING)
    ing = await start(provider)
    assert sample("dbquota_billing_rejected_payloads_total", endpoint="bulk") - before == 2
    assert "nan-ish" in caplog.text
    assert "negative" in caplog.text
    assert set(ing.snapshot().costs) == {"c0", "c1", "c2"}
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    assert set(await cache.latest()) == {"c0", "c1", "c2"}
    await cache.close()


async def test_a_malformed_per_cluster_body_is_rejected_and_the_rest_synced(
    start: Run, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider(3, bulk=False)
    provider.bad = {"c1": b'{"compute_cost": -1, "storage_cost": 2}'}
    ing = await start(provider)
    before = sample("dbquota_billing_rejected_payloads_total", endpoint="cluster")
    ing.track(["c0", "c1", "c2"])
    await ing.sync_once()
    assert set(ing.snapshot().costs) == {"c0", "c2"}
    assert sample("dbquota_billing_rejected_payloads_total", endpoint="cluster") - before == 1
    assert "cluster c1" in caplog.text


async def test_a_non_json_200_does_not_escape_and_is_reported(start: Run) -> None:
    provider = Provider(3)
    ing = await start(provider)
    provider.mode = "non_json"
    await ing.sync_once()  # does not raise
    health = ing.snapshot().health
    assert "MalformedPayload" in health.last_error or "pricing" in health.last_error
    assert health.consecutive_failures >= 1
    assert len(ing.snapshot().costs) == 3  # last good data kept


async def test_unknown_clusters_do_not_open_the_breaker(start: Run) -> None:
    provider = Provider(2, bulk=False)
    ing = await start(provider)
    ing.track([f"gone-{i}" for i in range(20)] + ["c0", "c1"])
    await ing.sync_once()
    assert ing.snapshot().health.circuit_state == "Closed"
    assert set(ing.snapshot().costs) == {"c0", "c1"}
    assert ing.snapshot().health.consecutive_failures == 0


async def test_data_older_than_max_staleness_is_degraded(start: Run, clock: FakeClock) -> None:
    provider = Provider(2)
    ing = await start(provider)
    snap = ing.snapshot()
    assert not ing.is_degraded(max_staleness=900)
    assert snap.fresh_cost("c0", now=clock.time(), max_staleness=900) is not None
    provider.mode = "down"
    clock.advance(901)
    await ing.sync_once()
    assert ing.staleness() == pytest.approx(901)
    last_success = sample("dbquota_billing_last_success_timestamp_seconds")
    assert clock.time() - last_success == pytest.approx(901)  # staleness, as PromQL reads it
    assert ing.is_degraded(max_staleness=900)
    assert ing.snapshot().fresh_cost("c0", now=clock.time(), max_staleness=900) is None
    assert ing.snapshot().costs["c0"].compute == 100.0  # still there for Conservative pricing


async def test_an_outage_opens_the_breaker_and_listeners_hear_it(
    start: Run, clock: FakeClock
) -> None:
    provider = Provider(2)
    ing = await start(provider)
    heard: list[tuple[str, str, str]] = []
    ing.add_transition_listener(lambda old, new, why: heard.append((old, new, why)))
    opened_before = sample(
        "dbquota_billing_circuit_transitions_total", from_state="Closed", to_state="Open"
    )
    provider.mode = "down"
    await ing.sync_once()  # pricing: 2 attempts; then the bulk listing: the 3rd failure
    assert ing.snapshot().health.circuit_state == "Open"
    assert heard[0][:2] == ("Closed", "Open")
    assert "503" in heard[0][2]
    assert (
        sample("dbquota_billing_circuit_transitions_total", from_state="Closed", to_state="Open")
        - opened_before
        == 1
    )
    assert sample("dbquota_billing_circuit_state", state="Open") == 1.0
    calls = sum(provider.requests.values())
    await ing.sync_once()  # Open: refused locally, no request
    assert sum(provider.requests.values()) == calls
    provider.mode = "ok"
    clock.advance(30)
    await ing.sync_once()
    assert [(o, n) for o, n, _ in heard] == [
        ("Closed", "Open"),
        ("Open", "HalfOpen"),
        ("HalfOpen", "Closed"),
    ]
    assert ing.snapshot().health.circuit_state == "Closed"
    assert ing.snapshot().health.consecutive_failures == 0


async def test_fifty_concurrent_fetches_after_the_timeout_send_one_request(
    start: Run, clock: FakeClock
) -> None:
    provider = Provider(60, bulk=False)
    ing = await start(provider)
    ing.track(f"c{i}" for i in range(60))
    provider.mode = "down"
    await ing.sync_once()
    assert ing.snapshot().health.circuit_state == "Open"
    provider.mode = "ok"
    provider.requests.clear()
    provider.gate = asyncio.Event()
    clock.advance(30)

    async def fetch(cid: str) -> str:
        try:
            await ing.fetch(cid)
        except errors.CircuitOpen:
            return "refused"
        return "fetched"

    tasks = [asyncio.create_task(fetch(f"c{i}")) for i in range(50)]
    await asyncio.sleep(0.01)
    provider.gate.set()
    results = await asyncio.gather(*tasks)
    assert sum(provider.requests.values()) == 1
    assert results.count("fetched") == 1
    assert ing.snapshot().health.circuit_state == "Closed"


async def test_ready_after_a_failed_warm_up_even_with_an_empty_cache(
    start: Run, clock: FakeClock
) -> None:
    provider = Provider(2)
    provider.mode = "down"
    ing = await start(provider)
    assert ing.ready  # degraded, per the quotas' policies, rather than refusing everything
    snapshot = ing.snapshot()
    assert snapshot.prices is None
    assert snapshot.health.last_success is None
    assert snapshot.health.last_error  # the failure is news while it lasts
    provider.mode = "ok"
    clock.advance(30)  # the failed warm-up opened the breaker
    await ing.sync_once()
    health = ing.snapshot().health
    assert health.last_success is not None
    assert health.circuit_state == "Closed"
    assert health.last_error == ""  # no stale error beside a healthy breaker


async def test_restart_keeps_data_and_is_ready_from_the_cache_while_down(
    tmp_path: Path, clock: FakeClock
) -> None:
    provider = Provider(4)
    cfg = make_cfg(tmp_path)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        await ing.wait_ready()
        first_success = ing.snapshot().health.last_success
    provider.mode = "down"
    clock.advance(100)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        assert len(ing.snapshot().costs) == 4  # loaded before any sync
        await ing.wait_ready()  # warm-up failed, but cached data makes it ready
        assert ing.snapshot().health.last_success == first_success
        assert ing.staleness() == pytest.approx(100)
        assert ing.snapshot().prices is not None


async def test_fallback_hit_rate_is_the_share_of_recent_decisions_from_cache(
    start: Run,
) -> None:
    ing = await start(Provider(1))
    for from_cache in (True, False, False, True):
        ing.record_decision(from_cache=from_cache)
    assert ing.snapshot().health.fallback_hit_rate == 0.5
    assert sample("dbquota_fallback_ratio") == 0.5
    for _ in range(ingesting.DECISION_WINDOW):
        ing.record_decision(from_cache=False)
    assert ing.snapshot().health.fallback_hit_rate == 0.0
    assert sample("dbquota_fallback_ratio") == 0.0


async def test_a_quarantined_cache_is_announced_to_event_listeners(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "cache.sqlite3").write_bytes(b"garbage" * 1000)
    before = sample("dbquota_cache_quarantines_total")
    cfg = make_cfg(tmp_path)
    provider = Provider(1)
    async with ingesting.running(cfg, clock=clock, transport=httpx.MockTransport(provider)) as ing:
        events: list[tuple[str, str]] = []
        ing.add_event_listener(lambda reason, message: events.append((reason, message)))
        await ing.wait_ready()
    assert [reason for reason, _ in events] == ["CacheQuarantined"]
    assert "corrupt-" in events[0][1]
    assert sample("dbquota_cache_quarantines_total") - before == 1


class CorruptOnce(cache_.Cache):
    fail = True

    async def write_sync(self, record: cache_.SyncRecord) -> int:
        if CorruptOnce.fail:
            CorruptOnce.fail = False
            raise errors.CacheCorrupt("database disk image is malformed")
        return await super().write_sync(record)


async def test_a_cache_corrupt_mid_run_is_rebuilt_from_memory(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = make_cfg(tmp_path)
    provider = Provider(3)
    cache = await cache_.Cache.open(cfg.cache.path)
    prov = HttpBillingProvider(cfg.billing, clock=clock, transport=httpx.MockTransport(provider))
    ing = await ingesting.load(cfg, provider=prov, cache=cache, clock=clock)
    await ing.sync_once()
    cache.__class__ = CorruptOnce
    provider.costs["c9"] = (9.0, 1.0)
    await ing.sync_once()
    assert cache.quarantined is not None
    assert set(await cache.latest()) == {"c0", "c1", "c2", "c9"}
    assert await cache.highest_prices(since=0) is not None
    await prov.aclose()
    await cache.close()


async def test_snapshot_keeps_the_highest_price_of_the_window(start: Run, clock: FakeClock) -> None:
    provider = Provider(1)
    ing = await start(provider)
    provider.large = 0.9
    clock.advance(60)
    await ing.sync_once()
    provider.large = 0.3
    clock.advance(60)
    await ing.sync_once()
    snap = ing.snapshot()
    assert snap.prices is not None
    assert snap.highest is not None
    assert snap.prices.instance_hourly["db.r6g.large"] == 0.3
    assert snap.highest.instance_hourly["db.r6g.large"] == 0.9


async def test_snapshot_needs_no_io(tmp_path: Path, clock: FakeClock) -> None:
    provider = Provider(2)
    async with ingesting.running(
        make_cfg(tmp_path), clock=clock, transport=httpx.MockTransport(provider)
    ) as ing:
        await ing.wait_ready()
    calls = sum(provider.requests.values())
    ing.record_decision(from_cache=True)
    snap = ing.snapshot()  # provider and cache are closed now
    assert len(snap.costs) == 2
    assert snap.health.fallback_hit_rate == 1.0
    assert sum(provider.requests.values()) == calls


async def test_the_loop_syncs_again_after_the_interval(start: Run, clock: FakeClock) -> None:
    provider = Provider(1)
    await start(provider)
    assert provider.requests["pricing"] == 1
    await until(lambda: clock.sleepers == 1)  # the loop sleeps after its warm-up turn
    clock.advance(59)
    await asyncio.sleep(0.05)
    assert provider.requests["pricing"] == 1
    clock.advance(1)
    for _ in range(500):  # bounded wait for the loop's turn, not a timing assertion
        await asyncio.sleep(0.01)
        if provider.requests["pricing"] == 2:
            break
    assert provider.requests["pricing"] == 2
