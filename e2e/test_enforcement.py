"""Quota enforcement end to end: real apiserver, real simulator process, real operator.

Checks, through ``kubectl`` and the apiserver calling the webhook over TLS:
admit within budget (claim status priced Live, budget reserved on the quota); deny over
budget with the tenant-facing message; ``Warn`` admits with a warning and ``DryRun``
admits silently, both recorded as a ``WouldDeny`` Event; ``kubectl create
--dry-run=server`` reserves nothing; an UPDATE is charged its growth (the claim's price
moves to the new total and so does the quota's reserved spend); status and printer
columns as ``kubectl get databasequotas`` prints them; the concurrency invariant (200
AdmissionReviews in parallel to two operator processes sharing one quota that fits exactly
10 admit exactly 10; 100 parallel ``kubectl create`` never push reserved + observed over
the budget). Then, during a simulator outage: the breaker opens and the quota says so,
and each degradation policy (Conservative, StrictCap, FailClosed, FailOpen) decides as
the README's policy table says, with a warning naming the policy (a Conservative price
shows in the quota's fallback hit rate); after recovery the breaker closes.
A claim counts at its price until billing shows it, then at its billed cost; deleting it
gives its budget back. A quota whose currency is not the one billing prices in is not
Ready (``CurrencyMismatch``) and each admission under it says so.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e import harness
from e2e.conftest import FAST
from e2e.harness import Cluster, Kubectl, Operator
from e2e.test_crds import claim, quota
from e2e.waiting import wait_for
from tests.simulating import Simulator

CLASS, STORAGE = "db.r6g.large", 100


def unit_cost(
    billing: Simulator, *, instance_class: str = CLASS, storage: int = STORAGE, replicas: int = 1
) -> float:
    """A claim's live monthly price, from the simulator's own catalog."""
    prices = httpx.get(f"{billing.url}/pricing", timeout=5).json()
    hourly = prices["instance_hourly"][instance_class]
    return round(float(hourly) * 730 * replicas + storage * float(prices["storage_gib_month"]), 2)


def status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = kubectl.get_json("dbq", name, "-n", namespace).get("status", {})
    return got


def live_quota(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    """Apply a quota and wait until its status shows live billing (breaker Closed)."""
    kubectl.apply(quota(namespace, name=name, **spec))

    def live() -> dict[str, Any]:
        got = status(kubectl, namespace, name)
        billing = got.get("billing", {})
        ok = billing.get("circuitState") == "Closed" and billing.get("degraded") is False
        return got if ok else {}

    result: dict[str, Any] = wait_for(live, timeout=30, what=f"quota {name} to show live billing")
    return result


def seen_quota(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> None:
    """Apply a quota and wait until the operator has reconciled it (it knows the quota)."""
    kubectl.apply(quota(namespace, name=name, **spec))
    wait_for(lambda: status(kubectl, namespace, name).get("conditions"), what=f"quota {name}")


def claim_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def priced() -> dict[str, Any]:
        got: dict[str, Any] = kubectl.get_json("dbc", name, "-n", namespace).get("status", {})
        return got if "pricing" in got else {}

    result: dict[str, Any] = wait_for(priced, what=f"claim {name}'s status")
    return result


# -- healthy billing ----------------------------------------------------------------------


def test_claim_within_budget_is_admitted_priced_live_and_reserved(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    created = kubectl.apply(claim(namespace, name="orders", storageGiB=STORAGE))
    assert "created" in created.stdout
    cost = unit_cost(billing)
    got = claim_status(kubectl, namespace, "orders")
    assert got["pricing"] == "Live"
    assert got["estimatedMonthlyCost"] == pytest.approx(cost, abs=0.01)
    admitted = {c["type"]: c for c in got["conditions"]}["Admitted"]
    assert admitted["status"] == "True"
    spend = status(kubectl, namespace, "team-a")["spend"]
    assert spend["reserved"] == pytest.approx(cost, abs=0.01)
    assert spend["remaining"] == pytest.approx(5000 - cost, abs=0.01)


def test_claim_over_budget_is_denied_with_an_actionable_message(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    cost = unit_cost(billing)
    live_quota(kubectl, namespace, "team-a", monthlyBudget=round(cost * 1.5, 2))
    kubectl.apply(claim(namespace, name="first"))
    refused = kubectl.apply(claim(namespace, name="second"), check=False)
    assert refused.returncode != 0
    budget = round(cost * 1.5, 2)
    # As the message prints them: each part to the cent, the sums of those.
    projected = 2 * round(cost, 2)
    over = round(projected - budget, 2)
    expected = (
        f"denied by DatabaseQuota team-a: projected {projected:,.2f} USD/month exceeds budget "
        f"{budget:,.2f} by {over:,.2f} (observed 0.00 + reserved {cost:,.2f} + this claim "
        f"{cost:,.2f}; prices live)"
    )
    assert expected in refused.stderr
    assert kubectl("get", "dbc", "second", "-n", namespace, check=False).returncode != 0


def test_a_budget_in_another_currency_than_the_prices_is_not_ready_and_warns(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    """The simulator prices in USD; a quota in EUR would compare dollars with euros."""
    assert httpx.get(f"{billing.url}/pricing", timeout=5).json()["currency"] == "USD"
    kubectl.apply(quota(namespace, name="team-a", monthlyBudget=5000, currency="EUR"))

    def ready() -> dict[str, Any]:
        conditions = status(kubectl, namespace, "team-a").get("conditions") or []
        found: dict[str, Any] = next((c for c in conditions if c["type"] == "Ready"), {})
        return found if found.get("reason") == "CurrencyMismatch" else {}

    condition = wait_for(ready, what="Ready False / CurrencyMismatch")
    assert condition["status"] == "False"
    assert condition["message"].startswith(
        "billing prices are in USD, DatabaseQuota team-a's budget in EUR"
    )
    created = kubectl.apply(claim(namespace, name="orders"))
    assert "created" in created.stdout
    assert "billing prices are in USD, DatabaseQuota team-a's budget in EUR" in created.stderr


def test_warn_admits_with_a_warning_and_dry_run_admits_both_recording_it(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    cost = unit_cost(billing)
    live_quota(kubectl, namespace, "warn", monthlyBudget=round(cost / 2, 2), enforcement="Warn")
    warned = kubectl.apply(claim(namespace, name="loud"))
    assert "created" in warned.stdout
    assert "Warning: enforcement Warn: would be denied by DatabaseQuota warn" in warned.stderr
    kubectl("delete", "dbq", "warn", "-n", namespace)
    live_quota(kubectl, namespace, "dry", monthlyBudget=round(cost / 2, 2), enforcement="DryRun")
    quiet = kubectl.apply(claim(namespace, name="quiet"))
    assert "created" in quiet.stdout
    assert "Warning" not in quiet.stderr

    def would_deny() -> list[str]:
        events = kubectl.get_json("events", "-n", namespace)["items"]
        return [e["message"] for e in events if e["reason"] == "WouldDeny"]

    messages = wait_for(lambda: len(would_deny()) >= 2 and would_deny(), what="WouldDeny")
    assert any("claim loud" in m for m in messages)
    assert any("claim quiet" in m and "enforcement DryRun" in m for m in messages)


def test_server_side_dry_run_reserves_nothing(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    before = live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    dry = kubectl(
        "create", "--dry-run=server", "-f", "-", input_=json.dumps(claim(namespace, name="maybe"))
    )
    assert "created (server dry run)" in dry.stdout
    after = status(kubectl, namespace, "team-a")
    assert after.get("reservations", []) == before.get("reservations", []) == []
    assert after["spend"]["reserved"] == 0


def test_a_quota_applied_with_its_claims_decides_on_them(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A quota and a claim created in one call (a GitOps sync wave): the claim reaches
    the webhook milliseconds after the quota, and when the quota's watch event had not
    reached the operator yet (a busy one: locally it nearly always has), the claim was
    admitted as in a namespace with no quota, however far over the new budget. Each of
    five fresh namespaces gets a quota of 10 a month and a claim of about 200: every claim
    is denied by that quota (the unit tests of ``dbquota.services.lookups`` hold the
    watch back)."""
    for i in range(5):
        fresh = f"{namespace}-{i}"
        kubectl("create", "namespace", fresh)
        both = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [quota(fresh, name="budget", monthlyBudget=10), claim(fresh, name="big")],
        }  # kubectl create: one POST after the other, no GET between
        applied = kubectl("create", "-f", "-", input_=json.dumps(both), check=False)
        assert applied.returncode != 0, applied.stdout
        assert "DatabaseQuota budget" in applied.stderr, applied.stderr
        assert not kubectl.get_json("dbc", "big", "-n", fresh, missing_ok=True)
        kubectl("delete", "namespace", fresh, "--wait=false")


