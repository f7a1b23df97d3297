"""Prometheus metrics of dbquota and the small HTTP server that exposes them with probes.

The metric objects live on a dedicated :data:`REGISTRY` (not prometheus-client's global
one), so tests and embedders read exactly dbquota's series. :func:`serve_probes` serves,
on one port (``--metrics-port``)::

    GET /metrics   the registry in Prometheus' text format
    GET /healthz   200 while the event loop runs and the process's long-lived loops
                   keep running, 503 with the reason when one cannot (liveness)
    GET /readyz    200 once ready, 503 with the reason before (the cache warm, the
                   watches listed, start-up done)

Names follow Prometheus' naming practice: base units (``_seconds``), ``_total`` on
counters, ``_ratio`` for 0-1 shares, ``_timestamp_seconds`` for points in time (Unix
seconds; ages are computed in PromQL as ``time() - x``). Money is in the quota's currency
per month (``dbquota_quota_info`` names it).

Two kinds of series:

- **per replica** (no quota label): billing, cache and admission series, written by
  :mod:`dbquota.services.ingesting`, :mod:`dbquota.services.reserving`, the admission
  handler and the webhook server (:mod:`dbquota.handlers.webhook`: requests it refused).
  Every replica exports its own; aggregate across pods in PromQL.
- **per quota** (labels ``namespace`` and ``quota``): budget, spend, remaining, used ratio,
  max staleness and expired escrow, set by :func:`publish_quota` from the status the
  reconciler just wrote (:mod:`dbquota.services.reconciling`) and dropped by
  :func:`forget_quota` when the quota is deleted (:mod:`dbquota.handlers.quotas`). Only the
  replica that reconciles (the leader elected through its Lease) exports them; a quota it has
  not published for :meth:`QuotaSeries.expire_after` seconds (three ``--resync-interval``
  by default, set at start-up) leaves the exposition, so a replica that lost the
  election stops reporting figures it no longer refreshes. Cardinality is one series per
  quota and metric (two for spend): bounded by the number of DatabaseQuotas. The
  admission counters carry no quota label on purpose: every replica counts them, and
  only the leader hears of a deletion, so per-quota labels there would pile up series of
  deleted quotas on the other replicas.

The ``namespace`` label is the quota's namespace. A Prometheus scrape adds its own
``namespace`` target label (the operator's), which wins unless the scrape honours the
exposed labels: the chart's ServiceMonitor sets ``honorLabels: true``, as
kube-state-metrics' does, for that reason.

Size: the catalog of every series dbquota exports, with the pre-bound children the hot
admission path uses, in one module: docs/metrics.md, the dashboard and the alert rules are
checked against one list.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dbquota.domain import quotas
from dbquota.domain.resources import QuotaStatus

# No ``<counter>_created`` gauge beside every counter and histogram: in the text format
# Prometheus reads them as separate gauges, doubling the series for nothing it uses.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

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
duplicate_entries = Counter(
    "dbquota_billing_duplicate_entries_total",
    "Bulk listing entries naming a cluster an earlier entry of the same listing named "
    "(the listing shifted while paged); the highest cost of each cluster is kept.",
    registry=REGISTRY,
)
last_success = Gauge(
    "dbquota_billing_last_success_timestamp_seconds",
    "Unix time of the last successful billing sync (0: none yet). Staleness is time() minus this.",
    registry=REGISTRY,
)
tracked_clusters = Gauge(
    "dbquota_billing_tracked_clusters",
    "Cluster ids some claim names, fetched one by one when the bulk listing leaves them out.",
    registry=REGISTRY,
)
unknown_clusters = Gauge(
    "dbquota_billing_unknown_clusters",
    "Tracked cluster ids the provider answered 404 for, not asked again until their backoff ends.",
    registry=REGISTRY,
)
consecutive_failures = Gauge(
    "dbquota_billing_consecutive_failures",
    "Billing calls failed in a row.",
    registry=REGISTRY,
)
leader = Gauge(
    "dbquota_leader",
    "1 while this replica leads (holds the leader Lease: it reconciles quotas, prices "
    "claims and writes Events), 0 otherwise.",
    registry=REGISTRY,
)
fallback_ratio = Gauge(
    "dbquota_fallback_ratio",
    "Share (0-1) of this replica's last 1000 priced admission decisions that were priced "
    "from cached or conservative data instead of live prices (pricing Cached, "
    "Conservative, StrictCap or FailOpen).",
    registry=REGISTRY,
)
sync_duration = Histogram(
    "dbquota_billing_sync_duration_seconds",
    "Duration of one billing sync.",
    ["result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
cache_fallback = Gauge(
    "dbquota_cache_fallback",
    "1 when the billing cache file could not be used and a fallback (temporary folder or "
    "memory) holds the data until the process ends.",
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
cache_errors = Counter(
    "dbquota_cache_errors_total",
    "Billing cache faults while running, by kind: write (a sync's write failed: read-only "
    "file, full disk, lock held elsewhere; kept and written once the cache works), refused "
    "(rows SQLite refused outright, not retried), replaced (the file deleted or replaced "
    "under the process, made anew from memory).",
    ["kind"],
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
    "Admission decisions, one for each DatabaseQuota a reviewed claim was checked against "
    "(no quota label: see dbquota_quota_* for per-quota figures), by outcome (admitted, "
    "warned, denied), pricing mode (Live, Cached, Conservative, StrictCap, FailOpen, "
    "None), reason, dry run and degraded (true when billing was degraded for the quota and "
    "its degradation policy decided).",
    ["outcome", "pricing", "reason", "dry_run", "degraded"],
    registry=REGISTRY,
)

admission_paths = Counter(
    "dbquota_admission_reservations_total",
    "Reservations taken (over all quotas), by path: escrow (admitted from the replica's "
    "escrow, written a moment later) or exact (decided and written by compare-and-swap "
    "first).",
    ["path"],
    registry=REGISTRY,
)
from_escrow = admission_paths.labels(path="escrow")
"""The ``escrow`` child, bound once: it is counted on every admission from escrow."""
exact = admission_paths.labels(path="exact")
"""The ``exact`` child."""


def decision_counter(
    *, outcome: str, pricing: str, reason: str, dry_run: bool, degraded: bool
) -> Counter:
    """The ``dbquota_admission_decisions_total`` child for these labels, bound once per
    combination (a few dozen exist; ``dry_run`` and ``degraded`` are ``true`` or
    ``false``) rather than looked up per admission."""
    key = (outcome, pricing, reason, dry_run, degraded)
    child = _decision_children.get(key)
    if child is None:
        child = admission_decisions.labels(
            outcome=outcome,
            pricing=pricing,
            reason=reason,
            dry_run=str(dry_run).lower(),
            degraded=str(degraded).lower(),
        )
        _decision_children[key] = child
    return child


_decision_children: dict[tuple[str, str, str, bool, bool], Counter] = {}

webhook_rejected = Counter(
    "dbquota_webhook_rejected_requests_total",
    "Requests to the admission webhook refused before admission, by reason: malformed "
    "(not an AdmissionReview, HTTP 400), too_large (413; an HTTP/1.1 head over 64 KiB: "
    "431), method (405), path (404), client (a client certificate whose name is not "
    "allowed, 403), http (unparsable HTTP), timeout (the body did not arrive in time, 408), "
    "busy (all connections together hold too many request bytes, 503), stalled (a client "
    "that took no answer for 30 s: its HTTP/2 stream reset, or its connection aborted), "
    "flood (an HTTP/2 client past a budget of stream resets, SETTINGS or CONTINUATION "
    "frames: GOAWAY ENHANCE_YOUR_CALM).",
    ["reason"],
    registry=REGISTRY,
)
webhook_status_denied = Counter(
    "dbquota_webhook_status_writes_denied_total",
    "Writes of a DatabaseClaim's status by anyone but dbquota that would have changed it, "
    "denied: the status holds the price every quota of the namespace counts the claim at.",
    registry=REGISTRY,
)
webhook_late = Counter(
    "dbquota_webhook_late_reviews_total",
    "Reviews denied with 503 and a message to try again because their admission was not "
    "decided shortly before the apiserver's timeout for the call (its ?timeout=): a denial "
    "that says why, where the apiserver would have failed the call (failurePolicy Fail) "
    "or admitted it unchecked (Ignore).",
    registry=REGISTRY,
)
webhook_abandoned = Counter(
    "dbquota_webhook_abandoned_reviews_total",
    "Reviews whose client gave up before their answer (it reset the HTTP/2 stream or "
    "closed the connection, as the apiserver does at its webhook timeout); their "
    "admissions were cancelled, and one still queued for a write of its quota reserved "
    "nothing.",
    registry=REGISTRY,
)


@dataclass(frozen=True, kw_only=True)
class _QuotaFigures:
    """What one quota's last published status says, and when it was published."""

    budget: float
    observed: float
    reserved: float
    remaining: float
    max_staleness: float
    currency: str
    enforcement: str
    policy: str
    published: float
    """:meth:`QuotaSeries` clock reading at publication (monotonic seconds)."""


