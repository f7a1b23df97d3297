"""Status conditions as ``kubectl describe`` shows them over time.

Checks: a condition's ``lastTransitionTime`` moves only when its status flips (a new
reason or message alone keeps it), while reason, message and observedGeneration follow
every write; a new type is added after the others, which are kept as they were.
(That every quota condition is present from the first visit is checked on whole statuses:
``test_statuses.py``.)
"""

from __future__ import annotations

from dbquota.domain import conditions

T0, T1 = "2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z"


def ready(
    status: conditions.Status, *, reason: str, generation: int, now: str
) -> list[conditions.Condition]:
    return conditions.set_condition(
        [],
        type_="Ready",
        status=status,
        reason=reason,
        message=f"{reason} for people",
        generation=generation,
        now=now,
    )


def test_the_transition_time_moves_only_when_the_status_flips() -> None:
    first = ready("True", reason="Reconciled", generation=1, now=T0)
    same = conditions.set_condition(
        first, type_="Ready", status="True", reason="Other", message="m", generation=2, now=T1
    )
    flipped = conditions.set_condition(
        same,
        type_="Ready",
        status="False",
        reason="BillingUnavailable",
        message="m",
        generation=2,
        now=T1,
    )
    assert [c for c in same if c["type"] == "Ready"] == [
        conditions.Condition(
            type="Ready",
            status="True",
            reason="Other",
            message="m",
            lastTransitionTime=T0,
            observedGeneration=2,
        )
    ]
    assert next(c for c in flipped if c["type"] == "Ready")["lastTransitionTime"] == T1


def test_a_new_type_is_added_and_the_others_are_kept() -> None:
    before = ready("True", reason="Reconciled", generation=1, now=T0)
    after = conditions.set_condition(
        before, type_="Custom", status="True", reason="Yes", message="m", generation=1, now=T1
    )
    assert after[:-1] == before
    assert after[-1]["type"] == "Custom"
    assert after[-1]["lastTransitionTime"] == T1
