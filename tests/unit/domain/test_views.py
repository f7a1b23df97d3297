"""What one replica knows of a quota: a quota created again under its name is a new one.

Checks that the spec is parsed again for a new object (a new ``metadata.uid``) even at the
same generation, which every quota starts at: keyed by generation alone, the old
quota's budget went on deciding for the new one.
"""

from __future__ import annotations

from typing import Any, cast

from dbquota.domain import quotas, views
from dbquota.domain.resources import QuotaObject


def quota(uid: str, version: str, budget: float) -> QuotaObject:
    obj: dict[str, Any] = {
        "metadata": {"name": "q", "uid": uid, "resourceVersion": version, "generation": 1},
        "spec": {"monthlyBudget": budget},
    }
    return cast(QuotaObject, obj)


def budget(view: views.QuotaView) -> float:
    spec = view.spec()
    assert isinstance(spec, quotas.QuotaSpec)
    return spec.monthly_budget


def test_a_quota_created_again_under_its_name_has_its_own_spec() -> None:
    view = views.QuotaView(name="q", holder="me")
    view.set(quota("old", "5", 10_000))
    assert budget(view) == 10_000
    view.set(quota("new", "9", 1_000))  # generation 1 again
    assert budget(view) == 1_000
    assert views.uid_of(quota("new", "9", 1_000)) == "new"
