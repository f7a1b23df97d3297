"""``kubectl dbquota``, run by the real kubectl, which finds ``kubectl-dbquota`` on ``PATH``.

Against the session's apiserver, operator and billing simulator: kubectl lists the plugin;
``explain`` of a claim that fits (exit 0: quota, verdict, Live price, nothing reserved),
of one over budget (exit 1, the webhook's full message, the figures behind it), of a
change to an existing claim (an UPDATE, priced as its growth), in a namespace without a
quota, and of a file that is not a claim (exit 2, nothing sent); ``top`` with two quotas
sorted by use (table, ``-A -o json``, ``-o yaml``); ``status`` showing a webhook replica's
escrow while its liveness Lease is live, then the Events the leader posts once it lets
that escrow and the replica's reservation go.

Against a second, bare control plane (no operator): every command says the CRDs are not
installed; with the CRDs and a quota but no webhook, ``explain`` says no webhook
answered; and ``status`` of a quota whose status, Leases and Events are written by hand
shows each reservation, each escrow holder's lease state (Live, Lapsed, Missing), the
conditions, and the Events newest last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dbquota.kits import timestamps
from e2e import controlplane
from e2e.harness import REPO, Cluster, Kubectl, Operator
from e2e.test_crds import claim, quota
from e2e.test_enforcement import (
    live_quota,
    review,
    second_replica,  # noqa: F401 - a fixture, asked for by name
    status,
    unit_cost,
)
from e2e.waiting import wait_for
from tests.simulating import Simulator


@dataclass(frozen=True)
class Plugin:
    """``kubectl dbquota ...`` through the real kubectl, the plugin found on ``PATH``."""

    kubectl: Path
    path: str
    kubeconfig: Path

    def __call__(self, *args: str, input_: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), "dbquota", *args],
            input=input_,
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": self.path, "KUBECONFIG": str(self.kubeconfig)},
            timeout=90,
            check=False,
        )

    def document(self, *args: str, output: str = "json") -> dict[str, Any]:
        """The ``-o json`` (or yaml) document of a command that succeeds."""
        done = self(*args, "-o", output)
        assert done.returncode in (0, 1), done.stderr
        loaded: dict[str, Any] = (
            json.loads(done.stdout) if output == "json" else yaml.safe_load(done.stdout)
        )
        return loaded


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> str:
    """A ``PATH`` whose first folder holds only a symlink to the venv's ``kubectl-dbquota``."""
    script = Path(sys.executable).parent / "kubectl-dbquota"
    assert script.exists(), f"{script} missing: reinstall the package (make venv)"
    folder = tmp_path_factory.mktemp("plugin-bin")
    (folder / "kubectl-dbquota").symlink_to(script)
    return os.pathsep.join((str(folder), str(cluster.bins.kubectl.parent), "/usr/bin", "/bin"))


@pytest.fixture(scope="module")
def plugin(cluster: Cluster, plugin_path: str) -> Plugin:
    return Plugin(cluster.bins.kubectl, plugin_path, cluster.kubeconfig)


