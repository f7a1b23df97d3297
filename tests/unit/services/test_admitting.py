"""What a dry run is told about each quota's decision, for ``kubectl dbquota explain``.

Checks the warning's ``key=value`` fields for an admission, a Warn-mode admission and a
denial, and that it never exceeds the 256 characters the apiserver keeps of a warning;
and that an object whose size is too large to count (a CREATE, or an UPDATE that keeps
it) is denied naming the field, not answered with an internal error.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dbquota.adapters.kube import Informer
from dbquota.domain import billing, kinds, verdicts
from dbquota.domain.kinds import registry
from dbquota.services import admitting
from dbquota.settings import NoQuotaPolicy
from tests.unit.services.test_reserving import PRICES, Store


def decision(**fields: object) -> verdicts.Decision:
    base: dict[str, object] = {
        "quota": "team-a",
        "allowed": True,
        "would_deny": False,
        "cost": 410.4,
        "pricing": "Live",
        "degraded": False,
        "policy": None,
        "reason": "WithinBudget",
        "message": "admitted",
    }
    base.update(fields)
    return verdicts.Decision(**base)  # type: ignore[arg-type]


def test_an_admission_is_explained() -> None:
    assert admitting.explain(decision()) == (
        "dbquota explain: quota=team-a verdict=admitted reason=WithinBudget cost=410.40 "
        "pricing=Live degraded=false policy=-"
    )


def test_warned_and_denied_are_told_apart() -> None:
    warned = admitting.explain(decision(would_deny=True, reason="BudgetExceeded"))
    assert "verdict=warned reason=BudgetExceeded" in warned
    denied = admitting.explain(
        decision(
            allowed=False,
            would_deny=True,
            pricing=None,
            degraded=True,
            policy="FailClosed",
            reason="BillingUnavailable",
            cost=0.0,
        )
    )
    assert "verdict=denied" in denied
    assert "pricing=None degraded=true policy=FailClosed" in denied


def test_the_warning_fits_what_the_apiserver_keeps() -> None:
    assert len(admitting.explain(decision(quota="q" * 300))) == 256


class _NoQuotas:
    """A quota informer that must not be asked: a bad object is denied before."""

    synced = asyncio.Event()

    def in_namespace(self, namespace: str) -> list[Any]:
        raise AssertionError(f"asked the quotas of {namespace}")


_HUGE = {"instances": 2, "storage": {"size": "1.7e317"}}


@pytest.mark.parametrize("old_spec", [None, {"instances": 2, "storage": {"size": "1Gi"}}])
async def test_a_size_too_large_to_count_is_denied_naming_the_field(
    old_spec: dict[str, Any] | None,
) -> None:
    """It overflowed (OverflowError: the webhook answered "internal error"), on a CREATE
    and on an UPDATE to it. (An UPDATE that keeps it, a metadata-only change, is admitted
    unpriced: see the tests of objects stored unreadable below.)"""
    admission = admitting.Admission(
        ledgers=cast(admitting.Ledgers, None),
        quotas=cast(Informer[Any], _NoQuotas()),
        no_quota="Admit",
    )
    verdict = await admission.review(
        admitting.Review(
            namespace="team-a",
            name="pg",
            spec=_HUGE,
            old_spec=old_spec,
            dry_run=False,
            kind=registry.KINDS["cnpg"],
        )
    )
    assert not verdict.allowed
    assert verdict.message.startswith(
        'invalid Cluster team-a/pg: spec.storage.size: invalid quantity "1.7e317": too large'
    )


# An UPDATE of an object stored unreadable, and one that changes another kind's billing id,
# decided against the real reservation ledger of quota ``ns/q`` (a Cluster, a postgresql or
# an Instance of class ``db.test`` costs exactly its GiB a month).

LABEL = "crossplane.io/claim-namespace"
BOOK = dataclasses.replace(
    PRICES, vcpu_hourly=0.0, memory_gib_hourly=0.0, storage_class_gib_month={None: 1.0}
)
REQUESTS = {"requests": {"cpu": "1", "memory": "1Gi"}}
GOOD = {"instances": 1, "storage": {"size": "10Gi"}, "resources": REQUESTS}
TEN_GIGS = {**GOOD, "storage": {"size": "ten gigs"}}
"""A Cluster CloudNativePG's CRD stores (``storage.size`` is a plain string there)."""
ZALANDO_GOOD = {"numberOfInstances": 1, "volume": {"size": "10Gi"}, "resources": REQUESTS}
ZALANDO_1K = {**ZALANDO_GOOD, "resources": {"requests": {"cpu": "1", "memory": "1K"}}}
"""A postgresql Zalando's CRD stores (its memory pattern admits ``1K``)."""
RDS = {"forProvider": {"instanceClass": "db.test", "allocatedStorage": 10}}


