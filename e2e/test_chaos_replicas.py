"""Chaos with two replicas: one dies, or is cut off from the apiserver, in mid-burst.

Two ``dbquota run`` replicas as the chart runs them (both serve the webhook, one is elected
to reconcile, each renews its liveness Lease and admits from its escrow), sharing one
serving certificate, behind an L4 proxy (:mod:`e2e.tcp_proxy`, round robin per
connection, as a Service balances; the elected one first, so that it holds escrow) that a
ValidatingWebhookConfiguration of the test's own names, scoped to the test's namespace.
Replica ``b`` reaches the apiserver through a second proxy the test can cut. Three bursts
of DatabaseClaim creates in parallel (so that the apiserver opens several connections to
the webhook, which the proxy spreads over both replicas) go through the real apiserver
(:class:`e2e.test_chaos.Burst`) into a quota that fits 60 claims (paced, so that the
leader is killed while there is room, not after the burst has used it all) or 300 (for
the cut, so that it comes while there is room); mid-burst:

- the leader is killed with SIGKILL, holding escrow: the budget is never exceeded (the
  claims that exist cost at most the budget, and the quota's totals agree once it
  settles), its escrow stops counting and the other replica takes over reconciliation,
  each within the lease duration (15 s) plus a retry period and a reconcile;
- ``b`` is cut off from the apiserver (no byte passes, connections hang) while the
  apiserver still sends it reviews: it stops admitting from escrow once its own renewal is
  older than the renew deadline (10 s), before ``a`` can see its Lease lapse (15 s), so
  nothing is admitted twice; once healed, everything settles within the budget.

And over HTTP/2 (the default, one connection per apiserver), with the replicas' connections
aged at 2 s (``--webhook-max-connection-age``): both replicas decide, because each GOAWAY
sends the apiserver's next connection through the proxy's round robin, and no create
fails on the way.

And one replica cut off from the apiserver while a review waits for its write: the
reviews behind that write are denied with a message to try again just before the
apiserver's timeout would have failed them, and none of them holds budget once the road
heals.

And two replicas whose billing differs: the leader's is fine, the other's provider cannot be
reached. The quota's status shows the other's open breaker, naming it, and that replica
posts its transitions as Events naming itself; once it stops, the status is the leader's
again. Once it is killed (its lease left behind, not deleted), the status is the leader's
again within the lease duration, long before the periodic refresh.

On a control plane of this module's own (the ``plane`` fixture of :mod:`e2e.test_chaos`).
Figures are printed (``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from e2e import harness
from e2e.conftest import FAST
from e2e.harness import Cluster, Operator, Proxy
from e2e.test_chaos import (
    Burst,
    Plane,
    check_exactly_what_fits,
    check_within_budget,
    create_claim,
    plane,
    unit_cost,
)
from e2e.test_crds import quota
from e2e.waiting import wait_for
from tests.simulating import stop as stop_process

__all__ = ["plane"]  # the fixture, imported so that this module gets a control plane of its own

FITS = 60
"""Claims the leader test's quota fits at the prices read when it starts (the check judges
at the prices charged): at its pace (:data:`PACE`), some 6 s of creates."""
PACE = 0.3
"""Seconds each of the leader test's bursts waits between creates (about 9 creates/s in
all), so that after the first eight the leader holds escrow for seconds, not
milliseconds, while the test looks."""


@dataclass
class Pair:
    """Two replicas behind one webhook endpoint; ``b`` talks to the apiserver via ``road``."""

    namespace: str
    budget: float
    fits: int
    a: Operator
    b: Operator
    road: Proxy

    def escrow_of(self, plane: Plane, op: Operator) -> list[dict[str, Any]]:
        status = plane.kubectl.get_json("dbq", "q", "-n", self.namespace).get("status", {})
        return [e for e in status.get("escrow") or [] if f"-{op.pid}-" in str(e.get("holder"))]


@dataclass
class Bursts:
    """Several :class:`Burst` at once, counted together."""

    bursts: list[Burst]

    @property
    def created(self) -> int:
        return sum(len(b.created) for b in self.bursts)

    @property
    def denied(self) -> int:
        return sum(len(b.denied) for b in self.bursts)

    @property
    def failed(self) -> list[str]:
        return [f for b in self.bursts for f in b.failed]

    def __enter__(self) -> Bursts:
        for burst in self.bursts:
            burst.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for burst in self.bursts:
            burst.__exit__(*exc)


def bursts(plane: Plane, namespace: str, *, pause: float = 0.02) -> Bursts:
    return Bursts([Burst(plane, namespace, prefix=p, pause=pause) for p in ("x", "y", "z")])


def flags(plane: Plane, namespace: str, *more: str) -> tuple[str, ...]:
    """A replica's flags on this plane: its billing simulator and the apiserver's client
    CA, the suite's fast settings, Leases and watches in ``namespace``; then ``more``."""
    return (
        f"--billing-url={plane.billing.url}",
        *FAST,
        *plane.cluster.client_ca_flags(),
        f"--lease-namespace={namespace}",
        f"--namespace={namespace}",
        *more,
    )


