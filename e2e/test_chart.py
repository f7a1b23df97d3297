"""The chart against a real kube-apiserver: accepted, installable, stable, and runnable.

Runs on a control plane of its own (started for this module and stopped after it), so
that the release's cluster-scoped objects (CRDs, ClusterRole, webhook configuration) never
meet the other e2e tests' operator. Checks:

- every variant of the rendering matrix (``tests/chart``) passes
  ``kubectl apply --dry-run=server``, with cert-manager's and the Prometheus Operator's
  CRDs stubbed;
- ``helm install`` (never ``--wait``: a bare apiserver runs no pods) creates the CRDs
  (Established, kept by ``helm.sh/resource-policy``), the RBAC and a webhook
  configuration with a caBundle; NOTES.txt tells how to check the install;
- the real RBAC authorizer gives the ServiceAccount what the operator uses and nothing
  else (``kubectl auth can-i --as``); the tenant ClusterRoles carry the labels that
  aggregate them into the built-in view, edit and admin roles, and a user bound to them in
  a namespace (no controller-manager runs here, so no aggregation: a RoleBinding to the
  chart's role stands in for one to ``edit``) can create and change claims and read
  quotas, but never write a quota or any status;
- the self-signed certificates are stable across ``helm upgrade`` and
  ``helm template --dry-run=server`` (lookup), and ``webhook.selfSigned.rotate`` renews
  the serving certificate under the same CA; a CA renewed near its expiry is put in the
  caBundle next to the old one;
- two operators started with the chart's own arguments and certificate each renew a
  liveness Lease and elect one reconciler through the leader Lease (the first to start
  keeps it), and hand over at once when it stops; both replicas' webhooks deny a claim over
  a quota's hard cap; the standby serves TLS that the caBundle trusts and picks up a
  rotated certificate without a restart;
- ``helm uninstall`` removes the release but keeps the CRDs.

``DBQUOTA_E2E_USE_EXISTING`` does not apply here: the release is cluster-wide, so this
module always starts its own control plane.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from e2e import harness
from e2e.harness import Cluster, Kubectl, free_port
from e2e.waiting import wait_for
from tests.chart.conftest import CHART, KUBE_VERSION, MATRIX, NAMESPACE, RELEASE
from tests.simulating import stop as stop_process

FULLNAME = f"{RELEASE}-dbquota"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"
TLS_SECRET = f"{FULLNAME}-webhook-tls"
WEBHOOK_HOST = f"{FULLNAME}-webhook.{NAMESPACE}.svc"


def stub_crd(group: str, kind: str, plural: str, scope: str = "Namespaced") -> dict[str, Any]:
    """A CRD that accepts any spec: enough for a server-side dry run of the chart's objects."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


STUB_CRDS = [
    stub_crd("cert-manager.io", "Certificate", "certificates"),
    stub_crd("cert-manager.io", "Issuer", "issuers"),
    stub_crd("cert-manager.io", "ClusterIssuer", "clusterissuers", scope="Cluster"),
    stub_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    stub_crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
]


@dataclass(frozen=True)
class Env:
    """The module's own control plane, with kubectl and helm bound to it."""

    cluster: Cluster
    kubectl: Kubectl

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.cluster.bins.helm), *args],
            capture_output=True,
            text=True,
            env=self.cluster.env(),
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def secret(self, name: str) -> dict[str, bytes]:
        data = self.kubectl.get_json("secret", name, "-n", NAMESPACE)["data"]
        return {k: base64.b64decode(v) for k, v in data.items()}

    def ca_bundle(self) -> bytes:
        vwc = self.kubectl.get_json("validatingwebhookconfiguration", FULLNAME)
        return base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # Its own control plane, even with DBQUOTA_E2E_USE_EXISTING: the chart is installed
    # into a cluster it can have to itself.
    cluster = harness.start_cluster(tmp_path_factory.mktemp("chart-controlplane"), reuse=False)
    try:
        kubectl = Kubectl(cluster)
        for ns in (NAMESPACE, "team-a", "team-b"):
            kubectl("create", "namespace", ns)
        kubectl.apply("\n---\n".join(json.dumps(c) for c in STUB_CRDS))
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        )
        yield Env(cluster=cluster, kubectl=kubectl)
    finally:
        harness.stop_cluster(cluster)


