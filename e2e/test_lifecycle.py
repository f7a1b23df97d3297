"""What happens around each claim, end to end: shutdown, tracking, forged and dead holds.

Each test starts a replica of its own (``dbquota run`` not registered with the apiserver,
driven by AdmissionReviews posted to its port as the apiserver would, beside the session
operator, which leads and reconciles) and checks:

- SIGTERM in the middle of a burst of admissions, while a billing call is in flight:
  exit code 0, no traceback in the log, no breaker transition caused by the shutdown, and
  every admission it answered was written to the quota (as a reservation in flight, or
  released later as never created);
- with ``--shutdown-delay``, SIGTERM makes ``/readyz`` say "stopping" at once while the
  webhook still admits a review on a new connection and the replica still leads; it exits 0
  once the delay is over, then hands over its leadership and writes what it admitted;
- billing tracking follows the claims: a claim's cluster is fetched while the claim
  exists and no longer once it is deleted;
- a reservation taken by a review whose object never appears (a forged review) is
  released within the grace period, measured from the admission;
- the escrow of a replica killed with SIGKILL stops counting once its Lease lapses (within
  the lease duration plus a refresh), with an ``EscrowExpired`` Event, and the budget it
  held is admitted again;
- a replica restarted while its provider is unreachable prices from its cache in the
  currency the cached catalog named: a quota in another currency still warns;
- a replica run with ``--log-format=json`` writes every line of its log, from start-up
  through an admission to its SIGTERM, as one JSON object with time, level, logger and
  message, its own lines and kopf's alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from dbquota.handlers.webhook_tls import ensure_dev_certificates
from e2e import harness
from e2e.conftest import FAST
from e2e.harness import Cluster, Kubectl, Operator, as_apiserver, spawn_operator, stop_operator
from e2e.test_crds import claim
from e2e.test_enforcement import live_quota, review, status, unit_cost
from e2e.waiting import wait_for
from tests.simulating import Simulator, launch
from tests.simulating import stop as stop_process


class Replica:
    """A ``dbquota run`` that serves its webhook on loopback and registers nothing."""

    def __init__(self, op: Operator, ca: Path) -> None:
        self.op = op
        self.client = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30)

    def admit(self, body: dict[str, Any]) -> bool:
        url = f"https://127.0.0.1:{self.op.webhook_port}/validate-claims"
        answer = self.client.post(url, json=body)
        answer.raise_for_status()
        allowed: bool = answer.json()["response"]["allowed"]
        return allowed

    def metric(self, name: str, **labels: str) -> float:
        return self.op.metric(name, **labels)

    def ready(self) -> bool:
        return self.op.ready()


def start_replica(cluster: Cluster, workdir: Path, billing_url: str, *extra: str) -> Replica:
    ca, _, _ = ensure_dev_certificates(cert_dir=workdir / "certs", host="127.0.0.1")
    op = spawn_operator(
        cluster,
        workdir,
        "--webhook-listen=127.0.0.1",
        f"--billing-url={billing_url}",
        *FAST,
        *extra,
    )
    replica = Replica(op, ca)
    try:
        wait_for(replica.ready, timeout=60, what="the replica to be ready")
    except AssertionError:
        stop_operator(op)
        raise
    return replica


@pytest.fixture
def own_billing(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator of the test's own (faults here do not reach the session operator)."""
    with (tmp_path / "sim.log").open("w") as log:
        sim = launch(
            "--no-bulk",
            "--cluster-id=tracked-a",
            "--cluster-id=tracked-b",
            log=log,
            clusters=5,
            seed=3,
        )
    yield sim
    stop_process(sim.process)


def test_sigterm_mid_burst_exits_cleanly_and_loses_no_admission(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
    own_billing: Simulator,
    tmp_path: Path,
) -> None:
    live_quota(kubectl, namespace, "burst", monthlyBudget=round(unit_cost(billing) * 1000, 2))
    replica = start_replica(cluster, tmp_path / "r", own_billing.url, "--request-timeout=5")
    own_billing.fault(mode="latency", latency=2.0)  # a billing call is always in flight
    admitted: list[str] = []
    stop = threading.Event()

    def burst() -> None:
        i = 0
        while not stop.is_set():
            name = f"b{i}"
            try:
                if replica.admit(review(namespace, name)):
                    admitted.append(name)
            except httpx.HTTPError:
                return  # the replica has stopped listening
            i += 1
            time.sleep(0.01)

    sender = threading.Thread(target=burst)
    sender.start()
    time.sleep(2.5)
    replica.op.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    replica.op.proc.wait(timeout=30)
    stopped_in = time.monotonic() - started
    stop.set()
    sender.join(timeout=30)
    replica.client.close()
    log = replica.op.logs()
    assert replica.op.proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]
    assert "-> Open" not in log  # our own shutdown is not a provider failure
    assert len(admitted) > 20
    assert stopped_in < 10

    wait_for(
        lambda: set(admitted) <= accounted(kubectl, namespace, "burst"),
        timeout=30,
        what="every admission written",
    )


