"""Start and stop what the e2e suite, ``make demo`` and the benchmarks drive, in one place.

Every caller (``e2e/conftest.py``'s fixtures, ``e2e/demo.py``, ``bench/*.py``) goes through
these public functions; nothing else starts a control plane, a simulator or an operator.

- :func:`free_port`: a free loopback port (:func:`e2e.controlplane.free_port`).
- :class:`Cluster`, :func:`start_cluster`, :func:`stop_cluster`: a local etcd +
  kube-apiserver started by :mod:`e2e.controlplane` in a folder (binaries from
  ``KUBEBUILDER_ASSETS`` or the version-keyed cache), or, with
  ``DBQUOTA_E2E_USE_EXISTING=1`` and ``KUBECONFIG`` set, the cluster that names (then
  ``DBQUOTA_E2E_WEBHOOK_HOST`` is an address of this machine its apiserver can reach).
  :meth:`Cluster.ssl_context` and :attr:`Cluster.server` are for clients that talk HTTPS to
  the apiserver themselves (the benchmarks), with the kubeconfig's credentials.
- :class:`Kubectl`: the real kubectl bound to a cluster (:class:`KubectlFailed` when it
  fails); :func:`apply_crds` applies ``crds/`` and waits until they are served.
- :func:`start_billing`: the billing simulator process (:func:`tests.simulating.launch`)
  with its log in a file.
- :class:`Operator`, :func:`spawn_operator`: one ``dbquota run`` child process with its own
  work folder, webhook and metrics ports, certificate folder, cache file and log.
  :func:`start_operator` runs it with ``--dev-webhook`` and returns once the apiserver
  calls it (:func:`wait_registered`, the one place that knows how a dev registration
  shows); :func:`start_replica` runs one that registers nothing and serves a given
  certificate (behind someone else's webhook configuration), ready when ``/readyz`` says
  so; :func:`stop_operator` stops either (and deletes the dev registration).
- :class:`Proxy`, :func:`start_proxy`: an L4 proxy (:mod:`e2e.tcp_proxy`), round robin
  over replicas behind one webhook endpoint (:func:`proxy_webhook` registers it), or on a
  replica's road to the apiserver (:func:`kubeconfig_via`), where a test can cut it.
- :class:`Harness`: for scripts (the demo, the benchmarks): a context manager over a work
  folder that starts the above on request and tears them down in reverse order when it
  exits, also on Ctrl-C and SIGTERM (turned into ``KeyboardInterrupt`` while it is open);
  :meth:`Harness.scope` opens a nested one whose objects go when it closes (a benchmark
  phase's operators, while the control plane stays up).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

from dbquota.handlers.webhook_tls import ensure_dev_certificates
from e2e import controlplane, scraping
from e2e.waiting import wait_for, webhook_points_at
from tests import simulating

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
CRD_NAMES = ("crd/databasequotas.dbquota.io", "crd/databaseclaims.dbquota.io")

free_port = controlplane.free_port


class HarnessError(AssertionError):
    """Something the harness started did not come up, or a command it ran failed.

    An ``AssertionError``, so that pytest reports it as a failed check with its message;
    scripts catch it to say which step failed.
    """


class KubectlFailed(HarnessError):
    """kubectl exited non-zero; the message holds the command and its stderr."""


# ---------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class Cluster:
    """How to reach the cluster under test, and the processes behind it when they are ours."""

    kubeconfig: Path
    webhook_host: str
    bins: controlplane.Binaries
    state_dir: Path | None
    """The control plane's folder when this process started it; None for an existing one."""
    state: controlplane.State | None = None
    webhook_client_ca: Path | None = None
    """The CA of the certificate the apiserver presents to webhooks (None: it presents none)."""
    webhook_client: tuple[Path, Path] | None = None
    """That certificate and its key, for clients that call a webhook as the apiserver does."""

    def client_ca_flags(self) -> tuple[str, ...]:
        """``--webhook-client-ca`` for an operator this apiserver calls, when it presents a
        client certificate (the local control plane does), else nothing."""
        ca = self.webhook_client_ca
        return (f"--webhook-client-ca={ca}",) if ca else ()

    def env(self) -> dict[str, str]:
        """The environment for a child process talking to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    @property
    def server(self) -> str:
        """The apiserver's URL, from the kubeconfig's current context."""
        return str(_current(self.kubeconfig)[0]["server"])

    def ssl_context(self) -> ssl.SSLContext:
        """TLS for a client of the apiserver: the kubeconfig's CA and client certificate.

        Certificates given inline (``*-data``) and as files both work; a kubeconfig that
        authenticates otherwise (token, exec plugin) gets a clear error.
        """
        cluster, user = _current(self.kubeconfig)
        base = self.kubeconfig.parent
        if cluster.get("insecure-skip-tls-verify"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            ctx = ssl.create_default_context(cadata=ca)
        elif "certificate-authority" in cluster:
            ctx = ssl.create_default_context(cafile=str(base / cluster["certificate-authority"]))
        else:  # a publicly trusted apiserver certificate
            ctx = ssl.create_default_context()
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for key in ("client-certificate", "client-key"):
                if f"{key}-data" in user:
                    path = Path(tmp) / key
                    path.write_bytes(base64.b64decode(user[f"{key}-data"]))
                    paths.append(path)
                elif key in user:
                    paths.append(base / user[key])
                else:
                    raise HarnessError(
                        f"{self.kubeconfig}: the current user has no {key}; only client "
                        "certificates are supported for direct apiserver clients"
                    )
            ctx.load_cert_chain(str(paths[0]), str(paths[1]))
        return ctx


def _current(kubeconfig: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cluster, user) of the kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    )
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    return cluster, user


def start_cluster(state_dir: Path, *, reuse: bool = True) -> Cluster:
    """A control plane started in ``state_dir``, or (``reuse`` and
    ``DBQUOTA_E2E_USE_EXISTING=1`` with ``KUBECONFIG`` set) the existing cluster."""
    bins = controlplane.binaries()
    if reuse and os.environ.get("DBQUOTA_E2E_USE_EXISTING") == "1" and os.environ.get("KUBECONFIG"):
        return Cluster(
            kubeconfig=Path(os.environ["KUBECONFIG"]),
            webhook_host=os.environ.get("DBQUOTA_E2E_WEBHOOK_HOST", "127.0.0.1"),
            bins=bins,
            state_dir=None,
        )
    state = controlplane.up(state_dir)
    return Cluster(
        kubeconfig=Path(state.kubeconfig),
        webhook_host="127.0.0.1",
        bins=bins,
        state_dir=state_dir,
        state=state,
        webhook_client_ca=Path(state.webhook_client_ca),
        webhook_client=(Path(state.webhook_client_cert), Path(state.webhook_client_key)),
    )


def stop_cluster(cluster: Cluster) -> None:
    """Stop the apiserver and etcd if this process started them (their folder stays)."""
    if cluster.state_dir is not None:
        controlplane.down(cluster.state_dir, remove=False)


class Kubectl:
    """The real kubectl, bound to the cluster under test."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def __call__(
        self,
        *args: str,
        input_: str | None = None,
        check: bool = True,
        interleave: bool = False,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl args...``; raise :class:`KubectlFailed` with stderr when ``check``
        and it fails. ``interleave`` puts stderr into stdout, as a terminal shows them."""
        proc = subprocess.run(
            [str(self.cluster.bins.kubectl), *args],
            input=input_,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if interleave else subprocess.PIPE,
            text=True,
            env=self.cluster.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlFailed(f"kubectl {' '.join(args)} failed:\n{proc.stderr or proc.stdout}")
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

    def get_json(self, *args: str, missing_ok: bool = False) -> dict[str, Any]:
        """``kubectl get ... -o json`` parsed; ``{}`` when it fails and ``missing_ok``."""
        proc = self("get", *args, "-o", "json", check=not missing_ok)
        if proc.returncode != 0:
            return {}
        result: dict[str, Any] = json.loads(proc.stdout)
        return result


def apply_crds(kubectl: Kubectl) -> None:
    """Apply ``crds/`` and wait until the apiserver serves both kinds."""
    kubectl("apply", "-f", str(CRDS))
    # ``kubectl wait`` fails at once on a CRD whose status has no conditions yet (just
    # applied), instead of waiting: ask again until it says Established.
    wait_for(
        lambda: (
            kubectl(
                "wait", "--for=condition=Established", "--timeout=10s", *CRD_NAMES, check=False
            ).returncode
            == 0
        ),
        timeout=60,
        what="the CRDs to be Established",
        error=HarnessError,
    )


# ---------------------------------------------------------------------------- processes


def start_billing(
    log_path: Path, *flags: str, clusters: int = 50, seed: int = 11
) -> simulating.Simulator:
    """The billing simulator on a free port, its stderr in ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        return simulating.launch(*flags, log=log, clusters=clusters, seed=seed)


