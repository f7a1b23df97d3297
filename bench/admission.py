"""Benchmark: AdmissionReview POSTs to the webhook at fixed rates, healthy and in an outage.

    python bench/admission.py [--rates 50,100,200] [--seconds 20] [--lead-in 1] [--claims 100]
                              [--connections 32] [--warmup 3] [--dry-run] [--keep]
                              [--operator-arg=--escrow-share=0 ...]

Starts, in a temporary directory and through :class:`e2e.harness.Harness`, everything the
admission path touches: a real etcd and kube-apiserver (``crds/`` applied), the billing
simulator and ``dbquota run --dev-webhook`` syncing from it every second. It creates one
namespace with one DatabaseQuota (policy Conservative, a budget no run can exhaust, so
every review is admitted and every admission writes a reservation to the quota's status
on the apiserver) and waits until the quota's status shows billing
live (circuit Closed, not degraded).

Then, for each rate, it sends AdmissionReview CREATE requests (not dry-run) for claims
whose names cycle over ``--claims`` names, each a new object with a uid of its own, as in a
real burst (the claims are never created: each reservation stays on the quota until the
operator's short ``--reservation-grace`` releases it, :data:`NEVER_CREATED`) on an
open-loop timetable: request i is
due at ``start + i / rate`` and goes out then, whatever the earlier ones are doing. Each
request's latency is measured client-side from the time it was due (so a client that
falls behind its timetable shows as latency, not as a lower rate), over TLS with
keep-alive (HTTP/1.1 over asyncio TLS streams trusting the webhook's CA bundle, at most
``--connections``; see :class:`Connections` for why not httpx), presenting the apiserver's
webhook client certificate, which the operator requires (``--webhook-client-ca``). The
client collects no garbage during a run. Each rate runs twice in a row: healthy, then
during a billing outage (the simulator's ``outage`` fault, once the quota's status shows
the circuit Open; then the fault is lifted and the next rate waits for billing to be live
again); each phase starts with ``--lead-in`` seconds at its rate that are not measured. Pairing
the phases per rate keeps slow drifts of a shared machine out of the outage/healthy
ratio, which shows whether enforcement waits for billing. ``--dry-run`` marks every
review dry-run (decided, nothing written): the webhook's latency without the reservation
write, for comparison. ``--operator-arg`` passes a flag to ``dbquota run``: with
``--operator-arg=--escrow-share=0`` every admission waits for its reservation write (the
exact path), for comparison with escrow.

Reported per phase and rate: requests sent, admitted, errors (denials, HTTP errors,
timeouts), achieved throughput (answers per second of the run), p50/p99/max latency, the
client's own lag behind the timetable, whether the wall clock stepped during the run
(:class:`bench.measuring.ClockSteps`; and, on the progress line, the CPU the hypervisor
stole meanwhile if over 2 %, :class:`bench.measuring.Steal`), the CPU of the client, the
operator, the apiserver and etcd (from /proc), the operator's own mean admission time
(``dbquota_admission_duration_seconds``), decisions counted by the operator's
``dbquota_admission_decisions_total`` and the apiserver's own count of requests on the
quota (``apiserver_request_total``: status PATCHes that succeeded, 409 conflicts, GETs),
which holds the reservation batches and the reconciler's refreshes, and the most
reservations the quota held (:class:`bench.measuring.QuotaSizes`). The operator's
peak RSS (``VmHWM``) and the load average come last. Everything is torn down at the end,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # e2e/ and tests/ are not installed: import them from the repo

from bench import measuring  # noqa: E402
from bench.measuring import cpu_seconds, proc_status, table  # noqa: E402
from e2e import harness, scraping  # noqa: E402
from e2e.waiting import wait_for as _wait_for  # noqa: E402
from tests import simulating  # noqa: E402

NAMESPACE = "bench"
QUOTA = "q"
CONFIGURATION = "bench.dbquota.io"
GROUP_VERSION = {"group": "dbquota.io", "version": "v1alpha1"}
KIND = {**GROUP_VERSION, "kind": "DatabaseClaim"}
FAST = simulating.FAST_SYNC
"""As the e2e suite's (without its short reservation grace: the bench's holds must stay)."""
NEVER_CREATED = ("--reservation-grace=0.5", "--max-reservations=0")
"""The bench's claims are never created, so each review's reservation would wait the
grace (60 s) for its object and count against ``--max-reservations``: thousands would
pile up on the quota. A short grace releases them about as soon as a real burst's end,
once their claims show their price, and the limit is off (it is there against forged
reviews). On the path users take (``bench/create.py`` at 200 creates/s) the quota held
at most 52-65 reservations; with this grace the bench's holds up to 122-145 at 200/s, and
with the 2 s it had before, 409-479, which made each quota write cost the apiserver
about 100 ms (see ``bench/README.md``)."""


# ---------------------------------------------------------------------------- processes


@dataclass
class Stack:
    """What the run measures: the harness's processes and the quota's status."""

    h: harness.Harness
    operator: harness.Operator

    @property
    def simulator(self) -> simulating.Simulator:
        assert self.h.simulator is not None
        return self.h.simulator

    def quota_status(self) -> dict[str, Any]:
        quota = self.h.kubectl.get_json("dbq", QUOTA, "-n", NAMESPACE)
        got: dict[str, Any] = quota.get("status", {})
        return got


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """:func:`e2e.waiting.wait_for`, failing with RuntimeError: the bench is not a test."""
    return _wait_for(predicate, timeout=timeout, what=what, error=RuntimeError, interval=0.25)


def start(h: harness.Harness, *, budget: float, operator_args: list[str]) -> Stack:
    """Control plane, CRDs, simulator, operator, namespace and quota; billing live."""
    h.cluster(reuse=False)  # its own: the apiserver's and etcd's CPU are measured
    h.crds()
    sim = h.billing(clusters=50, seed=11)
    op = h.operator(
        extra=(f"--billing-url={sim.url}", *FAST, *NEVER_CREATED, *operator_args),
        configuration=CONFIGURATION,
    )
    stack = Stack(h=h, operator=op)
    h.kubectl("create", "namespace", NAMESPACE)
    quota = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {"name": QUOTA, "namespace": NAMESPACE},
        "spec": {"monthlyBudget": budget, "degradation": {"policy": "Conservative"}},
    }
    h.kubectl.apply(quota)
    wait_for(
        lambda: billing_state(stack) == ("Closed", False),
        timeout=60,
        what="the quota's status to show billing live (circuit Closed, not degraded)",
    )
    return stack


def billing_state(stack: Stack) -> tuple[str, bool]:
    billing = stack.quota_status().get("billing", {})
    return str(billing.get("circuitState", "")), bool(billing.get("degraded", True))


# ---------------------------------------------------------------------------- measuring


def review(name: str, *, storage_gib: int, dry_run: bool) -> bytes:
    """An AdmissionReview of a DatabaseClaim CREATE, as the apiserver sends it."""
    claim = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseClaim",
        # The apiserver gives a created object its uid before validating admission; a hold
        # is keyed by it, so every review's claim is a new object, as in a real burst.
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4())},
        "spec": {
            "engine": "postgres",
            "instanceClass": "db.r6g.large",
            "storageGiB": storage_gib,
            "replicas": 1,
        },
    }
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": KIND,
            "resource": {**GROUP_VERSION, "resource": "databaseclaims"},
            "requestKind": KIND,
            "namespace": NAMESPACE,
            "name": name,
            "operation": "CREATE",
            "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
            "object": claim,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    return json.dumps(body).encode()


@dataclass
class Run:
    """One rate's measurements."""

    phase: str
    rate: float
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, from the time it was due
    lags: list[float] = field(default_factory=list)  # seconds the send started late
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    client_cpu: float = 0.0
    operator_cpu: float = 0.0
    apiserver_cpu: float = 0.0
    connections: int = 0  # connections open after the run (never closed: a high-water mark)
    etcd_cpu: float = 0.0
    server_mean_ms: float = float("nan")
    decisions: int = 0
    from_escrow: int = 0  # reservations admitted from the replica's escrow
    calls: dict[str, float] = field(default_factory=dict)  # apiserver requests on the quota
    load: float = 0.0
    clock_step: float = 0.0  # s the wall clock stepped during the run (measuring.ClockSteps)
    stolen: float = float("nan")  # share of the CPU the hypervisor stole (measuring.Steal)
    held: int = 0  # most reservations the quota held during the run

    @property
    def sent(self) -> int:
        return len(self.latencies)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def pct(self, q: float) -> float:
        return measuring.percentile(self.latencies, q) * 1000


