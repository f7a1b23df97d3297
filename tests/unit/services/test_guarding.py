"""The guarded provider: breaker, retries and call metrics around any billing provider.

Through the ingestion worker, against a provider behind httpx's MockTransport on a fake
clock: malformed payloads (bulk entries and per-cluster bodies) are counted, logged with
their cluster id and never cached; 404s for unknown clusters leave the breaker Closed;
an outage opens the breaker, listeners hear ``Closed``/``Open``/``HalfOpen`` in order and
the transitions are exported; after the recovery timeout 50 concurrent fetches make
exactly one request. Around a stub provider (no HTTP: any provider can be guarded):
unavailable calls are retried and client errors are not, each attempt counted by
outcome; once quiet (our own shutdown), failures neither trip the breaker nor announce;
an attempt that never ends is cut off at its time limit as unavailable, and trips it.
A rate limit below one call a second spaces calls out; a negative one, or no attempt at
all, is refused rather than read as "no cap" or "one attempt".
A 429's ``Retry-After`` holds every call of every endpoint until it ends, sending
nothing and tripping nothing; a retry whose wait fits waits the hold out; the ingestion
loop's next sync waits for the hold's end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from dbquota import errors
from dbquota.adapters import cache as cache_
from dbquota.domain import billing
from dbquota.kits import breaker, retrying
from dbquota.kits.clock import FakeClock
from dbquota.services import guarding
from tests.unit.services.billing_api import Provider, Run, make_cfg, sample, until


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


async def test_unknown_clusters_do_not_open_the_breaker(start: Run) -> None:
    provider = Provider(2, bulk=False)
    ing = await start(provider)
    ing.track([f"gone-{i}" for i in range(20)] + ["c0", "c1"])
    await ing.sync_once()
    assert ing.snapshot().health.circuit_state == "Closed"
    assert set(ing.snapshot().costs) == {"c0", "c1"}
    assert ing.snapshot().health.consecutive_failures == 0


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


# -- around any provider ------------------------------------------------------------------


class Stub:
    """A provider with no HTTP at all: its prices call fails with ``failures`` first."""

    def __init__(self, *failures: errors.BillingError) -> None:
        self.failures = list(failures)
        self.calls = 0

    def refresh_credentials(self) -> None:
        pass

    async def fetch_cost(self, cluster_id: str) -> billing.ClusterCost:
        raise errors.UnknownCluster(cluster_id)

    async def list_costs(self, page_token: str | None) -> billing.CostPage:
        raise errors.NoBulkListing("none")

    async def fetch_prices(self) -> billing.PriceBook:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return billing.PriceBook(
            instance_hourly={"db.x": 1.0}, storage_gib_month=0.1, observed_at=0
        )

    async def aclose(self) -> None:
        pass


def guard(stub: Stub, tmp_path: Path, clock: FakeClock) -> guarding.GuardedProvider:
    return guarding.GuardedProvider(stub, cfg=make_cfg(tmp_path), clock=clock)


def calls(outcome: str) -> float:
    return sample("dbquota_billing_calls_total", endpoint="pricing", outcome=outcome)


async def test_a_stub_provider_is_retried_when_unavailable_and_each_attempt_counted(
    tmp_path: Path, clock: FakeClock
) -> None:
    stub = Stub(errors.BillingUnavailable("HTTP 503"))
    before = (calls("unavailable"), calls("ok"))
    prices = await guard(stub, tmp_path, clock).fetch_prices()
    assert prices.instance_hourly == {"db.x": 1.0}
    assert stub.calls == 2  # make_cfg allows 2 attempts
    assert (calls("unavailable"), calls("ok")) == (before[0] + 1, before[1] + 1)


async def test_a_client_error_is_not_retried_and_does_not_trip(
    tmp_path: Path, clock: FakeClock
) -> None:
    stub = Stub(*[errors.BillingClientError("HTTP 401")] * 5)
    guarded = guard(stub, tmp_path, clock)
    for _ in range(5):
        with pytest.raises(errors.BillingClientError):
            await guarded.fetch_prices()
    assert stub.calls == 5
    assert guarded.breaker.state == "Closed"


def guard_with(tmp_path: Path, clock: FakeClock, **billing: Any) -> guarding.GuardedProvider:
    cfg = make_cfg(tmp_path)
    cfg = dataclasses.replace(cfg, billing=dataclasses.replace(cfg.billing, **billing))
    return guarding.GuardedProvider(Stub(), cfg=cfg, clock=clock)


async def test_a_rate_limit_below_one_a_second_spaces_calls_out(
    tmp_path: Path, clock: FakeClock
) -> None:
    guarded = guard_with(tmp_path, clock, rate_limit=0.5)  # one call every 2 s
    await guarded.fetch_prices()  # the first goes at once
    with pytest.raises(TimeoutError):  # the next waits its turn (the limiter's real time)
        await asyncio.wait_for(guarded.fetch_prices(), timeout=0.05)


@pytest.mark.parametrize(
    ("billing", "match"), [({"rate_limit": -5}, "rate"), ({"retry_attempts": 0}, "attempts")]
)
def test_settings_out_of_range_are_refused_not_reinterpreted(
    tmp_path: Path, clock: FakeClock, billing: dict[str, float], match: str
) -> None:
    # the CLI refuses these (dbquota.settings); Settings built in code are refused here
    with pytest.raises(ValueError, match=match):
        guard_with(tmp_path, clock, **billing)


async def test_once_quiet_failures_neither_trip_nor_announce(
    tmp_path: Path, clock: FakeClock
) -> None:
    stub = Stub(*[errors.BillingUnavailable("cut short")] * 10)
    guarded = guard(stub, tmp_path, clock)
    heard: list[breaker.Transition] = []
    guarded.add_transition_listener(heard.append)
    guarded.quiet()
    for _ in range(5):  # 10 failed attempts; the threshold is 3
        with pytest.raises(errors.BillingUnavailable):
            await guarded.fetch_prices()
    assert guarded.breaker.state == "Closed"
    assert heard == []


async def test_a_listener_that_raises_does_not_stop_the_others(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    guarded = guard(Stub(*[errors.BillingUnavailable("HTTP 503")] * 4), tmp_path, clock)
    heard: list[str] = []

    def broken(transition: breaker.Transition) -> None:
        raise RuntimeError("listener bug")

    guarded.add_transition_listener(broken)
    guarded.add_transition_listener(lambda t: heard.append(t.new))
    with pytest.raises(errors.BillingUnavailable):
        await guarded.fetch_prices()  # two failed attempts
    with pytest.raises(errors.CircuitOpen):
        await guarded.fetch_prices()  # the third opens the breaker, which refuses the fourth
    assert heard == ["Open"]
    assert "a breaker transition listener failed" in caplog.text


async def test_a_retry_after_holds_every_call_until_it_ends(
    tmp_path: Path, clock: FakeClock
) -> None:
    stub = Stub(errors.RateLimited("HTTP 429", retry_after=300.0))
    guarded = guard(stub, tmp_path, clock)
    before = calls("held")
    with pytest.raises(errors.RateLimited):
        await guarded.fetch_prices()  # a wait of 300 s passes --retry-timeout: no retry
    assert stub.calls == 1
    for _ in range(5):
        with pytest.raises(errors.Held, match=r"Retry-After holds billing calls 300\.0s more"):
            await guarded.fetch_prices()
    with pytest.raises(errors.Held):
        await guarded.fetch_cost("c0")  # every endpoint: the hold is the provider's
    assert stub.calls == 1
    assert calls("held") - before == 5
    assert guarded.breaker.consecutive_failures == 0  # a 429 with a hint: an answer
    clock.advance(299.9)
    assert guarded.held_for() == pytest.approx(0.1)
    clock.advance(0.1)
    prices = await guarded.fetch_prices()
    assert (prices.instance_hourly, stub.calls) == ({"db.x": 1.0}, 2)


async def test_a_hold_within_the_retry_timeout_is_waited_out_by_the_retry(
    tmp_path: Path, clock: FakeClock
) -> None:
    stub = Stub(errors.RateLimited("HTTP 429", retry_after=5.0))
    guarded = guard(stub, tmp_path, clock)
    retrying.set_testing(False)  # really wait, on the fake clock (the fixture restores it)
    call = asyncio.create_task(guarded.fetch_prices())
    await until(lambda: clock.sleepers == 1)
    assert stub.calls == 1
    clock.advance(5.0)
    prices = await call
    assert (prices.instance_hourly, stub.calls) == ({"db.x": 1.0}, 2)


async def test_the_next_sync_waits_for_the_end_of_the_hold(start: Run, clock: FakeClock) -> None:
    provider = Provider(2, bulk=False)
    ing = await start(provider)
    ing.track(["c0", "c1"])
    await until(lambda: clock.sleepers == 1)  # the loop sleeps 60 s after its warm-up
    provider.mode = "limited"
    provider.requests.clear()
    await ing.sync_once()
    assert dict(provider.requests) == {"pricing": 1}  # the fetches of c0, c1 held
    assert "Retry-After" in ing.snapshot().health.last_error
    provider.mode = "ok"
    held = calls("held")
    clock.advance(60)  # the loop's turn: every call held, none sent
    await until(lambda: calls("held") > held and clock.sleepers == 1)
    clock.advance(239.9)
    await asyncio.sleep(0.05)
    assert dict(provider.requests) == {"pricing": 1}
    clock.advance(0.1)
    await until(lambda: provider.requests["pricing"] == 2)
    await until(lambda: ing.snapshot().health.last_error == "")


async def test_a_429_without_retry_after_trips_the_breaker(
    tmp_path: Path, clock: FakeClock
) -> None:
    guarded = guard(Stub(*[errors.RateLimited("HTTP 429")] * 4), tmp_path, clock)
    with pytest.raises(errors.RateLimited):
        await guarded.fetch_prices()  # two attempts, no hold
    assert (guarded.breaker.consecutive_failures, guarded.held_for()) == (2, 0.0)


class Hanging(Stub):
    """A provider whose prices call never ends (a hang, or an answer trickling in)."""

    async def fetch_prices(self) -> billing.PriceBook:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_an_attempt_past_its_time_limit_is_unavailable_and_trips_the_breaker(
    tmp_path: Path, clock: FakeClock
) -> None:
    stub = Hanging()
    cfg = make_cfg(tmp_path, connect_timeout=0.05, request_timeout=0.05)
    guarded = guarding.GuardedProvider(stub, cfg=cfg, clock=clock)
    before = calls("unavailable")
    with pytest.raises(errors.BillingUnavailable, match=r"timed out.* within 0\.1s"):
        # wait_for only keeps a regression from hanging the suite
        await asyncio.wait_for(guarded.fetch_prices(), timeout=10)
    assert stub.calls == 2  # retried, like any unavailable provider
    assert calls("unavailable") - before == 2
    with pytest.raises(errors.CircuitOpen):
        await asyncio.wait_for(guarded.fetch_prices(), timeout=10)  # the 3rd opens it
    assert guarded.breaker.state == "Open"
    assert "timed out" in guarded.breaker.last_error