def road_to_apiserver(plane: Plane, tmp_path: Path) -> tuple[Proxy, Cluster]:
    """A proxy in front of the apiserver that the test can cut, and the cluster as a
    replica sees it through that proxy."""
    apiserver = urlsplit(plane.state.server).port
    assert apiserver is not None
    road = harness.start_proxy(tmp_path, [apiserver], name="road")
    kubeconfig = harness.kubeconfig_via(plane.cluster, road.port, tmp_path / "road.kubeconfig")
    return road, dataclasses.replace(plane.cluster, kubeconfig=kubeconfig)


@pytest.fixture
def pair(plane: Plane, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pair]:
    namespace = request.node.name.removeprefix("test_").replace("_", "-")[:50].strip("-")
    plane.kubectl("create", "namespace", namespace)
    fits = getattr(request, "param", FITS)
    budget = round(unit_cost(plane.billing) * (fits + 0.5), 2)
    plane.kubectl.apply(quota(namespace, name="q", monthlyBudget=budget))
    cert_dir = tmp_path / "certs"
    ca = harness.serving_certificate(cert_dir)
    extra = flags(
        plane,
        namespace,
        "--reservation-grace=60",  # the production grace
        # HTTP/1.1, so that the apiserver's connections (one per review in flight) spread
        # over both replicas; over HTTP/2 all would share one connection, to one replica.
        "--no-webhook-http2",
        # And aged at 2 s: while reviews do not overlap (a quiet machine, or one so loaded
        # that the bursts crawl), the apiserver keeps reusing its first connection, and
        # the second replica could go 30 s without a review, so without escrow.
        "--webhook-max-connection-age=2",
    )
    road, cut_off = road_to_apiserver(plane, tmp_path)
    started: list[Operator] = []
    front: Proxy | None = None
    configuration = f"{namespace}.dbquota.io"
    try:
        a = harness.start_replica(plane.cluster, tmp_path / "a", cert_dir=cert_dir, extra=extra)
        started.append(a)
        b = harness.start_replica(cut_off, tmp_path / "b", cert_dir=cert_dir, extra=extra)
        started.append(b)
        # The leader first: the apiserver's first connection to the webhook (and so, while
        # reviews do not overlap, most of them) reaches the replica the first test kills,
        # which then holds escrow; round robin spreads later connections over both.
        first = wait_for(lambda: leading(plane, namespace, (a, b)), what="a leader")
        second = b if first is a else a
        front = harness.start_proxy(
            tmp_path, [first.webhook_port, second.webhook_port], name="front"
        )
        plane.kubectl.apply(
            harness.proxy_webhook(configuration, port=front.port, ca=ca, namespaces=[namespace])
        )
        wait_for(
            lambda: plane.kubectl.get_json("dbq", "q", "-n", namespace).get("status", {}),
            what="the quota's first status",
        )
        yield Pair(namespace=namespace, budget=budget, fits=fits, a=a, b=b, road=road)
    finally:
        plane.kubectl("delete", "validatingwebhookconfiguration", configuration, check=False)
        for op in started:
            harness.stop_operator(op)
        for proxy in (front, road):
            if proxy is not None:
                stop_process(proxy.proc)