class ClientError(Exception):
    """The webhook's answer could not be read (closed connection, unexpected framing)."""


class Poster(Protocol):
    """What :func:`drive` sends reviews through: :class:`Connections`, or another client
    that answers the same way (``bench/webhook_server.py``'s HTTP/2 one)."""

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` as JSON; the status code and the response body (``ClientError``
        when the answer cannot be read)."""
        ...


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Connections:
    """Keep-alive TLS connections to the webhook, HTTP/1.1 spoken over asyncio streams.

    A request takes an idle connection, opens a new one while fewer than ``limit`` are
    open, or else waits in FIFO order for the next one released, as the apiserver's webhook
    client would wait for a connection.

    Why not httpx: the bench's client shares the 2 cores with the webhook, and its own
    CPU per request and event-loop lag show up as webhook latency. With one single-
    connection httpx client per connection the client used about 30 % of a core at 200/s;
    these ~60 lines of request writing and response framing (Content-Length, as the webhook
    answers) do the same job for a fraction of that, closer to the apiserver's Go client.
    An answer with ``Connection: close`` (the webhook ages its connections,
    ``--webhook-max-connection-age``) retires its connection, as Go's client does, and a
    request waiting for one gets a new connection in its place.
    (One shared ``httpx.AsyncClient`` pool was worse still: it fell behind its own
    timetable once a backlog formed.)
    """

    def __init__(self, *, url: str, ctx: ssl.SSLContext, limit: int) -> None:
        parsed = httpx.URL(url)
        self.host, self.port, self.path = parsed.host, parsed.port or 443, parsed.raw_path
        self._ctx = ctx
        self._limit = limit
        self._idle: list[_Conn] = []
        self._open: list[_Conn] = []
        self._connecting = 0
        self._waiters: collections.deque[asyncio.Future[_Conn]] = collections.deque()
        self._replacing: set[asyncio.Task[None]] = set()

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` as JSON; the status code and the response body."""
        conn = await self._acquire()
        try:
            status, answer, closing = await self._exchange(conn, body)
        except BaseException:
            self._discard(conn)
            raise
        if closing:  # the server ages connections (--webhook-max-connection-age)
            self._discard(conn)
        else:
            self._release(conn)
        return status, answer

    async def _exchange(self, conn: _Conn, body: bytes) -> tuple[int, bytes, bool]:
        """One request and its answer: status, body, and whether the server closes."""
        conn.writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.path, self.host.encode(), len(body), body)
        )
        status_line = await conn.reader.readline()
        if not status_line:
            raise ClientError("connection closed")
        status, length, closing = int(status_line.split()[1]), -1, False
        while (line := await conn.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"connection":
                closing = value.strip().lower() == b"close"
        if length < 0:
            raise ClientError("answer without Content-Length")
        return status, await conn.reader.readexactly(length), closing

    async def _acquire(self) -> _Conn:
        if self._idle:
            return self._idle.pop()
        if len(self._open) + self._connecting < self._limit:
            return await self._connect()
        waiter: asyncio.Future[_Conn] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    async def _connect(self) -> _Conn:
        self._connecting += 1  # counts against the limit while the handshake runs
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._ctx)
        finally:
            self._connecting -= 1
        conn = _Conn(reader=reader, writer=writer)
        self._open.append(conn)
        return conn

    async def _replace(self) -> None:
        """A new connection for the request waiting longest, in place of a closed one."""
        try:
            conn = await self._connect()
        except OSError as failure:  # that request fails as it would have on the old one
            while self._waiters:
                if not (waiter := self._waiters.popleft()).done():
                    waiter.set_exception(ClientError(f"reconnect failed: {failure}"))
                    return
            return
        self._release(conn)

    def _release(self, conn: _Conn) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: _Conn) -> None:
        if conn in self._open:
            self._open.remove(conn)
        conn.writer.close()
        if self._waiters:  # they waited for a release that this connection will not make
            task = asyncio.create_task(self._replace())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)

    @property
    def opened(self) -> int:
        return len(self._open)

    async def aclose(self) -> None:
        for conn in self._open:
            conn.writer.close()
        for conn in self._open:
            with contextlib.suppress(OSError, ssl.SSLError):
                await conn.writer.wait_closed()


async def one(conns: Poster, body: bytes, due: float, run: Run) -> None:
    loop = asyncio.get_running_loop()
    run.lags.append(max(0.0, loop.time() - due))
    try:
        status, content = await conns.post(body)
        if status != 200:
            run.error(f"HTTP {status}")
        elif json.loads(content)["response"]["allowed"]:
            run.ok += 1
        else:
            run.error("denied")
    except (OSError, ssl.SSLError, ClientError, asyncio.IncompleteReadError, ValueError) as exc:
        run.error(type(exc).__name__)
    run.latencies.append(loop.time() - due)


async def drive(
    conns: Poster,
    run: Run,
    *,
    names: list[str],
    counter: Iterator[int],
    dry_run: bool,
) -> None:
    """Send ``rate * seconds`` reviews on an open-loop timetable; wait for every answer."""
    loop = asyncio.get_running_loop()
    total = round(run.rate * run.seconds)
    bodies = [
        review(names[next(counter) % len(names)], storage_gib=10, dry_run=dry_run)
        for _ in range(total)
    ]
    tasks: list[asyncio.Task[None]] = []
    # The client's own garbage collections would pause its event loop and show up as
    # webhook latency: collect now, none during the run (as timeit does).
    gc.collect()
    gc.disable()
    cpu0 = time.process_time()
    start = loop.time() + 0.05
    for i, body in enumerate(bodies):
        due = start + i / run.rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(conns, body, due, run)))
    await asyncio.gather(*tasks)
    gc.enable()
    run.elapsed = loop.time() - start
    run.client_cpu = (time.process_time() - cpu0) / run.elapsed


def apiserver_client(stack: Stack) -> httpx.AsyncClient:
    """A client of the apiserver with the kubeconfig's client certificate."""
    cluster = stack.h.current_cluster
    return httpx.AsyncClient(base_url=cluster.server, verify=cluster.ssl_context(), timeout=10.0)