def values_args(values: dict[str, Any]) -> list[str]:
    """``--set-json`` arguments for a values dict (one per top-level key)."""
    return [arg for key, v in values.items() for arg in ("--set-json", f"{key}={json.dumps(v)}")]


@pytest.mark.parametrize("name", list(MATRIX))
def test_rendered_manifests_pass_server_side_dry_run(env: Env, name: str) -> None:
    rendered = env.helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        *KUBE_VERSION,
        *values_args(MATRIX[name]),
    ).stdout
    result = env.kubectl("apply", "--dry-run=server", "-f", "-", input_=rendered, check=False)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    applied = result.stdout.count("(server dry run)")
    assert applied == sum(1 for d in yaml.safe_load_all(rendered) if d), result.stdout
    assert {"ValidatingWebhookConfiguration", "ClusterRole", "Service"} <= kinds


@pytest.fixture(scope="module")
def installed(env: Env) -> str:
    """``helm install`` of the default values; returns helm's output (with NOTES)."""
    return env.helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "--set", "billing.url=http://b:8089"
    ).stdout


def test_install_creates_the_crds_and_keeps_them(env: Env, installed: str) -> None:
    names = ("databasequotas.dbquota.io", "databaseclaims.dbquota.io")
    env.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )
    for name in names:
        crd = env.kubectl.get_json("crd", name)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    assert "No resources found" in env.kubectl("get", "databasequotas", "-A").stderr


def test_install_creates_rbac_webhook_and_workload(env: Env, installed: str) -> None:
    assert env.kubectl.get_json("clusterrole", FULLNAME)["rules"]
    binding = env.kubectl.get_json("clusterrolebinding", FULLNAME)
    assert binding["subjects"][0]["name"] == FULLNAME
    env.kubectl.get_json("serviceaccount", FULLNAME, "-n", NAMESPACE)
    env.kubectl.get_json("role", f"{FULLNAME}-leases", "-n", NAMESPACE)
    env.kubectl.get_json("deployment", FULLNAME, "-n", NAMESPACE)
    env.kubectl.get_json("poddisruptionbudget", FULLNAME, "-n", NAMESPACE)
    service = env.kubectl.get_json("service", f"{FULLNAME}-webhook", "-n", NAMESPACE)
    assert service["spec"]["clusterIP"] not in ("", "None")
    vwc = env.kubectl.get_json("validatingwebhookconfiguration", FULLNAME)
    webhook, status = vwc["webhooks"]
    # the apiserver took the status webhook's CEL condition (it compiles them on write)
    account = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"
    assert status["matchConditions"][0]["expression"] == (
        f'request.userInfo.username != "{account}"'
    )
    assert webhook["sideEffects"] == "NoneOnDryRun"
    assert webhook["clientConfig"]["service"]["name"] == f"{FULLNAME}-webhook"
    certs = x509_certs(env.ca_bundle())
    assert certs
    assert all(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for c in certs)


def test_notes_say_how_to_check_the_install(installed: str) -> None:
    notes = installed.split("NOTES:", 1)[1]
    assert "kubectl get databasequotas -A" in notes
    assert f"get lease {FULLNAME}-leader" in notes
    assert "billing.url is not set" not in notes
    smoke = notes.index("kubectl create namespace dbquota-smoke")
    assert notes.index("kubectl delete namespace dbquota-smoke") > smoke


