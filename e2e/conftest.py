"""Fixtures of the end-to-end suite: a real control plane, real kubectl, the real operator.

- ``cluster`` (session): a local etcd + kube-apiserver started by :mod:`e2e.controlplane`,
  or, with ``DBQUOTA_E2E_USE_EXISTING=1`` and ``KUBECONFIG`` set, the cluster that names
  (then ``DBQUOTA_E2E_WEBHOOK_HOST`` must be an address of this machine that the cluster's
  apiserver can reach, e.g. the Docker bridge IP for kind).
- ``kubectl``: runs the real kubectl against it; ``crds`` applies ``crds/`` once.
- ``namespace``: a fresh namespace per test.
- ``billing`` (session): the real billing simulator process (``dbquota billing-sim``).
- ``operator`` (session): ``dbquota run --dev-webhook`` as a child process, syncing from
  ``billing`` every second (``FAST`` flags), so outages show within seconds. On the local
  control plane it requires the apiserver's webhook client certificate
  (``--webhook-client-ca``); a test that calls it directly presents
  ``Cluster.webhook_client`` as the apiserver does (:func:`as_apiserver`).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e import controlplane
from e2e.waiting import webhook_points_at
from tests.simulating import FAST_SYNC, Simulator, launch
from tests.simulating import stop as stop_process

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under e2e/ is marked ``e2e``."""
    for item in items:
        if Path(str(item.fspath)).is_relative_to(REPO / "e2e"):
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class Cluster:
    """How to reach the cluster under test."""

    kubeconfig: Path
    webhook_host: str
    bins: controlplane.Binaries
    state_dir: Path | None
    webhook_client_ca: Path | None = None
    """The CA of the certificate the apiserver presents to webhooks (None: it presents none)."""
    webhook_client: tuple[Path, Path] | None = None
    """That certificate and its key, for tests that call a webhook as the apiserver does."""

    def env(self) -> dict[str, str]:
        """The environment for a child process talking to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bins = controlplane.binaries()
    if os.environ.get("DBQUOTA_E2E_USE_EXISTING") == "1" and os.environ.get("KUBECONFIG"):
        yield Cluster(
            kubeconfig=Path(os.environ["KUBECONFIG"]),
            webhook_host=os.environ.get("DBQUOTA_E2E_WEBHOOK_HOST", "127.0.0.1"),
            bins=bins,
            state_dir=None,
        )
        return
    state_dir = tmp_path_factory.mktemp("controlplane")
    state = controlplane.up(state_dir)
    try:
        yield Cluster(
            kubeconfig=Path(state.kubeconfig),
            webhook_host="127.0.0.1",
            bins=bins,
            state_dir=state_dir,
            webhook_client_ca=Path(state.webhook_client_ca),
            webhook_client=(Path(state.webhook_client_cert), Path(state.webhook_client_key)),
        )
    finally:
        controlplane.down(state_dir, remove=False)


class Kubectl:
    """The real kubectl, bound to the cluster under test."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def __call__(
        self, *args: str, input_: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl args...``; raise with stderr when ``check`` and it fails."""
        proc = subprocess.run(
            [str(self.cluster.bins.kubectl), *args],
            input=input_,
            capture_output=True,
            text=True,
            env=self.cluster.env(),
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def apply(
        self,
        manifest: str | dict[str, Any] | list[dict[str, Any]],
        *,
        check: bool = True,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of a YAML string, one object, or several in one call (a
        ``List``: kubectl creates them one after the other within milliseconds)."""
        if isinstance(manifest, list):
            manifest = {"apiVersion": "v1", "kind": "List", "items": manifest}
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", *extra, input_=text, check=check)

    def get_json(self, *args: str) -> dict[str, Any]:
        """``kubectl get ... -o json`` parsed."""
        result: dict[str, Any] = json.loads(self("get", *args, "-o", "json").stdout)
        return result


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/databasequotas.dbquota.io",
        "crd/databaseclaims.dbquota.io",
    )


@pytest.fixture
def namespace(kubectl: Kubectl, crds: None) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    # A bare apiserver has no namespace controller: the namespace stays Terminating, which
    # is harmless; its objects are deleted here so that the operator lets go of them.
    kubectl(
        "delete", "databaseclaims,databasequotas", "--all", "-n", name, "--wait=false", check=False
    )
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def free_port() -> int:
    """A free TCP port on loopback."""
    return controlplane._free_port()


