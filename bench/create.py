"""Benchmark: DatabaseClaim creates through a real kube-apiserver, the path users take.

    python bench/create.py [--rates 50,100,200] [--seconds 10] [--lead-in 2] [--settle 5]
                           [--settle-max 60]
                           [--phases nothing,resourcequota,dbquota,dbquota-2,dbquota-exact]
                           [--rounds 1]
                           [--extras] [--existing 10000] [--namespaces 100]
                           [--per-namespace 100] [--burst 2000] [--clients 4]
                           [--catch-up 180] [--burst-cap 300]
                           [--timeout 60] [--connections 16] [--keep]

Users ``kubectl apply`` a claim or let Argo CD / Flux sync it: claim -> kube-apiserver ->
validating webhooks -> etcd -> the operator's watches and status writes. This bench
creates DatabaseClaims exactly so, through a real etcd + kube-apiserver started by
:class:`e2e.harness.Harness` (or an existing cluster, ``DBQUOTA_E2E_USE_EXISTING=1``; then
the apiserver's and etcd's CPU are not shown), with ``crds/`` applied and the billing
simulator running for the whole run.

**The client.** HTTP/2 to the apiserver as kubectl speaks it (:mod:`bench.apiclient`:
thousands of creates in flight on a few connections), authenticated with the kubeconfig's
client certificate (the control plane's admin). Creates follow an open-loop timetable:
request *i* is due at *start + i / rate* and is sent then whatever earlier ones are
doing, and its latency counts from when it was due (a client falling behind shows as
latency, not as a lower rate). The client collects no garbage during a run. A request
with no answer after ``--timeout`` seconds is a timeout; nothing waits unbounded.

**Phases**, each at every rate of ``--rates``, rate by rate so that phases of one rate run
side by side (minutes apart, not a run apart), each in a fresh namespace, each for
``--seconds`` after an unmeasured ``--lead-in`` at the same rate:

- ``nothing``: no webhook registered at all: the apiserver's own floor.
- ``resourcequota``: a core/v1 ResourceQuota ``count/databaseclaims.dbquota.io`` with a
  hard limit no phase reaches (the apiserver compare-and-swaps its status per create;
  the bench writes its first status, as the controller-manager that this control plane
  lacks would). No dbquota webhook.
- ``dbquota``: one operator replica (``dbquota run --dev-webhook``, escrow on, defaults
  but ``--sync-interval 2``), a DatabaseQuota with a budget no phase exhausts (policy
  Conservative).
- ``dbquota-2``: two replicas behind one endpoint, as a Kubernetes Service balances them:
  a small L4 TCP proxy (``e2e/tcp_proxy.py``, round robin per connection, its own
  process so its CPU is shown) in front of two replicas that share one serving
  certificate and register nothing (electing a leader through a Lease, as the chart runs them),
  and a ValidatingWebhookConfiguration owned by the bench that points at the proxy.
- ``dbquota-exact``: one replica with ``--escrow-share=0``.

Between phases, what a phase started (operators, proxy, webhook configuration) is
stopped, and its claims and quotas deleted, so that phases do not disturb each other.

**Rounds.** ``--rounds N`` runs the whole set of phases N times, one round after the
other (so each dbquota run has a ResourceQuota run of its own round minutes before it).
Each run is reported (``dbquota #2``: the second round), each dbquota run is set against
the ResourceQuota run of its round, and the targets are judged on the median over the
rounds, each round's ratio listed beside it. On a shared machine ResourceQuota's own p99
can double from one run to the next: one pair of runs says little about a 1.5x target.

**Extra phases**, each with its own operator. Off by default (on today's code they add
about 20 minutes to a run of about 15); ``--extras`` turns all three on at the sizes of
#9's targets (bench/README.md), or give each one's flag alone (e.g. ``--existing 10000``):

- ``--existing N``: a namespace that already holds N claims (created in bulk before any
  quota or webhook exists; then the operator starts and catches up, for at most
  ``--catch-up`` seconds until every one of those claims shows its price and its CPU is
  steady), then creates at the first rate there and in an empty namespace: the p99 ratio.
- ``--namespaces N``: N namespaces each with its own DatabaseQuota and
  ``--per-namespace`` claims made in bulk the same way, then creates at the first rate
  round robin over them; the operator's peak RSS.
- ``--burst N --clients C``: N creates from C closed-loop clients into one namespace (at
  most ``--burst-cap`` seconds): total time, max latency, every error with its message
  (denials about budget apart from any other failure), the size of the DatabaseQuota
  object at the end (``kubectl get -o json | wc -c``) and the largest it was during the
  burst, the operator's RSS before/after.

**Reported** per phase and rate: sent, created, errors by reason (denied with message,
webhook failure, timeout, other), p50/p99/max create latency; the apiserver's own mean
webhook time (``apiserver_admission_webhook_admission_duration_seconds`` sum/count) and
the shares of its webhook calls over 25 and over 100 ms (its histogram's buckets: a create
slower than that was slow outside the webhook); whether the wall clock stepped during the
measured part (:class:`bench.measuring.ClockSteps`: a phase that holds a step is reported
as such, and its ratios are flagged) and, on the progress line, the CPU the hypervisor
stole meanwhile if over 2 % (:class:`bench.measuring.Steal`); how long the created claims
took to show their price, as a watcher of claims sees it (:class:`PriceTimes`), and how
many had not by the end; the largest DatabaseQuota object during the phase, bytes and
reservations (:class:`bench.measuring.QuotaSizes`);
apiserver requests caused per created claim beyond the create itself, by verb and
resource/subresource, from ``apiserver_request_total`` scraped before the lead-in and
again ``--settle`` seconds after the last answer, then once the operators' CPU is steady
(caught up, see :func:`catch_up`; at most ``--settle-max`` seconds), so that catch-up
work counts; minus the client's own creates and minus the apiserver's background (what
phase ``nothing`` of the same rate saw per second); watches apart, as the watches open
beyond the apiserver's own. Then the operators' CPU ms per created claim (all replicas,
from /proc) and peak RSS (VmHWM); the proxy's, apiserver's and etcd's CPU; the load
average. With two replicas, the progress line also gives each one's admission decisions
and which one led at the end (``dbquota_leader``): a replica that serves the reviews
without leading writes what its escrow admitted every 0.25 s, the leader every 5 s. The
reviews not decided within the apiserver's timeout, all replicas, are on the progress line
and among the errors when there are any: denied to try again
(``dbquota_webhook_late_reviews_total``) or given up on by the apiserver
(``dbquota_webhook_abandoned_reviews_total``: their creates failed with "failed calling
webhook").
Then the ratios the targets are stated in, against ResourceQuota of the same rate, and
PASS/FAIL per target. Everything is torn down at the end, also on Ctrl-C and
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import itertools
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # e2e/ and tests/ are not installed: import them from the repo

from bench import measuring  # noqa: E402
from bench.apiclient import ApiClient, ClientError  # noqa: E402
from bench.measuring import (  # noqa: E402
    ApiserverMetrics,
    QuotaSizes,
    RequestKey,
    cpu_seconds,
    proc_status,
)
from e2e import harness, scraping  # noqa: E402
from e2e.waiting import wait_for as _wait_for  # noqa: E402
from tests.simulating import stop as stop_process  # noqa: E402

PHASES = ("nothing", "resourcequota", "dbquota", "dbquota-2", "dbquota-exact")
DBQUOTA_PHASES = ("dbquota", "dbquota-2", "dbquota-exact")
TARGET_PHASES = ("dbquota", "dbquota-2")
"""One and two replicas with escrow: the configurations the targets are stated for."""
CLAIMS = "/apis/dbquota.io/v1alpha1/namespaces/{ns}/databaseclaims"
QUOTAS = "/apis/dbquota.io/v1alpha1/namespaces/{ns}/databasequotas"
CREATE_KEY: RequestKey = ("POST", "databaseclaims.dbquota.io", "")
CONFIGURATION = "bench.dbquota.io"
"""The dev-mode webhook configuration of the single-replica phases."""
PROXY_CONFIGURATION = "bench-proxy.dbquota.io"
"""The bench's own webhook configuration of phase dbquota-2, pointing at the proxy."""
BUDGET = 1e12
"""A monthly budget no phase exhausts (a claim here costs a few hundred a month)."""
OPERATOR_FLAGS = ("--sync-interval=2",)
FAILURES = (RuntimeError, harness.HarnessError, ClientError, OSError, TimeoutError)
"""What ends one phase (reported as not measured) without ending the run."""
WINDOW, LOW, STEADY = 4.0, 0.3, 0.05
"""Seconds per CPU sample, the share of a core below which an operator may have caught up,
and the spread of shares that counts as steady (see :func:`catch_up`)."""