QUOTA_LABELS = ("namespace", "quota")


class QuotaSeries(Collector):
    """The per-quota series: what the reconciler last wrote for each quota.

    A custom collector rather than labelled Gauges so that a quota's series appear and
    go together (published, forgotten, expired) and so that expiry needs no sweeping
    task. Safe to publish from the event loop while a scrape runs in another thread.
    """

    def __init__(
        self, *, expire_after: float = 90.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._expire_after = expire_after
        self._clock = clock
        self._figures: dict[tuple[str, str], _QuotaFigures] = {}
        self._escrow_expired: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def expire_after(self, seconds: float) -> None:
        """Drop a quota's series from the exposition once unpublished for ``seconds``."""
        if not seconds > 0:
            raise ValueError(f"expire_after must be a positive number of seconds, got {seconds}")
        self._expire_after = seconds

    def publish(
        self,
        *,
        namespace: str,
        name: str,
        spec: Mapping[str, object],
        status: QuotaStatus,
        escrow_expired: int = 0,
    ) -> None:
        """Record a quota's figures from its spec and the status just written.

        A spec that cannot be read (the status then says ``Ready=False/InvalidSpec`` and
        holds no spend) removes the quota's gauges: there is no budget to report.
        """
        key = (namespace, name)
        spend = status.get("spend")
        try:
            parsed = quotas.parse_quota(name=name, spec=spec)
        except ValueError:
            parsed = None
        with self._lock:
            self._escrow_expired[key] = self._escrow_expired.get(key, 0) + escrow_expired
            if parsed is None or spend is None:
                self._figures.pop(key, None)
                return
            self._figures[key] = _QuotaFigures(
                budget=parsed.monthly_budget,
                observed=float(spend.get("observed", 0.0)),
                reserved=float(spend.get("reserved", 0.0)),
                remaining=float(spend.get("remaining", parsed.monthly_budget)),
                max_staleness=parsed.max_staleness,
                currency=parsed.currency,
                enforcement=parsed.enforcement,
                policy=parsed.policy,
                published=self._clock(),
            )

    def forget(self, *, namespace: str, name: str) -> None:
        """Remove every series of a deleted quota."""
        with self._lock:
            self._figures.pop((namespace, name), None)
            self._escrow_expired.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        """The families, each present (perhaps without samples) so that names are known."""
        with self._lock:
            oldest = self._clock() - self._expire_after
            live = {k: f for k, f in self._figures.items() if f.published >= oldest}
            expired = {k: n for k, n in self._escrow_expired.items() if k in live}
        info = GaugeMetricFamily(
            "dbquota_quota_info",
            "1 for each DatabaseQuota, with its currency, enforcement and degradation policy.",
            labels=[*QUOTA_LABELS, "currency", "enforcement", "policy"],
        )
        budget = _gauge("dbquota_quota_budget", "spec.monthlyBudget, per month.")
        spend = GaugeMetricFamily(
            "dbquota_quota_spend",
            "status.spend per month, by kind: observed (billed run-rate) or reserved "
            "(admitted, not billed yet).",
            labels=[*QUOTA_LABELS, "kind"],
        )
        remaining = _gauge(
            "dbquota_quota_remaining",
            "status.spend.remaining per month: budget - observed - reserved (negative when "
            "over budget).",
        )
        used = _gauge(
            "dbquota_quota_used_ratio",
            "(observed + reserved) / budget; 1 or more means the budget is used up.",
        )
        staleness = _gauge(
            "dbquota_quota_max_staleness_seconds",
            "spec.degradation.maxStaleness: billing data older than this puts the quota's "
            "admissions in degraded mode.",
        )
        escrow_expired = CounterMetricFamily(
            "dbquota_escrow_expired",
            "Escrow entries let go because their replica stopped renewing them (it died "
            "holding budget), counted by the reconciler.",
            labels=list(QUOTA_LABELS),
        )
        for (namespace, name), f in sorted(live.items()):
            labels = [namespace, name]
            info.add_metric([*labels, f.currency, f.enforcement, f.policy], 1.0)
            budget.add_metric(labels, f.budget)
            spend.add_metric([*labels, "observed"], f.observed)
            spend.add_metric([*labels, "reserved"], f.reserved)
            remaining.add_metric(labels, f.remaining)
            used.add_metric(labels, (f.observed + f.reserved) / f.budget)
            staleness.add_metric(labels, f.max_staleness)
            escrow_expired.add_metric(labels, float(expired.get((namespace, name), 0)))
        yield from (info, budget, spend, remaining, used, staleness, escrow_expired)


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(QUOTA_LABELS))


