"""The metrics and probe server: /metrics, /healthz and /readyz on a real local port.

Checks that /healthz answers 200 at once, /readyz answers 503 until ``ready()`` turns true
and 200 after, and /metrics exposes dbquota's billing series in Prometheus' format; and
that the one-hot circuit-state gauge has exactly one state set.
"""

from __future__ import annotations

import httpx

from dbquota.adapters import metrics


async def test_probes_and_metrics_over_http() -> None:
    ready = False
    async with (
        metrics.serve_probes(0, ready=lambda: ready, host="127.0.0.1") as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        ready = True
        assert (await client.get("/readyz")).status_code == 200
        metrics.set_circuit_state("Open")
        text = (await client.get("/metrics")).text
    assert 'dbquota_billing_circuit_state{state="Open"} 1.0' in text
    assert 'dbquota_billing_circuit_state{state="Closed"} 0.0' in text
    for name in (
        "dbquota_billing_calls_total",
        "dbquota_billing_rejected_payloads_total",
        "dbquota_billing_staleness_seconds",
        "dbquota_billing_sync_duration_seconds",
        "dbquota_cache_rows",
        "dbquota_billing_circuit_transitions_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text


def test_circuit_state_gauge_is_one_hot() -> None:
    metrics.set_circuit_state("HalfOpen")
    values = {
        s: metrics.REGISTRY.get_sample_value("dbquota_billing_circuit_state", {"state": s})
        for s in metrics.CIRCUIT_STATES
    }
    assert values == {"Closed": 0.0, "Open": 0.0, "HalfOpen": 1.0}
