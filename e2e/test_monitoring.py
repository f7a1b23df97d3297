"""What on-call's dashboards and alerts read, from the real operator and the real apiserver.

Checks that the running operator exports a quota's budget, spend, used ratio and max
staleness labelled with the quota's namespace and name once it has reconciled it, with a
billing last-success timestamp that is recent, and drops the quota's series after the
quota is deleted; and that the real kube-apiserver, calling a webhook named as the chart's
with nothing listening, counts what it did in exactly the series the chart's alerts select:
failing open (``failurePolicy: Ignore``) where ``DbquotaWebhookFailingOpen`` looks, and
refusing the claim (``failurePolicy: Fail``) where ``DbquotaWebhookUnreachable`` looks.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from typing import Any

import httpx

from e2e import scraping
from e2e.harness import Cluster, Kubectl, Operator, free_port
from e2e.test_crds import claim, quota
from e2e.waiting import wait_for
from tests.chart.conftest import CHART, KUBE_VERSION

FAIL_OPEN = "apiserver_admission_webhook_fail_open_count"
REJECTED = "apiserver_admission_webhook_rejection_count"


def scrape(operator: Operator) -> list[Any]:
    text = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).text
    return scraping.samples(text)


def test_a_quota_shows_in_metrics_until_it_is_deleted(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    kubectl.apply(
        quota(namespace, name="watched", monthlyBudget=4000, degradation={"maxStaleness": "20m"})
    )
    labels = {"namespace": namespace, "quota": "watched"}

    def budget() -> list[Any]:
        return [
            s for s in scrape(operator) if s.name == "dbquota_quota_budget" and s.labels == labels
        ]

    wait_for(budget, what="dbquota_quota_budget of the new quota")
    samples = scrape(operator)
    assert scraping.total(samples, "dbquota_quota_budget", **labels) == 4000
    assert scraping.total(samples, "dbquota_quota_max_staleness_seconds", **labels) == 1200
    status = kubectl.get_json("dbq", "watched", "-n", namespace)["status"]["spend"]
    used = status["observed"] + status["reserved"]
    ratio = scraping.total(samples, "dbquota_quota_used_ratio", **labels)
    assert abs(ratio - used / 4000) < 0.01  # the status written at about the same time
    last_success = scraping.total(samples, "dbquota_billing_last_success_timestamp_seconds")
    assert 0 <= time.time() - last_success < 60
    kubectl("delete", "dbq", "watched", "-n", namespace)
    wait_for(lambda: not budget(), what="the deleted quota's series to go")


def rendered_selector(cluster: Cluster, metric: str) -> dict[str, str]:
    """The label matchers of the chart's alert on ``metric``, as helm renders it."""
    rendered = subprocess.run(
        [
            str(cluster.bins.helm),
            "template",
            *KUBE_VERSION,
            "x",
            str(CHART),
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    selectors = set(re.findall(rf"{metric}\{{([^}}]*)\}}", rendered))
    assert len(selectors) == 1, selectors
    return dict(re.findall(r'(\w+)="([^"]*)"', selectors.pop()))


def unreachable_webhook(name: str, namespace: str, failure_policy: str) -> dict[str, Any]:
    """A configuration whose webhook ``name`` sees the claims created in ``namespace`` and
    calls a port where nothing listens, so every call fails."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"e2e-{failure_policy.lower()}-{namespace}"},
        "webhooks": [
            {
                "name": name,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": failure_policy,
                "timeoutSeconds": 2,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "rules": [
                    {
                        "apiGroups": ["dbquota.io"],
                        "apiVersions": ["v1alpha1"],
                        "resources": ["databaseclaims"],
                        "operations": ["CREATE"],
                    }
                ],
                "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/validate"},
            }
        ],
    }


def apiserver_counts(
    kubectl: Kubectl, namespace: str, metric: str, selector: dict[str, str], failure_policy: str
) -> tuple[Any, str, list[str]]:
    """With :func:`unreachable_webhook` named as ``selector`` says registered under
    ``failure_policy`` (removed again at the end), create claims in ``namespace`` until the
    apiserver's ``/metrics`` has a sample of ``metric`` matching ``selector``; return it,
    the exposition and kubectl's errors."""
    configuration = unreachable_webhook(selector["name"], namespace, failure_policy)
    kubectl.apply(configuration)
    try:
        return _counted(kubectl, namespace, metric, selector)
    finally:
        name = configuration["metadata"]["name"]
        kubectl("delete", "validatingwebhookconfiguration", name, check=False)


def _counted(
    kubectl: Kubectl, namespace: str, metric: str, selector: dict[str, str]
) -> tuple[Any, str, list[str]]:
    """:func:`apiserver_counts` once the configuration is registered."""
    names = (f"claim-{i}" for i in itertools.count())
    exposition = ""
    errors: list[str] = []

    def counted() -> list[Any]:
        nonlocal exposition
        # Until the apiserver has seen the configuration, claims are not sent to it.
        created = kubectl.apply(claim(namespace, name=next(names)), check=False)
        if created.returncode != 0:
            errors.append(created.stderr)
        exposition = kubectl("get", "--raw", "/metrics").stdout
        # prometheus-client's parser names every counter sample <family>_total; the
        # exposition (what Prometheus stores) has no such suffix, checked below.
        return [
            s
            for s in scraping.samples(exposition)
            if s.name.removesuffix("_total") == metric
            and all(s.labels.get(k) == v for k, v in selector.items())
        ]

    (sample,) = wait_for(counted, what=f"{metric} for {selector}")
    return sample, exposition, errors


def test_the_apiserver_counts_failing_open_where_the_alert_looks(
    cluster: Cluster, kubectl: Kubectl, crds: None, namespace: str
) -> None:
    selector = rendered_selector(cluster, FAIL_OPEN)
    assert set(selector) == {"name"}
    sample, exposition, _ = apiserver_counts(kubectl, namespace, FAIL_OPEN, selector, "Ignore")
    assert f"# TYPE {FAIL_OPEN} counter" in exposition
    assert sample.labels["type"] == "validating"
    assert sample.value >= 1


def test_the_apiserver_counts_refusing_for_an_unreachable_webhook_where_the_alert_looks(
    cluster: Cluster, kubectl: Kubectl, crds: None, namespace: str
) -> None:
    selector = rendered_selector(cluster, REJECTED)
    assert set(selector) == {"name", "error_type"}
    assert selector["error_type"] == "calling_webhook_error"
    sample, exposition, errors = apiserver_counts(kubectl, namespace, REJECTED, selector, "Fail")
    assert f"# TYPE {REJECTED} counter" in exposition
    assert set(sample.labels) == {"name", "type", "operation", "error_type", "rejection_code"}
    assert sample.labels["type"] == "validating"
    assert sample.labels["operation"] == "CREATE"
    assert sample.value >= 1
    # Fail: the claim that was counted was refused, and the tenant was told why.
    assert errors
    assert f'failed calling webhook "{selector["name"]}"' in errors[-1]
