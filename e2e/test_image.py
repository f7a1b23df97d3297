"""The operator's image, built from the Dockerfile with podman and run as the chart runs it.

:mod:`e2e.imaging` builds the image (or reuses it from its cache) on a Debian bookworm +
python3 base made by mmdebstrap. One container of it runs on the host's network
(``--network host``) against a control plane of this module's own (the ``cluster`` fixture
below says why not the session's) and the session's billing simulator, configured from the
chart as the real ``helm template`` renders it: the chart's container arguments (only the
ports changed, to free ones, and the webhook listening on the address the apiserver
calls), its pod and container security context as podman flags (``--user 65532:65532``,
``--read-only``, ``--cap-drop=ALL``, ``--security-opt=no-new-privileges``), its Secret
volumes as read-only host folders and its emptyDirs as writable ones, its grace period as
the stop timeout, and the chart's own ServiceAccount with the chart's RBAC applied (a
kubeconfig carrying that account's token stands in for the pod's mounted credentials, see
docs/image.md). The chart is rendered with ``watchNamespace`` set to a namespace of the
module's own, whose claims its webhook configuration (the chart's, pointed at the
container) selects, and a release namespace of its own for the Leases. Checks:

- the image: user 65532, entrypoint ``dbquota run``, the chart's ports; the running
  operator is the container's PID 1, as uid/gid 65532, on a read-only root, with no
  capabilities, no-new-privileges and seccomp;
- a claim within the quota's budget is admitted and gets its price on its status; one
  over budget is denied with the budget message; the container counted both decisions;
- the container takes the leader Lease and reconciles the quota: conditions, spend with
  the admitted claim's price, and the quota's series on its own /metrics;
- ``podman stop`` (SIGTERM) ends it with exit code 0 within the grace period, its Leases
  released, with no traceback in its log.

Skipped, saying why, only where podman, runc or mmdebstrap is missing (``.ci/run``
installs them). Containers, webhook configuration and cluster-scoped RBAC are removed
afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dbquota.kits import certs
from e2e import controlplane, imaging, scraping
from e2e.harness import REPO, Cluster, Kubectl, free_port
from e2e.test_crds import claim
from e2e.test_enforcement import claim_status, live_quota, status, unit_cost
from e2e.waiting import wait_for
from tests.chart.conftest import CHART, KUBE_VERSION, Manifests, parse, run_helm
from tests.simulating import Simulator

MISSING = imaging.missing_tools()
if MISSING:
    pytest.skip(
        f"the image test needs {', '.join(MISSING)} (Debian: apt-get install "
        f"{' '.join(imaging.TOOLS)}; .ci/run does it)",
        allow_module_level=True,
    )

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
KUBECONFIG_DIR = "/var/run/dbquota-e2e"
"""Where the container finds its kubeconfig (a pod would have its token mounted instead)."""


@dataclass(frozen=True)
class Image:
    """The built image and the podman that holds it."""

    podman: imaging.Podman
    tag: str


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    podman = imaging.Podman.setup()
    log = tmp_path_factory.mktemp("image") / "build.log"
    return Image(podman=podman, tag=imaging.operator_image(podman, log=log))


def run_flags(manifests: Manifests, *, secrets: dict[str, Path], scratch: Path) -> list[str]:
    """``podman run`` flags that give the container what the chart's pod spec gives it:
    user and groups, read-only root, capabilities, privilege escalation, volumes (a Secret
    from the host folder ``secrets[volume name]``; an emptyDir, which the kubelet makes as a
    mode 0777 folder on the node, as such a folder under ``scratch``), environment and grace
    period. A setting with no stand-in here fails instead of being left out."""
    pod = manifests.workload()["spec"]["template"]["spec"]
    container = manifests.container()
    pod_ctx, ctx = pod["securityContext"], container["securityContext"]
    uid = ctx.get("runAsUser", pod_ctx["runAsUser"])
    gid = ctx.get("runAsGroup", pod_ctx["runAsGroup"])
    flags = [f"--user={uid}:{gid}"]
    if "fsGroup" in pod_ctx:
        flags.append(f"--group-add={pod_ctx['fsGroup']}")
    if ctx.get("readOnlyRootFilesystem"):
        # As in a pod, only the volumes are writable: no tmpfs on /tmp, /run, /var/tmp.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    flags += [f"--cap-drop={cap}" for cap in ctx.get("capabilities", {}).get("drop", [])]
    assert not ctx.get("capabilities", {}).get("add"), "no stand-in for added capabilities"
    if ctx.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    for scope in (pod_ctx, ctx):  # RuntimeDefault is podman's default seccomp profile
        assert scope.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault"
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume, path = volumes[mount["name"]], mount["mountPath"]
        if "secret" in volume:
            assert mount.get("readOnly") is True
            flags.append(f"--volume={secrets[mount['name']]}:{path}:ro")
        elif "emptyDir" in volume and not volume["emptyDir"].get("medium"):
            # Not --tmpfs: runc gives a tmpfs the mode of the folder it covers, but not its
            # owner, so the image's 0750 cache folder would become root's and unwritable.
            folder = scratch / mount["name"]
            folder.mkdir(parents=True)
            folder.chmod(0o777)
            flags.append(f"--volume={folder}:{path}:rw")
        else:
            raise AssertionError(f"no stand-in for volume {volume}")
    flags += [f"--env={e['name']}={e['value']}" for e in container.get("env", [])]
    flags.append(f"--stop-timeout={pod['terminationGracePeriodSeconds']}")
    return flags


def container_args(manifests: Manifests, *, webhook_port: int, metrics_port: int) -> list[str]:
    """The chart's container arguments with the ports swapped for free ones (the container
    shares the host's network)."""
    ports = {"--webhook-port": webhook_port, "--metrics-port": metrics_port}
    args: list[str] = manifests.container()["args"]
    swapped = [
        f"{flag}={ports[flag]}" if flag in ports else arg
        for arg in args
        for flag in [arg.split("=", 1)[0]]
    ]
    assert len([a for a in swapped if a.split("=", 1)[0] in ports]) == 2, args
    return swapped