def write(tmp_path: Path, obj: dict[str, Any], name: str = "claim.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj))
    return str(path)


def rows(table: str) -> list[dict[str, str]]:
    """A table without spaces in its cells (or in its headers), as dicts."""
    header, *lines = table.splitlines()
    return [dict(zip(header.split(), line.split(), strict=False)) for line in lines]


# -- found by kubectl ---------------------------------------------------------------------


def test_kubectl_finds_the_plugin_on_path(plugin: Plugin) -> None:
    listed = subprocess.run(
        [str(plugin.kubectl), "plugin", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": plugin.path},
        timeout=30,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "kubectl-dbquota" in listed.stdout
    helped = plugin("--help")
    assert helped.returncode == 0
    for command in ("explain", "top", "status"):
        assert command in helped.stdout
    assert "exit codes" in helped.stdout


# -- explain ------------------------------------------------------------------------------


def test_explain_admitted_shows_the_price_and_reserves_nothing(
    plugin: Plugin,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
    tmp_path: Path,
) -> None:
    before = live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    cost = unit_cost(billing)
    path = write(tmp_path, claim(namespace, name="orders"))
    done = plugin("explain", "-f", path)
    assert done.returncode == 0, done.stderr
    headline, table = done.stdout.split("\n", 1)
    assert headline == f"DatabaseClaim {namespace}/orders (CREATE): admitted"
    (row,) = rows(table)
    assert (row["QUOTA"], row["VERDICT"], row["REASON"]) == ("team-a", "admitted", "WithinBudget")
    assert (row["PRICING"], row["DEGRADED"], row["POLICY"]) == ("Live", "false", "-")
    assert float(row["COST"].replace(",", "")) == pytest.approx(cost, abs=0.01)
    assert row["BUDGET"] == "5,000.00"
    assert row["REMAINING"] == "5,000.00"

    doc = plugin.document("explain", "-f", path)
    assert doc["apiVersion"] == "plugin.dbquota.io/v1"
    assert doc["kind"] == "Explanation"
    assert doc["verdict"] == "admitted"
    (explained,) = doc["claims"]
    assert (explained["namespace"], explained["name"]) == (namespace, "orders")
    (line,) = explained["quotas"]
    assert line["cost"] == pytest.approx(cost, abs=0.01)
    assert (line["budget"], line["observed"], line["reserved"], line["escrow"]) == (5000, 0, 0, 0)
    after = status(kubectl, namespace, "team-a")
    assert after["spend"]["reserved"] == before["spend"]["reserved"] == 0
    assert after.get("reservations", []) == []
    assert kubectl("get", "dbc", "orders", "-n", namespace, check=False).returncode != 0


def test_explain_denied_exits_1_with_the_full_message(
    plugin: Plugin,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
) -> None:
    cost = unit_cost(billing)
    budget = round(cost * 1.5, 2)
    live_quota(kubectl, namespace, "team-a", monthlyBudget=budget)
    kubectl.apply(claim(namespace, name="first"))
    wait_for(
        lambda: status(kubectl, namespace, "team-a")["spend"]["reserved"] > 0,
        what="the first claim's price on the quota",
    )
    manifest = json.dumps(claim(namespace, name="second"))
    done = plugin("explain", "-f", "-", input_=manifest)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"DatabaseClaim {namespace}/second (CREATE): denied"
    (row,) = rows("\n".join(lines[1:3]))
    assert (row["QUOTA"], row["VERDICT"], row["REASON"]) == ("team-a", "denied", "BudgetExceeded")
    assert float(row["RESERVED"].replace(",", "")) == pytest.approx(cost, abs=0.01)
    # As the message prints them: each part to the cent, the sums of those.
    projected = 2 * round(cost, 2)
    over = round(projected - budget, 2)
    assert lines[3].startswith(
        f"denied by DatabaseQuota team-a: projected {projected:,.2f} USD/month exceeds budget "
        f"{budget:,.2f} by {over:,.2f} (observed 0.00 + reserved {cost:,.2f}"
    )

    yaml_run = plugin("explain", "-f", "-", "-o", "yaml", input_=manifest)
    assert yaml_run.returncode == 1
    doc = yaml.safe_load(yaml_run.stdout)
    (explained,) = doc["claims"]
    assert (doc["verdict"], explained["verdict"], explained["reason"]) == (
        "denied",
        "denied",
        "BudgetExceeded",
    )
    assert explained["message"].startswith("denied by DatabaseQuota team-a: projected")
    (line,) = explained["quotas"]
    assert line["remaining"] == pytest.approx(budget - cost, abs=0.01)
    assert kubectl("get", "dbc", "second", "-n", namespace, check=False).returncode != 0


def test_explain_of_an_existing_claim_explains_the_change(
    plugin: Plugin,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
    tmp_path: Path,
) -> None:
    live_quota(kubectl, namespace, "team-a", monthlyBudget=5000)
    kubectl.apply(claim(namespace, name="grow", storageGiB=100))
    growth = unit_cost(billing, storage=300) - unit_cost(billing, storage=100)
    doc = plugin.document(
        "explain", "-f", write(tmp_path, claim(namespace, "grow", storageGiB=300))
    )
    (explained,) = doc["claims"]
    assert (explained["operation"], explained["verdict"]) == ("UPDATE", "admitted")
    assert explained["quotas"][0]["cost"] == pytest.approx(growth, abs=0.02)
    spec = kubectl.get_json("dbc", "grow", "-n", namespace)["spec"]
    assert spec["storageGiB"] == 100


def test_explain_in_a_namespace_without_quota(
    plugin: Plugin, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    done = plugin("explain", "-f", write(tmp_path, claim(namespace, name="free")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"DatabaseClaim {namespace}/free (CREATE): admitted: namespace {namespace} has no "
        "DatabaseQuota"
    )


def test_explain_refuses_a_file_that_is_not_a_claim(
    plugin: Plugin, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    path = write(tmp_path, quota(namespace, name="q"), name="quota.yaml")
    done = plugin("explain", "-f", path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {path}, document 1 is a DatabaseQuota (dbquota.io/v1alpha1), not a "
        "kind dbquota prices: explain takes DatabaseClaim (dbquota.io/v1alpha1), Cluster "
        "(postgresql.cnpg.io/v1), postgresql (acid.zalan.do/v1), Instance "
        "(rds.aws.upbound.io/v1beta1) (to see a quota, use kubectl dbquota status NAME)"
    )
    assert kubectl.get_json("dbq", "-n", namespace)["items"] == []


# -- top ----------------------------------------------------------------------------------


def test_top_sorts_quotas_by_use(
    plugin: Plugin,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
) -> None:
    cost = unit_cost(billing)
    live_quota(kubectl, namespace, "roomy", monthlyBudget=round(cost * 10, 2))
    live_quota(kubectl, namespace, "tight", monthlyBudget=round(cost * 2, 2))
    kubectl.apply(claim(namespace, name="orders"))
    wait_for(
        lambda: all(
            status(kubectl, namespace, q)["spend"]["reserved"] > 0 for q in ("roomy", "tight")
        ),
        what="the claim's price on both quotas",
    )
    done = plugin("top", "-n", namespace)
    assert done.returncode == 0, done.stderr
    got = rows(done.stdout)
    assert [(r["NAME"], r["USED"]) for r in got] == [("tight", "50.0%"), ("roomy", "10.0%")]
    assert got[0]["CIRCUIT"] == "Closed"
    assert got[0]["DEGRADED"] == "false"
    assert float(got[0]["REMAINING"].replace(",", "")) == pytest.approx(cost, abs=0.01)

    everywhere = plugin.document("top", "-A")
    assert everywhere["kind"] == "QuotaTop"
    ours = [i for i in everywhere["items"] if i["namespace"] == namespace]
    assert [(i["name"], i["usedPercent"]) for i in ours] == [("tight", 50.0), ("roomy", 10.0)]
    used = [i["usedPercent"] for i in everywhere["items"] if i["usedPercent"] is not None]
    assert used == sorted(used, reverse=True)
    as_yaml = plugin.document("top", "-n", namespace, output="yaml")
    assert [i["name"] for i in as_yaml["items"]] == ["tight", "roomy"]
    assert as_yaml["items"][0]["reserved"] == pytest.approx(cost, abs=0.01)


# -- status with the real operator --------------------------------------------------------


def test_status_shows_a_replicas_escrow_then_the_events_that_end_it(
    plugin: Plugin,
    kubectl: Kubectl,
    operator: Operator,
    request: pytest.FixtureRequest,
    namespace: str,
    billing: Simulator,
) -> None:
    """The replica admits two reviews at once (of claims that are never created): the
    exact path writes the reservations, and the second takes escrow. Frozen at once, the
    replica cannot give the escrow back, so it stays until the leader sees its Lease lapse
    (``--lease-duration``, 15 s); the reservations are released after
    ``--reservation-grace`` (5 s)."""
    cost = unit_cost(billing)
    live_quota(kubectl, namespace, "shared", monthlyBudget=round(cost * 100, 2))
    replica, ca = request.getfixturevalue("second_replica")
    # Ready (/readyz) means its billing cache is warm; its webhook may bind a moment later.
    wait_for(lambda: listening(replica.webhook_port), what="the replica's webhook to listen")
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30) as client:
        answer, _ = (
            client.post(
                f"https://127.0.0.1:{replica.webhook_port}/validate-claims",
                json=review(namespace, name),
            )
            for name in ("ghost", "second-ghost")  # a lone claim would take no escrow
        )
    replica.proc.send_signal(signal.SIGSTOP)
    try:
        frozen(plugin, kubectl, namespace, replica=replica, answer=answer.json(), cost=cost)
    finally:
        replica.proc.send_signal(signal.SIGCONT)  # for the fixture to stop it


def listening(port: int) -> bool:
    """Whether something accepts connections on ``port`` of loopback."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def frozen(
    plugin: Plugin,
    kubectl: Kubectl,
    namespace: str,
    *,
    replica: Operator,
    answer: dict[str, Any],
    cost: float,
) -> None:
    """The rest of the test above, while the replica is frozen."""
    assert answer["response"]["allowed"]
    leases = kubectl.get_json("leases", "-A", "-l", "dbquota.io/lease=replica")["items"]
    holders = [lease["spec"]["holderIdentity"] for lease in leases]
    (holder,) = [h for h in holders if f"-{replica.proc.pid}-" in h]  # host-pid-nonce

    doc = plugin.document("status", "shared", "-n", namespace)
    assert doc["kind"] == "QuotaStatus"
    assert doc["quota"]["budget"] == pytest.approx(cost * 100, abs=0.01)
    held = {e["holder"]: e for e in doc["escrow"]}
    assert holder in held
    assert held[holder]["cost"] > 0
    assert held[holder]["lease"]["state"] == "Live"
    assert doc["quota"]["escrow"] == pytest.approx(sum(e["cost"] for e in doc["escrow"]))

    def released() -> list[str]:
        events = kubectl.get_json("events", "-n", namespace)["items"]
        reasons = [e["reason"] for e in events]
        done = "EscrowExpired" in reasons and "ReservationReleased" in reasons
        return reasons if done else []

    wait_for(released, timeout=90, what="EscrowExpired and ReservationReleased")
    done = plugin("status", "shared", "-n", namespace)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Escrow: none" in text
    assert "Reservations in flight: none" in text
    events = text.split("Events (newest last):\n", 1)[1]
    assert "ReservationReleased" in events
    assert "EscrowExpired" in events
    doc = plugin.document("status", "shared", "-n", namespace, output="yaml")
    times = [e["lastTimestamp"] for e in doc["events"]]
    assert times == sorted(times)
    assert {"ReservationReleased", "EscrowExpired"} <= {e["reason"] for e in doc["events"]}


# -- a bare control plane: no CRDs, no operator -------------------------------------------


@pytest.fixture(scope="module")
def bare(
    cluster: Cluster, plugin_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Plugin, Kubectl]]:
    """A second control plane with nothing installed, and the plugin and kubectl for it."""
    if cluster.state_dir is None:
        pytest.skip("DBQUOTA_E2E_USE_EXISTING: not starting a second control plane")
    state_dir = tmp_path_factory.mktemp("bare")
    state = controlplane.up(state_dir)
    other = Cluster(
        kubeconfig=Path(state.kubeconfig),
        webhook_host="127.0.0.1",
        bins=cluster.bins,
        state_dir=state_dir,
    )
    try:
        yield Plugin(cluster.bins.kubectl, plugin_path, other.kubeconfig), Kubectl(other)
    finally:
        controlplane.down(state_dir)


def test_every_command_says_when_the_crds_are_missing(
    bare: tuple[Plugin, Kubectl], tmp_path: Path
) -> None:
    plugin, kubectl = bare
    kubectl("delete", "-f", str(REPO / "crds"), "--ignore-not-found")
    expected = (
        "error: the dbquota CRDs are not installed in this cluster: kubectl apply -f crds/ or "
        "helm install dbquota charts/dbquota (see the README)"
    )
    path = write(tmp_path, claim("default", name="c"))
    for args in (("explain", "-f", path), ("top", "-A"), ("status", "q")):
        done = plugin(*args)
        assert (done.returncode, done.stderr.strip()) == (2, expected), args


def apply_crds(kubectl: Kubectl) -> None:
    """Install the CRDs once (another test may have)."""
    if kubectl("get", "crd", "databasequotas.dbquota.io", check=False).returncode == 0:
        return
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/databasequotas.dbquota.io",
        "crd/databaseclaims.dbquota.io",
    )


def test_explain_says_when_no_webhook_answered(
    bare: tuple[Plugin, Kubectl], tmp_path: Path
) -> None:
    plugin, kubectl = bare
    apply_crds(kubectl)
    kubectl("create", "namespace", "nowebhook")
    kubectl.apply(quota("nowebhook", name="team-a"))
    done = plugin("explain", "-f", write(tmp_path, claim("nowebhook", name="c")))
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: no dbquota webhook answered: is the operator running? Namespace nowebhook has "
        "DatabaseQuota team-a, yet the dry run was admitted with no dbquota explanation"
    )
    assert kubectl.get_json("dbc", "-n", "nowebhook")["items"] == []


def _micro(seconds_ago: float) -> str:
    return timestamps.to_micro(time.time() - seconds_ago)


def test_status_shows_reservations_escrow_leases_conditions_and_events(
    bare: tuple[Plugin, Kubectl],
) -> None:
    """The operator's writes, made by hand so that nothing moves while the plugin reads."""
    plugin, kubectl = bare
    apply_crds(kubectl)
    ns = "written"
    kubectl("create", "namespace", ns)
    kubectl("create", "namespace", "dbquota-system")
    kubectl.apply(quota(ns, name="team-a", monthlyBudget=1000, hard={"claims": 10}))
    uid = kubectl.get_json("dbq", "team-a", "-n", ns)["metadata"]["uid"]
    now = timestamps.to_rfc3339(time.time())
    written = {
        "status": {
            "spend": {"observed": 400.0, "reserved": 160.0, "remaining": 440.0},
            "used": {"claims": 3, "storageGiB": 300},
            "billing": {
                "circuitState": "Open",
                "degraded": True,
                "degradedReason": "circuit Open",
                "stalenessSeconds": 95,
                "lastSuccessfulSync": now,
                "consecutiveFailures": 4,
                "lastError": "HTTP 503",
            },
            "reservations": [
                {
                    "claim": "orders",
                    "uid": "u-1",
                    "generation": 1,
                    "cost": 100.5,
                    "delta": 100.5,
                    "storageGiB": 100,
                    "pricing": "Conservative",
                    "degraded": True,
                    "newClaim": True,
                    "reservedAt": now,
                    "holder": "pod-a-1-x",
                }
            ],
            "escrow": [
                {"holder": "pod-a-1-x", "cost": 50.0, "generation": 1},
                {"holder": "pod-b-2-y", "cost": 25.0, "generation": 1},
                {"holder": "pod-c-3-z", "cost": 10.0, "generation": 1},
            ],
            "conditions": [
                {
                    "type": "BillingAvailable",
                    "status": "False",
                    "reason": "CircuitOpen",
                    "message": "billing circuit Open",
                    "lastTransitionTime": now,
                    "observedGeneration": 1,
                }
            ],
        }
    }
    kubectl(
        "patch", "dbq", "team-a", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps(written),
    )  # fmt: skip
    for name, holder, ago, duration in (
        ("replica-a", "pod-a-1-x", 1, 3600),
        ("replica-b", "pod-b-2-y", 600, 15),
    ):
        kubectl.apply(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": "dbquota-system",
                    "labels": {"dbquota.io/lease": "replica"},
                },
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": duration,
                    "renewTime": _micro(ago),
                },
            }
        )
    for name, reason, message, ago in (
        ("e2", "CircuitOpen", "billing circuit breaker Closed -> Open: HTTP 503", 60),
        ("e1", "BudgetExceeded", "over budget by 20.00: 1,020.00 of 1,000.00 USD/month", 600),
    ):
        stamp = timestamps.to_rfc3339(time.time() - ago)
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"team-a.{name}", "namespace": ns},
                "involvedObject": {
                    "apiVersion": "dbquota.io/v1alpha1",
                    "kind": "DatabaseQuota",
                    "name": "team-a",
                    "namespace": ns,
                    "uid": uid,
                },
                "type": "Warning",
                "reason": reason,
                "message": message,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "source": {"component": "dbquota"},
            }
        )

    doc = plugin.document("status", "team-a", "-n", ns)
    assert doc["quota"]["usedPercent"] == 56.0
    assert doc["quota"]["escrow"] == 85.0
    assert doc["used"]["claims"] == 3
    assert doc["used"]["hardClaims"] == 10
    (reservation,) = doc["reservations"]
    assert (reservation["claim"], reservation["cost"], reservation["pricing"]) == (
        "orders",
        100.5,
        "Conservative",
    )
    states = {e["holder"]: e["lease"]["state"] for e in doc["escrow"]}
    assert states == {"pod-a-1-x": "Live", "pod-b-2-y": "Lapsed", "pod-c-3-z": "Missing"}
    assert [e["reason"] for e in doc["events"]] == ["BudgetExceeded", "CircuitOpen"]
    assert [c["reason"] for c in doc["conditions"]] == ["CircuitOpen"]

    done = plugin("status", "team-a", "-n", ns)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    head = dict(line.split(":", 1) for line in text.split("\n\n", 1)[0].splitlines())
    figures = {k: v.strip() for k, v in head.items()}
    assert figures["Quota"] == f"{ns}/team-a"
    assert figures["Budget"] == "1,000.00 USD/month"
    assert (figures["Observed"], figures["Reserved"], figures["Remaining"]) == (
        "400.00",
        "160.00",
        "440.00",
    )
    assert figures["Escrow"].startswith("85.00 ")
    assert figures["Used"] == "56.0%"
    assert figures["Claims"] == "3 of 10 (hard cap)"
    assert figures["Billing"].startswith("circuit Open, degraded true (circuit Open)")
    assert figures["Last error"] == "HTTP 503"
    reservations = text.split("Reservations in flight:\n", 1)[1].split("\n\n", 1)[0]
    assert rows(reservations)[0]["CLAIM"] == "orders"
    escrow = text.split("Escrow:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert escrow[0].split() == ["HOLDER", "COST", "CLAIMS", "GIB", "LEASE"]
    assert escrow[1].split()[:5] == ["pod-a-1-x", "50.00", "-", "-", "Live"]
    assert escrow[2].split()[:5] == ["pod-b-2-y", "25.00", "-", "-", "Lapsed"]
    assert escrow[3].split() == ["pod-c-3-z", "10.00", "-", "-", "Missing"]
    events = text.split("Events (newest last):\n", 1)[1].splitlines()
    assert [line.split()[2] for line in events[1:]] == ["BudgetExceeded", "CircuitOpen"]
    assert events[1].split()[0] == "10m"

    top = plugin("top", "-n", ns)
    assert rows(top.stdout)[0]["USED"] == "56.0%"
    assert rows(top.stdout)[0]["STALENESS"] == "95s"