def test_update_is_charged_its_growth(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    kubectl.apply(claim(namespace, name="grow", storageGiB=100))
    assert claim_status(kubectl, namespace, "grow")["estimatedMonthlyCost"] == pytest.approx(
        unit_cost(billing, storage=100), abs=0.02
    )
    kubectl.apply(claim(namespace, name="grow", storageGiB=300))
    total = unit_cost(billing, storage=300)

    def charged() -> dict[str, Any]:
        got: dict[str, Any] = kubectl.get_json("dbc", "grow", "-n", namespace)["status"]
        return got if got.get("observedGeneration") == 2 else {}

    got = wait_for(charged, what="the claim's new price")
    assert got["estimatedMonthlyCost"] == pytest.approx(total, abs=0.02)
    settled = wait_for(
        lambda: (q := status(kubectl, namespace, "team-a")) and not q["reservations"] and q,
        what="the update's reservation to be confirmed",
    )
    assert settled["spend"]["reserved"] == pytest.approx(total, abs=0.02)
    assert settled["used"]["storageGiB"] == 300


def test_printer_columns_show_the_quota_as_finops_reads_it(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    kubectl.apply(claim(namespace, name="orders"))
    cost = unit_cost(billing)
    wait_for(
        lambda: status(kubectl, namespace, "team-a")["spend"]["reserved"] > 0,
        what="the reservation",
    )
    lines = kubectl("get", "databasequotas", "-n", namespace).stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    values = dict(zip(header, row, strict=False))
    assert values["NAME"] == "team-a"
    assert values["BUDGET"] == "5000"
    assert values["SPEND"] == "0"
    assert float(values["REMAINING"]) == pytest.approx(5000 - cost, abs=0.01)
    assert values["CIRCUIT"] == "Closed"
    assert values["DEGRADED"] == "false"
    assert int(values["STALENESS"]) < 60
    wide = kubectl("get", "dbq", "-n", namespace, "-o", "wide").stdout.splitlines()
    values = dict(zip(wide[0].split(), wide[1].split(), strict=False))
    assert float(values["RESERVED"]) == pytest.approx(cost, abs=0.01)
    assert values["POLICY"] == "Conservative"


# -- the concurrency invariant ------------------------------------------------------------


def review(namespace: str, name: str) -> dict[str, Any]:
    """A CREATE review as the apiserver sends it (the object already has its uid)."""
    body = claim(namespace, name=name)
    body["metadata"]["uid"] = f"uid-{namespace}-{name}"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"uid-{name}",
            "kind": {"group": "dbquota.io", "version": "v1alpha1", "kind": "DatabaseClaim"},
            "resource": {
                "group": "dbquota.io",
                "version": "v1alpha1",
                "resource": "databaseclaims",
            },
            "requestKind": {"group": "dbquota.io", "version": "v1alpha1", "kind": "DatabaseClaim"},
            "requestResource": {
                "group": "dbquota.io",
                "version": "v1alpha1",
                "resource": "databaseclaims",
            },
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": body,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


@pytest.fixture
def second_replica(
    cluster: Cluster, billing: Simulator, tmp_path: Path
) -> Iterator[tuple[Operator, Path]]:
    """Another ``dbquota run`` sharing the cluster: serves the webhook, registers nothing."""
    op = harness.start_replica(cluster, tmp_path, extra=(f"--billing-url={billing.url}", *FAST))
    try:
        yield op, op.cert_dir / "ca.crt"
    finally:
        harness.stop_operator(op)


def test_two_replicas_sharing_a_quota_admit_exactly_what_fits(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    second_replica: tuple[Operator, Path],
    namespace: str,
    billing: Simulator,
) -> None:
    cost = unit_cost(billing)
    budget = round(cost * 10.5, 2)  # exactly 10 fit
    live_quota(kubectl, namespace, "shared", monthlyBudget=budget)
    replica, replica_ca = second_replica
    targets = [
        (operator.webhook_port, operator.cert_dir / "ca.crt"),
        (replica.webhook_port, replica_ca),
    ]

    async def send_all() -> list[bool]:
        clients = []
        for _, ca in targets:
            ctx = ssl.create_default_context(cafile=str(ca))
            if cluster.webhook_client:  # the session operator takes only the apiserver's
                ctx.load_cert_chain(*cluster.webhook_client)
            clients.append(httpx.AsyncClient(verify=ctx, timeout=30))

        async def one(i: int) -> bool:
            port, _ = targets[i % 2]
            response = await clients[i % 2].post(
                f"https://127.0.0.1:{port}/validate-claims", json=review(namespace, f"c{i}")
            )
            response.raise_for_status()
            allowed: bool = response.json()["response"]["allowed"]
            return allowed

        try:
            return await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            for client in clients:
                await client.aclose()

    results = asyncio.run(send_all())
    assert sum(results) == 10
    held = wait_for(  # reservations admitted from escrow are written a moment later
        lambda: (
            (got := status(kubectl, namespace, "shared"))
            and len(got.get("reservations", [])) == 10
            and got
        ),
        what="10 reservations in flight",
    )
    assert held["spend"]["reserved"] == pytest.approx(10 * cost, abs=0.05)
    assert held["spend"]["reserved"] + held["spend"]["observed"] <= budget


def test_a_replica_stopped_gracefully_writes_what_it_admitted_from_escrow(
    kubectl: Kubectl,
    operator: Operator,
    second_replica: tuple[Operator, Path],
    namespace: str,
    billing: Simulator,
) -> None:
    """SIGTERM right after admissions from escrow (within one batch interval): shutdown
    writes their reservations and gives the escrow back; nothing admitted is lost."""
    names = [f"g{i}" for i in range(10)]
    cost = unit_cost(billing)
    live_quota(kubectl, namespace, "graceful", monthlyBudget=round(cost * 100, 2))
    replica, replica_ca = second_replica
    url = f"https://127.0.0.1:{replica.webhook_port}/validate-claims"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(replica_ca))) as client:
        for name in names:
            answer = client.post(url, json=review(namespace, name), timeout=30)
            assert answer.json()["response"]["allowed"]
    harness.stop_operator(replica)
    assert replica.proc.returncode == 0
    held = status(kubectl, namespace, "graceful")
    assert sorted(r["claim"] for r in held["reservations"]) == names
    assert held.get("escrow", []) == []
    assert "could not write" not in replica.log.read_text()


