"""Render the chart with the real ``helm template`` and hand the tests parsed manifests.

``render(values)`` runs ``helm template`` with ``values`` (a dict, passed as a values file)
and returns a :class:`Manifests`; ``MATRIX`` is the set of value combinations that every
structural test runs over: defaults, cert-manager (own CA and an existing issuer),
ServiceMonitor, persistent cache, 1 and 3 replicas, one watched namespace, no
NetworkPolicy, a webhook client CA, a billing token Secret, the Grafana dashboard and
PrometheusRule, and everything at once.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import controlplane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "dbquota"
RELEASE = "dbq"
NAMESPACE = "dbquota-system"
KUBE_VERSION = ("--kube-version", controlplane.K8S_VERSION)
"""What ``helm template`` checks the chart's ``kubeVersion`` against: with no cluster to ask it
assumes 1.20, which the chart refuses; the control plane the e2e tests run."""

Doc = dict[str, Any]

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {
        "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
    },
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "persistent-cache": {"cache": {"persistence": {"enabled": True, "size": "5Gi"}}},
    "one-replica": {"replicaCount": 1},
    "three-replicas": {"replicaCount": 3},
    "one-namespace": {"watchNamespace": "team-a"},
    "no-network-policy": {"networkPolicy": {"enabled": False}},
    "client-ca": {
        "webhook": {
            "clientCA": {"configMapName": "webhook-client-ca", "allowedNames": ["kube-apiserver"]}
        }
    },
    "billing-token": {
        "billing": {"url": "https://billing.finops.svc:8443", "tokenSecret": {"name": "billing"}}
    },
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
            "prometheusRule": {"enabled": True},
        }
    },
    "everything": {
        "replicaCount": 3,
        "certManager": {"enabled": True},
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "FinOps"}},
            "prometheusRule": {"enabled": True, "runbookUrl": "https://git.example.com/r"},
        },
        "cache": {"persistence": {"enabled": True}},
        "networkPolicy": {
            "webhookCIDRs": ["10.20.0.0/16"],
            "webhookFrom": [{"namespaceSelector": {"matchLabels": {"team": "platform"}}}],
            "metricsFrom": [],
            "egress": [{"ports": [{"port": 53}]}],
        },
        "webhook": {"clientCA": {"secretName": "apiserver-ca", "key": "bundle.pem"}},
        "billing": {"url": "http://billing:8089", "tokenSecret": {"name": "b", "key": "t"}},
        "watchNamespace": "team-b",
        "noQuotaPolicy": "Deny",
        "logFormat": "json",
        "extraArgs": ["--max-concurrency=4"],
    },
}


@dataclass(frozen=True)
class Manifests:
    """The objects one ``helm template`` printed, in order."""

    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        """Every object of ``kind``."""
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Doc:
        """The only object of ``kind`` (and ``name``, when given); fails otherwise."""
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def workload(self) -> Doc:
        """The Deployment or, with a persistent cache, the StatefulSet."""
        (found,) = [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet")]
        return found

    def container(self) -> Doc:
        """The operator container."""
        (container,) = self.workload()["spec"]["template"]["spec"]["containers"]
        result: Doc = container
        return result


@pytest.fixture(scope="session")
def helm() -> Path:
    return controlplane.binaries().helm


@pytest.fixture(scope="session")
def promtool() -> Path:
    return controlplane.binaries().promtool


def run_helm(helm: Path, *args: str, values: dict[str, Any] | None = None) -> str:
    """``helm args...`` with ``values`` as a values file on stdin; raise with stderr on failure."""
    argv = [str(helm), *args]
    if values is not None:
        argv += ["-f", "-"]
    proc = subprocess.run(
        argv,
        input=json.dumps(values or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise HelmError(proc.stderr)
    return proc.stdout


class HelmError(AssertionError):
    """helm exited non-zero; the message is its stderr."""


def parse(text: str) -> Manifests:
    """Parse a multi-document YAML stream, dropping empty documents."""
    return Manifests([d for d in yaml.safe_load_all(text) if d])


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Manifests]:
    cache: dict[str, Manifests] = {}

    def render_(values: dict[str, Any] | None = None, *, fresh: bool = False) -> Manifests:
        key = json.dumps(values or {}, sort_keys=True)
        if fresh or key not in cache:
            text = run_helm(
                helm,
                "template",
                RELEASE,
                str(CHART),
                "-n",
                NAMESPACE,
                *KUBE_VERSION,
                values=values or {},
            )
            cache[key] = parse(text)
        return cache[key]

    return render_


@pytest.fixture(params=list(MATRIX), scope="session")
def variant(request: pytest.FixtureRequest, render: Callable[..., Manifests]) -> Manifests:
    """The chart rendered with each entry of ``MATRIX`` in turn."""
    return render(MATRIX[request.param])


def walk(node: Any) -> Iterator[Any]:
    """Every node of a nested dict/list structure, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)