# ---------------------------------------------------------------------------- outcomes


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """:func:`e2e.waiting.wait_for`, failing with RuntimeError: the bench is not a test."""
    return _wait_for(predicate, timeout=timeout, what=what, error=RuntimeError, interval=0.5)


@dataclass
class Run:
    """One timetable's measurements (lead-in included in the totals, not the latencies)."""

    phase: str
    rate: float
    seconds: float
    label: str = ""
    round: int = 0  # 1, 2, ... with --rounds above 1
    latencies: list[float] = field(default_factory=list)  # measured requests, from due time
    lags: list[float] = field(default_factory=list)  # how late the client sent them
    created: int = 0
    errors: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    total_sent: int = 0  # lead-in included: what the apiserver's counters saw
    total_created: int = 0
    elapsed: float = 0.0  # of the measured part, until its last answer
    client_cpu: float = 0.0
    window: float = 0.0  # seconds between the two scrapes of the apiserver's /metrics
    requests: dict[RequestKey, float] = field(default_factory=dict)  # deltas over the window
    webhook_ms: float = float("nan")
    webhook_slow: tuple[float, float] = (float("nan"), float("nan"))  # share > 25, > 100 ms
    watches_open: float = 0.0
    operator_cpu: float = 0.0  # seconds, all replicas, over the window
    operator_rss: float = float("nan")  # MiB, highest VmHWM of the replicas
    proxy_cpu: float = float("nan")  # share of a core over the measured part
    apiserver_cpu: float = float("nan")
    etcd_cpu: float = float("nan")
    load: float = 0.0
    catch_up: float = 0.0  # seconds the operators took to catch up after --settle
    caught_up: bool = True  # False: --settle-max ran out, catch-up work is not all counted
    decided: list[float] = field(default_factory=list)  # admission decisions per replica
    leading: list[float] = field(default_factory=list)  # dbquota_leader per replica, at the end
    untimely: tuple[float, float] = (0.0, 0.0)  # reviews denied late, abandoned: all replicas
    clock_step: float = 0.0  # s the wall clock stepped during the measured part
    stolen: float = float("nan")  # share of the CPU the hypervisor stole meanwhile
    quota_peak: tuple[int, int] = (0, 0)  # largest DatabaseQuota seen: (bytes, reservations)
    answered: dict[str, float] = field(default_factory=dict)  # "ns/name" -> loop time created
    priced_after: list[float] = field(default_factory=list)  # s from created to priced

    @property
    def sent(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def pct(self, q: float) -> float:
        """A latency quantile in ms."""
        return measuring.percentile(self.latencies, q) * 1000

    def record(self, *, kind: str, detail: str, measured: bool) -> None:
        self.total_sent += 1
        if kind == "created":
            self.total_created += 1
            self.created += measured
            return
        if measured:
            key = (kind, re.sub(r"\d[\d,.]*", "#", detail)[:160])
            self.errors[key] += 1
            self.examples.setdefault(key, detail)

    @property
    def name(self) -> str:
        name = f"{self.phase} #{self.round}" if self.round else self.phase
        return f"{name} ({self.label})" if self.label else name


def classify(status: int, content: bytes) -> tuple[str, str]:
    """(kind, detail) of the apiserver's answer to a create: ``created``, ``denied`` (a
    webhook's or a quota's refusal, with its message), ``webhook failure`` (the apiserver
    could not get an answer from a webhook), ``timeout`` or ``other``."""
    if status == 201:
        return "created", ""
    try:
        answer = json.loads(content)
        message, reason = str(answer.get("message", "")), str(answer.get("reason", ""))
    except ValueError:
        message, reason = content[:200].decode(errors="replace"), ""
    if "denied the request:" in message:
        return "denied", message.split("denied the request:", 1)[1].strip()
    if "exceeded quota" in message:
        return "denied", message
    if "failed calling webhook" in message:
        return "webhook failure", message
    if status == 504 or reason == "Timeout":
        return "timeout", message
    return "other", f"HTTP {status} {reason}: {message}"


def about_budget(detail: str) -> bool:
    """Whether a denial is about the quota's money (the only denial a burst may see)."""
    return "exceeds budget" in detail


def claim(namespace: str, name: str) -> bytes:
    body = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"engine": "postgres", "instanceClass": "db.r6g.large", "storageGiB": 10},
    }
    return json.dumps(body).encode()


# ---------------------------------------------------------------------------- the bench