def cluster_endpoint(cluster: Cluster) -> tuple[str, bytes]:
    """The apiserver's URL and CA certificate, from the cluster's kubeconfig."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    name = contexts[config["current-context"]]["cluster"]
    (entry,) = [c["cluster"] for c in config["clusters"] if c["name"] == name]
    if "certificate-authority-data" in entry:
        ca = base64.b64decode(entry["certificate-authority-data"])
    else:
        ca = (cluster.kubeconfig.parent / entry["certificate-authority"]).read_bytes()
    return str(entry["server"]), ca


def secret_folder(path: Path, files: dict[str, bytes], *, group: int | None) -> Path:
    """A folder holding ``files`` as the kubelet mounts a Secret with ``defaultMode: 0440``
    and the pod's ``fsGroup``: readable by that group, not by others (when this process
    may give files away, i.e. runs as root; otherwise readable by all)."""
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    for item in [path, *path.iterdir()]:
        if group is not None and os.geteuid() == 0:
            os.chown(item, 0, group)
            item.chmod(0o750 if item.is_dir() else 0o440)
        else:
            item.chmod(0o755 if item.is_dir() else 0o444)
    return path


@dataclass
class Deployment:
    """One container of the image, and the names of what it runs with."""

    image: Image
    container: str
    hostname: str
    tenant: str
    system: str
    fullname: str
    webhook_port: int
    metrics_port: int
    grace: int

    def logs(self) -> str:
        """Everything the container printed so far (stdout and stderr)."""
        got = self.image.podman("logs", self.container, check=False)
        return got.stdout + got.stderr

    def state(self) -> dict[str, Any]:
        """The container's state as ``podman inspect`` reports it."""
        inspected = self.image.podman("container", "inspect", self.container).stdout
        result: dict[str, Any] = json.loads(inspected)[0]["State"]
        return result

    def metrics(self) -> list[Any]:
        """The samples of the container's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return scraping.samples(text)

    def probe(self, path: str) -> int:
        """The status code of a probe path on the metrics port; 0 when nothing answers."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2).status_code
        except httpx.HTTPError:
            return 0


