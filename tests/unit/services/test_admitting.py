"""What a dry run is told about each quota's decision, for ``kubectl dbquota explain``.

Checks the warning's ``key=value`` fields for an admission, a Warn-mode admission and a
denial, and that it never exceeds the 256 characters the apiserver keeps of a warning.
"""

from __future__ import annotations

from dbquota.domain import verdicts
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
