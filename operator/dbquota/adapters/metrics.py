"""Prometheus metrics of dbquota and the small HTTP server that exposes them with probes.

The metric objects live on a dedicated :data:`REGISTRY` (not prometheus-client's global
one), so tests and embedders read exactly dbquota's series. :func:`serve_probes` serves,
on one port (``--metrics-port``)::

    GET /metrics   the registry in Prometheus' text format
    GET /healthz   200 while the event loop runs (liveness)
    GET /readyz    200 once ``ready()`` is true, 503 before (readiness: the cache is warm)

Written to by :mod:`dbquota.services.ingesting` (billing series), by the enforcement side
(its own series on the same registry) and by the webhook server
(:mod:`dbquota.handlers.webhook`: requests it refused).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CIRCUIT_STATES = ("Closed", "Open", "HalfOpen")

circuit_state = Gauge(
    "dbquota_billing_circuit_state",
    "1 for the billing circuit breaker's current state, 0 for the others.",
    ["state"],
    registry=REGISTRY,
)
circuit_transitions = Counter(
    "dbquota_billing_circuit_transitions_total",
    "Transitions of the billing circuit breaker.",
    ["from_state", "to_state"],
    registry=REGISTRY,
)
billing_calls = Counter(
    "dbquota_billing_calls_total",
    "Billing provider calls (each attempt) by endpoint and outcome.",
    ["endpoint", "outcome"],
    registry=REGISTRY,
)
rejected_payloads = Counter(
    "dbquota_billing_rejected_payloads_total",
    "Billing records that failed validation and were not cached.",
    ["endpoint"],
    registry=REGISTRY,
)
staleness_seconds = Gauge(
    "dbquota_billing_staleness_seconds",
    "Seconds since the last successful billing sync (+Inf before the first).",
    registry=REGISTRY,
)
consecutive_failures = Gauge(
    "dbquota_billing_consecutive_failures",
    "Billing calls failed in a row.",
    registry=REGISTRY,
)
fallback_hit_rate = Gauge(
    "dbquota_billing_fallback_hit_rate",
    "Share of recent admission decisions served from cached (not live) billing data.",
    registry=REGISTRY,
)
sync_duration = Histogram(
    "dbquota_billing_sync_duration_seconds",
    "Duration of one billing sync.",
    ["result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
cache_rows = Gauge(
    "dbquota_cache_rows",
    "Rows in the billing cache, by table.",
    ["table"],
    registry=REGISTRY,
)
cache_rows_written = Counter(
    "dbquota_cache_rows_written_total",
    "Rows written to the billing cache.",
    registry=REGISTRY,
)
cache_quarantines = Counter(
    "dbquota_cache_quarantines_total",
    "Corrupt billing cache files moved aside and rebuilt.",
    registry=REGISTRY,
)

admission_seconds = Histogram(
    "dbquota_admission_duration_seconds",
    "Time to decide one DatabaseClaim admission, reservation write included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
admission_decisions = Counter(
    "dbquota_admission_decisions_total",
    "Admission decisions per quota, by outcome (admitted, warned, denied), pricing mode "
    "(Live, Cached, Conservative, StrictCap, FailOpen, None), reason and dry run.",
    ["outcome", "pricing", "reason", "dry_run"],
    registry=REGISTRY,
)

admission_paths = Counter(
    "dbquota_admission_reservations_total",
    "Reservations taken per quota, by path: escrow (admitted from the replica's escrow, "
    "written a moment later) or exact (decided and written by compare-and-swap first).",
    ["path"],
    registry=REGISTRY,
)

webhook_rejected = Counter(
    "dbquota_webhook_rejected_requests_total",
    "Requests to the admission webhook refused before admission, by reason: malformed "
    "(not an AdmissionReview, HTTP 400), too_large (413), method (405), path (404), "
    "client (a client certificate whose name is not allowed, 403), http (unparsable "
    "HTTP), timeout (the body did not arrive in time, 408).",
    ["reason"],
    registry=REGISTRY,
)


def set_circuit_state(state: str) -> None:
    """Set the one-hot state gauge."""
    for name in CIRCUIT_STATES:
        circuit_state.labels(state=name).set(1.0 if name == state else 0.0)


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus' text format."""
    return prometheus_client.generate_latest(registry)


@contextlib.asynccontextmanager
async def serve_probes(
    port: int,
    *,
    ready: Callable[[], bool],
    host: str = "0.0.0.0",  # noqa: S104 - probes come from the kubelet, off-pod
    registry: CollectorRegistry = REGISTRY,
) -> AsyncIterator[int]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port``; yields the bound port."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=exposition(registry),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(text="not ready: the billing cache is not warm yet\n", status=503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