quota_series = QuotaSeries()
REGISTRY.register(quota_series)


def publish_quota(
    *,
    namespace: str,
    name: str,
    spec: Mapping[str, object],
    status: QuotaStatus,
    escrow_expired: int = 0,
) -> None:
    """Export a quota's figures from the status the reconciler just wrote (see
    :meth:`QuotaSeries.publish`); ``escrow_expired`` is how many escrow entries that
    write let go."""
    quota_series.publish(
        namespace=namespace, name=name, spec=spec, status=status, escrow_expired=escrow_expired
    )


def forget_quota(*, namespace: str, name: str) -> None:
    """Remove a deleted quota's series."""
    quota_series.forget(namespace=namespace, name=name)


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
    ready: Callable[[], str | None],
    alive: Callable[[], str | None] = lambda: None,
    host: str = "0.0.0.0",  # noqa: S104 - probes come from the kubelet, off-pod
    registry: CollectorRegistry = REGISTRY,
) -> AsyncIterator[int]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port``; yields the bound port.

    ``ready()`` is None when the replica is ready, else why not (``/readyz`` says it);
    ``alive()`` is None while the process works, else why a restart is needed
    (``/healthz`` says it, and the kubelet restarts the container).
    """

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=exposition(registry),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )

    async def healthz(_: web.Request) -> web.Response:
        problem = alive()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(text=f"unhealthy: {problem}\n", status=503)

    async def readyz(_: web.Request) -> web.Response:
        problem = ready()
        if problem is None:
            return web.Response(text="ready\n")
        return web.Response(text=f"not ready: {problem}\n", status=503)

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
