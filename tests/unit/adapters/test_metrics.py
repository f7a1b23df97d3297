"""The metrics and probe server, and the per-quota series, read as Prometheus reads them.

Checks that /healthz answers 200 at once, /readyz answers 503 until ``ready()`` turns true
and 200 after, and /metrics exposes dbquota's series in Prometheus' format (the renamed
ones under their new names only: no aliases; no ``_created`` gauges); that the one-hot
circuit-state gauge has exactly one state set; and, parsing the exposition of a registry
of their own, that a published quota shows its budget, spend by kind, remaining, used
ratio, max staleness and info labelled with the quota's namespace and name; that a
republish replaces the figures and a deletion removes every series of the quota; that a
quota unpublished for longer than the expiry leaves the exposition (and comes back when
published again); that an invalid spec drops the gauges; and that the expired-escrow
counter exists at 0 from the first publication (so ``increase()`` sees the first expiry)
and counts what each write let go.
"""

from __future__ import annotations

from typing import Any

import httpx
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from dbquota.adapters import metrics
from dbquota.domain.resources import QuotaStatus
from dbquota.kits.clock import FakeClock
from e2e import scraping


async def test_probes_and_metrics_over_http() -> None:
    problem: str | None = "the billing cache is not warm yet"
    async with (
        metrics.serve_probes(0, ready=lambda: problem, host="127.0.0.1") as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.text == "not ready: the billing cache is not warm yet\n"
        problem = None
        assert (await client.get("/readyz")).status_code == 200
        metrics.set_circuit_state("Open")
        text = (await client.get("/metrics")).text
    assert 'dbquota_billing_circuit_state{state="Open"} 1.0' in text
    assert 'dbquota_billing_circuit_state{state="Closed"} 0.0' in text
    for name, type_ in (
        ("dbquota_billing_calls_total", "counter"),
        ("dbquota_billing_rejected_payloads_total", "counter"),
        ("dbquota_billing_last_success_timestamp_seconds", "gauge"),
        ("dbquota_billing_sync_duration_seconds", "histogram"),
        ("dbquota_cache_rows", "gauge"),
        ("dbquota_billing_circuit_transitions_total", "counter"),
        ("dbquota_fallback_ratio", "gauge"),
        ("dbquota_quota_used_ratio", "gauge"),
        ("dbquota_escrow_expired_total", "counter"),
    ):
        assert f"# TYPE {name} {type_}" in text
    for removed in ("dbquota_billing_staleness_seconds", "dbquota_billing_fallback_hit_rate"):
        assert removed not in text
    assert "_created" not in text  # no creation-time gauge beside each counter


def test_circuit_state_gauge_is_one_hot() -> None:
    metrics.set_circuit_state("HalfOpen")
    values = {
        s: metrics.REGISTRY.get_sample_value("dbquota_billing_circuit_state", {"state": s})
        for s in metrics.CIRCUIT_STATES
    }
    assert values == {"Closed": 0.0, "Open": 0.0, "HalfOpen": 1.0}


SPEC: dict[str, object] = {
    "monthlyBudget": 1000,
    "currency": "EUR",
    "enforcement": "Warn",
    "degradation": {"policy": "FailClosed", "maxStaleness": "10m"},
}


def status(observed: float, reserved: float, budget: float = 1000) -> QuotaStatus:
    remaining = round(budget - observed - reserved, 2)
    return QuotaStatus(spend={"observed": observed, "reserved": reserved, "remaining": remaining})


class Scraped:
    """A registry holding only a :class:`metrics.QuotaSeries` on a fake clock, scraped."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.series = metrics.QuotaSeries(expire_after=90, clock=self.clock.monotonic)
        self.registry = CollectorRegistry()
        self.registry.register(self.series)

    def values(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample called ``name``: its labels (sorted) -> its value."""
        text = prometheus_client.generate_latest(self.registry).decode()
        return {
            tuple(sorted(s.labels.items())): s.value
            for s in scraping.samples(text)
            if s.name == name
        }

    def one(self, name: str, **labels: str) -> float:
        """The value of the one sample ``name`` with exactly these labels."""
        return self.values(name)[tuple(sorted(labels.items()))]

    def publish(self, **kwargs: Any) -> None:
        self.series.publish(**{"namespace": "team-a", "name": "q", "spec": SPEC, **kwargs})


@pytest.fixture
def scraped() -> Scraped:
    return Scraped()


def test_a_published_quota_shows_budget_spend_remaining_and_used_ratio(scraped: Scraped) -> None:
    scraped.publish(status=status(observed=600, reserved=250))
    q = {"namespace": "team-a", "quota": "q"}
    assert scraped.one("dbquota_quota_budget", **q) == 1000
    assert scraped.one("dbquota_quota_spend", **q, kind="observed") == 600
    assert scraped.one("dbquota_quota_spend", **q, kind="reserved") == 250
    assert scraped.one("dbquota_quota_remaining", **q) == 150
    assert scraped.one("dbquota_quota_used_ratio", **q) == pytest.approx(0.85)
    assert scraped.one("dbquota_quota_max_staleness_seconds", **q) == 600
    info = {"currency": "EUR", "enforcement": "Warn", "policy": "FailClosed"}
    assert scraped.one("dbquota_quota_info", **q, **info) == 1


def test_over_budget_shows_a_ratio_above_one_and_negative_remaining(scraped: Scraped) -> None:
    scraped.publish(status=status(observed=900, reserved=300))
    assert scraped.one("dbquota_quota_used_ratio", namespace="team-a", quota="q") == 1.2
    assert scraped.one("dbquota_quota_remaining", namespace="team-a", quota="q") == -200


def test_republishing_replaces_the_figures_and_forgetting_removes_them(
    scraped: Scraped,
) -> None:
    scraped.publish(status=status(observed=100, reserved=0))
    scraped.publish(status=status(observed=100, reserved=50))
    scraped.publish(name="other", status=status(observed=0, reserved=0))
    assert scraped.values("dbquota_quota_spend") == {
        (("kind", "observed"), ("namespace", "team-a"), ("quota", "other")): 0.0,
        (("kind", "reserved"), ("namespace", "team-a"), ("quota", "other")): 0.0,
        (("kind", "observed"), ("namespace", "team-a"), ("quota", "q")): 100.0,
        (("kind", "reserved"), ("namespace", "team-a"), ("quota", "q")): 50.0,
    }
    scraped.series.forget(namespace="team-a", name="q")
    for name in ("dbquota_quota_budget", "dbquota_quota_info", "dbquota_escrow_expired_total"):
        assert [dict(labels)["quota"] for labels in scraped.values(name)] == ["other"]


def test_a_quota_not_republished_in_time_leaves_the_exposition(scraped: Scraped) -> None:
    scraped.publish(status=status(observed=100, reserved=0))
    scraped.clock.advance(90)
    assert scraped.values("dbquota_quota_budget")  # exactly at the limit: still shown
    scraped.clock.advance(1)
    for name in ("dbquota_quota_budget", "dbquota_quota_info", "dbquota_escrow_expired_total"):
        assert scraped.values(name) == {}, name
    scraped.publish(status=status(observed=100, reserved=0))  # leader again
    assert scraped.one("dbquota_quota_budget", namespace="team-a", quota="q") == 1000


def test_expiry_must_be_positive(scraped: Scraped) -> None:
    with pytest.raises(ValueError, match="positive"):
        scraped.series.expire_after(0)


def test_an_unreadable_spec_drops_the_gauges(scraped: Scraped) -> None:
    scraped.publish(status=status(observed=100, reserved=0))
    scraped.publish(spec={"monthlyBudget": -5}, status=QuotaStatus(observedGeneration=2))
    assert scraped.values("dbquota_quota_budget") == {}
    assert scraped.values("dbquota_quota_used_ratio") == {}


def test_expired_escrow_is_counted_from_zero(scraped: Scraped) -> None:
    q = {"namespace": "team-a", "quota": "q"}
    scraped.publish(status=status(observed=0, reserved=0))
    assert scraped.one("dbquota_escrow_expired_total", **q) == 0
    scraped.publish(status=status(observed=0, reserved=0), escrow_expired=2)
    scraped.publish(status=status(observed=0, reserved=0), escrow_expired=1)
    assert scraped.one("dbquota_escrow_expired_total", **q) == 3


def test_every_family_is_exposed_before_any_quota_is_known(scraped: Scraped) -> None:
    text = prometheus_client.generate_latest(scraped.registry).decode()
    for name in (
        "dbquota_quota_info",
        "dbquota_quota_budget",
        "dbquota_quota_spend",
        "dbquota_quota_remaining",
        "dbquota_quota_used_ratio",
        "dbquota_quota_max_staleness_seconds",
        "dbquota_escrow_expired_total",
    ):
        assert f"# TYPE {name} " in text