CAN = [
    ("list", "databasequotas.dbquota.io", "--all-namespaces"),
    ("watch", "databaseclaims.dbquota.io", "--all-namespaces"),
    ("patch", "databasequotas.dbquota.io", "-n", "team-a"),
    ("patch", "databasequotas.dbquota.io", "--subresource=status", "-n", "team-a"),
    ("patch", "databaseclaims.dbquota.io", "--subresource=status", "-n", "team-a"),
    ("create", "events", "-n", "team-a"),
    ("create", "events.events.k8s.io", "-n", "team-a"),
    ("list", "namespaces"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ("update", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ("watch", "leases.coordination.k8s.io", "-n", NAMESPACE),
]
CANNOT = [
    ("delete", "databasequotas.dbquota.io", "-n", "team-a"),
    ("create", "databaseclaims.dbquota.io", "-n", "team-a"),
    ("patch", "databaseclaims.dbquota.io", "-n", "team-a"),
    ("get", "secrets", "-n", NAMESPACE),
    ("list", "pods", "-n", NAMESPACE),
    ("delete", "events", "-n", "team-a"),
    ("create", "leases.coordination.k8s.io", "-n", "team-a"),
    ("update", "leases.coordination.k8s.io", "-n", "kube-system"),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "namespaces/team-a"),
]


@pytest.mark.parametrize(
    ("allowed", "check"), [(True, c) for c in CAN] + [(False, c) for c in CANNOT]
)
def test_service_account_can_do_exactly_what_the_operator_needs(
    env: Env, installed: str, allowed: bool, check: tuple[str, ...]
) -> None:
    result = env.kubectl("auth", "can-i", *check, f"--as={SERVICE_ACCOUNT}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (check, result.stderr)


TENANT_ROLES = {
    # The chart's tenant role -> the built-in roles it aggregates into.
    f"{FULLNAME}-view": {"view", "edit", "admin"},
    f"{FULLNAME}-edit": {"edit", "admin"},
}
EDITOR = "alice@example.com"
VIEWER = "bob@example.com"


@pytest.fixture(scope="module")
def tenants(env: Env, installed: str) -> None:
    """``EDITOR`` bound to the chart's edit role and ``VIEWER`` to its view role, in team-a.

    With a controller-manager, the labels would add these roles' rules to the built-in
    ``edit`` and ``view``, and a RoleBinding to those would do; a bare apiserver runs no
    aggregation, so the users are bound to the chart's roles themselves.
    """
    for user, role in ((EDITOR, "edit"), (VIEWER, "view")):
        env.kubectl.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"tenant-{role}", "namespace": "team-a"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"{FULLNAME}-{role}",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            }
        )


def test_tenant_roles_carry_the_aggregation_labels(env: Env, installed: str) -> None:
    for name, builtin in TENANT_ROLES.items():
        labels = env.kubectl.get_json("clusterrole", name)["metadata"]["labels"]
        aggregated = {
            key.removeprefix("rbac.authorization.k8s.io/aggregate-to-")
            for key, value in labels.items()
            if key.startswith("rbac.authorization.k8s.io/aggregate-to-") and value == "true"
        }
        assert aggregated == builtin, name


TEAM_A = ("-n", "team-a")
CLAIMS = "databaseclaims.dbquota.io"
QUOTAS = "databasequotas.dbquota.io"
TENANT_CAN = [
    (EDITOR, verb, CLAIMS, *TEAM_A)
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
] + [
    (EDITOR, verb, QUOTAS, *TEAM_A) for verb in ("get", "list", "watch")
] + [
    (VIEWER, "list", QUOTAS, *TEAM_A),
    (VIEWER, "watch", CLAIMS, *TEAM_A),
]  # fmt: skip
TENANT_CANNOT = [
    # A quota is the platform's: a tenant who could write it could raise its own budget.
    (EDITOR, verb, QUOTAS, *TEAM_A)
    for verb in ("create", "update", "patch", "delete", "deletecollection")
] + [
    # Statuses are the operator's: a quota's holds its reservations, a claim's its price.
    (EDITOR, verb, resource, "--subresource=status", *TEAM_A)
    for verb in ("update", "patch")
    for resource in (QUOTAS, CLAIMS)
] + [
    (EDITOR, "create", CLAIMS, "-n", "team-b"),  # bound in team-a only
    (EDITOR, "list", QUOTAS, "--all-namespaces"),
    (VIEWER, "create", CLAIMS, *TEAM_A),
    (VIEWER, "patch", CLAIMS, *TEAM_A),
    (VIEWER, "delete", CLAIMS, *TEAM_A),
]  # fmt: skip