def leading(plane: Plane, namespace: str, replicas: tuple[Operator, ...]) -> Operator | None:
    """The one of ``replicas`` that holds the reconciler's Lease, if any does."""
    lease = plane.kubectl.get_json("lease", "dbquota-leader", "-n", namespace, missing_ok=True)
    holder = str(lease.get("spec", {}).get("holderIdentity", ""))
    return next((op for op in replicas if f"-{op.pid}-" in holder), None)


def leader(plane: Plane, pair: Pair) -> Operator | None:
    """The replica of ``pair`` that holds the reconciler's Lease, if either does."""
    return leading(plane, pair.namespace, (pair.a, pair.b))


def test_the_leader_killed_mid_burst_never_takes_the_quota_over_budget(
    plane: Plane, pair: Pair
) -> None:
    victim = wait_for(lambda: leader(plane, pair), what="a leader")
    survivor = pair.a if victim is pair.b else pair.b
    with bursts(plane, pair.namespace, pause=PACE) as burst:
        wait_for(lambda: burst.created >= 8, timeout=60, what="eight claims before the kill")
        wait_for(
            lambda: pair.escrow_of(plane, victim), interval=0.05, what="the leader to hold escrow"
        )
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        killed, before = time.monotonic(), burst.created
        wait_for(
            lambda: not pair.escrow_of(plane, victim),
            timeout=60,
            interval=0.5,
            what="the dead replica's escrow to stop counting",
        )
        released_in = time.monotonic() - killed
        wait_for(
            lambda: leader(plane, pair) is survivor,
            timeout=60,
            interval=0.5,
            what="the survivor to lead",
        )
        handed_over_in = time.monotonic() - killed
        # Denials decided with the dead replica's escrow gone mean the budget is used up
        # (the check below judges that at the prices charged: no room for one more).
        denied = burst.denied
        wait_for(lambda: burst.denied >= denied + 6, timeout=90, what="denials once it is used")
    total = check_exactly_what_fits(plane, pair.namespace, pair.budget, burst.created)
    print(
        f"SIGKILL of the leader, one of two replicas, mid-burst: its escrow let go "
        f"{released_in:.1f}s and reconciliation handed over {handed_over_in:.1f}s after the "
        f"kill; {burst.created} created ({burst.created - before} after it), {burst.denied} "
        f"denied for budget, {len(burst.failed)} failed (the dead replica behind the "
        f"proxy); total {total} of {pair.budget}"
    )
    # The lease duration (15 s) after the last renewal, a retry period (2 s) for the
    # survivor to take the leader Lease, then its reconcile, plus this test's polling.
    assert released_in <= 15 + 2 + 5, released_in
    assert handed_over_in <= 15 + 2 + 5, handed_over_in
    assert "Traceback" not in survivor.logs()