@dataclass
class Operator:
    """A running ``dbquota run`` child process and where its output goes."""

    proc: subprocess.Popen[bytes]
    log: Path
    webhook_port: int
    metrics_port: int
    cert_dir: Path
    configuration: str | None = None
    """The ValidatingWebhookConfiguration it registered (dev mode), deleted when stopped."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        """Everything the operator printed so far."""
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples (with ``labels``) on its ``/metrics`` now."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return scraping.total(scraping.samples(text), name, **labels)

    def ready(self) -> bool:
        """Whether its ``/readyz`` answers 200 (billing cache warm, webhook serving)."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def spawn_operator(
    cluster: Cluster, workdir: Path, *args: str, cert_dir: Path | None = None
) -> Operator:
    """``dbquota run`` in ``workdir`` on free webhook and metrics ports, certificates in
    ``cert_dir`` (default ``workdir/certs``), cache and log in ``workdir``; ``args`` are
    added to the command line. Returns at once."""
    webhook_port, metrics_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = cert_dir or workdir / "certs"
    log = workdir / "operator.log"
    argv = [
        sys.executable,
        "-m",
        "dbquota",
        "run",
        f"--webhook-port={webhook_port}",
        f"--webhook-cert-dir={cert_dir}",
        f"--metrics-port={metrics_port}",
        f"--cache-path={workdir / 'cache.sqlite3'}",
        *args,
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=cluster.env(), cwd=workdir
        )
    return Operator(
        proc=proc, log=log, webhook_port=webhook_port, metrics_port=metrics_port, cert_dir=cert_dir
    )