@dataclass
class Bench:
    """The run's shared state: harness, apiserver client, options, results so far."""

    h: harness.Harness
    api: ApiClient
    args: argparse.Namespace
    runs: list[Run] = field(default_factory=list)
    background: dict[float, dict[RequestKey, float]] = field(default_factory=dict)
    """Per rate, what the apiserver did per second in phase ``nothing`` beyond the creates."""
    watches: dict[float, float] = field(default_factory=dict)
    """Per rate, the watches open on the apiserver in phase ``nothing`` (its own)."""
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    round: int = 0
    """The round under way (1, 2, ... with ``--rounds`` above 1; else 0)."""

    def clock(self) -> str:
        """Seconds since the bench started, for progress lines."""
        return f"{time.monotonic() - self.started:4.0f} s"

    @property
    def kubectl(self) -> harness.Kubectl:
        return self.h.kubectl

    @property
    def billing_url(self) -> str:
        assert self.h.simulator is not None
        return self.h.simulator.url

    def pids(self) -> tuple[int | None, int | None]:
        state = self.h.current_cluster.state
        return (state.apiserver_pid, state.etcd_pid) if state else (None, None)

    async def scrape(self) -> ApiserverMetrics:
        async with asyncio.timeout(30):
            status, text = await self.api.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics answered {status}")
        return ApiserverMetrics.parse(text.decode())

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:5]}"
        self.kubectl("create", "namespace", name)
        return name

    async def delete_claims(self, namespaces: list[str]) -> None:
        """Delete every claim and quota of ``namespaces``, so that the next phase's operator
        does not resume them: one deletecollection each, repeated while the apiserver cuts
        it short (its request timeout is 60 s; 10,000 claims can take longer)."""
        for ns in namespaces:
            for path in (CLAIMS.format(ns=ns), QUOTAS.format(ns=ns)):
                for _ in range(5):
                    try:
                        async with asyncio.timeout(120):
                            status, _ = await self.api.request("DELETE", path)
                        outcome = "" if status == 200 else f"HTTP {status}"
                    except (TimeoutError, ClientError, OSError) as exc:
                        outcome = f"{type(exc).__name__}: {exc}"
                    if not outcome:
                        break
                else:
                    self.notes.append(f"deleting {path} failed 5 times, last: {outcome}")


class PriceTimes(measuring.Watching):
    """When each DatabaseClaim first shows its price (``status.estimatedMonthlyCost``), as a
    watcher of claims sees it (Argo CD's health check reads that status): from a watch of
    every claim, started at the current resourceVersion so that claims already there are
    not sent again."""

    PATH = "/apis/dbquota.io/v1alpha1/databaseclaims"

    def __init__(self, server: str, ctx: ssl.SSLContext) -> None:
        super().__init__(server, ctx)
        self.priced: dict[str, float] = {}  # "ns/name" -> loop time first seen priced
        self._version = ""

    async def _ready(self) -> None:
        listed = await self._client.get(self.PATH, params={"limit": "1"})
        self._version = listed.raise_for_status().json()["metadata"]["resourceVersion"]

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        params = {"watch": "1", "resourceVersion": self._version}
        async with self._client.stream("GET", self.PATH, params=params) as response:
            async for line in response.aiter_lines():
                if '"estimatedMonthlyCost"' not in line:
                    continue
                meta = (json.loads(line).get("object") or {}).get("metadata") or {}
                key = f"{meta.get('namespace')}/{meta.get('name')}"
                self.priced.setdefault(key, loop.time())


# ---------------------------------------------------------------------------- set-ups


def resource_quota(b: Bench, ns: str) -> None:
    """A ResourceQuota on claims that no phase fills, with the status the controller-manager
    would write (without one, the apiserver refuses creates: "status unknown for quota")."""
    hard = {"count/databaseclaims.dbquota.io": "1000000"}
    rq = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "claims", "namespace": ns},
        "spec": {"hard": hard},
    }
    b.kubectl.apply(rq)
    status = {"status": {"hard": hard, "used": dict.fromkeys(hard, "0")}}
    patch = ("--subresource=status", "--type=merge", "-p", json.dumps(status))
    b.kubectl("patch", "resourcequota", "claims", "-n", ns, *patch)


def database_quotas(b: Bench, namespaces: list[str], *, timeout: float = 120) -> None:
    """A DatabaseQuota in each namespace; returns once every one shows billing live."""
    items = [
        {
            "apiVersion": "dbquota.io/v1alpha1",
            "kind": "DatabaseQuota",
            "metadata": {"name": "q", "namespace": ns},
            "spec": {"monthlyBudget": BUDGET, "degradation": {"policy": "Conservative"}},
        }
        for ns in namespaces
    ]
    b.kubectl.apply(items)
    wanted = set(namespaces)

    def live() -> bool:
        quotas = b.kubectl.get_json("dbq", "-A").get("items", [])
        ok = {
            q["metadata"]["namespace"]
            for q in quotas
            if q.get("status", {}).get("billing", {}).get("circuitState") == "Closed"
            and q["status"]["billing"].get("degraded") is False
        }
        return wanted <= ok

    wait_for(live, timeout=timeout, what="the quotas to show billing live")


async def wait_called(b: Bench, ns: str) -> None:
    """Return once the apiserver calls a webhook for a claim in ``ns`` (server-side dry-run
    creates until its own count of webhook calls moves); RuntimeError after 60 s."""
    try:
        async with asyncio.timeout(60):
            for i in itertools.count():
                before = (await b.scrape()).webhook_calls
                path = CLAIMS.format(ns=ns) + "?dryRun=All"
                await b.api.request("POST", path, claim(ns, f"probe-{i}"))
                if (await b.scrape()).webhook_calls > before:
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise RuntimeError("the apiserver did not call the webhook within 60 s") from None


@dataclass
class Target:
    """What a phase runs against: the processes whose CPU and memory count as dbquota's."""

    operators: list[harness.Operator] = field(default_factory=list)
    proxy: harness.Proxy | None = None

    def cpu(self) -> float:
        return sum(cpu_seconds(op.pid) for op in self.operators if op.proc.poll() is None)

    def rss(self, key: str = "VmHWM") -> float:
        values = [proc_status(op.pid, key) for op in self.operators]
        return max(values) if values else float("nan")

    def decisions(self) -> list[float]:
        """Admission decisions each replica made so far: shows how the proxy spread the
        reviews."""
        return self._each("dbquota_admission_decisions_total")

    def leading(self) -> list[float]:
        """Each replica's ``dbquota_leader`` now (1: it leads)."""
        return self._each("dbquota_leader")

    def untimely(self) -> tuple[float, float]:
        """Reviews not decided within the apiserver's timeout so far, all replicas: denied
        late, and given up on by the apiserver (NaN if a replica does not answer)."""
        return (
            sum(self._each("dbquota_webhook_late_reviews_total")),
            sum(self._each("dbquota_webhook_abandoned_reviews_total")),
        )

    def _each(self, metric: str) -> list[float]:
        """``metric`` summed, from each replica's own ``/metrics`` (NaN when it does not
        answer)."""
        values = []
        for op in self.operators:
            try:
                url = f"http://127.0.0.1:{op.metrics_port}/metrics"
                samples = scraping.samples(httpx.get(url, timeout=5).text)
                values.append(scraping.total(samples, metric))
            except httpx.HTTPError:
                values.append(float("nan"))
        return values


def start_dbquota(b: Bench, scope: harness.Harness, phase: str) -> Target:
    """The operator processes of a dbquota phase, webhook registered (not yet called)."""
    # A Lease of its own per phase: a phase's leader does not wait for the last one's to lapse.
    lease = f"dbquota-bench-{phase}-{uuid.uuid4().hex[:8]}"
    extra = (f"--billing-url={b.billing_url}", *OPERATOR_FLAGS, f"--leader-lease={lease}")
    if phase == "dbquota-exact":
        extra += ("--escrow-share=0",)
    if phase != "dbquota-2":
        return Target(operators=[scope.operator(extra=extra, configuration=CONFIGURATION)])
    cert_dir = scope.workdir / "certs"
    ca = harness.serving_certificate(cert_dir)
    replicas = [scope.replica(n, cert_dir=cert_dir, extra=extra) for n in ("a", "b")]
    proxy = harness.start_proxy(scope.workdir, [op.webhook_port for op in replicas])
    scope.defer(stop_process, proxy.proc)
    b.kubectl.apply(harness.proxy_webhook(PROXY_CONFIGURATION, port=proxy.port, ca=ca))
    scope.defer(
        b.kubectl, "delete", "validatingwebhookconfiguration", PROXY_CONFIGURATION, check=False
    )
    return Target(operators=replicas, proxy=proxy)