@pytest.mark.parametrize("pair", [300], indirect=True)  # room left when the cut comes
def test_a_replica_cut_off_from_the_apiserver_mid_burst_admits_nothing_twice(
    plane: Plane, pair: Pair
) -> None:
    with bursts(plane, pair.namespace) as burst:
        wait_for(lambda: burst.created >= 8, timeout=60, what="eight claims before the cut")
        wait_for(lambda: pair.escrow_of(plane, pair.b), what="b to hold escrow")
        pair.road.cut()
        cut, before = time.monotonic(), burst.created
        # b's Lease lapses for a (15 s); a then admits the budget b held, while b still
        # answers the reviews the front proxy sends it.
        wait_for(
            lambda: not pair.escrow_of(plane, pair.b),
            timeout=60,
            interval=0.5,
            what="the cut-off replica's escrow to stop counting",
        )
        lapsed_in = time.monotonic() - cut
        denied = burst.denied
        wait_for(lambda: burst.denied >= denied + 3, timeout=90, what="denials for the budget")
        during = burst.created - before
        pair.road.heal()
        healed = time.monotonic()
        time.sleep(5)  # creates go on through both replicas again
    total = check_within_budget(plane, pair.namespace, pair.budget)
    settled_in = time.monotonic() - healed
    print(
        f"one of two replicas cut off from the apiserver mid-burst: its escrow stopped "
        f"counting {lapsed_in:.1f}s after the cut; {during} created during the cut, "
        f"{burst.created} in all, {burst.denied} denied for budget, {len(burst.failed)} "
        f"failed; settled {settled_in:.1f}s after healing; total {total} of {pair.budget}"
    )
    assert pair.b.proc.poll() is None, "the cut-off replica exited"
    assert during > 0  # the cut came while there was room: the rest was admitted meanwhile
    assert burst.created == pair.fits  # exactly what fits, nothing twice


DECISIONS = "dbquota_admission_decisions_total"


def test_over_http2_aged_connections_reach_both_replicas_and_no_create_fails(
    plane: Plane, tmp_path: Path
) -> None:
    """The apiserver sends every review on one HTTP/2 connection, to the replica behind the
    proxy it first reached; past ``--webhook-max-connection-age`` the replica says GOAWAY,
    the apiserver opens a new connection, and round robin (a Service's, here the proxy's)
    hands it to the other replica. Both decide, and no create fails on the way."""
    namespace = "connection-age"
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl.apply(quota(namespace, name="q", monthlyBudget=10_000_000))
    cert_dir = tmp_path / "certs"
    ca = harness.serving_certificate(cert_dir)
    extra = flags(plane, namespace, "--webhook-max-connection-age=2")
    configuration = f"{namespace}.dbquota.io"
    replicas: list[Operator] = []
    front: Proxy | None = None
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            replicas.append(
                harness.start_replica(plane.cluster, workdir, cert_dir=cert_dir, extra=extra)
            )
        front = harness.start_proxy(tmp_path, [op.webhook_port for op in replicas], name="front")
        plane.kubectl.apply(
            harness.proxy_webhook(configuration, port=front.port, ca=ca, namespaces=[namespace])
        )
        with Burst(plane, namespace, prefix="c", pause=0.05) as burst:
            wait_for(
                lambda: all(op.metric(DECISIONS) > 0 for op in replicas),
                timeout=60,
                what="both replicas to decide",
            )
            time.sleep(3)  # and a connection or two more
        split = [op.metric(DECISIONS) for op in replicas]
    finally:
        plane.kubectl("delete", "validatingwebhookconfiguration", configuration, check=False)
        for op in replicas:
            harness.stop_operator(op)
        if front is not None:
            stop_process(front.proc)
    print(
        f"HTTP/2, connections aged at 2 s: {len(burst.created)} created, decisions per "
        f"replica {split[0]:.0f} / {split[1]:.0f}"
    )
    assert burst.failed == []
    assert burst.denied == []
    for op in replicas:
        assert op.proc.returncode == 0
        assert "Traceback" not in op.logs()


ABANDONED = "dbquota_webhook_abandoned_reviews_total"
LATE = "dbquota_webhook_late_reviews_total"