async def quota_calls(client: httpx.AsyncClient) -> dict[str, float]:
    """The apiserver's own count of requests on DatabaseQuotas (by verb, subresource, code),
    and the seconds it spent on status PATCHes (key ``seconds``), so far."""
    text = (await client.get("/metrics")).text
    counts: dict[str, float] = {}
    for sample in scraping.samples(text):
        labels = sample.labels
        if labels.get("resource") != "databasequotas":
            continue
        if sample.name == "apiserver_request_total" and labels["verb"] not in ("WATCH", "LIST"):
            key = " ".join(
                filter(None, (labels["verb"], labels.get("subresource"), labels["code"]))
            )
            counts[key] = counts.get(key, 0) + sample.value
        elif sample.name == "apiserver_request_duration_seconds_sum" and (
            labels["verb"] == "PATCH" and labels.get("subresource") == "status"
        ):
            counts["seconds"] = counts.get("seconds", 0) + sample.value
    return counts


async def scrape(client: httpx.AsyncClient, port: int) -> tuple[float, float, float, float]:
    """(admission decisions, admission seconds sum, admission count, reservations taken
    from escrow) so far."""
    parsed = scraping.samples((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
    return (
        scraping.total(parsed, "dbquota_admission_decisions_total"),
        scraping.total(parsed, "dbquota_admission_duration_seconds_sum"),
        scraping.total(parsed, "dbquota_admission_duration_seconds_count"),
        scraping.total(parsed, "dbquota_admission_reservations_total", path="escrow"),
    )


async def enter(stack: Stack, phase: str) -> None:
    """Start or end the billing outage; return once the quota's status shows the breaker so."""
    assert stack.simulator is not None
    outage = phase == "outage"
    stack.simulator.fault(mode="outage" if outage else "none")

    def arrived() -> bool:
        state = billing_state(stack)
        return state[0] == "Open" if outage else state == ("Closed", False)

    what = "the circuit Open" if outage else "billing live again (Closed, not degraded)"
    await asyncio.to_thread(wait_for, arrived, timeout=60, what=f"the quota's status: {what}")
    state, degraded = await asyncio.to_thread(billing_state, stack)
    print(f"{phase}: quota status shows circuit {state}, degraded {degraded}", flush=True)


async def measure(stack: Stack, args: argparse.Namespace, rates: list[float]) -> list[Run]:
    state = stack.h.current_cluster.state
    assert state is not None  # start() started a control plane of its own
    pids = [stack.operator.pid, state.apiserver_pid, state.etcd_pid]
    metrics_port = stack.operator.metrics_port
    ctx = harness.as_apiserver(stack.h.current_cluster, stack.operator)
    # As the apiserver calls it: its timeout in the query (the webhook's own deadline).
    url = f"https://127.0.0.1:{stack.operator.webhook_port}/validate-claims?timeout=10s"
    conns = Connections(url=url, ctx=ctx, limit=args.connections)
    names = [f"claim-{i:03d}" for i in range(args.claims)]
    counter = iter(range(10**12))
    runs: list[Run] = []
    async with (
        httpx.AsyncClient(timeout=5.0) as plain,
        apiserver_client(stack) as apiserver,
    ):
        try:
            if args.warmup > 0:  # connections, TLS sessions, the ledger's cached quota
                warm = Run(phase="warm-up", rate=rates[0], seconds=args.warmup)
                await drive(conns, warm, names=names, counter=counter, dry_run=args.dry_run)
                print(f"warm-up: {warm.ok}/{warm.sent} admitted, errors {warm.errors}")
            current = "healthy"  # start() waited for billing to be live
            for rate in rates:
                for phase in ("healthy", "outage"):
                    if phase != current:
                        await enter(stack, phase)
                        current = phase
                    # Unmeasured lead-in at this rate: after the pause between phases the
                    # replica has given its escrow back (idle), so the first reviews take
                    # the exact path, whose cost --operator-arg=--escrow-share=0 measures.
                    lead = Run(phase="lead-in", rate=rate, seconds=args.lead_in)
                    await drive(conns, lead, names=names, counter=counter, dry_run=args.dry_run)
                    run = Run(phase=phase, rate=rate, seconds=args.seconds)
                    decisions0, sum0, count0, escrow0 = await scrape(plain, metrics_port)
                    calls0 = await quota_calls(apiserver)
                    cpu0 = [cpu_seconds(p) for p in pids]
                    steps, steal = measuring.ClockSteps(), measuring.Steal()
                    cluster = stack.h.current_cluster
                    async with measuring.QuotaSizes(cluster.server, cluster.ssl_context()) as q:
                        await drive(conns, run, names=names, counter=counter, dry_run=args.dry_run)
                    run.clock_step, run.stolen = steps.stepped(), steal.share()
                    run.held = q.peak[1]
                    decisions1, sum1, count1, escrow1 = await scrape(plain, metrics_port)
                    cpu = [
                        (cpu_seconds(p) - c) / run.elapsed for p, c in zip(pids, cpu0, strict=True)
                    ]
                    run.operator_cpu, run.apiserver_cpu, run.etcd_cpu = cpu
                    run.decisions = round(decisions1 - decisions0)
                    run.from_escrow = round(escrow1 - escrow0)
                    calls1 = await quota_calls(apiserver)
                    run.calls = {k: v - calls0.get(k, 0) for k, v in calls1.items()}
                    run.calls = {k: v for k, v in sorted(run.calls.items()) if v}
                    if count1 > count0:
                        run.server_mean_ms = (sum1 - sum0) / (count1 - count0) * 1000
                    run.load = os.getloadavg()[0]
                    run.connections = conns.opened
                    runs.append(run)
                    print(
                        f"{phase} {rate:g}/s: {run.ok}/{run.sent} admitted, "
                        f"p50 {run.pct(0.5):.1f} ms, p99 {run.pct(0.99):.1f} ms"
                        f"{measuring.steal_text(run.stolen)}",
                        flush=True,
                    )
                    await asyncio.sleep(1.0)
        finally:
            await conns.aclose()
            stack.simulator.fault(mode="none")
    return runs


# ---------------------------------------------------------------------------- reporting

LATENCY = (
    "| phase | rate/s | sent | ok | errors | achieved/s | p50 ms | p99 ms | max ms "
    "| client send lag p99 ms | wall clock step s |"
)
COSTS = (
    "| phase | rate/s | CPU client / operator / apiserver / etcd | operator CPU ms per review "
    "| operator mean ms | decisions | from escrow | status writes (409s) | reviews per write "
    "| apiserver ms per write | other quota calls | conns | load | most reservations |"
)


def latency_row(run: Run) -> str:
    errors = sum(run.errors.values())
    err = f"{errors} ({', '.join(f'{k} {v}' for k, v in run.errors.items())})" if errors else "0"
    lag99 = measuring.percentile(run.lags, 0.99) * 1000
    return (
        f"| {run.phase} | {run.rate:g} | {run.sent} | {run.ok} | {err} "
        f"| {run.sent / run.elapsed:.1f} | {run.pct(0.50):.1f} | {run.pct(0.99):.1f} "
        f"| {max(run.latencies) * 1000:.1f} | {lag99:.1f} "
        f"| {measuring.step_text(run.clock_step)} |"
    )


def costs_row(run: Run) -> str:
    patches = ("PATCH status 200", "PATCH status 409", "seconds")
    writes = round(run.calls.get(patches[0], 0))
    conflicts = round(run.calls.get(patches[1], 0))
    total = sum(run.calls.get(k, 0) for k in patches[:2])
    patch_ms = f"{run.calls['seconds'] / total * 1000:.1f}" if total else "-"
    per_write = f"{run.decisions / writes:.1f}" if writes else "-"
    other = ", ".join(f"{k} {v:.0f}" for k, v in run.calls.items() if k not in patches)
    op_ms = run.operator_cpu * run.elapsed / run.sent * 1000
    return (
        f"| {run.phase} | {run.rate:g} | {run.client_cpu:.0%} / {run.operator_cpu:.0%} "
        f"/ {run.apiserver_cpu:.0%} / {run.etcd_cpu:.0%} | {op_ms:.2f} "
        f"| {run.server_mean_ms:.1f} | {run.decisions} | {run.from_escrow} "
        f"| {writes} ({conflicts}) | {per_write} "
        f"| {patch_ms} | {other or '-'} | {run.connections} | {run.load:.2f} | {run.held} |"
    )


def report(runs: list[Run], *, rss_peak: float, rss_now: float) -> None:
    table(LATENCY, [latency_row(r) for r in runs])
    table(COSTS, [costs_row(r) for r in runs])
    healthy = {r.rate: r for r in runs if r.phase == "healthy"}
    outage = [r for r in runs if r.phase == "outage"]
    table(
        "| rate/s | healthy p50 ms | outage p50 ms | healthy p99 ms | outage p99 ms "
        "| outage / healthy p50 | outage / healthy p99 |",
        [
            f"| {r.rate:g} | {healthy[r.rate].pct(0.5):.1f} | {r.pct(0.5):.1f} "
            f"| {healthy[r.rate].pct(0.99):.1f} | {r.pct(0.99):.1f} "
            f"| {r.pct(0.5) / healthy[r.rate].pct(0.5):.2f} "
            f"| {r.pct(0.99) / healthy[r.rate].pct(0.99):.2f} |"
            for r in outage
        ],
    )
    print(
        f"\noperator peak RSS (VmHWM) {rss_peak:.0f} MiB, RSS at the end {rss_now:.0f} MiB; "
        f"load average at the end {measuring.load()}"
    )
    top = healthy[max(healthy)]
    verdict = "met" if top.pct(0.99) <= 10.0 and not top.errors else "NOT met"
    print(f"target p99 <= 10 ms at {top.rate:g}/s (healthy): {verdict} ({top.pct(0.99):.1f} ms)")
    ratios = [r.pct(0.99) / healthy[r.rate].pct(0.99) for r in outage]
    verdict = "met" if ratios and max(ratios) <= 1.2 else "NOT met"
    print(f"target outage p99 within 1.2x of healthy: {verdict} (worst {max(ratios):.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,200", help="reviews per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each rate")
    parser.add_argument(
        "--lead-in", type=float, default=1.0, help="unmeasured seconds before each phase"
    )
    parser.add_argument("--claims", type=int, default=100, help="claim names to cycle over")
    parser.add_argument("--connections", type=int, default=32, help="client connection limit")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up, unmeasured")
    parser.add_argument("--budget", type=float, default=1e9, help="the quota's monthly budget")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="mark the reviews dry-run: decided, nothing reserved (the webhook without writes)",
    )
    parser.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra flag for `dbquota run` (repeatable), e.g. --operator-arg=--escrow-share=0",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]

    workdir = Path(tempfile.mkdtemp(prefix="dbquota-bench-admission-"))
    print(f"{measuring.machine()}; work dir {workdir}", flush=True)
    failed = True
    log = ""
    try:
        with harness.Harness(workdir) as h:  # torn down on exit, Ctrl-C and SIGTERM
            started = time.monotonic()
            stack = start(h, budget=args.budget, operator_args=args.operator_arg)
            log = str(stack.operator.log)
            print(f"control plane, simulator, operator up in {time.monotonic() - started:.1f} s")
            runs = asyncio.run(measure(stack, args, rates))
            pid = stack.operator.pid
            report(runs, rss_peak=proc_status(pid, "VmHWM"), rss_now=proc_status(pid, "VmRSS"))
            failed = False
    except KeyboardInterrupt:
        print("\ninterrupted: torn down", file=sys.stderr)
    finally:
        if failed and log and Path(log).exists():
            tail = Path(log).read_text(errors="replace")[-3000:]
            print(f"operator log tail:\n{tail}", file=sys.stderr)
        measuring.clean_up(workdir, keep=args.keep, failed=failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