class _Quotas:
    """The quota informer: ``store``'s quota ``q`` in namespace ``ns``, or no quota."""

    def __init__(self, store: Store | None) -> None:
        self.synced = asyncio.Event()
        self.synced.set()
        self.store = store

    def in_namespace(self, namespace: str) -> list[Any]:
        return [SimpleNamespace(name="q")] if self.store and namespace == "ns" else []

    def get(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        return None if self.store is None else copy.deepcopy(self.store.quota)


def _snapshot() -> billing.BillingSnapshot:
    return billing.BillingSnapshot(
        health=billing.BillingHealth(last_success=BOOK.observed_at), prices=BOOK, highest=BOOK
    )


def _admission(store: Store | None, no_quota: NoQuotaPolicy = "Admit") -> admitting.Admission:
    ledgers = None if store is None else admitting.Ledgers(store, snapshot=_snapshot, holder="me")
    return admitting.Admission(
        ledgers=cast(admitting.Ledgers, ledgers),
        quotas=cast(Informer[Any], _Quotas(store)),
        no_quota=no_quota,
        namespace_label=LABEL,
    )


def _update(spec: object, old_spec: object, kind: str = "cnpg", **more: Any) -> admitting.Review:
    """An UPDATE of object ``db`` (a Cluster, postgresql in namespace ``ns``; an Instance
    whose tenant label names ``ns``) from ``old_spec`` to ``spec``."""
    return admitting.Review(
        namespace="" if kind == "rds" else "ns",
        name="db",
        spec=spec,
        old_spec=old_spec,
        dry_run=more.pop("dry_run", False),
        uid="uid-db",
        generation=2,
        kind=registry.KINDS[kind],
        labels={LABEL: "ns"} if kind == "rds" else {},
        **more,
    )


@pytest.mark.parametrize(
    ("kind", "good", "bad", "field"),
    [
        ("cnpg", GOOD, TEN_GIGS, 'oldObject.spec.storage.size: invalid quantity "ten gigs"'),
        ("zalando", ZALANDO_GOOD, ZALANDO_1K, "oldObject.spec.resources.requests.memory: "),
    ],
)
async def test_fixing_an_object_stored_unreadable_is_priced_as_a_new_object(
    kind: str, good: dict[str, Any], bad: dict[str, Any], field: str
) -> None:
    """It was denied for its old object ("invalid Cluster ns/db: spec.storage.size ...",
    though the new spec is valid), so it could never be fixed. No quota counts it (the
    recount cannot read it either), so nothing of it is credited: all 10 GiB are growth."""
    store = Store(budget=5)
    denied = await _admission(store).review(_update(good, bad, kind))
    assert not denied.allowed
    assert "projected 10.00 USD/month exceeds budget 5.00" in denied.message, denied.message
    store.change_spec(budget=1000)
    admitted = await _admission(store).review(_update(good, bad, kind))
    assert admitted.allowed, admitted.message
    (decision,) = admitted.decisions
    assert (decision.cost, decision.new_claims, decision.storage_gib) == (10.0, 1, 10)
    (warning,) = admitted.warnings
    assert field in warning
    assert "no DatabaseQuota counts it" in warning
    assert "priced as a new object" in warning


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (TEN_GIGS, 'spec.storage.size: invalid quantity "ten gigs"'),
        (_HUGE, 'spec.storage.size: invalid quantity "1.7e317": too large'),
    ],
)
@pytest.mark.parametrize("no_quota", ["Admit", "Deny"])
@pytest.mark.parametrize("quota", [True, False])
async def test_a_metadata_only_update_of_an_object_stored_unreadable_is_admitted_unpriced(
    quota: bool, no_quota: NoQuotaPolicy, spec: dict[str, Any], field: str
) -> None:
    """A finalizer removed by its operator, an annotation: it was denied, so the object
    could not even be deleted. Its spec stays as unreadable and uncounted as it was."""
    store = Store(budget=1000) if quota else None
    verdict = await _admission(store, no_quota).review(_update(spec, spec))
    assert verdict.allowed, verdict.message
    assert verdict.decisions == ()
    (warning,) = verdict.warnings
    assert warning.startswith(f"dbquota: Cluster ns/db cannot be read ({field}"), warning
    assert "no DatabaseQuota counts it" in warning
    assert store is None or store.writes == []


