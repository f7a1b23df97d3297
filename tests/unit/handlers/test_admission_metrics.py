"""Admission decisions as ``dbquota_admission_decisions_total`` counts them.

Checks, through :meth:`dbquota.handlers.runtime.Runtime.observe_admission` with decisions
made by :func:`dbquota.domain.verdicts.decide`, that the ``degraded`` label is the
decision's ``degraded`` field: ``true`` for a Conservative admission while the breaker is
open and for a FailClosed denial (pricing ``None``), dry-run decisions included;
``false`` for a live one and for a Conservative price of a class missing from a healthy
catalog, so that ``pricing`` alone does not tell degraded decisions apart.
"""

from __future__ import annotations

from typing import cast

import pytest

from dbquota.adapters import metrics
from dbquota.domain import billing, quotas, verdicts
from dbquota.handlers import runtime
from dbquota.services import fallbacks
from tests.unit.domain import samples


class Counting:
    """The runtime, as far as ``observe_admission`` uses it for admitted decisions."""

    def __init__(self) -> None:
        self.fallback = fallbacks.FallbackRate()


def decide(
    snapshot: billing.BillingSnapshot,
    *,
    policy: quotas.Policy = "Conservative",
    instance_class: str = "db.r6g.large",
) -> verdicts.Decision:
    return verdicts.decide(
        quota=samples.with_policy(policy),
        claim=samples.claim(instance_class),
        old_claim=None,
        usage=quotas.Usage(),
        snapshot=snapshot,
        now=samples.NOW,
    )


def count(decision: verdicts.Decision, *, dry_run: bool = False) -> dict[str, float]:
    """Observe ``decision`` alone; how much each ``degraded`` value of its series grew."""
    labels = {
        "outcome": "admitted" if decision.allowed else "denied",
        "pricing": decision.pricing or "None",
        "reason": decision.reason,
        "dry_run": str(dry_run).lower(),
    }

    def now() -> dict[str, float]:
        return {
            d: metrics.REGISTRY.get_sample_value(
                "dbquota_admission_decisions_total", {**labels, "degraded": d}
            )
            or 0.0
            for d in ("true", "false")
        }

    before = now()
    verdict = verdicts.Verdict(allowed=decision.allowed, decisions=(decision,))
    runtime.Runtime.observe_admission(
        cast(runtime.Runtime, Counting()),
        verdict,
        namespace="team-a",
        claim="orders",
        seconds=0.001,
        dry_run=dry_run,
    )
    return {d: n - before[d] for d, n in now().items()}


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_conservative_admission_with_the_breaker_open_counts_as_degraded(
    dry_run: bool,
) -> None:
    decision = decide(samples.degraded(circuit="Open"))
    assert (decision.allowed, decision.pricing, decision.degraded) == (True, "Conservative", True)
    assert count(decision, dry_run=dry_run) == {"true": 1, "false": 0}


def test_a_fail_closed_denial_priced_nothing_counts_as_degraded() -> None:
    decision = decide(samples.degraded(circuit="Open"), policy="FailClosed")
    assert (decision.allowed, decision.pricing, decision.degraded) == (False, None, True)
    assert count(decision) == {"true": 1, "false": 0}


def test_a_live_admission_counts_as_not_degraded() -> None:
    decision = decide(samples.healthy())
    assert (decision.allowed, decision.pricing, decision.degraded) == (True, "Live", False)
    assert count(decision) == {"true": 0, "false": 1}


def test_a_class_missing_from_a_healthy_catalog_is_conservative_but_not_degraded() -> None:
    decision = decide(samples.healthy(), instance_class=samples.UNKNOWN_CLASS)
    assert (decision.pricing, decision.degraded) == ("Conservative", False)
    assert count(decision) == {"true": 0, "false": 1}
