"""Budgets on other operators' databases: CloudNativePG, Zalando and Crossplane RDS, end to end.

A control plane and an operator of this module's own (the session's operator admits
DatabaseClaims only and reconciles every namespace's quotas: it would release these
quotas' reservations as "never created"), with the upstream CRDs installed from
their Go modules (:func:`e2e.controlplane.upstream_crds`) and ``--claim-kinds=
databaseclaims,cnpg,zalando,rds``. Checks, with the manifests in ``examples/``:

- each kind is admitted within budget (a ``Priced`` Event on the object; once the object
  exists, no reservation left on the quota and the object counted from its spec at the
  price its admission charged, in ``kubectl get databasequotas``) and denied over budget
  with the usual message; objects admitted from a replica's escrow (the second and later
  in a namespace) get their ``Priced`` Event too; 150 CloudNativePG clusters that billing
  never shows leave the quota with no reservation at all;
- deleting the object stops counting it; billing showing its cluster (the simulator's
  ``--cluster-id``) makes it count at its billed cost;
- during a billing outage each kind follows the quota's policy (FailClosed denies,
  Conservative prices at the highest known prices);
- three kinds in one namespace share one budget, and 100 parallel creates mixing kinds
  never admit more than the budget;
- relabelling an RDS Instance to another tenant prices it there as a new object (denied
  over that tenant's budget, though its spec is unchanged; admitted, it counts there and
  no longer in its old tenant's quota), and removing its label, or naming a namespace with
  no DatabaseQuota, is denied while its tenant's quota enforces;
- a CloudNativePG Cluster stored with a size dbquota cannot read (created past the
  webhook) can still be annotated and have its finalizer removed (admitted unpriced, with
  a warning), and fixing its size is priced as a new cluster (denied over budget, then
  admitted and counted); another kind's billing id annotation cannot be added, changed or
  removed once the object exists;
- ``kubectl dbquota explain`` gives each kind's verdict before it is applied (admitted
  within budget, denied over it, an RDS Instance without a tenant label counted against
  no quota), naming the kind, and neither stores nor reserves anything;
- the chart's RBAC with every kind enabled, applied to this apiserver, lets the operator's
  ServiceAccount list and watch each kind (RDS cluster-wide) and write none of them
  (``kubectl auth can-i`` against the real authorizer).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import yaml

from e2e import controlplane, harness
from e2e.conftest import FAST, REPO
from e2e.harness import Cluster, Kubectl, Operator, start_operator, stop_operator
from e2e.test_plugin import Plugin, plugin, plugin_path
from e2e.waiting import wait_for
from tests.chart.conftest import KUBE_VERSION
from tests.simulating import Simulator, launch
from tests.simulating import stop as stop_process

__all__ = ["plugin", "plugin_path"]  # the plugin's fixtures, on this module's cluster

BILLED = {
    "cnpg": ("kinds-billed-cnpg", "kinds-billed-cnpg/orders-pg"),
    "zalando": ("kinds-billed-zalando", "kinds-billed-zalando/acid-search"),
    "rds": ("kinds-billed-rds", "kinds-billed-rds-billing-db"),
}
"""Per kind: the namespace whose example object the simulator bills (``--cluster-id``),
and that object's billing id (``<namespace>/<name>``, or an RDS Instance's name)."""
CRD_NAMES = (
    "clusters.postgresql.cnpg.io",
    "postgresqls.acid.zalan.do",
    "instances.rds.aws.upbound.io",
)
EXAMPLES = {
    "cnpg": "cnpg-cluster.yaml",
    "zalando": "zalando-postgresql.yaml",
    "rds": "rds-instance.yaml",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of this module's own (see the module docstring)."""
    started = harness.start_cluster(tmp_path_factory.mktemp("kinds-controlplane"), reuse=False)
    try:
        yield started
    finally:
        harness.stop_cluster(started)


