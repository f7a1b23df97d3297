"""The apiserver really calls dbquota's webhook over TLS, and the operator writes status.

Checks, with the operator running as its own process (``dbquota run --dev-webhook``):
the ValidatingWebhookConfiguration it registers is scoped to DatabaseClaims, declares
``sideEffects: NoneOnDryRun`` and carries a caBundle; a claim that breaks a quota's hard
cap is refused by the apiserver with the webhook's own message (also for server-side
dry-run); a claim within it is admitted; a new quota gets every condition, as Unknown,
with its observedGeneration.
"""

from __future__ import annotations

from typing import Any

from e2e.harness import Kubectl, Operator
from e2e.test_crds import claim, quota
from e2e.waiting import wait_for


def quota_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The quota's status once the operator has written conditions, else ``{}``."""
    got: dict[str, Any] = kubectl.get_json("dbq", name, "-n", namespace).get("status", {})
    return got if got.get("conditions") else {}


def test_webhook_configuration_is_scoped_to_claims(kubectl: Kubectl, operator: Operator) -> None:
    vwc = kubectl.get_json("validatingwebhookconfiguration", "e2e.dbquota.io")
    webhook, status = vwc["webhooks"]
    assert [rule["resources"] for rule in status["rules"]] == [["databaseclaims/status"]]
    assert status["matchConditions"][0]["expression"].startswith("request.userInfo.username !=")
    assert webhook["sideEffects"] == "NoneOnDryRun"
    assert webhook["clientConfig"]["caBundle"]
    assert webhook["clientConfig"]["url"].startswith("https://")
    resources = {r for rule in webhook["rules"] for r in rule["resources"]}
    assert resources == {"databaseclaims"}
    operations = {op for rule in webhook["rules"] for op in rule["operations"]}
    assert operations == {"CREATE", "UPDATE"}


def test_claim_over_a_hard_cap_is_refused_with_the_webhooks_message(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    kubectl.apply(quota(namespace, name="team-a", hard={"storageGiB": 100}))
    wait_for(lambda: quota_status(kubectl, namespace, "team-a"), what="the quota's status")
    expected = (
        "denied by DatabaseQuota team-a: storage would total 500 GiB, exceeding the hard cap "
        "of 100 GiB by 400"
    )
    result = kubectl.apply(claim(namespace, name="big", storageGiB=500), check=False)
    assert result.returncode != 0
    stderr = result.stderr
    assert 'admission webhook "validate-claims.e2e.dbquota.io" denied the request' in stderr
    assert expected in stderr
    dry = kubectl.apply(
        claim(namespace, name="big", storageGiB=500), check=False, extra=("--dry-run=server",)
    )
    assert expected in dry.stderr
    assert kubectl("get", "dbc", "big", "-n", namespace, check=False).returncode != 0
    kubectl.apply(claim(namespace, name="small", storageGiB=50))
    assert kubectl.get_json("dbc", "small", "-n", namespace)["spec"]["storageGiB"] == 50


def test_new_quota_gets_every_condition_as_unknown(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    kubectl.apply(quota(namespace, name="team-b"))
    got = wait_for(lambda: quota_status(kubectl, namespace, "team-b"), what="the first status")
    assert got["observedGeneration"] == 1
    conditions = {c["type"]: c for c in got["conditions"]}
    assert set(conditions) >= {"Ready", "BillingAvailable", "BudgetExceeded"}
    for cond in conditions.values():
        assert cond["status"] in {"Unknown", "True", "False"}
        assert cond["reason"]
        assert cond["lastTransitionTime"]