def accounted(kubectl: Kubectl, namespace: str, quota: str) -> set[str]:
    """The claims the quota holds a reservation for, or released one of with an Event."""
    got = status(kubectl, namespace, quota)
    held = {r["claim"] for r in got.get("reservations", [])}
    events = kubectl.get_json("events", "-n", namespace)["items"]
    released = {
        e["message"].split("claim ", 1)[1].split(":", 1)[0]
        for e in events
        if e["reason"] == "ReservationReleased"
    }
    return held | released


def leader(kubectl: Kubectl, namespace: str) -> str:
    """Who holds the leader Lease of ``namespace`` ('' once released)."""
    lease = kubectl.get_json("lease", "dbquota-leader", "-n", namespace)
    return str(lease["spec"].get("holderIdentity") or "")


def test_on_sigterm_a_replica_says_stopping_and_serves_through_its_shutdown_delay(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
    tmp_path: Path,
) -> None:
    """What a Service's endpoints take a few seconds to learn: a stopping replica still
    gets new connections. With ``--shutdown-delay=3`` it says "stopping" on ``/readyz`` at
    once, admits a review on a new connection, keeps its leadership (its own Lease
    namespace, so that it leads), then exits 0 after the delay and today's shutdown: the
    leadership released, the review's reservation written to the quota."""
    delay = 3.0
    live_quota(kubectl, namespace, "draining", monthlyBudget=1_000_000)
    scoped = (f"--namespace={namespace}", f"--lease-namespace={namespace}")
    replica = start_replica(
        cluster, tmp_path / "r", billing.url, f"--shutdown-delay={delay:g}", *scoped
    )
    replica.client.close()
    holder = wait_for(lambda: leader(kubectl, namespace), what="the replica to lead")

    def unready() -> httpx.Response | None:
        got = probe(replica.op, "/readyz")
        return got if got is not None and got.status_code == 503 else None

    replica.op.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    stopping: httpx.Response = wait_for(
        unready,
        timeout=delay,
        interval=0.05,
        what="/readyz to say the replica is stopping",
    )
    said_in = time.monotonic() - signalled
    ca = ssl.create_default_context(cafile=str(replica.op.cert_dir / "ca.crt"))
    with httpx.Client(verify=ca, timeout=5) as fresh:  # a connection made during the delay
        url = f"https://127.0.0.1:{replica.op.webhook_port}/validate-claims"
        answer = fresh.post(url, json=review(namespace, "during-the-delay"))
    leading = leader(kubectl, namespace)
    during = time.monotonic() - signalled
    alive = replica.op.proc.poll() is None
    replica.op.proc.wait(timeout=delay + 20)
    stopped_in = time.monotonic() - signalled
    log = replica.op.logs()
    assert stopping.text == "not ready: stopping\n"
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"]["allowed"] is True, answer.text
    assert during < delay, during  # all of it within the delay...
    assert alive
    assert leading == holder  # ...still leading then
    assert replica.op.proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]
    assert "serving the webhook 3s more (--shutdown-delay)" in log
    assert delay <= stopped_in < delay + 5, stopped_in
    assert leader(kubectl, namespace) == ""  # handed over at the end, as without a delay
    wait_for(
        lambda: "during-the-delay" in accounted(kubectl, namespace, "draining"),
        timeout=30,
        what="the review admitted during the delay written",
    )
    print(
        f"--shutdown-delay=3: /readyz said stopping {said_in:.2f}s after SIGTERM, a review "
        f"on a new connection admitted by {during:.2f}s, exit 0 after {stopped_in:.1f}s"
    )