def test_parallel_kubectl_creates_never_exceed_the_budget(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    cost = unit_cost(billing)
    budget = round(cost * 10.5, 2)
    live_quota(kubectl, namespace, "parallel", monthlyBudget=budget)

    def create(i: int) -> bool:
        return kubectl.apply(claim(namespace, name=f"p{i}"), check=False).returncode == 0

    with ThreadPoolExecutor(max_workers=25) as pool:
        created = sum(pool.map(create, range(100)))
    assert created == 10
    names = kubectl.get_json("dbc", "-n", namespace)["items"]
    assert len(names) == 10
    spend = status(kubectl, namespace, "parallel")["spend"]
    assert spend["reserved"] + spend["observed"] <= budget


def escrow_admissions(operator: Operator) -> float:
    return operator.metric("dbquota_admission_reservations_total", path="escrow")


def test_claims_admitted_from_escrow_are_reserved_and_the_escrow_given_back(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    """After the first (exact) admission the replica holds escrow on the quota and admits
    the next claims from it; their reservations, claim status and spend all show up, and
    the escrow is given back once the replica is idle."""
    cost = unit_cost(billing)
    live_quota(kubectl, namespace, "roomy", monthlyBudget=round(cost * 100, 2))
    before = escrow_admissions(operator)
    # One kubectl: the creates follow each other within milliseconds. The first is
    # decided exactly and takes the escrow; the next ones are admitted from it.
    claims = [claim(namespace, name=f"e{i}", storageGiB=STORAGE) for i in range(6)]
    kubectl.apply(claims)
    assert escrow_admissions(operator) - before >= 1
    for i in range(6):
        got = claim_status(kubectl, namespace, f"e{i}")
        assert (got["pricing"], got["estimatedMonthlyCost"]) == ("Live", pytest.approx(cost))
    settled = wait_for(
        lambda: (
            (got := status(kubectl, namespace, "roomy"))
            and not got.get("escrow")
            and got.get("reservations") == []
            and got
        ),
        what="the claims to carry their price and the escrow to be given back",
    )
    assert settled["spend"]["reserved"] == pytest.approx(6 * cost, abs=0.05)
    assert settled["used"]["claims"] == 6


# -- during an outage ---------------------------------------------------------------------


LIVE_COST: list[float] = []
"""The live unit cost, read by the outage fixture before it takes the simulator down."""


@pytest.fixture(scope="class")
def outage(kubectl: Kubectl, operator: Operator, billing: Simulator, crds: None) -> Iterator[str]:
    """The simulator down (503) until the class is done; yields a namespace to watch from."""
    ns = "e2e-outage-watch"
    kubectl("create", "namespace", ns, check=False)
    live_quota(kubectl, ns, "watch", monthlyBudget=1000)
    LIVE_COST.append(unit_cost(billing))
    httpx.post(f"{billing.url}/_faults", json={"mode": "outage"}, timeout=5).raise_for_status()
    try:
        wait_for(
            lambda: status(kubectl, ns, "watch").get("billing", {}).get("circuitState") == "Open",
            timeout=30,
            what="the breaker to open",
        )
        yield ns
    finally:
        httpx.post(f"{billing.url}/_faults", json={"mode": "none"}, timeout=5)
    wait_for(
        lambda: status(kubectl, ns, "watch").get("billing", {}).get("circuitState") == "Closed",
        timeout=30,
        what="the breaker to close after recovery",
    )


@pytest.mark.usefixtures("outage")
class TestOutage:
    """Degradation policies while the billing simulator answers 503 to everything."""

    def test_quota_status_shows_the_open_breaker(self, kubectl: Kubectl, outage: str) -> None:
        got = status(kubectl, outage, "watch")
        assert got["billing"]["circuitState"] == "Open"
        wait_for(lambda: status(kubectl, outage, "watch")["billing"]["degraded"], what="degraded")
        conditions = {c["type"]: c for c in status(kubectl, outage, "watch")["conditions"]}
        assert conditions["BillingAvailable"]["status"] == "False"
        assert conditions["BillingAvailable"]["reason"] == "CircuitOpen"
        row = kubectl("get", "dbq", "watch", "-n", outage).stdout.splitlines()[1].split()
        assert "Open" in row
        assert "true" in row
        events = kubectl.get_json("events", "-n", outage)["items"]
        assert any(e["reason"] == "CircuitOpen" for e in events)

    def test_conservative_prices_at_the_highest_known_price_with_a_warning(
        self, kubectl: Kubectl, namespace: str, billing: Simulator
    ) -> None:
        seen_quota(kubectl, namespace, "q", monthlyBudget=5000)
        admitted = kubectl.apply(claim(namespace, name="careful"))
        assert "created" in admitted.stdout
        assert "Warning: billing degraded (circuit Open" in admitted.stderr
        assert "Conservative" in admitted.stderr
        got = claim_status(kubectl, namespace, "careful")
        assert got["pricing"] == "Conservative"
        # at least the live price x 1.2 (highest known >= current)
        assert got["estimatedMonthlyCost"] >= LIVE_COST[-1] * 1.2 - 0.05
        # the decision counts in the fallback hit rate the quota's status shows
        wait_for(
            lambda: status(kubectl, namespace, "q").get("billing", {}).get("fallbackHitRate", 0),
            what="a fallback hit rate above 0 in the quota's status",
        )

    def test_strict_cap_admits_its_allowance_then_denies(
        self, kubectl: Kubectl, namespace: str
    ) -> None:
        seen_quota(
            kubectl,
            namespace,
            "q",
            monthlyBudget=5000,
            degradation={"policy": "StrictCap", "strictCap": {"claims": 1}},
        )
        first = kubectl.apply(claim(namespace, name="one"))
        assert "created" in first.stdout
        second = kubectl.apply(claim(namespace, name="two"), check=False)
        assert second.returncode != 0
        assert "policy StrictCap admits at most 1 new claims while degraded" in second.stderr
        assert claim_status(kubectl, namespace, "one")["pricing"] == "StrictCap"

    def test_fail_closed_denies_new_claims(self, kubectl: Kubectl, namespace: str) -> None:
        seen_quota(
            kubectl, namespace, "q", monthlyBudget=5000, degradation={"policy": "FailClosed"}
        )
        refused = kubectl.apply(claim(namespace, name="no"), check=False)
        assert refused.returncode != 0
        assert "denied by DatabaseQuota q" in refused.stderr
        assert "FailClosed" in refused.stderr

    def test_fail_open_admits_with_a_warning(self, kubectl: Kubectl, namespace: str) -> None:
        seen_quota(kubectl, namespace, "q", monthlyBudget=1, degradation={"policy": "FailOpen"})
        admitted = kubectl.apply(claim(namespace, name="yes"))
        assert "created" in admitted.stdout
        assert "FailOpen" in admitted.stderr
        assert claim_status(kubectl, namespace, "yes")["pricing"] == "FailOpen"

    def test_hard_caps_hold_while_degraded(self, kubectl: Kubectl, namespace: str) -> None:
        seen_quota(
            kubectl,
            namespace,
            "q",
            monthlyBudget=5000,
            hard={"claims": 1},
            degradation={"policy": "FailOpen"},
        )
        kubectl.apply(claim(namespace, name="only"))
        refused = kubectl.apply(claim(namespace, name="extra"), check=False)
        assert refused.returncode != 0
        assert "hard cap of 1 claims" in refused.stderr


def test_a_claim_counts_at_its_billed_cost_once_billing_shows_it(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    kubectl.apply(claim(namespace, name="billed", clusterId="team-a/billed-db"))
    got = wait_for(
        lambda: (q := status(kubectl, namespace, "team-a"))["spend"]["observed"] > 0 and q,
        timeout=30,
        what="billing to show the claim",
    )
    assert got["spend"]["reserved"] == 0
    assert got["reservations"] == []
    assert got["spend"]["remaining"] == pytest.approx(5000 - got["spend"]["observed"], abs=0.01)
    events = kubectl.get_json("events", "-n", namespace)["items"]
    assert not [e for e in events if e["reason"] == "ReservationReleased"]  # no Event per claim


def test_naming_a_billed_claims_cluster_frees_no_budget(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    """spec.clusterId is the tenant's: a large claim naming the cluster billing shows for a
    small one counts at its own price, not at the small one's bill."""
    live_quota(kubectl, namespace, "team-a", monthlyBudget=50_000)
    kubectl.apply(claim(namespace, name="small", clusterId="team-a/orders-db", storageGiB=20))
    wait_for(
        lambda: status(kubectl, namespace, "team-a")["spend"]["observed"] > 0,
        timeout=30,
        what="billing to show the small claim",
    )
    large = {"instanceClass": "db.r6g.2xlarge", "storageGiB": 2000, "replicas": 3}
    kubectl.apply(claim(namespace, name="large", clusterId="team-a/orders-db", **large))
    price = claim_status(kubectl, namespace, "large")["estimatedMonthlyCost"]
    small = claim_status(kubectl, namespace, "small")["estimatedMonthlyCost"]
    assert price > 1000

    def counted() -> dict[str, Any]:
        got = status(kubectl, namespace, "team-a")
        return got if not got["reservations"] and got["spend"]["observed"] == 0 else {}

    got = wait_for(counted, timeout=30, what="both claims counted at their own prices")
    time.sleep(3)  # billing syncs (every second here) that show the cluster again
    again = status(kubectl, namespace, "team-a")
    for spend in (got["spend"], again["spend"]):
        assert spend["observed"] == 0
        assert spend["reserved"] == pytest.approx(price + small, abs=0.01)
    kubectl("delete", "dbc", "large", "-n", namespace)
    wait_for(
        lambda: status(kubectl, namespace, "team-a")["spend"]["observed"] > 0,
        timeout=30,
        what="the small claim back at its billed cost once it names the cluster alone",
    )


def test_deleting_a_claim_gives_its_budget_back(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    kubectl.apply(claim(namespace, name="brief"))
    cost = unit_cost(billing)
    wait_for(
        lambda: status(kubectl, namespace, "team-a")["spend"]["reserved"] == pytest.approx(cost),
        what="the claim to be counted",
    )
    kubectl("delete", "dbc", "brief", "-n", namespace)
    got = wait_for(
        lambda: (q := status(kubectl, namespace, "team-a"))["spend"]["reserved"] == 0 and q,
        what="its budget back",
    )
    assert got["used"]["claims"] == 0
    assert got["spend"]["remaining"] == 5000
