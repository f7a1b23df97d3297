"""The chart lints, renders for every variant of the matrix, and its parts fit together.

Checks: ``helm lint --strict`` for each variant; every object has a name within 63
characters and the release's labels; Services, the PodDisruptionBudget, the topology spread
constraints and the ServiceMonitor select the operator's pods (or its metrics Service,
honouring the exposed labels); replicas follow ``replicaCount``; probes hit /healthz and
/readyz on the port ``--metrics-port`` names; a persistent cache turns the Deployment into a
StatefulSet with one claim per pod; the metrics Service publishes not-Ready pods; the
NetworkPolicy opens the webhook port to private address ranges and the metrics port to
Prometheus by default, both configurable, with CIDRs checked by the schema; the values
schema refuses unknown keys at every level and allows every key of values.yaml; each key of
values.yaml has a comment above it and a row in the chart README's values table. (NOTES.txt
needs a cluster to render: e2e/test_chart.py.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    MATRIX,
    NAMESPACE,
    RELEASE,
    Doc,
    HelmError,
    Manifests,
    run_helm,
)


@pytest.mark.parametrize("name", list(MATRIX))
def test_helm_lint_strict_passes(helm: Path, name: str) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART), values=MATRIX[name])
    assert "0 chart(s) failed" in out


def test_every_object_is_named_labelled_and_placed(variant: Manifests) -> None:
    cluster_scoped = {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
    }
    for doc in variant.docs:
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63, meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in meta
        elif doc["kind"] not in ("Role", "RoleBinding"):
            assert meta["namespace"] == NAMESPACE, doc["kind"]


def test_long_release_names_still_fit(render: Callable[..., Manifests]) -> None:
    manifests = render({"fullnameOverride": "x" * 63})
    for doc in manifests.docs:
        assert len(doc["metadata"]["name"]) <= 63


def pod_labels(manifests: Manifests) -> dict[str, str]:
    labels: dict[str, str] = manifests.workload()["spec"]["template"]["metadata"]["labels"]
    return labels


def test_selectors_select_the_operator_pods(variant: Manifests) -> None:
    labels = pod_labels(variant)
    workload = variant.workload()
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in variant.of_kind("Service"):
        assert service["spec"]["selector"].items() <= labels.items()
    for pdb in variant.of_kind("PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for constraint in workload["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


def test_replicas_follow_replica_count(render: Callable[..., Manifests]) -> None:
    assert render().workload()["spec"]["replicas"] == 2
    assert render(MATRIX["one-replica"]).workload()["spec"]["replicas"] == 1
    assert render(MATRIX["three-replicas"]).workload()["spec"]["replicas"] == 3


def test_replicas_spread_over_zones_and_nodes_and_drain_one_at_a_time(
    render: Callable[..., Manifests],
) -> None:
    manifests = render()
    spec = manifests.workload()["spec"]
    keys = {c["topologyKey"] for c in spec["template"]["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert manifests.one("PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": manifests.workload()["spec"]["selector"]["matchLabels"]},
    }
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_probes_use_the_operators_health_endpoints(variant: Manifests) -> None:
    container = variant.container()
    (metrics,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert f"--metrics-port={metrics['containerPort']}" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # Every probe waits as long as the values say, start-up too (not the kubelet's 1 s).
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["timeoutSeconds"] == 3, probe


def test_leases_live_in_the_release_namespace(variant: Manifests) -> None:
    container = variant.container()
    assert f"--lease-namespace={NAMESPACE}" in container["args"]
    assert "--leader-election" in container["args"]
    assert f"--leader-lease={RELEASE}-dbquota-leader" in container["args"]


def test_leader_election_off_is_passed_on(render: Callable[..., Manifests]) -> None:
    values = {"leaderElection": {"enabled": False}, "replicaCount": 1}
    manifests = render(values)
    assert "--no-leader-election" in manifests.container()["args"]


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"leaderElection": {"enabled": False}}, r"needs replicaCount 1 \(it is 2\)"),
        ({"leaderElection": {"renewDeadline": 15}}, r"renewDeadline \(15\) must be below"),
        ({"leaderElection": {"retryPeriod": 10}}, r"retryPeriod \(10\) must be below"),
        (
            {"leaderElection": {"enabled": False, "retryPeriod": 12}, "replicaCount": 1},
            "retryPeriod",
        ),
        ({"webhook": {"port": 8080}}, "webhook.port and metrics.port are both 8080"),
        (
            {"shutdownDelay": 20, "terminationGracePeriodSeconds": 35},
            r"terminationGracePeriodSeconds \(35\) must be at least shutdownDelay \(20\) \+ 20",
        ),
    ],
)
def test_values_that_cannot_work_fail_with_the_reason(
    render: Callable[..., Manifests], values: dict[str, Any], reason: str
) -> None:
    """Refused at render time rather than as a pod that never gets Ready, or two servers
    on one port."""
    with pytest.raises(HelmError, match=reason):
        render(values)


def test_helm_template_wants_the_clusters_version(helm: Path) -> None:
    """Chart.yaml's kubeVersion: older apiservers drop the status webhook's matchConditions,
    and helm template without --kube-version assumes 1.20."""
    with pytest.raises(HelmError, match=r"requires kubeVersion: >=1\.28\.0-0"):
        run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.27.9")
    with pytest.raises(HelmError, match=r"incompatible with Kubernetes v1\.20"):
        run_helm(helm, "template", RELEASE, str(CHART))
    assert run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.28.0")


def test_persistent_cache_is_a_statefulset_with_a_claim_per_pod(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(MATRIX["persistent-cache"])
    assert not manifests.of_kind("Deployment")
    sts = manifests.one("StatefulSet")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "cache"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "cache" not in volumes  # the claim template provides it
    governing = manifests.one("Service", sts["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"


def test_default_cache_is_a_size_limited_empty_dir(render: Callable[..., Manifests]) -> None:
    volumes = render().workload()["spec"]["template"]["spec"]["volumes"]
    (cache,) = [v for v in volumes if v["name"] == "cache"]
    assert cache["emptyDir"]["sizeLimit"] == "1Gi"


def test_metrics_service_publishes_not_ready_pods_and_the_monitor_scrapes_it(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(MATRIX["service-monitor"])
    monitor = manifests.one("ServiceMonitor")
    (service,) = [
        s
        for s in manifests.of_kind("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert service["spec"]["publishNotReadyAddresses"] is True
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # per-quota series keep the quota's namespace
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert not render().of_kind("ServiceMonitor")


def test_network_policy_admits_the_webhook_and_metrics_ports(
    render: Callable[..., Manifests],
) -> None:
    manifests = render()
    policy = manifests.one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(manifests).items()
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {"webhook", "metrics"}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    everything = render(MATRIX["everything"]).one("NetworkPolicy")
    assert everything["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert not render(MATRIX["no-network-policy"]).of_kind("NetworkPolicy")


def ingress_from(policy: Doc, port: str) -> list[Doc] | None:
    """The ``from`` peers of the rule for ``port`` (None: no ``from``, any source)."""
    (rule,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == port]
    peers: list[Doc] | None = rule.get("from")
    return peers


def test_by_default_only_private_addresses_reach_the_webhook_and_prometheus_the_metrics(
    render: Callable[..., Manifests],
) -> None:
    policy = render().one("NetworkPolicy")
    assert ingress_from(policy, "webhook") == [
        {"ipBlock": {"cidr": cidr}}
        for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
    ]
    assert ingress_from(policy, "metrics") == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


def test_webhook_and_metrics_sources_are_configurable(
    render: Callable[..., Manifests],
) -> None:
    policy = render(MATRIX["everything"]).one("NetworkPolicy")
    assert ingress_from(policy, "webhook") == [
        {"ipBlock": {"cidr": "10.20.0.0/16"}},
        {"namespaceSelector": {"matchLabels": {"team": "platform"}}},
    ]
    assert ingress_from(policy, "metrics") is None  # metricsFrom: [] means any source
    opened = render({"networkPolicy": {"webhookCIDRs": [], "webhookFrom": []}})
    assert ingress_from(opened.one("NetworkPolicy"), "webhook") is None


@pytest.mark.parametrize("cidr", ["10.0.0.0", "example.com/8", "10.0.0.0/8; rm -rf"])
def test_webhook_cidrs_must_be_cidrs(render: Callable[..., Manifests], cidr: str) -> None:
    with pytest.raises(HelmError, match="webhookCIDRs"):
        render({"networkPolicy": {"webhookCIDRs": [cidr]}})


SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def schema_objects(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if "properties" in node:
        yield path or "/", node
        for key, child in node["properties"].items():
            yield from schema_objects(child, f"{path}/{key}")


def test_schema_closes_every_object_it_describes() -> None:
    objects = list(schema_objects(SCHEMA))
    assert len(objects) > 10
    for path, node in objects:
        assert node.get("additionalProperties") is False, path


def value_paths(
    node: Any, schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Paths of values.yaml keys that the schema describes property by property."""
    if not isinstance(node, dict) or "properties" not in schema:
        return
    for key, child in node.items():
        assert key in schema["properties"], (
            f"values.yaml key {'.'.join((*path, key))} not in schema"
        )
        yield (*path, key)
        yield from value_paths(child, schema["properties"][key], (*path, key))


def test_schema_refuses_unknown_keys_at_every_level(render: Callable[..., Manifests]) -> None:
    for values in (
        {"replicaCnt": 3},
        {"billing": {"URL": "x"}},
        {"webhook": {"selfSigned": {"x": 1}}},
    ):
        with pytest.raises(HelmError, match="additional properties"):
            render(values)


def test_values_yaml_keys_each_have_a_comment_above() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    paths = set(value_paths(VALUES, SCHEMA))
    stack: list[tuple[int, str]] = []
    seen = set()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        path = tuple(key for _, key in stack)
        if path in paths:
            seen.add(path)
            assert lines[number - 1].lstrip().startswith("#"), f"no comment above {line!r}"
    assert seen == paths


def test_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    for path in value_paths(VALUES, SCHEMA):
        assert f"`{'.'.join(path)}`" in readme, ".".join(path)
