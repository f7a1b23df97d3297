"""A real local Kubernetes control plane: etcd and kube-apiserver, run as envtest runs them.

Binaries come from ``KUBEBUILDER_ASSETS`` when it holds ``etcd``, ``kube-apiserver`` and
``kubectl``; otherwise from the version-keyed cache that ``e2e/controlplane/build.sh``
fills from the Go modules (built on first use), as do ``helm`` and ``promtool`` (which the
chart tests use). :func:`up` starts both processes in their
own session on free loopback ports, with certificates made by :mod:`dbquota.kits.certs`
(one CA signs the apiserver's serving certificate and an admin client certificate in
``system:masters``), waits for ``/readyz`` and writes ``<dir>/kubeconfig``. :func:`down`
stops them and removes the directory.

The apiserver authenticates itself to admission webhooks, as docs/security.md describes
for a real cluster: a second CA (``pki/webhook-client-ca.crt``, in
:attr:`State.webhook_client_ca` for the operator's ``--webhook-client-ca``) signs a client
certificate (``pki/webhook-client.crt``), which ``pki/webhook-kubeconfig`` gives to every
webhook host (user ``*``) and which ``admission.json`` (``--admission-control-config-file``)
hands to the ValidatingAdmissionWebhook and MutatingAdmissionWebhook plugins.

:func:`upstream_crds` gives the CRDs of the database operators dbquota prices
(CloudNativePG, Zalando, Crossplane's provider-aws), which ``build.sh crds`` copies out of
their Go modules at the pinned versions of :data:`UPSTREAM_CRDS`.

Called by ``python -m e2e.controlplane``, by the e2e pytest fixture (``e2e/conftest.py``),
by ``make demo`` and by the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dbquota.kits import certs

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "e2e" / "controlplane" / "build.sh"
K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"
PROMETHEUS_VERSION = "v3.16.0"  # promtool, for the chart's alert rules (tests/chart)
STATE_FILE = "controlplane.json"


@dataclass(frozen=True)
class UpstreamCrd:
    """One upstream CRD: the Go module and version it comes from, and its file there."""

    name: str
    """The cache folder's name: ``crds/<name>-<version>/``."""
    module: str
    version: str
    file: str
    """Its path inside the module."""


UPSTREAM_CRDS: dict[str, UpstreamCrd] = {
    "Cluster.postgresql.cnpg.io": UpstreamCrd(
        name="cloudnative-pg",
        module="github.com/cloudnative-pg/cloudnative-pg",
        version="v1.27.1",
        file="config/crd/bases/postgresql.cnpg.io_clusters.yaml",
    ),
    "postgresql.acid.zalan.do": UpstreamCrd(
        name="postgres-operator",
        module="github.com/zalando/postgres-operator",
        version="v1.14.0",
        file="manifests/postgresql.crd.yaml",
    ),
    "Instance.rds.aws.upbound.io": UpstreamCrd(
        name="provider-aws",
        module="github.com/upbound/provider-aws",
        version="v1.14.0",
        file="package/crds/rds.aws.upbound.io_instances.yaml",
    ),
}
"""Keyed by ``<Kind>.<group>`` (a Kind alone is ambiguous: provider-aws has an RDS
``Cluster`` too). build.sh pins the same versions (``CNPG_VERSION`` …); the environment
passed to it here keeps them equal."""

_children: dict[int, subprocess.Popen[bytes]] = {}
"""Processes this interpreter started, kept so that :func:`down` reaps them (no zombies,
no ResourceWarning); a control plane started by another process is stopped by pid."""


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or stopped; the message says where."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the executables the e2e suite drives."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    helm: Path
    promtool: Path


