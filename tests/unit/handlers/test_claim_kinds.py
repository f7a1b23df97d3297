"""The claim kinds as ``dbquota run`` wires them: dev webhook rules, start-up check, dispatch.

Checks: dev mode registers one rule per enabled kind (Crossplane RDS cluster-scoped);
start-up refuses an enabled kind the apiserver does not serve, naming it and what to do;
the webhook's ``admit`` hands a review to the kind named by its ``request.kind``, and an
RDS Instance naming no tenant is admitted with a warning (denied under
``--no-quota-policy=Deny``), a malformed CloudNativePG Cluster denied naming the field,
in our words.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from dbquota.adapters.kube import Informer, Kube
from dbquota.domain import reviews
from dbquota.domain.kinds import registry
from dbquota.errors import ConfigurationError, NotFound
from dbquota.handlers import operating, runtime, webhook, webhook_tls
from dbquota.services import admitting
from dbquota.settings import NoQuotaPolicy, WebhookSettings

ALL = registry.enabled(["databaseclaims", "cnpg", "zalando", "rds"])


class StubKube:
    """Applies webhook configurations; serves only the resources named."""

    def __init__(self, serves: set[str]) -> None:
        self.applied: list[dict[str, Any]] = []
        self.serves = serves

    async def apply_validating_webhook_configuration(self, body: dict[str, Any]) -> None:
        self.applied.append(body)

    async def request(self, method: str, path: str, **_: object) -> dict[str, Any]:
        if not any(f"/{plural}" in path for plural in self.serves):
            raise NotFound(f"{method} {path}: the server could not find the requested resource")
        return {"items": []}


async def test_dev_mode_registers_a_rule_per_enabled_kind(tmp_path: Path) -> None:
    webhook_tls.ensure_dev_certificates(cert_dir=tmp_path, host="127.0.0.1")
    cfg = WebhookSettings(dev=True, cert_dir=tmp_path, configuration_name="e2e.dbquota.io")
    kube = StubKube(set())
    await operating.register_dev_webhook(
        cast(Kube, kube), cfg, port=1, enabled=ALL, own_user="admin"
    )
    hook, status = kube.applied[0]["webhooks"]
    assert [r["resources"] for r in status["rules"]] == [["databaseclaims/status"]]
    assert [(r["resources"], r["scope"]) for r in hook["rules"]] == [
        (["databaseclaims"], "Namespaced"),
        (["clusters"], "Namespaced"),
        (["postgresqls"], "Namespaced"),
        (["instances"], "Cluster"),
    ]


async def test_start_up_refuses_a_kind_whose_crd_is_missing() -> None:
    kube = StubKube({"databaseclaims", "clusters", "postgresqls"})
    with pytest.raises(ConfigurationError) as exc:
        await operating.served(cast(Kube, kube), ALL)
    assert str(exc.value) == (
        "--claim-kinds enables rds, but the apiserver does not serve "
        "instances.rds.aws.upbound.io/v1beta1: install its CRD first, or leave it out of "
        "--claim-kinds"
    )
    await operating.served(cast(Kube, kube), ALL[:3])


class NoQuotas:
    """The quota informer of a cluster with no DatabaseQuota."""

    def __init__(self) -> None:
        self.synced = asyncio.Event()
        self.synced.set()

    def in_namespace(self, namespace: str) -> list[Any]:
        return []


class Observed:
    """The runtime, as far as ``admit`` uses it."""

    def __init__(self, no_quota: NoQuotaPolicy) -> None:
        self.admission = admitting.Admission(
            ledgers=cast(admitting.Ledgers, None),
            quotas=cast(Informer[Any], NoQuotas()),
            no_quota=no_quota,
            namespace_label="crossplane.io/claim-namespace",
        )

    def observe_admission(self, *_: object, **__: object) -> None:
        pass


def review(group: str, kind: str, obj: dict[str, Any], namespace: str = "") -> reviews.Review:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "r1",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": "x"},
            "operation": "CREATE",
            "namespace": namespace,
            "name": obj["metadata"]["name"],
            "object": obj,
        },
    }
    return reviews.decode(msgspec.json.encode(body))


def admit(no_quota: NoQuotaPolicy) -> webhook.Admit:
    return operating.admit_claims(cast(runtime.Runtime, Observed(no_quota)), ALL)


async def test_an_instance_naming_no_tenant_is_admitted_with_a_warning() -> None:
    instance = {
        "metadata": {"name": "orphan-db", "labels": {}},
        "spec": {"forProvider": {"instanceClass": "db.r6g.large", "allocatedStorage": 20}},
    }
    answer = await admit("Admit")(review("rds.aws.upbound.io", "Instance", instance))
    assert answer.allowed
    assert answer.warnings == (
        "dbquota: Instance orphan-db names no tenant namespace (no label "
        "crossplane.io/claim-namespace); admitted without a budget check",
    )
    denied = await admit("Deny")(review("rds.aws.upbound.io", "Instance", instance))
    assert not denied.allowed
    assert "names no tenant namespace" in denied.message
    assert "--no-quota-policy=Deny" in denied.message


async def test_a_bad_cluster_is_denied_naming_the_field() -> None:
    cluster: dict[str, Any] = {
        "metadata": {"name": "orders-pg", "namespace": "team-a"},
        "spec": {"instances": 3, "storage": {"size": "ten gigs"}},
    }
    answer = await admit("Admit")(
        review("postgresql.cnpg.io", "Cluster", cluster, namespace="team-a")
    )
    assert not answer.allowed
    assert answer.message.startswith(
        'invalid Cluster team-a/orders-pg: spec.storage.size: invalid quantity "ten gigs"'
    )


async def test_a_kind_not_enabled_is_admitted_untouched() -> None:
    only_claims = operating.admit_claims(
        cast(runtime.Runtime, Observed("Deny")), registry.enabled(["databaseclaims"])
    )
    cluster = {"metadata": {"name": "x", "namespace": "a"}, "spec": {}}
    answer = await only_claims(review("postgresql.cnpg.io", "Cluster", cluster, "a"))
    assert answer.allowed
    assert answer.message == ""


def test_pods_requesting_no_cpu_are_told_it_is_priced_at_nothing() -> None:
    cluster: dict[str, Any] = {
        "metadata": {"name": "orders-pg", "namespace": "team-a"},
        "spec": {
            "instances": 2,
            "storage": {"size": "10Gi"},
            "resources": {"requests": {"memory": "1Gi"}},
        },
    }
    _, claim = registry.KINDS["cnpg"].read(cluster)
    assert admitting.unrequested(claim, name="Cluster team-a/orders-pg") == (
        "dbquota: Cluster team-a/orders-pg requests no cpu (nor sets a limit), so its cpu is "
        "priced at 0; set resources.requests to have it counted against the budget"
    )
    cluster["spec"]["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert admitting.unrequested(registry.KINDS["cnpg"].read(cluster).claim, name="x") == ""