def wait_registered(
    kubectl: Kubectl, op: Operator, *, configuration: str, timeout: float = 60
) -> None:
    """Return once the webhook configuration ``configuration`` calls ``op``'s port.

    The one place that knows how a dev-mode registration shows: today kopf creates the
    configuration and patches its webhooks in a moment later (:func:`webhook_points_at`).
    """

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if op.proc.poll() is not None:
            raise HarnessError(f"operator exited with {op.proc.returncode}:\n{op.logs()}")
        vwc = kubectl.get_json("validatingwebhookconfiguration", configuration, missing_ok=True)
        if webhook_points_at(vwc, op.webhook_port):
            return
        time.sleep(0.3)
    raise HarnessError(f"operator did not register its webhook in {timeout:.0f}s:\n{op.logs()}")


def start_operator(
    cluster: Cluster,
    kubectl: Kubectl,
    workdir: Path,
    *,
    extra: tuple[str, ...] = (),
    configuration: str = "e2e.dbquota.io",
) -> Operator:
    """Start the operator with a dev webhook registered as ``configuration`` (requiring the
    apiserver's webhook client certificate when the cluster has one), and wait until the
    apiserver can call it. Stopped with :func:`stop_operator` (which deletes the
    registration when given a kubectl)."""
    op = spawn_operator(
        cluster,
        workdir,
        "--dev-webhook",
        f"--webhook-host={cluster.webhook_host}",
        f"--webhook-configuration={configuration}",
        *cluster.client_ca_flags(),
        *extra,
    )
    op.configuration = configuration
    try:
        wait_registered(kubectl, op, configuration=configuration)
    except BaseException:
        stop_operator(op, kubectl=kubectl)
        raise
    return op


def serving_certificate(cert_dir: Path, *, host: str = "127.0.0.1") -> Path:
    """A CA and a serving certificate for ``host`` in ``cert_dir`` (made once, then reused);
    returns the CA's path, for a caBundle or a client."""
    ca, _, _ = ensure_dev_certificates(cert_dir=cert_dir, host=host)
    return ca