@contextlib.asynccontextmanager
async def phase_setup(b: Bench, phase: str, rate: float) -> AsyncIterator[tuple[Target, str]]:
    """A fresh namespace set up for ``phase``; on exit its claims and what it started go."""
    started = time.monotonic()
    with b.h.scope(f"{phase}-{rate:g}") as scope:
        target = start_dbquota(b, scope, phase) if phase in DBQUOTA_PHASES else Target()
        ns = b.namespace(f"{phase}-{rate:g}")
        try:
            if phase == "resourcequota":
                resource_quota(b, ns)
            elif phase in DBQUOTA_PHASES:
                database_quotas(b, [ns])
                await wait_called(b, ns)
            print(f"[{b.clock()}] {phase} {rate:g}/s: set up in {time.monotonic() - started:.0f} s")
            yield target, ns
        finally:
            await b.delete_claims([ns])
    await asyncio.sleep(2)  # the apiserver notices a removed webhook configuration


# ---------------------------------------------------------------------------- driving


async def send(
    b: Bench, run: Run, path: str, body: bytes, *, due: float, measured: bool, key: str = ""
) -> None:
    loop = asyncio.get_running_loop()
    if measured:
        run.lags.append(max(0.0, loop.time() - due))
    try:
        async with asyncio.timeout(b.args.timeout):
            status, content = await b.api.request("POST", path, body)
        kind, detail = classify(status, content)
    except TimeoutError:
        kind, detail = "timeout", f"no answer within {b.args.timeout:g} s (client)"
    except (ClientError, OSError, ssl.SSLError) as exc:
        kind, detail = "other", f"{type(exc).__name__}: {exc}"
    if measured:
        run.latencies.append(loop.time() - due)
        if key and kind == "created":
            run.answered[key] = loop.time()
    run.record(kind=kind, detail=detail, measured=measured)


async def timetable(
    b: Bench, run: Run, target: Target, namespaces: list[str], *, prefix: str
) -> None:
    """Lead-in then the measured part on one open-loop timetable, round robin over
    ``namespaces``; the apiserver's counters scraped before it and after ``--settle``."""
    loop = asyncio.get_running_loop()
    lead = round(run.rate * b.args.lead_in)
    total = lead + max(1, round(run.rate * run.seconds))
    bodies = [
        (CLAIMS.format(ns=ns), claim(ns, f"{prefix}{i:06d}"), f"{ns}/{prefix}{i:06d}")
        for i in range(total)
        for ns in [namespaces[i % len(namespaces)]]
    ]
    apiserver_pid, etcd_pid = b.pids()
    own: list[tuple[int, float]] = []
    proxy0 = 0.0
    await b.api.request("GET", "/readyz")  # a live connection before the clock starts
    before = await b.scrape()
    op_cpu0, window0, decided0 = target.cpu(), time.monotonic(), target.decisions()
    untimely0 = target.untimely()
    tasks: list[asyncio.Task[None]] = []
    steps, steal = measuring.ClockSteps(), measuring.Steal()
    gc.collect()
    gc.disable()  # the client's own collections would show up as latency
    try:
        start = loop.time() + 0.05
        marks: dict[str, float] = {}
        for i, (path, body, key) in enumerate(bodies):
            due = start + i / run.rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == lead:  # the measured part starts
                marks["cpu"] = time.process_time()
                marks["t"] = loop.time()
                steps.start()
                steal.start()
                own = [(pid, cpu_seconds(pid)) for pid in (apiserver_pid, etcd_pid) if pid]
                proxy0 = cpu_seconds(target.proxy.proc.pid) if target.proxy else 0.0
            measured = i >= lead
            tasks.append(
                asyncio.create_task(send(b, run, path, body, due=due, measured=measured, key=key))
            )
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    run.elapsed = loop.time() - marks["t"]
    run.clock_step, run.stolen = steps.stepped(), steal.share()
    run.client_cpu = (time.process_time() - marks["cpu"]) / run.elapsed
    shares = [(cpu_seconds(pid) - c) / run.elapsed for pid, c in own]
    if len(shares) == 2:
        run.apiserver_cpu, run.etcd_cpu = shares
    if target.proxy is not None:
        run.proxy_cpu = (cpu_seconds(target.proxy.proc.pid) - proxy0) / run.elapsed
    # Catch-up work after the last answer counts too: --settle seconds, then for as long
    # as the operators are catching up (at most --settle-max).
    await asyncio.sleep(b.args.settle)
    if target.operators:
        run.catch_up, run.caught_up = await catch_up(b, target, cap=b.args.settle_max)
    after = await b.scrape()
    run.window = time.monotonic() - window0
    run.operator_cpu = target.cpu() - op_cpu0
    run.operator_rss = target.rss()
    run.decided = [a - b for a, b in zip(target.decisions(), decided0, strict=True)]
    run.leading = target.leading()
    late, abandoned = target.untimely()
    run.untimely = (late - untimely0[0], abandoned - untimely0[1])
    run.requests = measuring.delta(after.requests, before.requests)
    calls = after.webhook_calls - before.webhook_calls
    if calls:
        run.webhook_ms = (after.webhook_seconds - before.webhook_seconds) / calls * 1000
        over = [
            1 - (after.webhook_within.get(le, 0.0) - before.webhook_within.get(le, 0.0)) / calls
            for le in (0.025, 0.1)
        ]
        run.webhook_slow = (over[0], over[1])
    run.watches_open = after.watches_open
    run.load = os.getloadavg()[0]


def caused(b: Bench, run: Run) -> dict[RequestKey, float]:
    """Requests beyond the client's own creates and the apiserver's background (what
    phase ``nothing`` of the same rate saw per second; a count that falls below it is
    noise and left out)."""
    got = dict(run.requests)
    got[CREATE_KEY] = got.get(CREATE_KEY, 0.0) - run.total_sent
    for key, per_second in b.background.get(run.rate, {}).items():
        got[key] = got.get(key, 0.0) - per_second * run.window
    return {k: v for k, v in got.items() if v >= 0.5}


def per_claim(b: Bench, run: Run) -> tuple[float, dict[RequestKey, float], float]:
    """(requests per created claim without watches, the same by key, watch requests); with
    no claim created, the totals instead (and NaN per claim)."""
    got = caused(b, run)
    n = run.total_created or 1
    watches = sum(v for k, v in got.items() if k[0] == "WATCH")
    by_key = {k: v / n for k, v in got.items() if k[0] != "WATCH"}
    return sum(by_key.values()) if run.total_created else float("nan"), by_key, watches