def test_prices_read_back_from_the_cache_keep_their_currency(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
    tmp_path: Path,
) -> None:
    """The simulator prices in USD. A replica fetches its catalog, stops, and starts again
    on the same cache with a provider that nothing answers for: it decides from the cache,
    and a quota whose budget is in EUR still gets the currency warning on each admission
    (a cache that kept prices without their currency would let it go silent)."""
    live_quota(kubectl, namespace, "eur", monthlyBudget=5000, currency="EUR")
    workdir = tmp_path / "replica"
    # Its watches and Lease in the test's namespace: the session operator's status and
    # Events elsewhere never see the second replica's unreachable provider.
    scoped = (f"--namespace={namespace}", f"--lease-namespace={namespace}")
    first = start_replica(cluster, workdir, billing.url, *scoped)
    first.client.close()
    stop_operator(first.op)
    dead = f"http://127.0.0.1:{harness.free_port()}"
    second = start_replica(cluster, workdir, dead, *scoped)
    try:
        url = f"https://127.0.0.1:{second.op.webhook_port}/validate-claims"
        response = second.client.post(url, json=review(namespace, "from-cache")).json()
    finally:
        second.client.close()
        stop_operator(second.op)
    answer = response["response"]
    assert answer["allowed"], answer
    warnings = answer.get("warnings") or []
    assert any(
        "billing prices are in USD, DatabaseQuota eur's budget in EUR" in w for w in warnings
    ), warnings
    assert any("degraded" in w or "cache" in w for w in warnings), warnings  # not live prices
    for op in (first.op, second.op):
        assert op.proc.returncode == 0
    assert "Traceback" not in second.op.logs()


def test_billing_tracking_follows_the_claims(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    own_billing: Simulator,
    tmp_path: Path,
) -> None:
    replica = start_replica(cluster, tmp_path / "r", own_billing.url)
    before = replica.metric("dbquota_billing_tracked_clusters")
    kubectl.apply(
        [
            claim(namespace, name="a", clusterId="tracked-a"),
            claim(namespace, name="b", clusterId="tracked-b"),
        ]
    )
    wait_for(
        lambda: replica.metric("dbquota_billing_tracked_clusters") == before + 2,
        what="both clusters tracked",
    )

    def fetched() -> int:
        return own_billing.outcomes("cluster").get("ok", 0)

    wait_for(lambda: fetched() >= 4, what="the tracked clusters fetched every sync")
    kubectl("delete", "dbc", "a", "b", "-n", namespace)
    wait_for(
        lambda: replica.metric("dbquota_billing_tracked_clusters") == before,
        what="both clusters untracked",
    )
    time.sleep(1.5)  # a sync that was under way may still finish
    after = fetched()
    time.sleep(3)  # three more syncs
    assert fetched() == after
    stop_operator(replica.op)
    replica.client.close()


def test_a_forged_reviews_reservation_is_released_within_the_grace(
    cluster: Cluster, kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    live_quota(kubectl, namespace, "target", monthlyBudget=5000)
    # Forged by a holder of the apiserver's client certificate, if the cluster has one.
    with httpx.Client(verify=as_apiserver(cluster, operator), timeout=30) as client:
        url = f"https://127.0.0.1:{operator.webhook_port}/validate-claims"
        answer = client.post(url, json=review(namespace, "phantom"))
    assert answer.json()["response"]["allowed"]
    sent = time.monotonic()
    wait_for(
        lambda: status(kubectl, namespace, "target")["reservations"],
        what="the forged review's reservation",
    )
    wait_for(
        lambda: status(kubectl, namespace, "target")["reservations"] == [],
        timeout=30,
        what="the reservation to be released",
    )
    held_for = time.monotonic() - sent
    grace = float(next(a for a in FAST if a.startswith("--reservation-grace=")).split("=")[1])
    assert held_for < grace + 5, held_for  # the grace, a whole second of rounding, a refresh
    events = kubectl.get_json("events", "-n", namespace)["items"]
    assert any(
        e["reason"] == "ReservationReleased" and "no claim appeared" in e["message"] for e in events
    )


def test_a_killed_replicas_escrow_stops_counting_once_its_lease_lapses(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
    tmp_path: Path,
) -> None:
    cost = unit_cost(billing)
    live_quota(kubectl, namespace, "shared", monthlyBudget=round(cost * 10.5, 2))  # 10 fit
    replica = start_replica(cluster, tmp_path / "r", billing.url, "--escrow-share=0.5")
    assert replica.admit(review(namespace, "first"))  # exact: a lone claim takes no escrow
    assert replica.admit(review(namespace, "second"))  # a second at once: escrow for 4 more
    escrow = wait_for(
        lambda: status(kubectl, namespace, "shared").get("escrow"), what="the replica's escrow"
    )
    (held,) = escrow
    assert held["cost"] >= 4 * cost
    os.kill(replica.op.proc.pid, signal.SIGKILL)
    replica.op.proc.wait(timeout=10)
    replica.client.close()
    killed = time.monotonic()
    wait_for(
        lambda: not status(kubectl, namespace, "shared").get("escrow"),
        timeout=40,
        interval=0.5,
        what="the dead replica's escrow to be let go",
    )
    released_in = time.monotonic() - killed
    assert released_in <= 15 + 5, released_in  # lease duration + a refresh
    events = kubectl.get_json("events", "-n", namespace)["items"]
    assert any(e["reason"] == "EscrowExpired" for e in events)
    # The budget it held is admitted again (8 claims fit beside the reservations of "first"
    # and "second", which stay until their grace runs out).
    created = kubectl.apply([claim(namespace, name=f"after{i}") for i in range(8)], check=False)
    assert created.returncode == 0, created.stderr
    print(f"dead replica's escrow released {released_in:.1f}s after SIGKILL")


@pytest.fixture
def cut_off(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Cluster, harness.Proxy]]:
    """The cluster as seen through a proxy to its apiserver that the test can cut."""
    apiserver = urlsplit(cluster.server).port
    assert apiserver is not None
    road = harness.start_proxy(tmp_path, [apiserver], name="road")
    kubeconfig = harness.kubeconfig_via(cluster, road.port, tmp_path / "kubeconfig")
    try:
        yield dataclasses.replace(cluster, kubeconfig=kubeconfig), road
    finally:
        stop_process(road.proc)