@pytest.fixture(scope="module")
def kubectl(cluster: Cluster) -> Kubectl:
    """kubectl bound to this module's control plane."""
    return Kubectl(cluster)


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> None:
    """dbquota's CRDs and the three upstream ones, established."""
    kubectl("apply", "-f", str(REPO / "crds"))
    for path in controlplane.upstream_crds().values():
        kubectl("apply", "--server-side", "--field-manager=dbquota-e2e", "-f", str(path))
    names = ("crd/databasequotas.dbquota.io", "crd/databaseclaims.dbquota.io")
    wait_for(  # kubectl wait fails at once on a CRD whose status has no conditions yet
        lambda: (
            kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=10s",
                *names,
                *(f"crd/{name}" for name in CRD_NAMES),
                check=False,
            ).returncode
            == 0
        ),
        timeout=60,
        what="the CRDs to be Established",
    )


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    log_path = tmp_path_factory.mktemp("kinds-billing") / "simulator.log"
    with log_path.open("w") as log:
        sim = launch(
            *(f"--cluster-id={cluster_id}" for _, cluster_id in BILLED.values()),
            "--price-period=0",
            log=log,
            clusters=20,
        )
    yield sim
    stop_process(sim.process)


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster,
    kubectl: Kubectl,
    crds: None,
    billing: Simulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    op = start_operator(
        cluster,
        kubectl,
        tmp_path_factory.mktemp("kinds-operator"),
        configuration="kinds.dbquota.io",
        extra=(
            f"--billing-url={billing.url}",
            *FAST,
            "--claim-kinds=databaseclaims,cnpg,zalando,rds",
        ),
    )
    yield op
    stop_operator(op)


@pytest.fixture
def namespace(kubectl: Kubectl, operator: Operator) -> str:
    name = f"kinds-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


def example(kind: str, *, namespace: str, name: str | None = None) -> dict[str, Any]:
    """The example manifest of ``kind``, placed in ``namespace`` (for RDS: its tenant label)."""
    obj: dict[str, Any] = yaml.safe_load((REPO / "examples" / EXAMPLES[kind]).read_text())
    obj = copy.deepcopy(obj)
    if kind == "rds":
        obj["metadata"]["labels"]["crossplane.io/claim-namespace"] = namespace
        obj["metadata"]["name"] = name or f"{namespace}-billing-db"
    else:
        obj["metadata"]["namespace"] = namespace
        if name:
            obj["metadata"]["name"] = name
    return obj


def quota(
    kubectl: Kubectl,
    namespace: str,
    *,
    budget: float,
    policy: str = "Conservative",
    **spec: Any,
) -> None:
    degradation: dict[str, Any] = {"policy": policy, "maxStaleness": "5s", "safetyMargin": 1.5}
    if policy == "StrictCap":
        degradation["strictCap"] = {"claims": 1}
    kubectl.apply(
        {
            "apiVersion": "dbquota.io/v1alpha1",
            "kind": "DatabaseQuota",
            "metadata": {"name": "budget", "namespace": namespace},
            "spec": {
                "monthlyBudget": budget,
                "currency": "USD",
                "enforcement": "Enforce",
                "degradation": degradation,
                **spec,
            },
        }
    )

    def listed() -> bool:  # the operator decides only once its quota watch has it
        return bool(status(kubectl, namespace).get("conditions"))

    wait_for(listed, what="the quota's first status")


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = (
        kubectl.get_json("databasequota", "budget", "-n", namespace).get("status") or {}
    )
    return found


def reservations(kubectl: Kubectl, namespace: str) -> list[str]:
    return [str(r.get("claim")) for r in status(kubectl, namespace).get("reservations") or []]