async def measure(
    b: Bench, phase: str, rate: float, target: Target, namespaces: list[str], *, label: str = ""
) -> Run:
    run = Run(phase=phase, rate=rate, seconds=b.args.seconds, label=label, round=b.round)
    # Watched in every phase: phase nothing counts the bench's own watches too.
    server, ctx = b.h.current_cluster.server, b.h.current_cluster.ssl_context()
    async with QuotaSizes(server, ctx) as sizes, PriceTimes(server, ctx) as prices:
        await timetable(b, run, target, namespaces, prefix="c")
    run.quota_peak = sizes.peak
    run.priced_after = [prices.priced[k] - t for k, t in run.answered.items() if k in prices.priced]
    if phase == "nothing" and not label:
        b.background[rate] = {k: v / run.window for k, v in caused(b, run).items()}
        b.watches[rate] = run.watches_open
    b.runs.append(run)
    split = " / ".join(f"{d:.0f}" for d in run.decided)
    led = " / ".join("leads" if v == 1 else "-" for v in run.leading)
    print(
        f"[{b.clock()}] {run.name} {rate:g}/s: {run.created}/{run.sent} created, "
        f"p50 {run.pct(0.5):.1f} ms, p99 {run.pct(0.99):.1f} ms, "
        f"max {max(run.latencies, default=0) * 1000:.0f} ms, "
        f"{fmt(per_claim(b, run)[0], '.2f')} requests per claim, load {run.load:.2f}"
        f"{measuring.steal_text(run.stolen)}"
        f"{stepped_note(run)}"
        f"{untimely_text(run)}"
        f"{f'; admission decisions per replica {split} ({led})' if len(run.decided) > 1 else ''}",
        flush=True,
    )
    return run


async def bulk_create(b: Bench, namespaces: list[str], per_namespace: int) -> None:
    """``per_namespace`` claims in each namespace, 64 creates in flight (no timetable)."""
    queue = [(ns, i) for i in range(per_namespace) for ns in namespaces]
    failures: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    async def worker() -> None:
        while queue:
            ns, i = queue.pop()
            try:
                async with asyncio.timeout(b.args.timeout):
                    status, content = await b.api.request(
                        "POST", CLAIMS.format(ns=ns), claim(ns, f"old{i:06d}")
                    )
                kind, detail = classify(status, content)
            except (TimeoutError, ClientError, OSError) as exc:
                kind, detail = "other", type(exc).__name__
            if kind != "created":
                failures[f"{kind}: {detail[:100]}"] += 1

    await asyncio.gather(*(worker() for _ in range(64)))
    n = len(namespaces) * per_namespace
    seconds = time.monotonic() - started
    print(
        f"bulk: {n - sum(failures.values()):,} of {n:,} claims in {len(namespaces)} "
        f"namespace(s) in {seconds:.0f} s{f'; failures {dict(failures)}' if failures else ''}",
        flush=True,
    )


async def catch_up(b: Bench, target: Target, *, cap: float) -> tuple[float, bool]:
    """Wait until the operators have caught up, at most ``cap`` seconds; (seconds waited,
    whether they did).

    Caught up means their CPU has settled at a low, steady level: three
    :data:`WINDOW`-second windows in a row below :data:`LOW` of a core and within
    :data:`STEADY` of each other. Not "idle": an operator holding claims keeps working on
    every billing sync (today's code: ~10 % of a core with 150 claims, for ever), so
    waiting for idle would wait for ever; while it works through a backlog, a Python
    process runs near a whole core. On a loaded machine a backlog can look steady and low,
    so run the bench when the load is low.
    """
    started = time.monotonic()
    shares: list[float] = []
    while time.monotonic() - started < cap:
        before = target.cpu()
        await asyncio.sleep(WINDOW)
        shares = [*shares[-2:], (target.cpu() - before) / WINDOW]
        if len(shares) == 3 and max(shares) < LOW and max(shares) - min(shares) < STEADY:
            return time.monotonic() - started, True
    return time.monotonic() - started, False


async def all_priced(b: Bench, namespaces: list[str], *, cap: float) -> float:
    """Wait until every claim in ``namespaces`` shows ``status.estimatedMonthlyCost``, at
    most ``cap`` seconds (polled every 2 s); the seconds waited."""
    started, wanted = time.monotonic(), set(namespaces)
    while time.monotonic() - started < cap:
        claims = b.kubectl.get_json("dbc", "-A").get("items", [])
        if all(
            "estimatedMonthlyCost" in c.get("status", {})
            for c in claims
            if c["metadata"]["namespace"] in wanted
        ):
            break
        await asyncio.sleep(2)
    return time.monotonic() - started


def quota_bytes(b: Bench, ns: str) -> int:
    """Size of the namespace's DatabaseQuota as ``kubectl get -o json | wc -c`` counts it."""
    out = b.kubectl("get", "dbq", "q", "-n", ns, "-o", "json", check=False).stdout
    return len(out.encode())


# ---------------------------------------------------------------------------- extras


async def start_on_existing(
    b: Bench, scope: harness.Harness, where: list[str]
) -> tuple[Target, dict[str, Any]]:
    """One replica started on the claims already in ``where``, a quota in each namespace,
    then waited for until it has caught up (at most ``--catch-up`` seconds): every claim
    there shows its price (adopted and written; low CPU alone can pass mid-backlog on a
    loaded machine), then its CPU is steady."""
    target = start_dbquota(b, scope, "dbquota")
    started = time.monotonic()
    database_quotas(b, where, timeout=b.args.catch_up)
    priced_in = await all_priced(b, where, cap=b.args.catch_up)
    left = max(0.0, b.args.catch_up - (time.monotonic() - started))
    _, steady = await catch_up(b, target, cap=left)
    waited = time.monotonic() - started
    state = "then steady" if steady else "still catching up: capped"
    print(
        f"[{b.clock()}] operator caught up {waited:.0f} s after it started (every existing "
        f"claim priced after {priced_in:.0f} s, {state})",
        flush=True,
    )
    return target, {"catch_up": waited, "steady": steady}


async def existing(b: Bench) -> dict[str, Any]:
    rate, n = b.args.rates[0], b.args.existing
    with b.h.scope("existing") as scope:
        full, empty = b.namespace("existing"), b.namespace("empty")
        try:
            await bulk_create(b, [full], n)
            target, got = await start_on_existing(b, scope, [full, empty])
            await wait_called(b, empty)
            got["runs"] = [
                await measure(b, "dbquota", rate, target, [empty], label="empty namespace"),
                await measure(b, "dbquota", rate, target, [full], label=f"{n:,} existing"),
            ]
            return {**got, "bytes": quota_bytes(b, full), "rss": target.rss()}
        finally:
            await b.delete_claims([full, empty])


async def namespaces(b: Bench) -> dict[str, Any]:
    rate, n, each = b.args.rates[0], b.args.namespaces, b.args.per_namespace
    with b.h.scope("namespaces") as scope:
        spread = [b.namespace(f"spread{i:03d}") for i in range(n)]
        try:
            await bulk_create(b, spread, each)
            target, got = await start_on_existing(b, scope, spread)
            await wait_called(b, spread[0])
            got["run"] = await measure(b, "dbquota", rate, target, spread, label=f"{n} namespaces")
            return {**got, "rss": target.rss()}
        finally:
            await b.delete_claims(spread)


