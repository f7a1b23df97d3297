"""A reconcile publishes the status it wrote as the quota's ``dbquota_quota_*`` metrics.

Against a stand-in for the Kubernetes adapter that holds one quota: after a reconcile the
registry shows the quota's budget, spend, used ratio and max staleness; a reservation held
on the status shows as reserved spend; a quota that is gone publishes nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from dbquota.adapters import metrics
from dbquota.domain import billing
from dbquota.domain.resources import QuotaObject
from dbquota.errors import NotFound
from dbquota.services import reconciling, reserving

NOW = 1_700_000_000.0


class OneQuota:
    """Just enough of :class:`dbquota.adapters.kube.Kube` for a ledger and Events."""

    def __init__(self, quota: QuotaObject | None) -> None:
        self.quota = quota

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        if self.quota is None or self.quota["metadata"]["name"] != name:
            raise NotFound(f"DatabaseQuota {namespace}/{name} not found")
        return copy.deepcopy(self.quota)

    async def patch_quota_status(
        self, *, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> QuotaObject:
        assert self.quota is not None
        self.quota["status"].update(status)  # type: ignore[typeddict-item]
        return copy.deepcopy(self.quota)

    async def post_event(self, **_: Any) -> None:
        pass


def reconciler(kube: OneQuota) -> reconciling.Reconciler:
    return reconciling.Reconciler(
        kube=kube,  # type: ignore[arg-type]
        ledgers=reserving.Ledgers(kube),  # type: ignore[arg-type]
        snapshot=billing.BillingSnapshot,
        clock=lambda: NOW,
        grace=300.0,
    )


def value(name: str, quota: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        name, {"namespace": "metered", "quota": quota, **labels}
    )


async def test_a_reconcile_publishes_the_written_status() -> None:
    kube = OneQuota(
        {
            "metadata": {"name": "published", "namespace": "metered", "generation": 1},
            "spec": {"monthlyBudget": 400, "degradation": {"maxStaleness": "5m"}},
            "status": {
                "reservations": [
                    {"claim": "db", "cost": 100.0, "reservedAt": "2023-11-14T22:13:00Z"}
                ]
            },
        }
    )
    ref = reconciling.QuotaRef(namespace="metered", name="published", uid="u")
    assert await reconciler(kube).reconcile(quota=ref, claims=[]) is not None
    assert value("dbquota_quota_budget", "published") == 400
    assert value("dbquota_quota_spend", "published", kind="reserved") == 100
    assert value("dbquota_quota_spend", "published", kind="observed") == 0
    assert value("dbquota_quota_remaining", "published") == 300
    assert value("dbquota_quota_used_ratio", "published") == 0.25
    assert value("dbquota_quota_max_staleness_seconds", "published") == 300


async def test_a_quota_that_is_gone_publishes_nothing() -> None:
    ref = reconciling.QuotaRef(namespace="metered", name="gone", uid="u")
    assert await reconciler(OneQuota(None)).reconcile(quota=ref, claims=[]) is None
    assert value("dbquota_quota_budget", "gone") is None
