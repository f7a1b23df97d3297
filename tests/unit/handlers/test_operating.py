"""Start-up helpers of ``dbquota run``: registering the dev webhook, kopf's settings.

Checks that dev mode registers one webhook for DatabaseClaim CREATE and UPDATE with
``sideEffects: NoneOnDryRun``, ``failurePolicy: Fail``, the configured timeout, the URL of
the bound port and the dev CA as caBundle, and that a configuration name the apiserver
would refuse fails with a clear error before any call; and that kopf's diff base is built
as kopf builds it, without deep-copying the status or the managed fields.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, cast

import kopf
import pytest

from dbquota.adapters.kube import Kube
from dbquota.errors import ConfigurationError
from dbquota.handlers import operating, webhook_tls
from dbquota.settings import WebhookSettings


class RecordingKube:
    """Stands in for the Kubernetes adapter: keeps what would be applied."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    async def apply_validating_webhook_configuration(self, body: dict[str, Any]) -> None:
        self.applied.append(body)


async def test_dev_mode_registers_a_webhook_for_claims_and_one_for_their_status(
    tmp_path: Path,
) -> None:
    ca, _, _ = webhook_tls.ensure_dev_certificates(cert_dir=tmp_path, host="127.0.0.1")
    cfg = WebhookSettings(dev=True, cert_dir=tmp_path, configuration_name="e2e.dbquota.io")
    kube = RecordingKube()
    user = 'kubernetes-admin "of" e2e'
    await operating.register_dev_webhook(cast(Kube, kube), cfg, port=12345, own_user=user)
    (body,) = kube.applied
    assert body["metadata"]["name"] == "e2e.dbquota.io"
    hook, status = body["webhooks"]
    assert hook["name"] == "validate-claims.e2e.dbquota.io"
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 10
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [
        {
            "apiGroups": ["dbquota.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["databaseclaims"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:12345/validate-claims"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca.read_bytes()
    assert status["name"] == "claim-status.e2e.dbquota.io"
    assert (status["sideEffects"], status["failurePolicy"]) == ("None", "Fail")
    assert [(r["resources"], r["operations"]) for r in status["rules"]] == [
        (["databaseclaims/status"], ["UPDATE"])
    ]
    # dbquota's own writes never reach it; the name is quoted as a CEL string
    assert status["matchConditions"] == [
        {
            "name": "not-dbquota",
            "expression": 'request.userInfo.username != "kubernetes-admin \\"of\\" e2e"',
        }
    ]
    assert status["clientConfig"] == hook["clientConfig"]


async def test_without_its_own_user_dev_mode_leaves_the_status_unguarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    webhook_tls.ensure_dev_certificates(cert_dir=tmp_path, host="127.0.0.1")
    cfg = WebhookSettings(dev=True, cert_dir=tmp_path, configuration_name="e2e.dbquota.io")
    kube = RecordingKube()
    await operating.register_dev_webhook(cast(Kube, kube), cfg, port=1, own_user="")
    assert [hook["name"] for hook in kube.applied[0]["webhooks"]] == [
        "validate-claims.e2e.dbquota.io"
    ]
    assert "claims' status left unguarded" in caplog.text


async def test_a_configuration_name_without_a_dot_is_refused(tmp_path: Path) -> None:
    cfg = WebhookSettings(dev=True, cert_dir=tmp_path, configuration_name="dbquota")
    kube = RecordingKube()
    with pytest.raises(ConfigurationError, match="must be a domain name"):
        await operating.register_dev_webhook(cast(Kube, kube), cfg, port=1, own_user="me")
    assert kube.applied == []


class Uncopyable(dict[str, Any]):
    """A stanza that fails the test if anything deep-copies it."""

    def __deepcopy__(self, memo: object) -> Uncopyable:
        raise AssertionError("the status was deep-copied")


def test_kopfs_diff_base_is_built_without_copying_the_status_or_managed_fields() -> None:
    raw: dict[str, Any] = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {
            "name": "q",
            "namespace": "ns",
            "labels": {"team": "a"},
            "annotations": {"note": "kept", "dbquota.io/last-handled-configuration": "{}"},
            "managedFields": Uncopyable(entries=[{"manager": f"m{i}"} for i in range(50)]),
            "resourceVersion": "7",
        },
        "spec": {"monthlyBudget": 100},
        "status": Uncopyable(reservations=[{"uid": f"u{i}"} for i in range(500)]),
    }
    ours = operating.DiffBase(prefix="dbquota.io", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="dbquota.io", key="last-handled-configuration")
    essence = ours.build(body=kopf.Body(cast(kopf.RawBody, raw)))
    metadata = {**raw["metadata"], "managedFields": dict(raw["metadata"]["managedFields"])}
    plain = {**raw, "metadata": metadata, "status": dict(raw["status"])}
    assert essence == kopfs.build(body=kopf.Body(cast(kopf.RawBody, plain)))
    assert "status" not in essence
    # What kopf passes for DatabaseQuota, whose on.update handler watches the spec.
    for spec in (["spec"], [("spec",)], [("spec", "monthlyBudget")]):
        essence = ours.build(body=kopf.Body(cast(kopf.RawBody, raw)), extra_fields=spec)
        expected = kopfs.build(body=kopf.Body(cast(kopf.RawBody, plain)), extra_fields=spec)
        assert essence == expected
    # A handler that watches a status field still gets it, from the whole object.
    fields = ["status.reservations"]
    watched = ours.build(body=kopf.Body(cast(kopf.RawBody, plain)), extra_fields=fields)
    assert watched == kopfs.build(body=kopf.Body(cast(kopf.RawBody, plain)), extra_fields=fields)
    assert len(watched["status"]["reservations"]) == 500