async def burst(b: Bench) -> dict[str, Any]:
    n, clients = b.args.burst, b.args.clients
    with b.h.scope("burst") as scope:
        target = start_dbquota(b, scope, "dbquota")
        ns = b.namespace("burst")
        try:
            database_quotas(b, [ns])
            await wait_called(b, ns)
            rss_before = target.rss("VmRSS")
            run = Run(phase="burst", rate=0, seconds=0, label=f"{n} by {clients} clients")
            names = iter(range(n))
            loop = asyncio.get_running_loop()
            started = loop.time()
            steps = measuring.ClockSteps()
            capped = False

            async def client() -> None:
                nonlocal capped
                for i in names:
                    if loop.time() - started > b.args.burst_cap:
                        capped = True
                        return
                    due = loop.time()
                    body = claim(ns, f"b{i:06d}")
                    await send(b, run, CLAIMS.format(ns=ns), body, due=due, measured=True)

            cluster = b.h.current_cluster
            async with QuotaSizes(cluster.server, cluster.ssl_context()) as sizes:
                await asyncio.gather(*(client() for _ in range(clients)))
                total = loop.time() - started
                run.clock_step = steps.stepped()
                await asyncio.sleep(b.args.settle)
            run.quota_peak = sizes.peak
            return {
                "run": run,
                "seconds": total,
                "capped": capped,
                "bytes": quota_bytes(b, ns),
                "rss_before": rss_before,
                "rss_after": target.rss("VmRSS"),
                "rss_peak": target.rss(),
            }
        finally:
            await b.delete_claims([ns])


# ---------------------------------------------------------------------------- reporting


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero or not measured."""
    return a / b if b else float("nan")


def fmt(value: float, spec: str = ".1f") -> str:
    return "-" if value != value else format(value, spec)  # NaN: not measured


def short(key: RequestKey) -> str:
    verb, resource, sub = key
    resource = resource.removesuffix(".dbquota.io")
    return f"{verb} {resource}{'/' + sub if sub else ''}"


def errors_text(run: Run) -> str:
    if not run.failed:
        return "0"
    kinds: collections.Counter[str] = collections.Counter()
    for (kind, _), count in run.errors.items():
        kinds[kind] += count
    return f"{run.failed} ({', '.join(f'{k} {v}' for k, v in kinds.most_common())})"


def slow_text(run: Run) -> str:
    """The shares of the apiserver's webhook calls that took over 25 and over 100 ms (from
    its histogram's buckets), or ``-`` for a phase without a webhook."""
    over_25, over_100 = run.webhook_slow
    if over_25 != over_25:  # NaN: no call
        return "-"
    return f"{over_25:.1%} / {over_100:.1%}"


LATENCY_HEADER = (
    "| phase | rate/s | sent | created | errors | p50 ms | p99 ms | max ms "
    "| apiserver webhook mean ms | webhook calls > 25 / > 100 ms | client lag p99 ms "
    "| client CPU | wall clock step s | priced after create p50 / p99 ms (not priced) |"
)


def priced_text(run: Run) -> str:
    """How long created claims took to show their price, and how many never did by the
    end of the phase's settle (and catch-up)."""
    if not run.priced_after:
        return "-"
    p50, p99 = (measuring.percentile(run.priced_after, q) * 1000 for q in (0.5, 0.99))
    return f"{p50:.0f} / {p99:.0f} ({len(run.answered) - len(run.priced_after)})"


def stepped_note(*runs: Run) -> str:
    """What a verdict on ``runs`` adds when the wall clock stepped during any of them."""
    stepped = [f"{r.name} ({r.clock_step:+.1f} s)" for r in runs if measuring.noticed(r.clock_step)]
    return f"; the wall clock stepped during {', '.join(stepped)}" if stepped else ""


def latency_rows(runs: list[Run]) -> list[str]:
    return [
        f"| {r.name} | {r.rate:g} | {r.sent} | {r.created} | {errors_text(r)} "
        f"| {r.pct(0.5):.1f} | {r.pct(0.99):.1f} | {max(r.latencies, default=0) * 1000:.1f} "
        f"| {fmt(r.webhook_ms)} | {slow_text(r)} "
        f"| {measuring.percentile(r.lags, 0.99) * 1000:.1f} "
        f"| {r.client_cpu:.0%} | {measuring.step_text(r.clock_step)} | {priced_text(r)} |"
        for r in runs
    ]


def peak_text(run: Run) -> str:
    size, held = run.quota_peak
    return f"{size / 1024:.1f} ({held})" if size else "-"


def cost_rows(b: Bench, runs: list[Run]) -> list[str]:
    rows = []
    for r in runs:
        total, by_key, watches = per_claim(b, r)
        top = sorted(by_key.items(), key=lambda kv: -kv[1])
        keys = ", ".join(f"{short(k)} {v:.2f}" for k, v in top if abs(v) >= 0.005) or "-"
        if not r.total_created:
            keys = f"none created; in total: {keys}"
        op_ms = r.operator_cpu / r.total_created * 1000 if r.total_created else float("nan")
        own = b.watches.get(r.rate)
        opened = f"{r.watches_open - own:.0f}" if own is not None else f"({r.watches_open:.0f})"
        rows.append(
            f"| {r.name} | {r.rate:g} | {fmt(total, '.2f')} | {keys} | {watches:.0f} / {opened} "
            f"| {fmt(op_ms, '.2f') if r.operator_cpu else '-'} | {fmt(r.operator_rss, '.0f')} "
            f"| {fmt(r.proxy_cpu * 100, '.0f')} | {fmt(r.apiserver_cpu * 100, '.0f')} "
            f"| {fmt(r.etcd_cpu * 100, '.0f')} | {r.catch_up:.0f}{'' if r.caught_up else ' (cap)'} "
            f"| {r.load:.2f} | {peak_text(r)} |"
        )
    return rows


def untimely_text(run: Run) -> str:
    """What the progress line adds when reviews were not decided within the apiserver's
    timeout (or a replica's counts could not be read)."""
    late, abandoned = run.untimely
    if late != late or abandoned != abandoned:  # NaN
        return "; reviews not decided in time: unknown (a replica did not answer)"
    if not (late or abandoned):
        return ""
    return f"; not decided in time: {late:.0f} denied late, {abandoned:.0f} abandoned"


def error_lines(runs: list[Run]) -> list[str]:
    lines = []
    for r in runs:
        for key, count in r.errors.most_common():
            lines.append(f"- {r.name} {r.rate:g}/s: {count} x {key[0]}: {r.examples[key][:300]}")
        if untimely := untimely_text(r):
            lines.append(f"- {r.name} {r.rate:g}/s{untimely}")
    return lines