@pytest.mark.parametrize(
    ("allowed", "check"), [(True, c) for c in TENANT_CAN] + [(False, c) for c in TENANT_CANNOT]
)
def test_tenants_write_claims_and_only_read_quotas(
    env: Env, tenants: None, allowed: bool, check: tuple[str, ...]
) -> None:
    user, *question = check
    result = env.kubectl("auth", "can-i", *question, f"--as={user}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (check, result.stderr)


def test_certificates_are_stable_across_upgrades(env: Env, installed: str) -> None:
    before_tls, before_bundle = env.secret(TLS_SECRET), env.ca_bundle()
    env.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values")
    env.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", "--set", "replicaCount=3"
    )
    assert env.secret(TLS_SECRET) == before_tls
    assert env.ca_bundle() == before_bundle
    rendered = env.helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--dry-run=server",
        *KUBE_VERSION,  # even then, helm checks kubeVersion against its own default
        "--set",
        "billing.url=http://b:8089",
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    (vwc,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    assert base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"]) == before_bundle
    (tls,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == TLS_SECRET]
    assert base64.b64decode(tls["data"]["tls.crt"]) == before_tls["tls.crt"]


def x509_certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


@dataclass
class Operator:
    """One ``dbquota run`` process started with the chart's arguments."""

    proc: subprocess.Popen[bytes]
    log: Path
    webhook_port: int
    cert_dir: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def write_certs(cert_dir: Path, secret: dict[str, bytes]) -> None:
    """Swap the certificate files in at once, as the kubelet does for a Secret volume."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        tmp = cert_dir / f".{name}.tmp"
        tmp.write_bytes(secret[name])
        tmp.chmod(0o600)
        tmp.replace(cert_dir / name)


def chart_args(env: Env) -> list[str]:
    """The container arguments of the installed release, as the pods would get them."""
    rendered = env.helm("get", "manifest", RELEASE, "-n", NAMESPACE).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def start_operator(env: Env, workdir: Path) -> Operator:
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = workdir / "certs"
    write_certs(cert_dir, env.secret(TLS_SECRET))
    port = free_port()
    local = {  # where a pod has volumes, a process on this machine has its own folder
        "--webhook-cert-dir": str(cert_dir),
        "--webhook-port": str(port),
        "--metrics-port": str(free_port()),
        "--cache-path": str(workdir / "cache.sqlite3"),
    }
    args = [
        f"{flag}={local[flag]}" if flag in local else arg
        for arg in chart_args(env)
        for flag in [arg.split("=", 1)[0]]
    ]
    args.append("--webhook-listen=127.0.0.1")
    log = workdir / "operator.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbquota", "run", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env.cluster.env(),
            cwd=workdir,
        )
    return Operator(proc=proc, log=log, webhook_port=port, cert_dir=cert_dir)


def served_certificate(op: Operator, ca_bundle: bytes) -> bytes | None:
    """The certificate the operator's webhook presents, verified against ``ca_bundle``."""
    ctx = ssl.create_default_context(cadata=ca_bundle.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", op.webhook_port), timeout=3) as sock,
            ctx.wrap_socket(sock, server_hostname=WEBHOOK_HOST) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return ssl.DER_cert_to_PEM_cert(der).encode() if der else None


def same_cert(a: bytes, b: bytes) -> bool:
    return x509_certs(a)[0] == x509_certs(b)[0]


@pytest.fixture(scope="module")
def operators(
    env: Env, installed: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Operator, Operator]]:
    root = tmp_path_factory.mktemp("chart-operators")
    first = start_operator(env, root / "a")
    started: list[Operator] = [first]
    try:
        wait_for(
            lambda: leader(env).startswith(holder_of(first)) or first.proc.poll() is not None,
            timeout=60,
            what="the first operator to take the leader Lease",
        )
        assert first.proc.poll() is None, first.logs()
        second = start_operator(env, root / "b")
        started.append(second)
        wait_for(
            lambda: {holder_of(first), holder_of(second)} <= set(replicas(env)),
            timeout=60,
            what="both replicas' liveness Leases",
        )
        yield first, second
    finally:
        for op in started:
            op.stop()


def holder_of(op: Operator) -> str:
    """How a replica's Leases name it: ``<host>-<pid>-<nonce>``, matched up to the pid."""
    return f"{socket.gethostname()}-{op.proc.pid}-"


def leader(env: Env) -> str:
    got = env.kubectl(
        "get", "lease", f"{FULLNAME}-leader", "-n", NAMESPACE, "-o", "json", check=False
    )
    if got.returncode != 0:
        return ""
    return str(json.loads(got.stdout)["spec"].get("holderIdentity") or "")


def replicas(env: Env) -> list[str]:
    """The start (``<host>-<pid>-``) of every live replica Lease's holder."""
    leases = env.kubectl.get_json("lease", "-n", NAMESPACE, "-l", "dbquota.io/lease=replica")
    holders = [str(item["spec"]["holderIdentity"]) for item in leases["items"]]
    return [h.rsplit("-", 1)[0] + "-" for h in holders]


def test_two_replicas_elect_exactly_one_reconciler(
    env: Env, operators: tuple[Operator, Operator]
) -> None:
    first, second = operators
    assert leader(env).startswith(holder_of(first))
    wait_for(lambda: LEADING in first.logs(), timeout=30, what="the first replica to lead")
    time.sleep(5)  # the second has tried to acquire by now; the first keeps renewing
    assert leader(env).startswith(holder_of(first))
    assert LEADING not in second.logs()
    assert first.proc.poll() is None
    assert second.proc.poll() is None


LEADING = "took leadership"


def admission_review(namespace: str, storage_gib: int) -> dict[str, Any]:
    """A dry-run AdmissionReview for creating a claim of ``storage_gib`` in ``namespace``."""
    claim = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseClaim",
        "metadata": {"name": "big", "namespace": namespace},
        "spec": {"engine": "postgres", "instanceClass": "db.r6g.large", "storageGiB": storage_gib},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-chart",
            "kind": {"group": "dbquota.io", "version": "v1alpha1", "kind": "DatabaseClaim"},
            "resource": {
                "group": "dbquota.io",
                "version": "v1alpha1",
                "resource": "databaseclaims",
            },
            "namespace": namespace,
            "name": "big",
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "dryRun": True,
            "object": claim,
        },
    }