@dataclass
class OperatorProcess:
    """A running ``dbquota run`` child process and where its output goes."""

    proc: subprocess.Popen[bytes]
    log: Path
    webhook_port: int
    metrics_port: int

    def logs(self) -> str:
        """Everything the operator printed so far."""
        return self.log.read_text(errors="replace")


FAST = (*FAST_SYNC, "--reservation-grace=5")
"""Settings that make an e2e run see outages, recoveries and released holds within seconds."""

CLAIM_CLUSTERS = ("team-a/orders-db", "team-a/billed-db")
"""Extra cluster ids the simulator bills, for claims whose cost should show in billing."""


@pytest.fixture(scope="session")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    log_path = tmp_path_factory.mktemp("billing") / "simulator.log"
    flags = [f"--cluster-id={c}" for c in CLAIM_CLUSTERS]
    with log_path.open("w") as log:
        sim = launch(*flags, "--price-period=3600", log=log, clusters=50, seed=11)
    yield sim
    stop_process(sim.process)


def spawn_operator(cluster: Cluster, workdir: Path, *args: str) -> OperatorProcess:
    """``dbquota run`` in ``workdir`` on free webhook and metrics ports, certificates in
    ``workdir/certs``, cache in ``workdir``; ``args`` are added to the command line."""
    webhook_port, metrics_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "operator.log"
    argv = [
        sys.executable,
        "-m",
        "dbquota",
        "run",
        f"--webhook-port={webhook_port}",
        f"--webhook-cert-dir={workdir / 'certs'}",
        f"--metrics-port={metrics_port}",
        f"--cache-path={workdir / 'cache.sqlite3'}",
        *args,
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=cluster.env(), cwd=workdir
        )
    return OperatorProcess(proc=proc, log=log, webhook_port=webhook_port, metrics_port=metrics_port)


def start_operator(
    cluster: Cluster,
    kubectl: Kubectl,
    workdir: Path,
    *,
    extra: tuple[str, ...] = (),
    configuration: str = "e2e.dbquota.io",
    wait: Callable[[], bool] | None = None,
) -> OperatorProcess:
    """Start the operator with a dev webhook and wait until the apiserver can call it."""
    op = spawn_operator(
        cluster,
        workdir,
        "--dev-webhook",
        f"--webhook-host={cluster.webhook_host}",
        f"--webhook-configuration={configuration}",
        *extra,
    )
    proc, webhook_port = op.proc, op.webhook_port
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"operator exited with {proc.returncode}:\n{op.logs()}")
        vwc = kubectl(
            "get", "validatingwebhookconfiguration", configuration, "-o", "json", check=False
        )
        if (
            vwc.returncode == 0
            and webhook_points_at(json.loads(vwc.stdout), webhook_port)
            and (wait is None or wait())
        ):
            return op
        time.sleep(0.3)
    stop_operator(op)
    raise AssertionError(f"operator did not register its webhook in 60s:\n{op.logs()}")


def as_apiserver(cluster: Cluster, op: OperatorProcess) -> ssl.SSLContext:
    """TLS as the apiserver calls ``op``'s webhook: trusting its dev CA and presenting the
    apiserver's webhook client certificate, when the cluster has one."""
    ctx = ssl.create_default_context(cafile=str(op.log.parent / "certs" / "ca.crt"))
    if cluster.webhook_client is not None:
        ctx.load_cert_chain(*cluster.webhook_client)
    return ctx


def stop_operator(op: OperatorProcess) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    stop_process(op.proc)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster,
    kubectl: Kubectl,
    crds: None,
    billing: Simulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    client_ca = cluster.webhook_client_ca
    op = start_operator(
        cluster,
        kubectl,
        tmp_path_factory.mktemp("operator"),
        extra=(
            f"--billing-url={billing.url}",
            *FAST,
            *([f"--webhook-client-ca={client_ca}"] if client_ca else []),
        ),
    )
    yield op
    stop_operator(op)
    kubectl("delete", "validatingwebhookconfiguration", "e2e.dbquota.io", check=False)
