"""The claim kinds as ``dbquota run`` wires them: dev webhook rules, start-up check, dispatch.

Checks: dev mode registers one rule per enabled kind (Crossplane RDS cluster-scoped);
start-up refuses an enabled kind the apiserver does not serve, naming it and what to do;
the webhook's ``admit`` hands a review to the kind named by its ``request.kind``, and an
RDS Instance naming no tenant is admitted with a warning (denied under
``--no-quota-policy=Deny``), a malformed CloudNativePG Cluster denied naming the field,
in our words.

An UPDATE that moves an RDS Instance to another tenant (its tenant label changed, added or
removed) is decided, against the real reservation ledger, as a CREATE under the new
tenant: priced in full (denied over its budget, though the spec did not change) and
counted in its hard caps, while the same UPDATE within one tenant adds nothing; one that
takes it out of every quota (label removed, or naming a namespace with none) is denied
while a quota of its old tenant enforces, admitted with a warning under Warn, and decided
as an object with no tenant when the old tenant had no quota. A namespaced object's
labels never move it. The webhook hands admission the old object's labels (marked xfail
until ``handlers/operating.py`` does).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest

from dbquota.adapters.kube import Informer, Kube
from dbquota.domain import billing, reviews
from dbquota.domain.kinds import registry
from dbquota.domain.resources import QuotaObject
from dbquota.errors import ConfigurationError, NotFound
from dbquota.handlers import operating, runtime, webhook, webhook_tls
from dbquota.services import admitting
from dbquota.settings import NoQuotaPolicy, WebhookSettings
from tests.unit.services.test_reserving import PRICES, Store

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


def review(
    group: str,
    kind: str,
    obj: dict[str, Any],
    namespace: str = "",
    old: dict[str, Any] | None = None,
) -> reviews.Review:
    """A CREATE of ``obj``; an UPDATE of ``old`` to ``obj`` when ``old`` is given."""
    body: dict[str, Any] = {
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
    if old is not None:
        body["request"].update(operation="UPDATE", oldObject=old)
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


LABEL = "crossplane.io/claim-namespace"
BOOK = dataclasses.replace(
    PRICES, vcpu_hourly=0.0, memory_gib_hourly=0.0, storage_class_gib_month={None: 1.0}
)
"""Prices at which an Instance of class ``db.test``, or a Cluster of pods, costs exactly its
GiB a month."""


def snapshot() -> billing.BillingSnapshot:
    return billing.BillingSnapshot(
        health=billing.BillingHealth(last_success=BOOK.observed_at), prices=BOOK, highest=BOOK
    )


class Quotas:
    """The quota informer of a cluster with one DatabaseQuota ``q`` in each namespace
    named, each with the spec given."""

    def __init__(self, specs: dict[str, dict[str, Any]]) -> None:
        self.synced = asyncio.Event()
        self.synced.set()
        self.specs = specs

    def in_namespace(self, namespace: str) -> list[Any]:
        return [SimpleNamespace(name="q")] if namespace in self.specs else []

    def get(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        spec = self.specs.get(namespace)
        return None if spec is None else {"metadata": {"name": name}, "spec": spec}


def moved(
    tenant: str | None, *, was: str | None, kind: str = "rds", gib: int = 100
) -> admitting.Review:
    """An UPDATE of Instance ``db`` (``db.test``, ``gib`` GiB, spec unchanged) whose tenant
    label was ``was`` and is now ``tenant`` (None: no label); for ``cnpg`` a Cluster in
    namespace ``ns`` with those labels."""

    def labels(namespace: str | None) -> dict[str, str]:
        return {} if namespace is None else {LABEL: namespace}

    if kind == "cnpg":
        spec: dict[str, Any] = {"instances": 1, "storage": {"size": f"{gib}Gi"}}
        namespace = "ns"
    else:
        spec = {"forProvider": {"instanceClass": "db.test", "allocatedStorage": gib}}
        namespace = ""
    return admitting.Review(
        namespace=namespace,
        name="db",
        spec=spec,
        old_spec=spec,
        dry_run=False,
        uid="uid-db",
        generation=3,
        kind=registry.KINDS[kind],
        labels=labels(tenant),
        old_labels=labels(was),
    )


def admission(
    store: Store, quotas: Quotas, no_quota: NoQuotaPolicy = "Admit"
) -> admitting.Admission:
    """Admission deciding against ``quotas``; namespace ``ns``'s quota is ``store``'s, with
    the real reservation ledger (a claim costs its GiB a month)."""
    quotas.specs["ns"] = store.quota["spec"]
    real = admitting.Ledgers(store, snapshot=snapshot, holder="me")

    class Ledgers:
        def of(self, *, namespace: str, name: str, quota: Any = None) -> Any:
            assert namespace == "ns", f"asked the quotas of {namespace}"
            seen = cast(QuotaObject, copy.deepcopy(store.quota))
            return real.of(namespace=namespace, name="q", quota=seen)

    return admitting.Admission(
        ledgers=cast(admitting.Ledgers, Ledgers()),
        quotas=cast(Informer[Any], quotas),
        no_quota=no_quota,
        namespace_label=LABEL,
    )


@pytest.mark.parametrize("was", ["team-a", None])
async def test_an_instance_moved_to_another_tenant_is_priced_there_as_new(
    was: str | None,
) -> None:
    store = Store(budget=50)  # the Instance costs 100
    admit = admission(store, Quotas({"team-a": {}}))
    denied = await admit.review(moved("ns", was=was))
    assert not denied.allowed
    assert "projected 100.00 USD/month exceeds budget 50.00" in denied.message
    stays = await admit.review(moved("ns", was="ns"))  # the same UPDATE within ns
    assert stays.allowed
    assert stays.decisions[0].reason == "NoIncrease"
    store.quota["spec"]["monthlyBudget"] = 1000
    (charged,) = (await admission(store, Quotas({})).review(moved("ns", was=was))).decisions
    assert (charged.allowed, charged.cost, charged.new_claims) == (True, 100.0, 1)


async def test_an_instance_moved_to_another_tenant_counts_in_its_hard_caps() -> None:
    store = Store(budget=1000)
    store.quota["spec"]["hard"] = {"claims": 0}
    admit = admission(store, Quotas({"team-a": {}}))
    assert (await admit.review(moved("ns", was="ns"))).allowed
    capped = await admit.review(moved("ns", was="team-a"))
    assert not capped.allowed
    assert capped.decisions[0].reason == "HardCapExceeded"


@pytest.mark.parametrize("to", [None, "nobody"])
async def test_an_instance_cannot_leave_its_quota_for_none(to: str | None) -> None:
    store = Store(budget=1000)
    team_a = Quotas({"team-a": {"monthlyBudget": 10}})
    denied = await admission(store, team_a).review(moved(to, was="team-a"))
    assert not denied.allowed
    assert denied.message.startswith(
        "denied: Instance db is counted against DatabaseQuota team-a/q; "
    ), denied.message
    if to is None:
        assert f"removing its label {LABEL} would leave it counted against no quota" in (
            denied.message
        )
    else:
        assert "give namespace nobody a DatabaseQuota first" in denied.message
    assert store.writes == []
    warned = Quotas({"team-a": {"monthlyBudget": 10, "enforcement": "Warn"}})
    admitted = await admission(store, warned).review(moved(to, was="team-a"))
    assert admitted.allowed
    assert "would leave it counted against no quota" in admitted.warnings[0]


async def test_leaving_a_namespace_with_no_quota_is_decided_as_unquoted() -> None:
    store = Store(budget=1000)
    unlabelled = await admission(store, Quotas({})).review(moved(None, was="team-a"))
    assert unlabelled.allowed
    assert unlabelled.warnings == (
        f"dbquota: Instance db names no tenant namespace (no label {LABEL}); "
        "admitted without a budget check",
    )
    denied = await admission(store, Quotas({"team-a": {}}), "Deny").review(
        moved(None, was="team-a")
    )
    assert not denied.allowed
    assert "names no tenant namespace" in denied.message
    assert "--no-quota-policy=Deny" in denied.message


async def test_a_namespaced_objects_labels_never_move_it() -> None:
    store = Store(budget=50)
    update = moved("team-b", was="team-a", kind="cnpg")
    decided = await admission(store, Quotas({})).review(update)
    assert decided.allowed
    assert decided.decisions[0].reason == "NoIncrease"


async def test_the_webhook_tells_admission_the_labels_before_an_update() -> None:
    store = Store(budget=50)
    glue = SimpleNamespace(
        admission=admission(store, Quotas({"team-a": {}})),
        observe_admission=lambda *_, **__: None,
    )
    admit = operating.admit_claims(cast(runtime.Runtime, glue), ALL)
    old: dict[str, Any] = {
        "metadata": {"name": "db", "uid": "uid-db", "generation": 3, "labels": {LABEL: "team-a"}},
        "spec": {"forProvider": {"instanceClass": "db.test", "allocatedStorage": 100}},
    }
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {LABEL: "ns"}
    answer = await admit(review("rds.aws.upbound.io", "Instance", new, old=old))
    assert not answer.allowed  # a CREATE in ns, at 100 over a budget of 50
    assert "projected 100.00 USD/month exceeds budget 50.00" in answer.message


async def test_the_webhook_tells_admission_the_annotations_before_an_update() -> None:
    """Without them admission read the old object with the new annotations, and an UPDATE
    re-pointing another kind's billing id (``dbquota.io/cluster-id``) was admitted."""
    store = Store(budget=1000)
    glue = SimpleNamespace(
        admission=admission(store, Quotas({})), observe_admission=lambda *_, **__: None
    )
    admit = operating.admit_claims(cast(runtime.Runtime, glue), ALL)
    old: dict[str, Any] = {
        "metadata": {"name": "db", "namespace": "ns", "uid": "uid-db", "generation": 3},
        "spec": {"instances": 1, "storage": {"size": "10Gi"}},
    }
    new = copy.deepcopy(old)
    new["metadata"]["annotations"] = {"dbquota.io/cluster-id": "elsewhere"}
    answer = await admit(review("postgresql.cnpg.io", "Cluster", new, "ns", old=old))
    assert not answer.allowed
    assert "the billing id of Cluster ns/db is fixed when it is created" in answer.message