def cache_dir() -> Path:
    """``$DBQUOTA_CACHE`` or ``~/.cache/dbquota``: built binaries live here, keyed by version."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dbquota"
    return Path(os.environ.get("DBQUOTA_CACHE", default))


def binaries(*, build: bool = True) -> Binaries:
    """Find (and, if allowed, build) the binaries; ``KUBEBUILDER_ASSETS`` wins when complete."""
    bin_root = cache_dir() / "bin"
    found = Binaries(
        etcd=bin_root / f"etcd-{ETCD_VERSION}" / "etcd",
        kube_apiserver=bin_root / f"k8s-{K8S_VERSION}" / "kube-apiserver",
        kubectl=bin_root / f"k8s-{K8S_VERSION}" / "kubectl",
        helm=bin_root / f"helm-{HELM_VERSION}" / "helm",
        promtool=bin_root / f"promtool-{PROMETHEUS_VERSION}" / "promtool",
    )
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and all((Path(assets) / n).is_file() for n in ("etcd", "kube-apiserver", "kubectl")):
        found = Binaries(
            etcd=Path(assets) / "etcd",
            kube_apiserver=Path(assets) / "kube-apiserver",
            kubectl=Path(assets) / "kubectl",
            helm=found.helm,
            promtool=found.promtool,
        )
    missing = [p for p in asdict(found).values() if not Path(p).is_file()]
    if missing and build:
        env = {
            **os.environ,
            "K8S_VERSION": K8S_VERSION,
            "ETCD_VERSION": ETCD_VERSION,
            "HELM_VERSION": HELM_VERSION,
            "PROMETHEUS_VERSION": PROMETHEUS_VERSION,
        }
        result = subprocess.run([str(BUILD_SCRIPT), "all"], env=env, check=False)
        if result.returncode != 0:
            raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
        return binaries(build=False)
    if missing:
        raise ControlPlaneError(f"missing binaries: {', '.join(map(str, missing))}")
    return found


def upstream_crds(*, fetch: bool = True) -> dict[str, Path]:
    """``<Kind>.<group>`` -> the path of its CRD file in the cache, fetched when missing
    (``build.sh crds``: the Go module proxy, through the module cache) unless ``fetch`` is
    false, when a missing one is an error."""
    found = {
        kind: cache_dir() / "crds" / f"{crd.name}-{crd.version}" / Path(crd.file).name
        for kind, crd in UPSTREAM_CRDS.items()
    }
    missing = [path for path in found.values() if not path.is_file()]
    if missing and fetch:
        env = {
            **os.environ,
            "CNPG_VERSION": UPSTREAM_CRDS["Cluster.postgresql.cnpg.io"].version,
            "ZALANDO_VERSION": UPSTREAM_CRDS["postgresql.acid.zalan.do"].version,
            "PROVIDER_AWS_VERSION": UPSTREAM_CRDS["Instance.rds.aws.upbound.io"].version,
        }
        result = subprocess.run([str(BUILD_SCRIPT), "crds"], env=env, check=False)
        if result.returncode != 0:
            raise ControlPlaneError(
                f"{BUILD_SCRIPT} crds failed with exit code {result.returncode}"
            )
        return upstream_crds(fetch=False)
    if missing:
        raise ControlPlaneError(f"missing upstream CRDs: {', '.join(map(str, missing))}")
    return found


@dataclass(frozen=True)
class State:
    """What :func:`up` leaves in ``<dir>/controlplane.json`` for :func:`down` and for tests."""

    kubeconfig: str
    server: str
    etcd_pid: int
    apiserver_pid: int
    etcd_url: str
    webhook_client_ca: str = ""
    """PEM CA that signed the certificate the apiserver presents to webhooks."""
    webhook_client_cert: str = ""
    """That certificate (a test may present it to a webhook, as the apiserver does)..."""
    webhook_client_key: str = ""
    """...and its key."""
    etcd_argv: list[str] = field(default_factory=list)
    """How etcd was started (:func:`restart` starts it again the same way)."""
    apiserver_argv: list[str] = field(default_factory=list)
    """How kube-apiserver was started."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A free localhost port below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` comes from the same range as the source
    ports of outgoing connections, so between choosing it and the server binding it, any
    client (kubectl, an HTTP client) may take it: that flaked once as "bind: address
    already in use". Below that range only explicit binds compete.
    """
    top = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10_000, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded machine
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubeconfig(*, server: str, ca: bytes, client: certs.KeyPair, dir_: Path) -> Path:
    pki = dir_ / "pki"
    (pki / "admin.crt").write_bytes(client.cert_pem)
    (pki / "admin.key").write_bytes(client.key_pem)
    (pki / "admin.key").chmod(0o600)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "dbquota-local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            }
        ],
        "contexts": [
            {"name": "dbquota-local", "context": {"cluster": "dbquota-local", "user": "admin"}}
        ],
        "current-context": "dbquota-local",
    }
    path = dir_ / "kubeconfig"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML: kubectl and kopf read it
    path.chmod(0o600)
    return path


def _webhook_client(*, dir_: Path) -> Path:
    """The apiserver's identity towards admission webhooks; returns the AdmissionConfiguration.

    The kubeconfig's user ``*`` matches every webhook host (the apiserver tries
    ``<host>:<port>`` exactly, then ``*.<domain>`` suffixes, then ``*``), so whichever free
    port an operator listens on, the apiserver presents this certificate to it.
    """
    pki = dir_ / "pki"
    ca = certs.new_ca(common_name="dbquota-local-webhook-client-ca")
    (pki / "webhook-client-ca.crt").write_bytes(ca.cert_pem)
    client = certs.issue(ca=ca, common_name="kube-apiserver-webhook-client", client=True)
    client.write(cert_path=pki / "webhook-client.crt", key_path=pki / "webhook-client.key")
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [
            {
                "name": "*",
                "user": {
                    "client-certificate": str(pki / "webhook-client.crt"),
                    "client-key": str(pki / "webhook-client.key"),
                },
            }
        ],
    }
    (pki / "webhook-kubeconfig").write_text(json.dumps(kubeconfig, indent=2))
    plugin_config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(pki / "webhook-kubeconfig"),
    }
    admission = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": plugin, "configuration": plugin_config}
            for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
        ],
    }
    path = dir_ / "admission.json"
    path.write_text(json.dumps(admission, indent=2))
    return path


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives `up` returning; `down` signals it
        )
    _children[proc.pid] = proc
    return proc


def _wait_ready(
    *, server: str, dir_: Path, procs: dict[str, subprocess.Popen[bytes]], timeout: float
) -> None:
    pki = dir_ / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (dir_ / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{name} exited with {proc.returncode}; log tail:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise ControlPlaneError(f"kube-apiserver not ready after {timeout:.0f}s: {last}")


def up(dir_: Path, *, timeout: float = 90.0) -> State:
    """Start etcd and kube-apiserver with their state under ``dir_``; return when ready."""
    dir_ = dir_.resolve()
    if (dir_ / STATE_FILE).exists():
        raise ControlPlaneError(f"{dir_} already holds a control plane; run `down --dir {dir_}`")
    bins = binaries()
    pki = dir_ / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = certs.new_ca(common_name="dbquota-local-ca")
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    serving = certs.issue(
        ca=ca,
        common_name="kube-apiserver",
        server=True,
        hosts=("127.0.0.1", "localhost", "10.0.0.1", "kubernetes.default.svc"),
    )
    serving.write(cert_path=pki / "apiserver.crt", key_path=pki / "apiserver.key")
    admin = certs.issue(ca=ca, common_name="admin", organizations=("system:masters",), client=True)
    sa_key, sa_pub = certs.new_signing_key()
    (pki / "sa.key").write_bytes(sa_key)
    (pki / "sa.pub").write_bytes(sa_pub)
    admission = _webhook_client(dir_=dir_)

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    server = f"https://127.0.0.1:{api_port}"
    etcd_argv = [
        str(bins.etcd),
        "--name=default",
        f"--data-dir={dir_ / 'etcd'}",
        f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]
    etcd = _spawn(etcd_argv, dir_ / "etcd.log")
    apiserver_argv = [
        str(bins.kube_apiserver),
        f"--etcd-servers={etcd_url}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--secure-port={api_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        "--disable-admission-plugins=ServiceAccount",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={server}/",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--admission-control-config-file={admission}",
    ]
    apiserver = _spawn(apiserver_argv, dir_ / "kube-apiserver.log")
    kubeconfig = _kubeconfig(server=server, ca=ca.cert_pem, client=admin, dir_=dir_)
    state = State(
        kubeconfig=str(kubeconfig),
        server=server,
        etcd_pid=etcd.pid,
        apiserver_pid=apiserver.pid,
        etcd_url=etcd_url,
        webhook_client_ca=str(pki / "webhook-client-ca.crt"),
        webhook_client_cert=str(pki / "webhook-client.crt"),
        webhook_client_key=str(pki / "webhook-client.key"),
        etcd_argv=etcd_argv,
        apiserver_argv=apiserver_argv,
    )
    (dir_ / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    try:
        _wait_ready(
            server=server,
            dir_=dir_,
            procs={"etcd": etcd, "kube-apiserver": apiserver},
            timeout=timeout,
        )
    except BaseException:
        down(dir_, remove=False)
        raise
    return state


def restart(dir_: Path, component: str, *, down_for: float = 0.0, timeout: float = 90.0) -> State:
    """Stop ``component`` (``etcd`` or ``kube-apiserver``), wait ``down_for`` seconds, start it
    again as :func:`up` did (same ports, same data), and return once the apiserver is ready:
    what a chaos test needs to show enforcement survives a restart."""
    dir_ = dir_.resolve()
    state = read_state(dir_)
    if component == "etcd":
        pid, argv = state.etcd_pid, state.etcd_argv
    elif component == "kube-apiserver":
        pid, argv = state.apiserver_pid, state.apiserver_argv
    else:
        raise ControlPlaneError(f"no component {component!r}: etcd or kube-apiserver")
    _stop(pid, grace=10)
    time.sleep(down_for)
    proc = _spawn(argv, dir_ / f"{component}.log")
    if component == "etcd":
        state = replace(state, etcd_pid=proc.pid)
    else:
        state = replace(state, apiserver_pid=proc.pid)
    (dir_ / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    _wait_ready(server=state.server, dir_=dir_, procs={component: proc}, timeout=timeout)
    return state


def read_state(dir_: Path) -> State:
    """The state :func:`up` wrote, or a clear error when there is none."""
    path = dir_ / STATE_FILE
    if not path.exists():
        raise ControlPlaneError(f"no control plane state in {dir_} ({STATE_FILE} missing)")
    return State(**json.loads(path.read_text()))


def _stop(pid: int, *, grace: float) -> None:
    child = _children.pop(pid, None)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if child is not None:  # ours: wait on it, which also reaps it
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            child.wait()
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def down(dir_: Path, *, remove: bool = True) -> None:
    """Stop the apiserver, then etcd; remove ``dir_`` unless ``remove`` is false."""
    dir_ = dir_.resolve()
    state_path = dir_ / STATE_FILE
    if state_path.exists():
        state = read_state(dir_)
        _stop(state.apiserver_pid, grace=10)
        _stop(state.etcd_pid, grace=10)
        state_path.unlink()
    if remove and dir_.exists():
        shutil.rmtree(dir_)