def lease_holder(kubectl: Kubectl, namespace: str, name: str) -> str:
    got = kubectl("get", "lease", name, "-n", namespace, "-o", "json", check=False)
    if got.returncode != 0:
        return ""
    return str(json.loads(got.stdout)["spec"].get("holderIdentity") or "")


def replica_leases(kubectl: Kubectl, namespace: str) -> list[str]:
    leases = kubectl.get_json("lease", "-n", namespace, "-l", "dbquota.io/lease=replica")
    return [str(item["spec"].get("holderIdentity")) for item in leases["items"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of this module's own (the session's ``cluster`` is not used here).

    On the session's control plane the session's operator registers a webhook for claims
    of every namespace (kopf's configuration has no namespaceSelector), so both it and
    the container answered for this module's claims, each reserving the claim's price: a
    claim that fitted once was denied for being counted twice.
    """
    state_dir = tmp_path_factory.mktemp("image-controlplane")
    state = controlplane.up(state_dir)
    try:
        yield Cluster(
            kubeconfig=Path(state.kubeconfig),
            webhook_host="127.0.0.1",
            bins=controlplane.binaries(),
            state_dir=state_dir,
        )
    finally:
        controlplane.down(state_dir, remove=False)


@pytest.fixture(scope="module")
def kubectl(cluster: Cluster) -> Kubectl:
    """kubectl bound to this module's control plane."""
    return Kubectl(cluster)


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> None:
    """The CRDs, applied and established in this module's control plane."""
    kubectl("apply", "-f", str(REPO / "crds"))

    def established() -> bool:
        names = ("databasequotas.dbquota.io", "databaseclaims.dbquota.io")
        crds = [kubectl.get_json("crd", name) for name in names]
        return all(
            any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
            for crd in crds
            for conditions in [crd.get("status", {}).get("conditions") or []]
        )

    wait_for(established, what="the CRDs to be established")


@pytest.fixture(scope="module")
def deployment(
    image: Image,
    cluster: Cluster,
    kubectl: Kubectl,
    crds: None,
    billing: Simulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    suffix = uuid.uuid4().hex[:6]
    release, tenant = f"img{suffix}", f"img-{suffix}"
    system = f"{tenant}-system"
    work = tmp_path_factory.mktemp("image-run")
    manifests = parse(
        run_helm(
            cluster.bins.helm,
            "template", release, str(CHART), "-n", system, *KUBE_VERSION,
            values={
                "replicaCount": 1,
                "watchNamespace": tenant,
                "billing": {"url": billing.url, "syncInterval": 1},
                "extraArgs": ["--resync-interval=1", "--reservation-grace=5"],
            },
        )
    )  # fmt: skip
    fullname = manifests.workload()["metadata"]["name"]
    pod = manifests.workload()["spec"]["template"]["spec"]
    deployment = Deployment(
        image=image,
        container=f"dbquota-e2e-{suffix}",
        hostname=f"{fullname}-{suffix}",  # a pod's hostname is its name
        tenant=tenant,
        system=system,
        fullname=fullname,
        webhook_port=free_port(),
        metrics_port=free_port(),
        grace=int(pod["terminationGracePeriodSeconds"]),
    )
    try:
        for ns in (system, tenant):
            kubectl("create", "namespace", ns)
        kubectl.apply([d for d in manifests.docs if d["kind"] in RBAC_KINDS])
        account = pod["serviceAccountName"]
        token = kubectl("create", "token", account, "-n", system, "--duration=2h").stdout.strip()
        server, api_ca = cluster_endpoint(cluster)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(api_ca).decode(),
                    },
                }
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": account}}],
            "current-context": "local",
        }
        group = pod["securityContext"].get("fsGroup")
        access = secret_folder(
            work / "kubeconfig", {"kubeconfig": json.dumps(kubeconfig).encode()}, group=group
        )
        host = cluster.webhook_host
        ca = certs.new_ca(common_name=f"{fullname}-e2e-ca")
        leaf = certs.issue(ca=ca, common_name=host, hosts=(host, "127.0.0.1"), server=True)
        cert_dir = secret_folder(
            work / "webhook-certs",
            {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem},
            group=group,
        )
        # The chart's webhook configuration, calling the container instead of a Service.
        vwc = manifests.one("ValidatingWebhookConfiguration")
        for webhook in vwc["webhooks"]:  # the claims', and their status's
            assert webhook["namespaceSelector"] == {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [tenant]}
                ]
            }
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {
                "url": f"https://{host}:{deployment.webhook_port}{path}",
                "caBundle": base64.b64encode(ca.cert_pem).decode(),
            }
        kubectl.apply(vwc)

        argv = [
            "run",
            "--detach",
            f"--name={deployment.container}",
            f"--hostname={deployment.hostname}",
            "--network=host",
            "--pull=never",
            *run_flags(manifests, secrets={"webhook-certs": cert_dir}, scratch=work / "volumes"),
            f"--volume={access}:{KUBECONFIG_DIR}:ro",
            f"--env=KUBECONFIG={KUBECONFIG_DIR}/kubeconfig",
            image.tag,
            *container_args(
                manifests,
                webhook_port=deployment.webhook_port,
                metrics_port=deployment.metrics_port,
            ),
            f"--webhook-listen={host}",
        ]
        image.podman(*argv)

        def ready() -> bool:
            if not deployment.state()["Running"]:
                raise AssertionError(f"the container exited: {deployment.state()['ExitCode']}")
            return deployment.probe("/readyz") == 200

        try:
            wait_for(ready, timeout=120, what="the container to be ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ncontainer log:\n{deployment.logs()}") from None
        yield deployment
    finally:
        image.podman("rm", "--force", "--time=0", deployment.container, check=False)
        kubectl("delete", "validatingwebhookconfiguration", fullname, check=False)
        kubectl("delete", "clusterrolebinding,clusterrole", fullname, check=False)
        kubectl("delete", "dbc,dbq", "--all", "-n", tenant, "--wait=false", check=False)
        kubectl("delete", "namespace", tenant, system, "--wait=false", check=False)