def spawn_cut_off(cluster: Cluster, workdir: Path, billing: Simulator, namespace: str) -> Operator:
    harness.serving_certificate(workdir / "certs")
    return spawn_operator(
        cluster,
        workdir,
        "--webhook-listen=127.0.0.1",
        f"--billing-url={billing.url}",
        f"--namespace={namespace}",
        f"--lease-namespace={namespace}",
        *FAST,
    )


def probe(op: Operator, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{op.metrics_port}{path}", timeout=2)
    except httpx.HTTPError:
        return None


def not_ready(op: Operator) -> httpx.Response:
    """``/readyz``'s answer once it says the operator is not ready (503, with why)."""
    answer: httpx.Response = wait_for(
        lambda: (got := probe(op, "/readyz")) is not None and got.status_code == 503 and got,
        timeout=30,
        what="/readyz to say why it is not ready",
    )
    return answer


def test_a_start_up_without_the_apiserver_retries_then_builds_everything_once(
    cut_off: tuple[Cluster, harness.Proxy],
    billing: Simulator,
    namespace: str,
    tmp_path: Path,
) -> None:
    cluster, road = cut_off
    road.cut()
    op = spawn_cut_off(cluster, tmp_path / "op", billing, namespace)
    try:
        waiting = not_ready(op)
        healthz = probe(op, "/healthz")
        assert healthz is not None  # alive: not restarted
        assert healthz.status_code == 200
        time.sleep(3)  # start-up stays stuck while the apiserver is silent
        road.heal()
        healed = time.monotonic()
        wait_for(op.ready, timeout=90, interval=0.5, what="the operator to be ready once healed")
        ready_in = time.monotonic() - healed
    finally:
        stop_operator(op)
    log = op.logs()
    assert op.proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert log.count("serving /metrics, /healthz and /readyz") == 1  # probes built once
    print(f"not ready while cut off ({waiting.text.strip()!r}); ready {ready_in:.1f}s after")


def test_sigterm_while_start_up_is_stuck_exits_cleanly(
    cut_off: tuple[Cluster, harness.Proxy],
    billing: Simulator,
    namespace: str,
    tmp_path: Path,
) -> None:
    cluster, road = cut_off
    road.cut()
    op = spawn_cut_off(cluster, tmp_path / "op", billing, namespace)
    not_ready(op)
    time.sleep(2)
    op.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    op.proc.wait(timeout=40)
    stopped_in = time.monotonic() - started
    log = op.logs()
    assert op.proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert stopped_in < 25, stopped_in  # within the chart's 30 s grace
    print(f"SIGTERM during a stuck start-up: exited 0 in {stopped_in:.1f}s")


def test_a_replica_logging_json_writes_every_line_as_json(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
    tmp_path: Path,
) -> None:
    live_quota(kubectl, namespace, "logged", monthlyBudget=1_000_000)
    scoped = (f"--namespace={namespace}", f"--lease-namespace={namespace}")
    replica = start_replica(cluster, tmp_path / "r", billing.url, "--log-format=json", *scoped)
    try:
        assert replica.admit(review(namespace, "logged-1"))
    finally:
        replica.client.close()
        stop_operator(replica.op)
    assert replica.op.proc.returncode == 0
    lines = replica.op.logs().splitlines()
    records = [json.loads(line) for line in lines]  # every line, or this raises
    assert len(records) >= 5
    for record in records:
        assert list(record)[:4] == ["time", "level", "logger", "message"], record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    loggers = {str(r["logger"]).split(".")[0] for r in records}
    assert {"dbquota", "kopf"} <= loggers, loggers