@pytest.mark.parametrize(
    ("old", "message"),
    [
        (GOOD, 'invalid Cluster ns/db: spec.storage.size: invalid quantity "ten gigs"'),
        (
            {"instances": 1, "storage": {"size": "eleven gigs"}},
            'invalid Cluster ns/db: spec.storage.size: invalid quantity "ten gigs"',
        ),
    ],
)
async def test_an_update_to_an_unreadable_spec_is_denied_naming_the_new_field(
    old: dict[str, Any], message: str
) -> None:
    verdict = await _admission(Store(budget=1000)).review(_update(TEN_GIGS, old))
    assert not verdict.allowed
    assert verdict.message.startswith(message), verdict.message


ID = kinds.CLUSTER_ID_ANNOTATION


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("enforcement", ["Enforce", "Warn", "DryRun"])
@pytest.mark.parametrize(
    ("kind", "before", "after", "how"),
    [
        ("cnpg", {}, {ID: "team-x/big"}, "adding"),
        ("cnpg", {ID: "team-x/small"}, {ID: "team-x/big"}, "changing"),
        ("cnpg", {ID: "team-x/small"}, {}, "removing"),
        ("rds", {}, {ID: "big"}, "adding"),
    ],
)
async def test_an_update_changing_another_kinds_billing_id_is_denied(
    kind: str,
    before: dict[str, str],
    after: dict[str, str],
    how: str,
    enforcement: str,
    dry_run: bool,
) -> None:
    """It was admitted (NoIncrease), and the recount then counted the object at the billed
    cost of whatever id it named: a cluster charged 11,404.00 counted as 1.0."""
    store = Store(budget=1000)
    store.quota["spec"]["enforcement"] = enforcement
    spec = GOOD if kind == "cnpg" else RDS
    update = _update(spec, spec, kind, annotations=after, old_annotations=before, dry_run=dry_run)
    verdict = await _admission(store).review(update)
    assert not verdict.allowed
    what = "Cluster ns/db" if kind == "cnpg" else "Instance db"
    assert verdict.message.startswith(
        f"denied: the billing id of {what} is fixed when it is created; "
    ), verdict.message
    assert f"{how} its annotation {ID}" in verdict.message
    assert "delete it and create it again" in verdict.message
    assert store.writes == []


@pytest.mark.parametrize(
    ("kind", "before", "after"),
    [
        ("cnpg", {ID: "team-x/small", "note": "a"}, {ID: "team-x/small", "note": "b"}),
        ("cnpg", {}, {ID: "ns/db"}),  # names the id it had: nothing changes
        # Crossplane records the RDS identifier once the instance exists (the billing id
        # of an Instance without the annotation): the provider's own write, never refused.
        ("rds", {}, {"crossplane.io/external-name": "db-ABCDEFGHIJKL"}),
    ],
)
async def test_an_update_keeping_the_billing_annotation_is_admitted(
    kind: str, before: dict[str, str], after: dict[str, str]
) -> None:
    spec = GOOD if kind == "cnpg" else RDS
    update = _update(spec, spec, kind, annotations=after, old_annotations=before)
    verdict = await _admission(Store(budget=1000)).review(update)
    assert verdict.allowed, verdict.message
    assert verdict.decisions[0].reason == "NoIncrease"


async def test_a_billing_id_counted_by_no_quota_is_not_checked() -> None:
    """Admission does not apply to an object no quota counts (--no-quota-policy=Admit),
    nor does its billing id, as when such an object is created; under Deny, the usual
    denial."""
    update = _update(GOOD, GOOD, annotations={ID: "b"}, old_annotations={ID: "a"})
    assert (await _admission(None).review(update)).allowed
    denied = await _admission(None, "Deny").review(update)
    assert not denied.allowed
    assert "--no-quota-policy=Deny" in denied.message


async def test_a_databaseclaims_billing_id_is_not_its_annotation() -> None:
    """A DatabaseClaim's id is spec.clusterId, fixed by its CRD before any webhook sees
    the UPDATE: the annotation means nothing on it."""
    spec = {"engine": "postgres", "instanceClass": "db.test", "storageGiB": 10}
    update = _update(spec, spec, "databaseclaims", annotations={ID: "b"}, old_annotations={})
    verdict = await _admission(Store(budget=1000)).review(update)
    assert verdict.allowed, verdict.message