class Verdicts:
    """PASS/FAIL lines, kept for the summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        word = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        self.lines.append(f"- {word} {name}: {detail}")


def report(b: Bench, extras: dict[str, dict[str, Any]]) -> None:
    table_runs = [r for r in b.runs if not r.label]
    print("\n### Latency")
    measuring.table(
        LATENCY_HEADER,
        latency_rows(table_runs),
    )
    print("\n### Cost")
    measuring.table(
        "| phase | rate/s | apiserver requests per created claim (beyond the create) "
        "| by verb and resource | watch requests / watches open beyond the apiserver's own "
        "| operator CPU ms per claim | operator peak RSS MiB | proxy CPU % | apiserver CPU % "
        "| etcd CPU % | catch-up after settle s | load "
        "| largest DatabaseQuota KiB (reservations) |",
        cost_rows(b, table_runs),
    )
    if lines := error_lines(table_runs):
        print("\n### Errors (message of the first of each kind, numbers as #)\n")
        print("\n".join(lines))

    verdicts = Verdicts()
    ratio_rows = against_resourcequota(b, table_runs, verdicts)
    print("\n### Against ResourceQuota, same rate, same run")
    measuring.table(
        "| phase | rate/s | p50 ms | ResourceQuota p50 ms | p50 difference ms | p99 ms "
        "| ResourceQuota p99 ms | p99 ratio | errors |",
        ratio_rows,
    )
    report_extras(b, extras, verdicts)
    print("\n### Targets\n")
    print("\n".join(verdicts.lines))
    for note in b.notes:
        print(f"\nnote: {note}")


def against_resourcequota(b: Bench, runs: list[Run], verdicts: Verdicts) -> list[str]:
    """Each dbquota run against the ResourceQuota run of its rate and round: the table's
    rows, and the targets judged on the median of the rounds (each round's figure listed)."""
    by = {(r.phase, r.rate, r.round): r for r in runs}
    rows = []
    for rate in b.args.rates:
        for phase in DBQUOTA_PHASES:
            pairs = [
                (run, rq)
                for (p, r, n), run in sorted(by.items(), key=lambda item: item[0][2])
                if p == phase and r == rate and (rq := by.get(("resourcequota", rate, n)))
            ]
            for run, rq in pairs:
                rows.append(
                    f"| {run.name} | {rate:g} | {run.pct(0.5):.1f} | {rq.pct(0.5):.1f} "
                    f"| {run.pct(0.5) - rq.pct(0.5):+.1f} | {run.pct(0.99):.1f} "
                    f"| {rq.pct(0.99):.1f} | {ratio(run.pct(0.99), rq.pct(0.99)):.2f} "
                    f"| {run.failed} |"
                )
            if pairs and phase in TARGET_PHASES:
                judge(b, phase, rate, pairs, verdicts)
    return rows


def judge(
    b: Bench, phase: str, rate: float, pairs: list[tuple[Run, Run]], verdicts: Verdicts
) -> None:
    """The targets of one phase at one rate; over several rounds, on their medians."""

    def of(values: list[float], unit: str) -> tuple[float, str]:
        """The median, and the rounds' own figures when there are several."""
        if len(values) == 1:
            return values[0], ""
        listed = ", ".join(f"{v:.2f}{unit}" for v in values)
        return statistics.median(values), f" (median of {len(values)} rounds: {listed})"

    p99, p99_rounds = of([ratio(run.pct(0.99), rq.pct(0.99)) for run, rq in pairs], "x")
    p50, _ = of([run.pct(0.5) - rq.pct(0.5) for run, rq in pairs], " ms")
    failed = sum(run.failed for run, _ in pairs)
    disturbed = "".join(stepped_note(run, rq) for run, rq in pairs)
    if rate < 200:
        verdicts.add(
            f"{phase} at {rate:g}/s: p99 <= 1.5x ResourceQuota and p50 <= its p50 + 5 ms",
            p99 <= 1.5 and p50 <= 5.0,
            f"p99 {p99:.2f}x, p50 {p50:+.1f} ms{p99_rounds}{disturbed}",
        )
    else:
        verdicts.add(
            f"{phase} at {rate:g}/s: no errors and p99 <= 2x ResourceQuota",
            failed == 0 and p99 <= 2.0,
            f"{failed} errors, p99 {p99:.2f}x{p99_rounds}{disturbed}",
        )
    total, total_rounds = of([per_claim(b, run)[0] for run, _ in pairs], "")
    caught_up = all(run.caught_up for run, _ in pairs)
    verdicts.add(
        f"{phase} at {rate:g}/s: operator-caused apiserver requests per claim <= 2",
        total <= 2.0 if caught_up or total > 2.0 else None,
        f"{total:.2f}{total_rounds}"
        + ("" if caught_up else " so far: still catching up after --settle-max"),
    )


def report_extras(b: Bench, extras: dict[str, dict[str, Any]], verdicts: Verdicts) -> None:
    if got := extras.get("existing"):
        empty, full = got["runs"]
        print(f"\n### {b.args.existing:,} existing claims in one namespace")
        measuring.table(
            LATENCY_HEADER.replace("| phase |", "| namespace |", 1),
            latency_rows([empty, full]),
        )
        measuring.table(
            "| namespace | rate/s | requests per claim | by verb and resource "
            "| watch requests / watches open | operator CPU ms per claim | operator peak RSS MiB "
            "| proxy CPU % | apiserver CPU % | etcd CPU % | catch-up after settle s | load "
            "| largest DatabaseQuota KiB (reservations) |",
            cost_rows(b, [empty, full]),
        )
        print(
            f"\noperator catch-up after start: {got['catch_up']:.0f} s"
            f"{'' if got['steady'] else ' (capped: still catching up)'}; DatabaseQuota "
            f"object of the full namespace {got['bytes']:,} bytes; "
            f"operator peak RSS {got['rss']:.0f} MiB"
        )
        slower = ratio(full.pct(0.99), empty.pct(0.99))
        verdicts.add(
            f"{b.args.existing:,} existing claims: p99 within 1.2x of an empty namespace",
            slower <= 1.2 and not full.failed,
            f"{slower:.2f}x ({full.pct(0.99):.1f} vs {empty.pct(0.99):.1f} ms), "
            f"{full.failed} errors",
        )
    if got := extras.get("namespaces"):
        run = got["run"]
        total = b.args.namespaces * b.args.per_namespace
        print(f"\n### {b.args.namespaces} namespaces, {total:,} claims, creates round robin")
        measuring.table(
            LATENCY_HEADER.replace("| phase |", "| spread |", 1),
            latency_rows([run]),
        )
        measuring.table(
            "| spread | rate/s | requests per claim | by verb and resource "
            "| watch requests / watches open | operator CPU ms per claim | operator peak RSS MiB "
            "| proxy CPU % | apiserver CPU % | etcd CPU % | catch-up after settle s | load "
            "| largest DatabaseQuota KiB (reservations) |",
            cost_rows(b, [run]),
        )
        print(
            f"\noperator catch-up after start: {got['catch_up']:.0f} s"
            f"{'' if got['steady'] else ' (capped: still catching up)'}"
        )
        verdicts.add(
            f"operator RSS <= 300 MiB with {total:,} claims across {b.args.namespaces} namespaces",
            got["rss"] <= 300,
            f"peak {got['rss']:.0f} MiB",
        )
    if got := extras.get("burst"):
        run = got["run"]
        budget = sum(c for (k, d), c in run.errors.items() if k == "denied" and about_budget(d))
        denials = sum(c for (k, _), c in run.errors.items() if k == "denied")
        other = run.failed - denials
        print(f"\n### Burst: {b.args.burst:,} creates from {b.args.clients} closed-loop clients")
        capped = f" (capped at {b.args.burst_cap:g} s)" if got["capped"] else ""
        print(
            f"\nsent {run.sent:,}{capped}, created {run.created:,} in {got['seconds']:.1f} s "
            f"({run.sent / got['seconds']:.0f}/s); latency p50 {run.pct(0.5):.0f} ms, p99 "
            f"{run.pct(0.99):.0f} ms, max {max(run.latencies, default=0) * 1000:.0f} ms; "
            f"denials {denials} (about budget {budget}), other failures {other}; "
            f"DatabaseQuota object {got['bytes']:,} bytes after it, at most "
            f"{run.quota_peak[0]:,} bytes ({run.quota_peak[1]} reservations) during it; "
            f"operator RSS {got['rss_before']:.0f} "
            f"-> {got['rss_after']:.0f} MiB (peak {got['rss_peak']:.0f})"
        )
        if lines := error_lines([run]):
            print("\n".join(["", *lines]))
        ok = denials == 0 and other == 0 and not got["capped"]
        verdicts.add(
            f"{b.args.burst:,} creates from {b.args.clients} clients: no denial, no failure "
            "not about budget",
            ok,
            f"{run.created:,}/{b.args.burst:,} created, {denials} denials, {other} other failures"
            f"{capped}",
        )
        largest = max(got["bytes"], run.quota_peak[0])
        verdicts.add(
            "DatabaseQuota object < 64 KiB during and after the burst",
            largest < 64 * 1024,
            f"{got['bytes']:,} bytes after it, at most {run.quota_peak[0]:,} during it"
            + stepped_note(run),
        )


# ---------------------------------------------------------------------------- main


async def bench_run(b: Bench) -> None:
    for round_ in range(1, b.args.rounds + 1):
        b.round = round_ if b.args.rounds > 1 else 0
        for rate in b.args.rates:
            for phase in b.args.phases:
                try:
                    async with phase_setup(b, phase, rate) as (target, ns):
                        await measure(b, phase, rate, target, [ns])
                except FAILURES as exc:
                    b.notes.append(f"{phase} at {rate:g}/s did not run: {exc}".splitlines()[0])
                    print(f"{phase} {rate:g}/s: not measured: {exc}", flush=True)
    b.round = 0
    extras: dict[str, dict[str, Any]] = {}
    steps: list[tuple[str, int, Callable[[Bench], Any]]] = [
        ("existing", b.args.existing, existing),
        ("namespaces", b.args.namespaces * b.args.per_namespace, namespaces),
        ("burst", b.args.burst, burst),
    ]
    for name, size, step in steps:
        if size <= 0:
            continue
        try:
            extras[name] = await step(b)
        except FAILURES as exc:
            b.notes.append(f"extra phase {name} did not run: {exc}".splitlines()[0])
            print(f"{name}: not measured: {exc}", flush=True)
    report(b, extras)


async def main_async(h: harness.Harness, args: argparse.Namespace) -> None:
    cluster = h.cluster()
    h.crds()
    h.billing(clusters=50, seed=11)
    api = ApiClient(server=cluster.server, ctx=cluster.ssl_context(), connections=args.connections)
    try:
        await bench_run(Bench(h=h, api=api, args=args))
    finally:
        await api.aclose()


EXTRAS = {"existing": 10_000, "namespaces": 100, "burst": 2000}
"""The extra phases' sizes that ``--extras`` turns on (those of #9's targets in bench/README.md)."""


def rates(text: str) -> list[float]:
    """``50,100,200`` -> [50.0, 100.0, 200.0]; positive numbers only."""
    try:
        parsed = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not parsed or any(r <= 0 for r in parsed):
        raise argparse.ArgumentTypeError(f"rates must be positive numbers: {text!r}")
    return parsed


def phases(text: str) -> list[str]:
    """``nothing,dbquota`` -> the phases, each one of :data:`PHASES`."""
    parsed = [p.strip() for p in text.split(",") if p.strip()]
    if unknown := [p for p in parsed if p not in PHASES]:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; phases are {', '.join(PHASES)}")
    return parsed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--rates", type=rates, default=[50.0, 100.0, 200.0], help="creates/s, comma-separated")
    add("--seconds", type=float, default=10.0, help="measured seconds per run")
    add("--lead-in", type=float, default=2.0, help="unmeasured seconds before each run")
    add("--settle", type=float, default=5.0, help="seconds after the last answer, then scrape")
    add("--settle-max", type=float, default=60.0, help="then most seconds to let it catch up")
    add("--phases", type=phases, default=list(PHASES), help="which, comma-separated")
    add("--rounds", type=int, default=1, help="run the phases this many times, interleaved")
    add("--extras", action="store_true", help="the extra phases at #9's sizes (below)")
    add(
        "--existing",
        type=int,
        help=f"claims already in a namespace (extras: {EXTRAS['existing']:,})",
    )
    add("--namespaces", type=int, help=f"namespaces, each a quota (extras: {EXTRAS['namespaces']})")
    add("--per-namespace", type=int, default=100, help="claims already in each of them")
    add("--burst", type=int, help=f"creates of the burst (extras: {EXTRAS['burst']:,})")
    add("--clients", type=int, default=4, help="closed-loop clients of the burst")
    add("--catch-up", type=float, default=180.0, help="most s for an operator on existing claims")
    add("--burst-cap", type=float, default=300.0, help="most seconds of the burst")
    add("--timeout", type=float, default=60.0, help="seconds before a create times out")
    add("--connections", type=int, default=16, help="most HTTP/2 connections")
    add("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    for name, size in EXTRAS.items():
        if getattr(args, name) is None:
            setattr(args, name, size if args.extras else 0)
    if min(args.clients, args.per_namespace, args.rounds) < 1 or args.seconds <= 0:
        parser.error(
            "--clients, --per-namespace and --rounds must be at least 1, --seconds positive"
        )
    return args


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dbquota-bench-create-"))
    print(f"command: {' '.join(['python', *sys.argv])}")
    print(f"{measuring.machine()}; work dir {workdir}", flush=True)
    started = time.monotonic()
    failed = True
    try:
        with harness.Harness(workdir) as h:  # torn down on exit, Ctrl-C and SIGTERM
            asyncio.run(main_async(h, args))
            failed = False
    except KeyboardInterrupt:
        print("\ninterrupted: torn down", file=sys.stderr)
    except (harness.HarnessError, RuntimeError) as exc:
        print(f"\nfailed: {exc}", file=sys.stderr)
    finally:
        print(f"\ntotal {time.monotonic() - started:.0f} s; load average {measuring.load()}")
        measuring.clean_up(workdir, keep=args.keep, failed=failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
