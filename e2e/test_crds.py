"""The CRDs, applied to the real apiserver, accept good objects and refuse bad ones.

Checks defaults (currency, enforcement, degradation policy, replicas), and that each kind
of invalid object is refused by the OpenAPI schema or a CEL rule with a message naming
the field: negative budget, unknown policy or enforcement, missing instanceClass, storage
out of range, bad currency and duration, StrictCap without a cap, alert thresholds out of
range, repeated, unsorted or too many, a changed clusterId.
Also checks that ``kubectl get`` prints the columns the README promises. No operator runs
here: this is the API contract alone.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.harness import Kubectl


def quota(namespace: str, name: str = "q", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"monthlyBudget": 5000, **spec},
    }


def claim(namespace: str, name: str = "c", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"engine": "postgres", "instanceClass": "db.r6g.large", "storageGiB": 100, **spec},
    }


def test_defaults_are_filled_in_by_the_apiserver(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(quota(namespace))
    kubectl.apply(claim(namespace))
    q = kubectl.get_json("databasequota", "q", "-n", namespace)["spec"]
    assert q["currency"] == "USD"
    assert q["enforcement"] == "Enforce"
    assert q["degradation"] == {
        "policy": "Conservative",
        "maxStaleness": "15m",
        "safetyMargin": 1.2,
    }
    c = kubectl.get_json("databaseclaim", "c", "-n", namespace)["spec"]
    assert c["replicas"] == 1


INVALID_QUOTAS = [
    ({"monthlyBudget": -5}, "spec.monthlyBudget"),
    ({"monthlyBudget": 0}, "spec.monthlyBudget"),
    ({"currency": "dollars"}, "spec.currency"),
    ({"enforcement": "Sometimes"}, 'spec.enforcement: Unsupported value: "Sometimes"'),
    ({"degradation": {"policy": "Hope"}}, 'spec.degradation.policy: Unsupported value: "Hope"'),
    ({"degradation": {"maxStaleness": "soon"}}, "spec.degradation.maxStaleness"),
    ({"degradation": {"maxStaleness": "2562048h"}}, "must be at most 2562047h"),
    ({"degradation": {"maxStaleness": "9" * 400 + "h"}}, "spec.degradation.maxStaleness"),
    ({"degradation": {"safetyMargin": 0.5}}, "spec.degradation.safetyMargin"),
    ({"degradation": {"policy": "StrictCap"}}, "policy StrictCap needs strictCap"),
    ({"hard": {"claims": -1}}, "spec.hard.claims"),
    (
        {"degradation": {"policy": "StrictCap", "strictCap": {}}},
        "strictCap needs claims, storageGiB or both",
    ),
    ({"alerts": {"thresholds": [80, 50]}}, "thresholds must be in ascending order"),
    ({"alerts": {"thresholds": [50, 50]}}, "spec.alerts.thresholds[1]: Duplicate value: 50"),
    ({"alerts": {"thresholds": [0]}}, "spec.alerts.thresholds[0]"),
    ({"alerts": {"thresholds": [1001]}}, "spec.alerts.thresholds[0]"),
    ({"alerts": {"thresholds": [12.5]}}, "spec.alerts.thresholds[0]"),
    ({"alerts": {"thresholds": list(range(1, 12))}}, "must have at most 10 items"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID_QUOTAS)
def test_invalid_quota_is_refused_with_a_field_message(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    refused = kubectl.apply(quota(namespace, **spec), check=False)
    assert refused.returncode != 0
    assert message in refused.stderr


def test_quota_without_budget_is_refused(kubectl: Kubectl, namespace: str) -> None:
    body = quota(namespace)
    del body["spec"]["monthlyBudget"]
    refused = kubectl.apply(body, check=False)
    assert "spec.monthlyBudget: Required value" in refused.stderr


INVALID_CLAIMS = [
    ({"engine": "excel"}, 'spec.engine: Unsupported value: "excel"'),
    ({"storageGiB": 0}, "spec.storageGiB"),
    ({"storageGiB": 10**6}, "spec.storageGiB"),
    ({"replicas": 0}, "spec.replicas"),
    ({"instanceClass": "DB R6G!"}, "spec.instanceClass"),
    ({"storageGiB": "lots"}, "spec.storageGiB"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID_CLAIMS)
def test_invalid_claim_is_refused_with_a_field_message(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    refused = kubectl.apply(claim(namespace, **spec), check=False)
    assert refused.returncode != 0
    assert message in refused.stderr


def test_claim_without_instance_class_is_refused(kubectl: Kubectl, namespace: str) -> None:
    body = claim(namespace)
    del body["spec"]["instanceClass"]
    refused = kubectl.apply(body, check=False)
    assert "spec.instanceClass: Required value" in refused.stderr


def test_cluster_id_cannot_change_once_set(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(claim(namespace, clusterId="orders-db"))
    refused = kubectl.apply(claim(namespace, clusterId="other-db"), check=False)
    assert "clusterId is immutable" in refused.stderr
    kubectl.apply(claim(namespace, clusterId="orders-db", storageGiB=200))


def test_cluster_id_cannot_be_added_to_a_claim_created_without_one(
    kubectl: Kubectl, namespace: str
) -> None:
    """Without one, a claim is billed as ``<namespace>/<name>``; naming another id later
    would move what billing shows for it to that id's cost, a cheap one if chosen so."""
    kubectl.apply(claim(namespace, name="plain"))
    refused = kubectl.apply(claim(namespace, name="plain", clusterId="cheap-db"), check=False)
    assert "clusterId is immutable" in refused.stderr
    kubectl.apply(claim(namespace, name="plain", storageGiB=200))


def test_short_names_and_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(quota(namespace, name="team-a"))
    kubectl.apply(claim(namespace, name="orders"))
    header = kubectl("get", "dbq", "-n", namespace).stdout.splitlines()[0].split()
    assert header == [
        "NAME",
        "BUDGET",
        "SPEND",
        "REMAINING",
        "CIRCUIT",
        "DEGRADED",
        "STALENESS",
        "AGE",
    ]
    wide = kubectl("get", "dbq", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert {"RESERVED", "LAST-SYNC", "ENFORCEMENT", "POLICY"} <= set(wide)
    header = kubectl("get", "dbc", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "ENGINE", "CLASS", "STORAGE", "REPLICAS", "COST", "PRICING", "AGE"]


def test_status_is_a_subresource_users_cannot_set_through_spec_updates(
    kubectl: Kubectl, namespace: str
) -> None:
    body = quota(namespace)
    body["status"] = {"spend": {"observed": 1}}
    kubectl.apply(body)
    assert (
        "status" not in kubectl.get_json("databasequota", "q", "-n", namespace)
        or kubectl.get_json("databasequota", "q", "-n", namespace)["status"].get("spend") is None
    )