def test_the_image_runs_as_the_charts_non_root_user_with_the_dbquota_entrypoint(
    deployment: Deployment,
) -> None:
    podman = deployment.image.podman
    config = json.loads(podman("image", "inspect", deployment.image.tag).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["dbquota", "run"]
    assert set(config["ExposedPorts"]) == {"9443/tcp", "8080/tcp"}
    pid = deployment.state()["Pid"]
    proc = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    assert proc["NSpid"].split()[-1] == "1"  # the operator is PID 1: SIGTERM reaches it
    assert "dbquota" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert proc["Uid"].split() == ["65532"] * 4
    assert proc["Gid"].split() == ["65532"] * 4
    assert int(proc["CapEff"], 16) == 0
    assert int(proc["CapBnd"], 16) == 0
    assert proc["NoNewPrivs"].strip() == "1"
    assert proc["Seccomp"].strip() == "2"  # filtered
    root = [ln.split() for ln in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
    (root_options,) = [fields[5] for fields in root if fields[4] == "/"]
    assert "ro" in root_options.split(",")
    assert deployment.probe("/healthz") == 200


@pytest.fixture(scope="module")
def priced(deployment: Deployment, kubectl: Kubectl, billing: Simulator) -> tuple[float, float]:
    """A quota with room for one claim in the container's namespace: (claim cost, budget)."""
    cost = unit_cost(billing)
    budget = round(cost * 1.5, 2)
    live_quota(kubectl, deployment.tenant, "q", monthlyBudget=budget)
    return cost, budget


def decisions(deployment: Deployment, outcome: str) -> float:
    return scraping.total(
        deployment.metrics(), "dbquota_admission_decisions_total", outcome=outcome, dry_run="false"
    )


def test_a_claim_within_budget_is_admitted_and_gets_its_price(
    deployment: Deployment, kubectl: Kubectl, priced: tuple[float, float]
) -> None:
    cost, _ = priced
    created = kubectl.apply(claim(deployment.tenant, name="fits"))
    assert "created" in created.stdout
    got = claim_status(kubectl, deployment.tenant, "fits")
    assert got["pricing"] == "Live"
    assert got["estimatedMonthlyCost"] == pytest.approx(cost, abs=0.01)
    # The apiserver names no webhook when it admits: the container's own count says that
    # the container decided.
    assert decisions(deployment, "admitted") >= 1


def test_a_claim_over_budget_is_denied_with_the_budget_message(
    deployment: Deployment, kubectl: Kubectl, priced: tuple[float, float]
) -> None:
    _, budget = priced
    refused = kubectl.apply(claim(deployment.tenant, name="too-big", replicas=3), check=False)
    assert refused.returncode != 0
    assert "denied the request" in refused.stderr
    assert "denied by DatabaseQuota q: projected " in refused.stderr
    assert f" exceeds budget {budget:,.2f} by " in refused.stderr
    assert kubectl("get", "dbc", "too-big", "-n", deployment.tenant, check=False).returncode
    wait_for(lambda: decisions(deployment, "denied") >= 1, what="the container's denial count")


def test_the_container_leads_and_reconciles_the_quota(
    deployment: Deployment, kubectl: Kubectl, priced: tuple[float, float]
) -> None:
    cost, budget = priced
    holder = lease_holder(kubectl, deployment.system, f"{deployment.fullname}-leader")
    assert holder.startswith(f"{deployment.hostname}-1-")  # host name, PID 1, nonce
    assert [
        h.startswith(deployment.hostname) for h in replica_leases(kubectl, deployment.system)
    ] == [True]

    def reconciled() -> dict[str, Any]:
        got = status(kubectl, deployment.tenant, "q")
        spend = got.get("spend", {})
        counted = spend.get("reserved", 0) + spend.get("observed", 0)
        return got if counted == pytest.approx(cost, abs=0.01) else {}

    got = wait_for(reconciled, what="the quota to count the admitted claim")
    conditions = {c["type"]: c["status"] for c in got["conditions"]}
    assert conditions["Ready"] == "True"
    assert conditions["BillingAvailable"] == "True"
    assert conditions["BudgetExceeded"] == "False"
    assert got["spend"]["remaining"] == pytest.approx(budget - cost, abs=0.01)
    labels = {"namespace": deployment.tenant, "quota": "q"}
    wait_for(
        lambda: scraping.total(deployment.metrics(), "dbquota_quota_budget", **labels) == budget,
        what="the quota's budget on the container's /metrics",
    )


def test_sigterm_stops_it_cleanly_within_the_grace_period(
    deployment: Deployment, kubectl: Kubectl
) -> None:
    podman = deployment.image.podman
    # podman stop sends SIGTERM, and SIGKILL only after --time seconds: exit code 0 means
    # the operator ended by itself within the chart's grace period.
    podman(
        "stop", f"--time={deployment.grace}", deployment.container, timeout=deployment.grace + 60
    )
    state = deployment.state()
    logs = deployment.logs()
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0, logs
    assert not state["OOMKilled"]
    assert "Traceback" not in logs
    assert " ERROR " not in logs, logs
    assert lease_holder(kubectl, deployment.system, f"{deployment.fullname}-leader") == ""
    assert replica_leases(kubectl, deployment.system) == []