def start_replica(
    cluster: Cluster,
    workdir: Path,
    *,
    cert_dir: Path | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 60,
) -> Operator:
    """A replica that registers nothing: it serves the webhook on 127.0.0.1 with the
    certificate in ``cert_dir`` (made there if missing; several replicas may share one, as
    pods share a Secret), and something else routes the apiserver to it. Returns once its
    ``/readyz`` answers 200."""
    cert_dir = cert_dir or workdir / "certs"
    serving_certificate(cert_dir)
    op = spawn_operator(cluster, workdir, "--webhook-listen=127.0.0.1", *extra, cert_dir=cert_dir)

    def ready() -> bool:
        if op.proc.poll() is not None:
            raise HarnessError(f"replica exited with {op.proc.returncode}:\n{op.logs()}")
        return op.ready()

    try:
        wait_for(ready, timeout=timeout, what="the replica's /readyz", error=HarnessError)
    except BaseException:
        stop_operator(op)
        raise
    return op


def as_apiserver(cluster: Cluster, op: Operator) -> ssl.SSLContext:
    """TLS as the apiserver calls ``op``'s webhook: trusting its CA and presenting the
    apiserver's webhook client certificate, when the cluster has one."""
    ctx = ssl.create_default_context(cafile=str(op.cert_dir / "ca.crt"))
    if cluster.webhook_client is not None:
        ctx.load_cert_chain(*cluster.webhook_client)
    return ctx


def stop_operator(op: Operator, *, kubectl: Kubectl | None = None) -> None:
    """SIGTERM, then SIGKILL after 15 s; with ``kubectl``, delete its dev registration."""
    simulating.stop(op.proc)
    if kubectl is not None and op.configuration:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kubectl("delete", kind, op.configuration, "--ignore-not-found", check=False)


# ---------------------------------------------------------------------------- network


@dataclass
class Proxy:
    """A running :mod:`e2e.tcp_proxy`: round robin over its backends, cut on request."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def _signal(self, sig: signal.Signals, said: str) -> None:
        seen = self.log.read_text().count(said)
        self.proc.send_signal(sig)
        wait_for(lambda: self.log.read_text().count(said) > seen, what=f"the proxy {said}")

    def cut(self) -> None:
        """From now on nothing passes, on old or new connections (a silent network)."""
        self._signal(signal.SIGUSR1, "cut")

    def heal(self) -> None:
        """Connections held during the cut are closed; new ones pass again."""
        self._signal(signal.SIGUSR2, "healed")


def start_proxy(workdir: Path, backends: list[int], *, name: str = "proxy") -> Proxy:
    """:mod:`e2e.tcp_proxy` on a free port in front of ``127.0.0.1:<backends>``, its log in
    ``workdir/<name>.log``; returns once it listens. Stop it with :func:`simulating.stop`."""
    port = free_port()
    argv = [sys.executable, "-m", "e2e.tcp_proxy", f"--port={port}"]
    argv += [f"--backend=127.0.0.1:{p}" for p in backends]
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def listening() -> bool:
        if proc.poll() is not None:
            raise HarnessError(f"the proxy exited with {proc.returncode}: {log.read_text()}")
        return f"listening on 127.0.0.1:{port}" in log.read_text()

    wait_for(listening, timeout=20, what="the proxy to listen", error=HarnessError)
    return Proxy(proc=proc, port=port, log=log)


def proxy_webhook(
    name: str, *, port: int, ca: Path, namespaces: list[str] | None = None
) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration ``name`` as kopf writes dbquota's own (same rules,
    failure policy and timeout) but calling ``https://127.0.0.1:<port>`` (a proxy in front
    of replicas that share the certificate whose CA is ``ca``); with ``namespaces``, only
    for claims in those namespaces."""
    webhook: dict[str, Any] = {
        "name": f"validate-claims.{name}",
        "sideEffects": "NoneOnDryRun",
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": 30,
        "admissionReviewVersions": ["v1"],
        "rules": [
            {
                "apiGroups": ["dbquota.io"],
                "apiVersions": ["v1alpha1"],
                "resources": ["databaseclaims"],
                "operations": ["CREATE", "UPDATE"],
                "scope": "*",
            }
        ],
        "clientConfig": {
            "url": f"https://127.0.0.1:{port}/validate-claims",
            "caBundle": base64.b64encode(ca.read_bytes()).decode(),
        },
    }
    if namespaces is not None:
        webhook["namespaceSelector"] = {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
            ]
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