def spend_columns(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """``kubectl get databasequotas -o wide``: the row of the quota, by column."""
    out = kubectl("get", "databasequotas", "-n", namespace, "-o", "wide").stdout.splitlines()
    return dict(zip(out[0].split(), out[1].split(), strict=False))


def delete(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    kubectl("delete", "-f", "-", "--wait=false", input_=json.dumps(obj))


def priced(kubectl: Kubectl, obj: dict[str, Any]) -> list[str]:
    """The notes of the ``Priced`` Events on ``obj`` (an RDS Instance's are in ``default``)."""
    namespace = obj["metadata"].get("namespace") or "default"
    events = kubectl.get_json("events.events.k8s.io", "-n", namespace)["items"]
    return [
        e["note"]
        for e in events
        if e.get("reason") == "Priced" and e["regarding"]["name"] == obj["metadata"]["name"]
    ]


def charged(note: str) -> tuple[float, str]:
    """The price and pricing mode a ``Priced`` Event's note gives."""
    found = re.search(r"priced at ([0-9,.]+)/month \((\w+) pricing\)", note)
    assert found is not None, note
    return float(found[1].replace(",", "")), found[2]


def counted(kubectl: Kubectl, namespace: str, claims: int = 1) -> dict[str, Any]:
    """The quota's status once ``claims`` objects count and no reservation is left."""

    def settled() -> dict[str, Any]:
        found = status(kubectl, namespace)
        ok = not found.get("reservations") and found.get("used", {}).get("claims") == claims
        return found if ok else {}

    result: dict[str, Any] = wait_for(
        settled, what=f"{claims} object(s) counted with no reservation left"
    )
    return result


@pytest.mark.parametrize("kind", ["cnpg", "zalando", "rds"])
def test_each_kind_is_admitted_within_budget_and_counted_from_its_spec(
    kubectl: Kubectl, namespace: str, kind: str
) -> None:
    quota(kubectl, namespace, budget=50_000)
    obj = example(kind, namespace=namespace)
    kubectl.apply(obj)
    notes = wait_for(lambda: priced(kubectl, obj), what="the Priced Event")
    price, mode = charged(notes[0])
    assert (price > 0, mode) == (True, "Live")
    assert "DatabaseQuota budget" in notes[0]
    assert "counted from its spec until billing shows cluster" in notes[0]
    found = wait_for(
        lambda: (
            (s := counted(kubectl, namespace))
            and s["spend"]["reserved"] == pytest.approx(price, abs=0.01)
            and s
        ),
        what="the object counted at the price its admission charged",
    )
    assert found["spend"]["observed"] == 0
    row = spend_columns(kubectl, namespace)  # kubectl get databasequotas -o wide
    assert float(row["RESERVED"]) == pytest.approx(price, abs=0.01)


def test_objects_admitted_from_escrow_get_their_priced_event_too(
    kubectl: Kubectl, namespace: str
) -> None:
    """The first object's admission writes its reservation and takes an escrow; the next
    are admitted from it and written a moment later, once each object exists: each still
    gets its ``Priced`` Event, the record of what its admission charged."""
    quota(kubectl, namespace, budget=50_000)
    objs = [example("cnpg", namespace=namespace, name=f"pg-{i}") for i in range(3)]
    for obj in objs:
        kubectl.apply(obj)
    for obj in objs:
        notes = wait_for(partial(priced, kubectl, obj), what=f"{obj['metadata']['name']}'s Event")
        assert charged(notes[0])[0] > 0
    counted(kubectl, namespace, claims=3)


def test_objects_billing_never_shows_leave_no_reservation_on_the_quota(
    kubectl: Kubectl, namespace: str
) -> None:
    quota(kubectl, namespace, budget=1_000_000)
    objs = [example("cnpg", namespace=namespace, name=f"pg-{i}") for i in range(150)]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": objs})
    found = counted(kubectl, namespace, claims=150)
    price, _ = charged(wait_for(lambda: priced(kubectl, objs[0]), what="a Priced Event")[0])
    assert found["spend"]["reserved"] == pytest.approx(150 * price, abs=0.76)  # notes: cents
    size = len(kubectl("get", "databasequota", "budget", "-n", namespace, "-o", "json").stdout)
    assert size < 8192  # totals and conditions: the same as with no object


@pytest.mark.parametrize("kind", ["cnpg", "zalando", "rds"])
def test_each_kind_over_budget_is_denied_with_the_budget_message(
    kubectl: Kubectl, namespace: str, kind: str
) -> None:
    quota(kubectl, namespace, budget=50)
    result = kubectl.apply(example(kind, namespace=namespace), check=False)
    assert result.returncode != 0
    assert "denied" in result.stderr
    assert "DatabaseQuota budget" in result.stderr
    assert "budget" in result.stderr
    assert reservations(kubectl, namespace) == []


@pytest.mark.parametrize("kind", ["cnpg", "zalando", "rds"])
def test_deleting_the_object_stops_counting_it(kubectl: Kubectl, namespace: str, kind: str) -> None:
    quota(kubectl, namespace, budget=50_000)
    obj = example(kind, namespace=namespace)
    kubectl.apply(obj)
    assert counted(kubectl, namespace)["spend"]["reserved"] > 0
    delete(kubectl, obj)
    wait_for(
        lambda: (
            reservations(kubectl, namespace) == []
            and status(kubectl, namespace)["spend"]["reserved"] == 0
            and status(kubectl, namespace)["used"]["claims"] == 0
        ),
        what="the object no longer counted",
    )


@pytest.mark.parametrize("kind", ["cnpg", "zalando", "rds"])
def test_billing_showing_the_object_counts_its_billed_cost(
    kubectl: Kubectl, operator: Operator, kind: str
) -> None:
    namespace, cluster_id = BILLED[kind]
    kubectl("create", "namespace", namespace)
    quota(kubectl, namespace, budget=50_000)
    kubectl.apply(example(kind, namespace=namespace))
    wait_for(
        lambda: (
            reservations(kubectl, namespace) == []
            and status(kubectl, namespace)["spend"]["observed"] > 0
            and status(kubectl, namespace)["spend"]["reserved"] == 0
        ),
        timeout=60,
        what=f"billing to show {cluster_id} and the object to count at its billed cost",
    )
    row = spend_columns(kubectl, namespace)  # kubectl get databasequotas -o wide
    assert float(row["SPEND"]) == pytest.approx(status(kubectl, namespace)["spend"]["observed"])
    assert float(row["RESERVED"]) == 0
    assert status(kubectl, namespace)["used"]["claims"] == 1


POLICIES = ("Conservative", "StrictCap", "FailClosed", "FailOpen")


@pytest.fixture
def outage(kubectl: Kubectl, operator: Operator, billing: Simulator) -> Iterator[None]:
    """Billing down until the operator calls it degraded; back up after the test."""
    probe = f"kinds-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", probe)
    quota(kubectl, probe, budget=1)
    billing.fault(mode="outage")
    try:
        wait_for(
            lambda: status(kubectl, probe).get("billing", {}).get("degraded") is True,
            timeout=60,
            what="billing degraded",
        )
        yield
    finally:
        billing.fault(mode="none")
        wait_for(
            lambda: status(kubectl, probe).get("billing", {}).get("degraded") is False,
            timeout=60,
            what="billing healthy again",
        )


@pytest.mark.parametrize("kind", ["cnpg", "zalando", "rds"])
def test_during_an_outage_each_policy_decides_each_kind_as_a_claim(
    kubectl: Kubectl, outage: None, kind: str
) -> None:
    """Conservative reserves at the highest known prices x margin; StrictCap admits up to
    its cap; FailClosed denies; FailOpen admits with a warning; each as for a claim."""
    namespaces = {}
    for policy in POLICIES:
        namespaces[policy] = f"kinds-{policy.lower()}-{uuid.uuid4().hex[:6]}"
        kubectl("create", "namespace", namespaces[policy])
        quota(kubectl, namespaces[policy], budget=50_000, policy=policy)
    results = {
        policy: kubectl.apply(example(kind, namespace=ns), check=False)
        for policy, ns in namespaces.items()
    }
    assert results["FailClosed"].returncode != 0
    assert "denied" in results["FailClosed"].stderr
    assert "billing" in results["FailClosed"].stderr.lower()
    for policy in ("Conservative", "StrictCap", "FailOpen"):
        assert results[policy].returncode == 0, (policy, results[policy].stderr)
        assert "Warning:" in results[policy].stderr  # degraded admissions always say so
    second = kubectl.apply(
        example(kind, namespace=namespaces["StrictCap"], name=f"acid-{kind}-second"),
        check=False,
    )
    assert second.returncode != 0  # strictCap.claims: 1
    assert "strictCap" in second.stderr or "StrictCap" in second.stderr

    for policy in ("Conservative", "StrictCap"):
        obj = example(kind, namespace=namespaces[policy])
        note = wait_for(lambda: priced(kubectl, obj), what=f"{policy}'s Priced Event")[0]  # noqa: B023
        assert charged(note)[1] == policy
        found = counted(kubectl, namespaces[policy])
        # counted from its spec at the highest known prices, in StrictCap's allowance
        assert found["spend"]["reserved"] > 0
        assert found["used"]["degradedClaims"] == 1


def test_an_instance_without_a_tenant_label_is_admitted_with_a_warning(
    kubectl: Kubectl, operator: Operator
) -> None:
    obj = example("rds", namespace="nobody", name=f"untenanted-{uuid.uuid4().hex[:6]}")
    del obj["metadata"]["labels"]["crossplane.io/claim-namespace"]
    result = kubectl.apply(obj)
    assert "names no tenant namespace" in result.stderr
    assert "admitted without a budget check" in result.stderr


def test_relabelling_an_instance_prices_it_under_its_new_tenant_as_new(
    kubectl: Kubectl, namespace: str
) -> None:
    team_b = f"{namespace}-b"
    kubectl("create", "namespace", team_b)
    quota(kubectl, namespace, budget=50_000)
    quota(kubectl, team_b, budget=1)
    obj = example("rds", namespace=namespace)
    kubectl.apply(obj)
    price = counted(kubectl, namespace)["spend"]["reserved"]
    name = obj["metadata"]["name"]

    def label(value: str) -> subprocess.CompletedProcess[str]:
        where = "instances.rds.aws.upbound.io"
        return kubectl("label", where, name, "--overwrite", value, check=False)

    moved = label(f"crossplane.io/claim-namespace={team_b}")
    assert moved.returncode != 0  # the whole price, not the growth (0) of an UPDATE
    assert "DatabaseQuota budget" in moved.stderr
    assert "exceeds budget 1.00" in moved.stderr
    quota(kubectl, team_b, budget=50_000)
    wait_for(
        lambda: status(kubectl, team_b).get("spend", {}).get("remaining") == 50_000,
        what="team-b's new budget",
    )
    label(f"crossplane.io/claim-namespace={team_b}").check_returncode()
    assert counted(kubectl, team_b)["spend"]["reserved"] == pytest.approx(price, abs=0.01)
    wait_for(
        lambda: (
            (found := status(kubectl, namespace))["used"]["claims"] == 0
            and found["spend"]["reserved"] == 0
            and not found.get("reservations")
        ),
        what="the old tenant no longer counting it",
    )
    removed = label("crossplane.io/claim-namespace-")
    assert removed.returncode != 0
    assert "removing its label crossplane.io/claim-namespace" in removed.stderr
    away = label(f"crossplane.io/claim-namespace={namespace}-nobody")
    assert away.returncode != 0
    assert "which has no DatabaseQuota" in away.stderr


def test_growing_a_cluster_reserves_the_growth_and_an_update_over_budget_is_denied(
    kubectl: Kubectl, namespace: str
) -> None:
    quota(kubectl, namespace, budget=50_000)
    obj = example("cnpg", namespace=namespace)
    kubectl.apply(obj)
    first = counted(kubectl, namespace)["spend"]["reserved"]
    obj["spec"]["instances"] = 4
    kubectl.apply(obj)
    grown = wait_for(
        lambda: (
            (found := counted(kubectl, namespace))["spend"]["reserved"] > first
            and found["spend"]["reserved"]
        ),
        what="the growth counted",
    )
    assert grown == pytest.approx(first * 4 / 3, rel=0.01)
    obj["spec"]["instances"] = 1000  # about 98/month each: twice the budget
    denied = kubectl.apply(obj, check=False)
    assert denied.returncode != 0
    assert "denied" in denied.stderr
    assert "this update" in denied.stderr


def test_the_claims_hard_cap_counts_every_kind(kubectl: Kubectl, namespace: str) -> None:
    quota(kubectl, namespace, budget=50_000, hard={"claims": 2})
    claim = yaml.safe_load((REPO / "examples" / "claim-orders.yaml").read_text())
    claim["metadata"]["namespace"] = namespace
    kubectl.apply(claim)
    kubectl.apply(example("cnpg", namespace=namespace))
    wait_for(
        lambda: (
            len(reservations(kubectl, namespace)) == 2
            or status(kubectl, namespace).get("used", {}).get("claims") == 2
        ),
        what="two objects counted",
    )
    third = kubectl.apply(example("rds", namespace=namespace), check=False)
    assert third.returncode != 0
    assert "3 claims would exceed the hard cap of 2 claims" in third.stderr


def test_three_kinds_in_one_namespace_share_one_budget(kubectl: Kubectl, namespace: str) -> None:
    quota(kubectl, namespace, budget=50_000)
    for kind in ("cnpg", "zalando", "rds"):
        kubectl.apply(example(kind, namespace=namespace))
    total = counted(kubectl, namespace, claims=3)["spend"]["reserved"]
    # a quota just above what the three hold admits nothing more of any kind
    kubectl.apply(
        {
            "apiVersion": "dbquota.io/v1alpha1",
            "kind": "DatabaseQuota",
            "metadata": {"name": "budget", "namespace": namespace},
            "spec": {"monthlyBudget": round(total + 1, 2)},
        }
    )
    for kind in ("cnpg", "zalando", "rds"):
        more = kubectl.apply(example(kind, namespace=namespace, name=f"more-{kind}"), check=False)
        assert more.returncode != 0, more.stdout
        assert "denied" in more.stderr
    used = status(kubectl, namespace)["used"]
    assert used["claims"] == 3


def test_a_hundred_parallel_creates_of_mixed_kinds_never_exceed_the_budget(
    kubectl: Kubectl, namespace: str
) -> None:
    quota(kubectl, namespace, budget=5_000)
    kinds = ("cnpg", "zalando", "rds")
    # Zalando names start with the teamId; RDS Instances are cluster-scoped (unique names)
    objs = [
        example(kinds[i % 3], namespace=namespace, name=f"acid-{namespace}-{i}") for i in range(100)
    ]

    def create(obj: dict[str, Any]) -> bool:
        return kubectl.apply(obj, check=False).returncode == 0

    with ThreadPoolExecutor(max_workers=16) as pool:
        admitted = sum(pool.map(create, objs))
    assert 0 < admitted < 100

    def settled() -> dict[str, Any]:
        # Counted at the catalog: while billing is degraded for the quota (a sync slower
        # than this module's 5 s maxStaleness, on a loaded machine) every object counts at
        # the highest known prices x 1.5, above what its admission charged.
        found = status(kubectl, namespace)
        live = found.get("billing", {}).get("degraded") is False
        return found if live and found.get("used", {}).get("claims") == admitted else {}

    final = wait_for(settled, timeout=60, what="every admitted object counted, billing live")
    spend = final["spend"]
    assert spend["observed"] + spend["reserved"] <= 5_000
    assert spend["remaining"] >= 0


CHART_NAMESPACE = "dbquota-system"
ACCOUNT = f"system:serviceaccount:{CHART_NAMESPACE}:kinds-dbquota"


@pytest.fixture(scope="module")
def chart_rbac(cluster: Cluster, kubectl: Kubectl, crds: None) -> None:
    """The chart's ServiceAccount and RBAC, rendered with every kind, applied here."""
    kubectl("create", "namespace", CHART_NAMESPACE, check=False)
    rendered = subprocess.run(
        [
            str(cluster.bins.helm),
            "template",
            *KUBE_VERSION,
            "kinds",
            str(REPO / "charts" / "dbquota"),
            "-n",
            CHART_NAMESPACE,
            "--set",
            "claimKinds={databaseclaims,cnpg,zalando,rds}",
            "--show-only",
            "templates/rbac.yaml",
            "--show-only",
            "templates/serviceaccount.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    kubectl.apply(rendered)


RBAC = [
    (True, ("list", "clusters.postgresql.cnpg.io", "-n", "team-a")),
    (True, ("watch", "postgresqls.acid.zalan.do", "--all-namespaces")),
    (True, ("watch", "instances.rds.aws.upbound.io")),
    (True, ("patch", "databaseclaims.dbquota.io", "--subresource=status", "-n", "team-a")),
    (True, ("create", "events.events.k8s.io", "-n", "default")),
    (False, ("patch", "clusters.postgresql.cnpg.io", "-n", "team-a")),
    (False, ("patch", "clusters.postgresql.cnpg.io", "--subresource=status", "-n", "team-a")),
    (False, ("update", "postgresqls.acid.zalan.do", "-n", "team-a")),
    (False, ("delete", "instances.rds.aws.upbound.io")),
    (False, ("create", "instances.rds.aws.upbound.io")),
]


@pytest.mark.parametrize(("allowed", "check"), RBAC)
def test_the_charts_rbac_reads_every_enabled_kind_and_writes_none_of_theirs(
    kubectl: Kubectl, chart_rbac: None, allowed: bool, check: tuple[str, ...]
) -> None:
    result = kubectl("auth", "can-i", *check, f"--as={ACCOUNT}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (check, result.stderr)


@pytest.mark.parametrize("kind", ["cnpg", "zalando", "rds"])
def test_explain_gives_each_kinds_verdict_before_it_is_applied(
    kubectl: Kubectl, namespace: str, plugin: Plugin, tmp_path: Any, kind: str
) -> None:
    obj = example(kind, namespace=namespace)
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(obj))
    quota(kubectl, namespace, budget=50_000)
    done = plugin("explain", "-f", str(path))
    assert done.returncode == 0, done.stderr
    name = obj["metadata"]["name"]
    subject = f"{name} (tenant namespace {namespace})" if kind == "rds" else f"{namespace}/{name}"
    assert done.stdout.startswith(f"{obj['kind']} {subject} (CREATE): admitted\n"), done.stdout
    (claim,) = plugin.document("explain", "-f", str(path))["claims"]
    assert (claim["kind"], claim["verdict"]) == (obj["kind"], "admitted")
    (line,) = claim["quotas"]
    assert (line["name"], line["verdict"], line["pricing"]) == ("budget", "admitted", "Live")
    assert line["cost"] > 0
    quota(kubectl, namespace, budget=1)
    wait_for(
        lambda: status(kubectl, namespace).get("spend", {}).get("remaining") == 1,
        what="the quota's new budget",
    )
    over = plugin("explain", "-f", str(path))
    assert over.returncode == 1, over.stderr
    assert ": denied" in over.stdout.splitlines()[0]
    assert "DatabaseQuota budget" in over.stdout
    # a dry run: nothing stored, nothing reserved
    where = () if kind == "rds" else ("-n", namespace)
    crd = dict(zip(EXAMPLES, CRD_NAMES, strict=True))[kind]
    gone = kubectl("get", crd, name, *where, check=False)
    assert gone.returncode != 0
    assert reservations(kubectl, namespace) == []


def test_explain_counts_an_instance_without_a_tenant_label_against_no_quota(
    plugin: Plugin, operator: Operator, tmp_path: Any
) -> None:
    obj = example("rds", namespace="nobody", name=f"untenanted-{uuid.uuid4().hex[:6]}")
    del obj["metadata"]["labels"]["crossplane.io/claim-namespace"]
    path = tmp_path / "rds.yaml"
    path.write_text(yaml.safe_dump(obj))
    done = plugin("explain", "-f", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"Instance {obj['metadata']['name']} (no tenant namespace) (CREATE): admitted: it names "
        "no tenant namespace (label crossplane.io/claim-namespace), so no DatabaseQuota counts it"
    )
    assert "admitted without a budget check" in done.stdout


UNCHECKED = "e2e.dbquota.io/unchecked"
"""A label the operator's webhook skips while :func:`created_unchecked` runs."""
CLUSTERS = "clusters.postgresql.cnpg.io"


def created_unchecked(kubectl: Kubectl, operator: Operator, objs: list[dict[str, Any]]) -> None:
    """Create ``objs`` (each labelled :data:`UNCHECKED`, the first unreadable) past the
    webhook, as objects are created before their kind is enabled in ``--claim-kinds``, or
    while no replica answers under ``failurePolicy: Ignore``: the webhook skips the label,
    then sees everything again (a dry-run CREATE of one more like the first is denied)
    before this returns."""
    for obj in objs:
        obj["metadata"].setdefault("labels", {})[UNCHECKED] = "true"
    skip = {"matchExpressions": [{"key": UNCHECKED, "operator": "DoesNotExist"}]}

    def select(selector: dict[str, Any]) -> None:
        patch = [{"op": "add", "path": "/webhooks/0/objectSelector", "value": selector}]
        where = ("validatingwebhookconfiguration", str(operator.configuration))
        kubectl("patch", *where, "--type=json", "-p", json.dumps(patch))

    select(skip)
    try:
        wait_for(  # the apiserver takes a moment to see the new configuration
            lambda: kubectl.apply(objs, check=False).returncode == 0,
            what="the objects created past the webhook",
        )
    finally:
        select({})
    probe = copy.deepcopy(objs[0])
    probe["metadata"]["name"] += "-probe"
    wait_for(
        lambda: kubectl.apply(probe, check=False, extra=("--dry-run=server",)).returncode != 0,
        what="the webhook seeing every object again",
    )


def test_a_cluster_stored_unreadable_can_be_annotated_released_and_fixed(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """Every UPDATE of it was denied for its old object (``invalid Cluster …:
    spec.storage.size``, though the new spec was valid): no fix, no annotation, and its
    operator's finalizer could not be removed, so it could not be deleted either."""
    quota(kubectl, namespace, budget=5)  # far below the fixed cluster's price
    broken = example("cnpg", namespace=namespace, name="tengigs")
    broken["spec"]["storage"]["size"] = "ten gigs"  # a plain string in CloudNativePG's CRD
    held = copy.deepcopy(broken)
    held["metadata"].update(name="held", finalizers=["e2e.dbquota.io/hold"])
    created_unchecked(kubectl, operator, [broken, held])
    where = ("-n", namespace)
    annotated = kubectl("annotate", CLUSTERS, "tengigs", *where, "note=x", check=False)
    assert annotated.returncode == 0, annotated.stderr
    assert f"Cluster {namespace}/tengigs cannot be read (spec.storage.size" in annotated.stderr
    assert "admitted unpriced" in annotated.stderr
    kubectl("delete", CLUSTERS, "held", *where, "--wait=false")  # its finalizer holds it
    release = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])
    kubectl("patch", CLUSTERS, "held", *where, "--type=json", "-p", release)  # its operator's
    wait_for(
        lambda: kubectl("get", CLUSTERS, "held", *where, check=False).returncode != 0,
        what="the held cluster deleted",
    )
    fix = json.dumps({"spec": {"storage": {"size": "100Gi"}}})
    denied = kubectl("patch", CLUSTERS, "tengigs", *where, "--type=merge", "-p", fix, check=False)
    assert denied.returncode != 0  # priced as a new cluster: its whole price is growth
    assert "exceeds budget 5.00" in denied.stderr, denied.stderr
    quota(kubectl, namespace, budget=50_000)
    wait_for(
        lambda: status(kubectl, namespace).get("spend", {}).get("remaining") == 50_000,
        what="the quota's new budget",
    )
    fixed = kubectl("patch", CLUSTERS, "tengigs", *where, "--type=merge", "-p", fix)
    assert 'oldObject.spec.storage.size: invalid quantity "ten gigs"' in fixed.stderr
    assert "priced as a new object" in fixed.stderr
    price, _ = charged(wait_for(lambda: priced(kubectl, broken), what="the Priced Event")[0])
    found = counted(kubectl, namespace)  # one object, at the price its admission charged
    assert found["spend"]["reserved"] == pytest.approx(price, abs=0.01)


def test_another_kinds_billing_id_is_fixed_when_it_is_created(
    kubectl: Kubectl, namespace: str
) -> None:
    """Re-pointing it was admitted (``NoIncrease``): a recount then counted the cluster at
    the billed cost of whatever id it named."""
    quota(kubectl, namespace, budget=50_000)
    plain = example("cnpg", namespace=namespace)
    billed = example("cnpg", namespace=namespace, name="billed")
    billed["metadata"]["annotations"] = {"dbquota.io/cluster-id": "team-x/billed"}
    kubectl.apply([plain, billed])  # at creation, the id is the tenant's to choose
    counted(kubectl, namespace, claims=2)
    where = ("-n", namespace)
    repointed = BILLED["cnpg"][1]  # a cluster billing shows, that no object names
    for name, change in (
        ("orders-pg", f"dbquota.io/cluster-id={repointed}"),
        ("billed", f"dbquota.io/cluster-id={repointed}"),
        ("billed", "dbquota.io/cluster-id-"),
    ):
        refused = kubectl("annotate", "--overwrite", CLUSTERS, name, *where, change, check=False)
        assert refused.returncode != 0, change
        assert (
            f"denied: the billing id of Cluster {namespace}/{name} is fixed when it is created"
            in refused.stderr
        ), refused.stderr
        assert "delete it and create it again" in refused.stderr
    kubectl("annotate", CLUSTERS, "orders-pg", *where, "note=x")  # other annotations: free
    ids = {
        obj["metadata"]["name"]: obj["metadata"].get("annotations", {}).get("dbquota.io/cluster-id")
        for obj in kubectl.get_json(CLUSTERS, *where)["items"]
    }
    assert ids == {"orders-pg": None, "billed": "team-x/billed"}
