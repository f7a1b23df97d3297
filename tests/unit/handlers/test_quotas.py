"""The DatabaseQuota delete handler drops the quota's metrics.

Checks that after kopf calls ``forget`` for a deleted quota, none of its
``dbquota_quota_*`` series is exported any more, even before the operator has finished
starting (no runtime in kopf's memo yet).
"""

from __future__ import annotations

import kopf

from dbquota.adapters import metrics
from dbquota.domain.resources import QuotaStatus
from dbquota.handlers import quotas


async def test_forgetting_a_deleted_quota_drops_its_series() -> None:
    labels = {"namespace": "deleted", "quota": "q"}
    metrics.publish_quota(
        namespace="deleted",
        name="q",
        spec={"monthlyBudget": 10},
        status=QuotaStatus(spend={"observed": 1.0, "reserved": 0.0, "remaining": 9.0}),
    )
    assert metrics.REGISTRY.get_sample_value("dbquota_quota_budget", labels) == 10
    # kopf types a decorated handler as its whole callback protocol (every kwarg it may pass).
    await quotas.forget(namespace="deleted", name="q", memo=kopf.Memo())  # type: ignore[call-arg,misc]
    for name in (
        "dbquota_quota_budget",
        "dbquota_quota_used_ratio",
        "dbquota_escrow_expired_total",
    ):
        assert metrics.REGISTRY.get_sample_value(name, labels) is None, name