@pytest.mark.parametrize("http", ["2", "1.1"])
def test_a_review_not_decided_in_the_apiservers_time_is_denied_and_reserves_nothing(
    plane: Plane, tmp_path: Path, http: str
) -> None:
    """A replica cut off from the apiserver mid-write: the reviews that wait behind that
    write are answered just before the apiserver's timeout (the webhook's
    ``timeoutSeconds``, 4 s here, which the apiserver sends as ``?timeout=4s``) with a
    denial to try again, rather than failing as calls the apiserver gave up on (or, under
    ``failurePolicy: Ignore``, being admitted unchecked). Their admissions are cancelled:
    once the road heals, none of them holds budget, where before each held a reservation
    for a claim that would never come until ``--reservation-grace`` (60 s)."""
    namespace = f"abandoned-http{http.replace('.', '-')}"
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl.apply(quota(namespace, name="q", monthlyBudget=10_000_000))
    cert_dir = tmp_path / "certs"
    ca = harness.serving_certificate(cert_dir)
    extra = flags(
        plane,
        namespace,
        "--reservation-grace=60",
        "--escrow-share=0",  # every admission waits for its write
        *(("--no-webhook-http2",) if http == "1.1" else ()),
    )
    road, cut_off = road_to_apiserver(plane, tmp_path)
    configuration = f"{namespace}.dbquota.io"
    replica: Operator | None = None
    try:
        replica = harness.start_replica(cut_off, tmp_path / "r", cert_dir=cert_dir, extra=extra)
        registration = harness.proxy_webhook(
            configuration, port=replica.webhook_port, ca=ca, namespaces=[namespace]
        )
        registration["webhooks"][0]["timeoutSeconds"] = 4
        plane.kubectl.apply(registration)
        with plane.client() as client:
            wait_for(
                lambda: create_claim(client, namespace, "before").status_code == 201,
                timeout=60,
                what="the webhook to admit a claim",
            )
            road.cut()
            try:
                # "stuck": its write hangs on the cut road; "queued" waits behind that write
                late = [create_claim(client, namespace, name) for name in ("stuck", "queued")]
            finally:
                road.heal()
            assert [r.status_code for r in late] == [503, 503], [r.text for r in late]
            for r in late:
                message = r.json()["message"]
                assert "dbquota could not decide now" in message
                assert message.endswith("; try again")
            # decided after everything queued before it; the road is whole again
            wait_for(
                lambda: create_claim(client, namespace, "after").status_code == 201,
                timeout=60,
                what="a create after the road healed",
            )
        status = plane.kubectl.get_json("dbq", "q", "-n", namespace).get("status", {})
        held = {str(r.get("claim")) for r in status.get("reservations") or []}
        abandoned, denied_late = replica.metric(ABANDONED), replica.metric(LATE)
    finally:
        plane.kubectl("delete", "validatingwebhookconfiguration", configuration, check=False)
        if replica is not None:
            harness.stop_operator(replica)
        stop_process(road.proc)
    print(
        f"HTTP/{http}: late reviews {denied_late:.0f}, abandoned {abandoned:.0f}; "
        f"reservations held after: {held}"
    )
    assert not held & {"stuck", "queued"}
    assert (denied_late, abandoned) == (2, 0)
    assert replica.proc.returncode == 0
    assert "Traceback" not in replica.logs()


