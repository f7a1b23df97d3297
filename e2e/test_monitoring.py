"""What on-call's dashboards and alerts read, from the real operator and the real apiserver.

Checks that the running operator exports a quota's budget, spend, used ratio and max
staleness labelled with the quota's namespace and name once it has reconciled it, with a
billing last-success timestamp that is recent, and drops the quota's series after the
quota is deleted; and that the real kube-apiserver, failing open on a webhook named as the
chart's (``failurePolicy: Ignore``, nothing listening), counts it in exactly the series
the chart's ``DbquotaWebhookFailingOpen`` alert selects.
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


def rendered_fail_open_selector(cluster: Cluster) -> dict[str, str]:
    """The label matchers of the chart's fail-open alert, as helm renders it."""
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
    selectors = set(re.findall(rf"{FAIL_OPEN}\{{([^}}]*)\}}", rendered))
    assert len(selectors) == 1, selectors
    return dict(re.findall(r'(\w+)="([^"]*)"', selectors.pop()))


def test_the_apiserver_counts_failing_open_where_the_alert_looks(
    cluster: Cluster, kubectl: Kubectl, crds: None, namespace: str
) -> None:
    selector = rendered_fail_open_selector(cluster)
    assert set(selector) == {"name"}
    configuration = f"e2e-fail-open-{namespace}"
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": configuration},
            "webhooks": [
                {
                    "name": selector["name"],
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Ignore",
                    "timeoutSeconds": 2,
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "rules": [
                        {
                            "apiGroups": ["dbquota.io"],
                            "apiVersions": ["v1alpha1"],
                            "resources": ["databaseclaims"],
                            "operations": ["CREATE"],
                        }
                    ],
                    # Nothing listens there: every call fails, and Ignore admits the claim.
                    "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/validate"},
                }
            ],
        }
    )
    names = (f"unchecked-{i}" for i in itertools.count())

    exposition = ""

    def failed_open() -> list[Any]:
        nonlocal exposition
        # Until the apiserver has seen the configuration, claims are not sent to it.
        kubectl.apply(claim(namespace, name=next(names)))
        exposition = kubectl("get", "--raw", "/metrics").stdout
        # prometheus-client's parser names every counter sample <family>_total; the
        # exposition (what Prometheus stores) has no such suffix, checked below.
        return [
            s
            for s in scraping.samples(exposition)
            if s.name.removesuffix("_total") == FAIL_OPEN
            and s.labels.get("name") == selector["name"]
        ]

    try:
        (sample,) = wait_for(failed_open, what=f"{FAIL_OPEN} for {selector['name']}")
    finally:
        kubectl("delete", "validatingwebhookconfiguration", configuration, check=False)
    assert f"# TYPE {FAIL_OPEN} counter" in exposition
    assert sample.labels["type"] == "validating"
    assert sample.value >= 1