def admitted(op: Operator, ca_bundle: bytes, review: dict[str, Any]) -> bool:
    """POST ``review`` to the operator's webhook as the apiserver would; True if allowed."""
    ctx = ssl.create_default_context(cadata=ca_bundle.decode())
    ctx.check_hostname = False  # the certificate names the Service; we dial 127.0.0.1
    request = urllib.request.Request(
        f"https://127.0.0.1:{op.webhook_port}/validate-claims",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=ctx, timeout=5) as response:
        allowed: bool = json.loads(response.read())["response"]["allowed"]
    return allowed


@pytest.fixture(scope="module")
def capped_namespace(env: Env, installed: str) -> str:
    env.kubectl("create", "namespace", "tenant")
    env.kubectl.apply(
        {
            "apiVersion": "dbquota.io/v1alpha1",
            "kind": "DatabaseQuota",
            "metadata": {"name": "q", "namespace": "tenant"},
            # No billing runs here: FailOpen admits what the hard cap allows.
            "spec": {
                "monthlyBudget": 1000,
                "hard": {"storageGiB": 100},
                "degradation": {"policy": "FailOpen"},
            },
        }
    )
    return "tenant"


@pytest.mark.parametrize("replica", ["leader", "standby"])
def test_every_replica_denies_a_claim_over_a_hard_cap(
    env: Env, operators: tuple[Operator, Operator], capped_namespace: str, replica: str
) -> None:
    op = operators[0] if replica == "leader" else operators[1]
    bundle = env.ca_bundle()
    review = admission_review(capped_namespace, storage_gib=500)
    deadline = time.monotonic() + 20
    while admitted(op, bundle, review) and time.monotonic() < deadline:
        time.sleep(0.5)  # the replica's index may lag the quota's creation a little
    assert not admitted(op, bundle, review)
    assert admitted(op, bundle, admission_review(capped_namespace, storage_gib=50))