def unused_port() -> int:
    """A local TCP port that nothing listens on (taken from the kernel, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_quota_status_shows_the_billing_of_every_live_replica(
    plane: Plane, tmp_path: Path
) -> None:
    """Each replica admits from its own billing data, so the status cannot show the leader's
    alone: ``b``'s provider is unreachable while the leader ``a``'s is fine. ``b``'s lease
    carries its breaker; the leader's status shows it Open with ``b``'s error, named; ``b``
    posts its own transitions as Events, naming itself; once ``b`` stops (its lease
    deleted) the status is Closed again."""
    namespace = "replica-billing"
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl.apply(quota(namespace, name="q", monthlyBudget=1000))
    cert_dir = tmp_path / "certs"
    extra = flags(plane, namespace)
    started: list[Operator] = []

    def billing() -> dict[str, Any]:
        status = plane.kubectl.get_json("dbq", "q", "-n", namespace).get("status", {})
        return dict(status.get("billing") or {})

    def circuit_events() -> list[str]:
        events = plane.kubectl.get_json("events", "-n", namespace)["items"]
        return [
            f"{e['reason']}: {e.get('note') or e.get('message') or ''}"
            for e in events
            if str(e.get("reason", "")).startswith("Circuit")
        ]

    try:
        a = harness.start_replica(plane.cluster, tmp_path / "a", cert_dir=cert_dir, extra=extra)
        started.append(a)
        wait_for(lambda: leading(plane, namespace, (a,)), what="a to lead")
        wait_for(lambda: billing().get("circuitState") == "Closed", what="a's status")
        dead = f"--billing-url=http://127.0.0.1:{unused_port()}"
        b = harness.start_replica(
            plane.cluster, tmp_path / "b", cert_dir=cert_dir, extra=(*extra, dead)
        )
        started.append(b)
        shown = wait_for(
            lambda: (
                (got := billing()).get("circuitState") == "Open"
                and f"-{b.pid}-" in str(got.get("lastError", ""))
                and got
            ),
            timeout=60,
            what="b's open breaker on the quota's status",
        )
        posted = wait_for(
            lambda: [e for e in circuit_events() if e.startswith("CircuitOpen: ")],
            timeout=60,
            what="a CircuitOpen Event",
        )
        assert leading(plane, namespace, (a, b)) is a
        harness.stop_operator(b)
        wait_for(
            lambda: billing().get("circuitState") == "Closed",
            timeout=60,
            what="the status to be a's alone again",
        )
    finally:
        for op in started:
            harness.stop_operator(op)
    print(f"status while b was up: {shown}; Events: {posted}")
    assert str(shown["lastError"]).startswith("replica ")
    assert shown["degraded"] is True
    # b never synced: no last sync or staleness is shown (not a's, left from before)
    assert "lastSuccessfulSync" not in shown
    assert "stalenessSeconds" not in shown
    assert all(" on replica " in e and f"-{b.pid}-" in e for e in posted), posted
    for op in started:
        assert op.proc.returncode == 0
        assert "Traceback" not in op.logs()


def test_a_killed_replicas_billing_leaves_the_status_when_its_lease_lapses(
    plane: Plane, tmp_path: Path
) -> None:
    """A crashed replica deletes no lease. Its open breaker must leave the quota's status
    once its lease lapses (15 s after its last renewal), not at the next periodic refresh:
    here the leader refreshes and syncs every 120 s, so only the lapse can bring it."""
    namespace = "replica-billing-lapse"
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl.apply(quota(namespace, name="q", monthlyBudget=1000))
    cert_dir = tmp_path / "certs"
    slow = flags(plane, namespace, "--resync-interval=120", "--sync-interval=120")
    started: list[Operator] = []

    def circuit() -> str:
        status = plane.kubectl.get_json("dbq", "q", "-n", namespace).get("status", {})
        return str((status.get("billing") or {}).get("circuitState", ""))

    try:
        a = harness.start_replica(plane.cluster, tmp_path / "a", cert_dir=cert_dir, extra=slow)
        started.append(a)
        wait_for(lambda: leading(plane, namespace, (a,)), what="a to lead")
        wait_for(lambda: circuit() == "Closed", what="a's status")
        dead = f"--billing-url=http://127.0.0.1:{unused_port()}"  # b syncs fast: it opens
        b = harness.start_replica(
            plane.cluster, tmp_path / "b", cert_dir=cert_dir, extra=(*flags(plane, namespace), dead)
        )
        started.append(b)
        wait_for(lambda: circuit() == "Open", timeout=60, what="b's open breaker on the status")
        os.kill(b.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: circuit() == "Closed", timeout=45, what="the status to be a's again")
        took = time.monotonic() - killed
    finally:
        for op in started:
            harness.stop_operator(op)
    print(f"b's billing left the status {took:.1f} s after b was killed")
    assert took < 15 + 2 + 5, took  # the lease duration, a renewal period, a refresh
    assert a.proc.returncode == 0
    assert "Traceback" not in a.logs()
