"""The ingestion worker against the real simulator process, one fault mode at a time.

Each test starts ``dbquota billing-sim`` on a free port, injects a fault through
``POST /_faults`` and counts what the client really sent with ``GET /_stats``. Checks:
a healthy full sync; ``outage`` as 503, as a hang past the read timeout, as a reset
connection and as a refused port, each opening the breaker after the threshold and then
sending nothing; after the recovery timeout 50 concurrent callers make exactly ONE request;
50 concurrent callers of one cluster make one request (coalescing);
``latency`` spikes opening the breaker on the slow-call rate; ``rate_limit`` with a real
``Retry-After`` honoured by the retry, and a long one holding every call of every
endpoint until it ends; every ``malformed`` style rejected and never cached
(defects 2 and 3); ``partial`` pages completed per cluster for tracked ids; ``flap``
survived with valid data; unknown clusters (404) leaving the breaker Closed (defect 4);
bearer tokens; and ``kill -9`` in the middle of syncs losing no committed row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbquota import errors, settings
from dbquota.adapters import cache as cache_
from dbquota.kits import clock as clock_
from dbquota.kits import retrying
from dbquota.kits.clock import FakeClock
from dbquota.services import fetching, ingesting
from tests.integration.conftest import ROOT
from tests.simulating import Simulator

pytestmark = pytest.mark.integration

THRESHOLD = 3


def config(sim: Simulator, tmp_path: Path, **billing: Any) -> settings.Settings:
    base = settings.Settings()
    options: dict[str, Any] = {
        "url": sim.url,
        "rate_limit": 0,
        "retry_attempts": 2,
        "request_timeout": 2.0,
    }
    options.update(billing)
    return replace(
        base,
        billing=replace(base.billing, **options),
        breaker=replace(base.breaker, failure_threshold=THRESHOLD, recovery_timeout=30.0),
        cache=replace(base.cache, path=tmp_path / "cache.sqlite3"),
    )


Start = Callable[..., AbstractAsyncContextManager[ingesting.Ingestor]]


@pytest.fixture(autouse=True)
def no_backoff_sleeps() -> object:
    with retrying.testing():
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ingest(tmp_path: Path, clock: FakeClock) -> Start:
    def start(
        sim: Simulator, *, real_clock: bool = False, cfg: settings.Settings | None = None, **kw: Any
    ) -> AbstractAsyncContextManager[ingesting.Ingestor]:
        used: clock_.Clock = clock_.SystemClock() if real_clock else clock
        return ingesting.running(cfg or config(sim, tmp_path, **kw), clock=used)

    return start


async def open_breaker(ing: ingesting.Ingestor) -> None:
    await ing.sync_once()
    assert ing.snapshot().health.circuit_state == "Open"


async def test_a_healthy_sync_brings_every_cluster_and_the_prices(
    simulator: Simulator, ingest: Start, tmp_path: Path
) -> None:
    async with ingest(simulator) as ing:
        await ing.wait_ready()
        snap = ing.snapshot()
    assert len(snap.costs) == 200
    assert all(c.compute >= 0 and c.storage >= 0 for c in snap.costs.values())
    assert snap.prices is not None
    assert "db.r6g.large" in snap.prices.instance_hourly
    assert simulator.outcomes("bulk") == {"ok": 1}  # 200 clusters fit one page
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    assert len(await cache.latest()) == 200
    await cache.close()


@pytest.mark.parametrize(
    ("style", "error"),
    [("503", "HTTP 503"), ("hang", "timed out"), ("reset", "RemoteProtocolError")],
)
async def test_an_outage_opens_the_breaker_then_nothing_is_sent(
    simulator: Simulator, ingest: Start, style: str, error: str
) -> None:
    async with ingest(simulator, request_timeout=0.5) as ing:
        await ing.wait_ready()
        simulator.fault(mode="outage", style=style)
        simulator.reset_stats()
        await open_breaker(ing)
        assert simulator.received() == THRESHOLD
        assert error in ing.snapshot().health.last_error
        for _ in range(3):
            await ing.sync_once()
        assert simulator.received() == THRESHOLD
        assert len(ing.snapshot().costs) == 200  # the cached data stays


async def test_a_refused_port_is_unavailable_and_recovery_closes_the_breaker(
    simulator: Simulator, ingest: Start, clock: FakeClock
) -> None:
    async with ingest(simulator) as ing:
        await ing.wait_ready()
        simulator.fault(mode="outage", style="refuse", seconds=1.0)
        await asyncio.sleep(0.3)  # the simulator closes its port shortly after answering
        await open_breaker(ing)
        assert "ConnectError" in ing.snapshot().health.last_error
        async with httpx.AsyncClient(base_url=simulator.url, timeout=1) as client:
            for _ in range(100):  # bounded wait for the port to come back
                try:
                    await client.get("/_health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        clock.advance(30)
        await ing.sync_once()
        assert ing.snapshot().health.circuit_state == "Closed"


async def test_fifty_concurrent_callers_after_recovery_send_exactly_one_request(
    simulator: Simulator, ingest: Start, clock: FakeClock
) -> None:
    async with ingest(simulator) as ing:
        await ing.wait_ready()
        simulator.fault(mode="outage", style="503")
        await open_breaker(ing)
        simulator.fault(mode="latency", latency=0.3)  # healthy, slow: the probe stays in flight
        simulator.reset_stats()
        clock.advance(30)

        async def call(cid: str) -> str:
            try:
                await ing.fetch(cid)
            except errors.CircuitOpen:
                return "refused"
            return "fetched"

        results = await asyncio.gather(*(call(f"cluster-{i:05d}") for i in range(50)))
        assert simulator.received() == 1
        assert results.count("fetched") == 1
        assert results.count("refused") == 49
        assert ing.snapshot().health.circuit_state == "Closed"


async def test_concurrent_callers_of_one_cluster_share_one_request(
    simulator: Simulator, ingest: Start
) -> None:
    async with ingest(simulator) as ing:
        await ing.wait_ready()
        simulator.fault(mode="latency", latency=0.3)
        simulator.reset_stats()
        costs = await asyncio.gather(*(ing.fetch("cluster-00042") for _ in range(50)))
        assert simulator.received("cluster") == 1
        assert len({c.compute for c in costs}) == 1


async def test_latency_spikes_open_the_breaker_on_the_slow_call_rate(
    start_simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = start_simulator("--no-bulk")
    base = config(sim, tmp_path, max_concurrency=2)
    cfg = replace(
        base,
        breaker=replace(
            base.breaker,
            slow_call_duration=0.2,
            slow_call_rate_threshold=0.5,
            minimum_calls=4,
            window_size=4,
        ),
    )
    async with ingesting.running(cfg) as ing:
        await ing.wait_ready()  # two fast calls in the window: pricing, and the bulk 404
        reasons: list[str] = []
        ing.add_transition_listener(lambda _old, new, why: reasons.append(f"{new}: {why}"))
        ing.track(f"cluster-{i:05d}" for i in range(8))
        sim.fault(mode="latency", latency=0.4, endpoints=["cluster"])
        await ing.sync_once()
        assert ing.snapshot().health.circuit_state == "Open"
        assert reasons == ["Open: slow-call rate 2/4 in the window"]
        assert sim.received("cluster") < 8  # it stopped calling once Open
        assert len(ing.snapshot().costs) >= 2  # slow answers are still good data


async def test_rate_limits_are_retried_after_the_servers_retry_after(
    simulator: Simulator, ingest: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dbquota")
    retrying.set_testing(False)  # the retries really wait (the fixture restores the switch)
    async with ingest(simulator, real_clock=True) as ing:
        await ing.wait_ready()
        simulator.fault(mode="rate_limit", retry_after=1, endpoints=["pricing"])
        simulator.reset_stats()
        await ing.sync_once()
        assert simulator.outcomes("pricing") == {"429": 2}  # two attempts, both limited
        assert simulator.outcomes("bulk") == {"ok": 1}  # sent once each hold had ended
        waits = [float(w) for w in re.findall(r"retrying in ([0-9.]+)s", caplog.text)]
        assert waits
        assert min(waits) >= 0.9
        assert "429" in ing.snapshot().health.last_error


async def test_a_long_retry_after_holds_every_billing_call_until_it_ends(
    start_simulator: Callable[..., Simulator], ingest: Start, clock: FakeClock
) -> None:
    sim = start_simulator("--no-bulk")
    async with ingest(sim, max_concurrency=4) as ing:
        await ing.wait_ready()
        ing.track(f"cluster-{i:05d}" for i in range(60))
        sim.fault(mode="rate_limit", retry_after=300, endpoints=["cluster"])
        sim.reset_stats()
        await ing.sync_once()
        assert 1 <= sim.received("cluster") <= 4  # those already in flight; none after
        assert "429 rate limited (Retry-After 300.0)" in ing.snapshot().health.last_error
        assert ing.snapshot().health.circuit_state == "Closed"  # the provider answered
        sim.reset_stats()
        clock.advance(299)
        await ing.sync_once()
        assert sim.received() == 0  # no endpoint is asked while the hold lasts
        assert "Retry-After holds billing calls 1.0s more" in ing.snapshot().health.last_error
        sim.fault(mode="none")
        clock.advance(1)
        await ing.sync_once()
        assert list(sim.outcomes("cluster")) == ["ok"]  # (the loop may have synced too)
        assert (len(ing.snapshot().costs), ing.snapshot().health.last_error) == (60, "")


async def test_client_side_rate_limit_keeps_requests_under_the_quota(
    start_simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = start_simulator("--no-bulk")
    cfg = config(sim, tmp_path, rate_limit=20.0)
    loop = asyncio.get_running_loop()
    async with ingesting.running(cfg) as ing:
        await ing.wait_ready()
        ing.track(f"cluster-{i:05d}" for i in range(60))
        started = loop.time()
        await ing.sync_once()
        elapsed = loop.time() - started
    assert sim.received("cluster") == 60
    # 60 requests at 20/s (burst 20) cannot finish in under 2 s: the limiter held them back.
    assert elapsed >= 1.9


@pytest.mark.parametrize("style", ["non_json", "missing", "string", "nan", "negative", "absurd"])
async def test_malformed_cluster_payloads_are_never_cached(
    start_simulator: Callable[..., Simulator], ingest: Start, tmp_path: Path, style: str
) -> None:
    sim = start_simulator("--no-bulk")
    async with ingest(sim) as ing:
        await ing.wait_ready()
        ing.track(["cluster-00001", "cluster-00002"])
        sim.fault(mode="malformed", style=style, endpoints=["cluster"])
        await ing.sync_once()
        assert ing.snapshot().costs == {}
        assert sim.outcomes("cluster") == {"malformed": 2}
        assert ing.snapshot().health.consecutive_failures == 2  # counted by the breaker
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    assert await cache.latest() == {}
    await cache.close()


async def test_malformed_bulk_entries_are_rejected_one_by_one(
    start_simulator: Callable[..., Simulator], ingest: Start, tmp_path: Path
) -> None:
    # Prices that never move: with the default period (60 s) the two ingests can fall
    # either side of a price change, and the entries then differ.
    simulator = start_simulator("--price-period=0")
    async with ingest(simulator) as ing:
        await ing.wait_ready()
        truth = dict(ing.snapshot().costs)
    simulator.fault(mode="malformed", style="mixed", probability=0.3, endpoints=["bulk"])
    async with ingest(simulator, cfg=config(simulator, tmp_path / "fresh")) as ing:
        await ing.wait_ready()
        costs = ing.snapshot().costs
    assert 80 < len(costs) < 200  # about 30 % of the entries were bad
    for cid, cost in costs.items():
        assert math.isfinite(cost.compute)
        assert cost.compute == truth[cid].compute


@pytest.mark.parametrize("style", ["non_json", "string", "nan", "negative", "absurd", "missing"])
async def test_a_malformed_price_catalog_is_never_cached(
    simulator: Simulator, ingest: Start, tmp_path: Path, style: str
) -> None:
    simulator.fault(mode="malformed", style=style, endpoints=["pricing"])
    async with ingest(simulator) as ing:
        await ing.wait_ready()  # costs arrived, so it is ready
        assert ing.snapshot().prices is None
    cache = await cache_.Cache.open(tmp_path / "cache.sqlite3")
    assert await cache.latest_prices() is None
    await cache.close()


async def test_partial_pages_are_completed_per_cluster_for_tracked_ids(
    simulator: Simulator, ingest: Start, clock: FakeClock
) -> None:
    simulator.fault(mode="partial", drop=0.3)
    async with ingest(simulator) as ing:
        await ing.wait_ready()
        listed = set(ing.snapshot().costs)
        missing = [f"cluster-{i:05d}" for i in range(200) if f"cluster-{i:05d}" not in listed]
        assert 20 < len(missing) < 100
        ing.track(missing[:10])
        clock.advance(fetching.UNKNOWN_BACKOFF)  # no listing showed them in all that time
        simulator.reset_stats()
        await ing.sync_once()
        assert simulator.received("cluster") == 10
        assert set(missing[:10]) <= set(ing.snapshot().costs)


async def test_a_flapping_provider_leaves_valid_data_and_recovers(
    simulator: Simulator, ingest: Start, clock: FakeClock
) -> None:
    simulator.fault(mode="flap", up=3, down=2)
    async with ingest(simulator) as ing:
        for _ in range(6):
            await ing.sync_once()
            clock.advance(31)
        outcomes = simulator.outcomes("pricing") | simulator.outcomes("bulk")
        assert "503" in outcomes
        assert "ok" in outcomes
        simulator.fault(mode="none")
        clock.advance(31)
        await ing.sync_once()
        snap = ing.snapshot()
        assert snap.health.circuit_state == "Closed"
        assert len(snap.costs) == 200
        assert ing.ready


async def test_unknown_clusters_leave_the_breaker_closed(
    start_simulator: Callable[..., Simulator], ingest: Start
) -> None:
    sim = start_simulator("--no-bulk")
    async with ingest(sim) as ing:
        await ing.wait_ready()
        ing.track([f"deleted-{i}" for i in range(30)] + ["cluster-00003"])
        await ing.sync_once()
        assert sim.outcomes("cluster") == {"404": 30, "ok": 1}
        assert ing.snapshot().health.circuit_state == "Closed"
        assert list(ing.snapshot().costs) == ["cluster-00003"]


async def test_bearer_token_from_a_file(
    start_simulator: Callable[..., Simulator], ingest: Start, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("game-day-token\n")
    sim = start_simulator("--token-file", str(token))
    async with ingest(sim, token_file=token) as ing:
        await ing.wait_ready()
        assert len(ing.snapshot().costs) == 200
        token.write_text("wrong")
        await ing.sync_once()  # re-read: now refused with 401, which does not trip
        assert "401" in ing.snapshot().health.last_error
        assert ing.snapshot().health.circuit_state == "Closed"


async def test_kill_9_in_the_middle_of_syncs_loses_no_committed_row(
    start_simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = start_simulator(clusters=20_000)
    path = tmp_path / "crash.sqlite3"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.syncloop",
        sim.url,
        str(path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        committed = 0
        for _ in range(3):
            line = (await asyncio.wait_for(child.stdout.readline(), timeout=120)).decode()
            assert line.startswith("committed"), line
            committed = int(line.split()[1])
        child.send_signal(signal.SIGKILL)  # the next sync is in progress
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await child.wait()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = await cache_.Cache.open(path)
    assert cache.quarantined is None
    assert len(await cache.latest()) == 20_000
    counts = await cache.row_counts()
    assert counts["syncs"] >= committed + 1  # the warm-up sync and every printed one
    await cache.close()


async def test_faults_expire_and_bad_faults_are_refused(simulator: Simulator) -> None:
    async with httpx.AsyncClient(base_url=simulator.url) as client:
        bad = await client.post("/_faults", json={"mode": "meteor"})
        assert bad.status_code == 400
        assert "mode must be one of" in bad.json()["error"]
        simulator.fault(mode="outage", seconds=0.2)
        assert (await client.get("/pricing")).status_code == 503
        for _ in range(100):
            if (await client.get("/_faults")).json()["fault"]["mode"] == "none":
                break
            await asyncio.sleep(0.02)
        assert (await client.get("/pricing")).status_code == 200