def kubeconfig_via(cluster: Cluster, port: int, path: Path) -> Path:
    """A copy of the cluster's kubeconfig at ``path`` whose server is
    ``https://127.0.0.1:<port>`` (a proxy to the apiserver; TLS passes through it).
    Relative certificate paths are made absolute."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    base = cluster.kubeconfig.parent
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in config[section]:
            for field_ in ("certificate-authority", "client-certificate", "client-key"):
                if field_ in entry[key]:
                    entry[key][field_] = str(base / entry[key][field_])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------------------- scripts


def _interrupt(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt


@dataclass
class Harness:
    """What a script started, torn down in reverse order when the ``with`` block ends.

    ``with Harness(workdir) as h:`` then :meth:`cluster`, :meth:`crds`, :meth:`billing`,
    :meth:`operator`, :meth:`replica` (each registers its own tear-down), :meth:`defer`
    for anything else. While the outermost one is open, SIGTERM raises
    ``KeyboardInterrupt`` like Ctrl-C, so the tear-down runs either way. :meth:`keep`
    leaves everything running instead.
    """

    workdir: Path
    _cluster: Cluster | None = None
    _kubectl: Kubectl | None = None
    simulator: simulating.Simulator | None = None
    operators: list[Operator] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _nested: bool = False
    _previous_handler: Any = None

    def __enter__(self) -> Harness:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._nested:
            self._previous_handler = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._stack.close()
        finally:
            if not self._nested:
                signal.signal(signal.SIGTERM, self._previous_handler)

    def defer(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``callback(*args, **kwargs)`` at tear-down (before what was started earlier)."""
        self._stack.callback(callback, *args, **kwargs)

    def keep(self) -> None:
        """Leave everything running: the tear-down is forgotten."""
        self._stack.pop_all()

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[Harness]:
        """A nested harness in ``workdir/name`` sharing this one's cluster and simulator;
        what it starts is torn down when its block ends."""
        inner = Harness(
            workdir=self.workdir / name,
            _cluster=self._cluster,
            _kubectl=self._kubectl,
            simulator=self.simulator,
            _nested=True,
        )
        with inner:
            yield inner

    @property
    def kubectl(self) -> Kubectl:
        if self._kubectl is None:
            raise HarnessError("no cluster yet: call Harness.cluster() first")
        return self._kubectl

    @property
    def current_cluster(self) -> Cluster:
        if self._cluster is None:
            raise HarnessError("no cluster yet: call Harness.cluster() first")
        return self._cluster

    def cluster(self, *, reuse: bool = True) -> Cluster:
        """Start (or, with ``reuse``, maybe reuse: see :func:`start_cluster`) the control
        plane."""
        cluster = start_cluster(self.workdir / "controlplane", reuse=reuse)
        self.defer(stop_cluster, cluster)
        self._cluster, self._kubectl = cluster, Kubectl(cluster)
        return cluster

    def crds(self) -> None:
        apply_crds(self.kubectl)

    def billing(
        self, *flags: str, clusters: int = 50, seed: int = 11, name: str = "billing-sim"
    ) -> simulating.Simulator:
        """The billing simulator, logging to ``workdir/<name>.log``."""
        sim = start_billing(self.workdir / f"{name}.log", *flags, clusters=clusters, seed=seed)
        self.defer(simulating.stop, sim.process)
        self.simulator = sim
        return sim

    def operator(
        self,
        name: str = "operator",
        *,
        extra: tuple[str, ...] = (),
        configuration: str = "dbquota.io",
    ) -> Operator:
        """:func:`start_operator` in ``workdir/name``; stopped (and unregistered) at
        tear-down."""
        op = start_operator(
            self.current_cluster,
            self.kubectl,
            self.workdir / name,
            extra=extra,
            configuration=configuration,
        )
        self.defer(stop_operator, op, kubectl=self.kubectl)
        self.operators.append(op)
        return op

    def replica(
        self, name: str, *, cert_dir: Path | None = None, extra: tuple[str, ...] = ()
    ) -> Operator:
        """:func:`start_replica` in ``workdir/name``; stopped at tear-down."""
        op = start_replica(
            self.current_cluster, self.workdir / name, cert_dir=cert_dir, extra=extra
        )
        self.defer(stop_operator, op)
        self.operators.append(op)
        return op

    def children(self) -> dict[str, subprocess.Popen[Any]]:
        """The processes this harness started that may die under it (simulator, operators)."""
        found: dict[str, subprocess.Popen[Any]] = {}
        if self.simulator is not None:
            found["billing simulator"] = self.simulator.process
        for op in self.operators:
            found[f"operator ({op.log})"] = op.proc
        return found
