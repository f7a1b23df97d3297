"""What a dry run is told about each quota's decision, for ``kubectl dbquota explain``.

Checks the warning's ``key=value`` fields for an admission, a Warn-mode admission and a
denial, and that it never exceeds the 256 characters the apiserver keeps of a warning;
and that an object whose size is too large to count (a CREATE, or an UPDATE that keeps
it) is denied naming the field, not answered with an internal error.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from dbquota.adapters.kube import Informer
from dbquota.domain import verdicts
from dbquota.domain.kinds import registry
from dbquota.services import admitting


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


@pytest.mark.parametrize("old_spec", [None, _HUGE])
async def test_a_size_too_large_to_count_is_denied_naming_the_field(
    old_spec: dict[str, Any] | None,
) -> None:
    """It overflowed (OverflowError: the webhook answered "internal error"), on a CREATE
    and on an UPDATE that keeps it (a metadata-only change)."""
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