def test_webhook_serves_tls_the_ca_bundle_trusts_and_reloads_a_rotated_certificate(
    env: Env, operators: tuple[Operator, Operator]
) -> None:
    _, standby = operators  # a paused replica serves the webhook too
    bundle = env.ca_bundle()
    old = env.secret(TLS_SECRET)
    served = wait_for(lambda: served_certificate(standby, bundle), timeout=60, what="TLS webhook")
    assert same_cert(served, old["tls.crt"])

    env.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "webhook.selfSigned.rotate=e2e-1",
    )
    new = env.secret(TLS_SECRET)
    assert not same_cert(new["tls.crt"], old["tls.crt"])
    assert env.ca_bundle() == bundle  # renewed under the same CA: no caBundle change
    write_certs(standby.cert_dir, new)
    pid = standby.proc.pid
    # The operator looks at the files every few seconds; new connections get the new one.
    wait_for(
        lambda: (cert := served_certificate(standby, bundle)) and same_cert(cert, new["tls.crt"]),
        timeout=90,
        what="the operator to serve the rotated certificate",
    )
    assert standby.proc.poll() is None
    assert standby.proc.pid == pid


def test_a_renewed_ca_is_trusted_next_to_the_one_it_replaces(env: Env, installed: str) -> None:
    old_bundle = env.ca_bundle()
    # A renewal window longer than the CA's remaining life makes this upgrade renew it.
    env.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values",
        "--set", "webhook.selfSigned.renewBeforeDays=4000",
    )  # fmt: skip
    bundle = x509_certs(env.ca_bundle())
    assert len(bundle) == 2
    assert bundle[1] == x509_certs(old_bundle)[0]  # the old CA stays trusted meanwhile
    (leaf,) = x509_certs(env.secret(TLS_SECRET)["tls.crt"])
    leaf.verify_directly_issued_by(bundle[0])
    env.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values",
        "--set", "webhook.selfSigned.renewBeforeDays=180",
    )  # fmt: skip
    assert x509_certs(env.ca_bundle()) == bundle  # out of the window again: stable


def test_a_stopping_leader_hands_over_at_once(
    env: Env, operators: tuple[Operator, Operator]
) -> None:
    first, second = operators
    first.stop()
    wait_for(lambda: LEADING in second.logs(), timeout=10, what="the standby to take over")
    assert leader(env).startswith(holder_of(second))
    assert holder_of(first) not in replicas(env)  # its liveness Lease went with it


def test_uninstall_keeps_the_crds(env: Env, installed: str) -> None:
    env.helm("uninstall", RELEASE, "-n", NAMESPACE)
    env.kubectl.get_json("crd", "databasequotas.dbquota.io")
    env.kubectl.get_json("crd", "databaseclaims.dbquota.io")
    for kind, name in [
        ("validatingwebhookconfiguration", FULLNAME),
        ("clusterrole", FULLNAME),
        *(("clusterrole", role) for role in TENANT_ROLES),
    ]:
        assert env.kubectl("get", kind, name, check=False).returncode != 0, kind
    assert env.kubectl("get", "secret", TLS_SECRET, "-n", NAMESPACE, check=False).returncode != 0
