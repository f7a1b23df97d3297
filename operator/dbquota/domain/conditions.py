"""Status conditions as Kubernetes API conventions define them.

A condition is ``type/status/reason/message/lastTransitionTime/observedGeneration``;
``lastTransitionTime`` changes only when ``status`` flips. Reasons are one CamelCase word,
messages are for people. Pure functions over plain dicts (the shape the API stores); the
caller passes the time, formatted by :mod:`dbquota.kits.timestamps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypedDict

Status = Literal["True", "False", "Unknown"]

QUOTA_TYPES: tuple[str, ...] = (
    "Ready",
    "BillingAvailable",
    "BudgetExceeded",
    "BudgetThresholdReached",
)


class Condition(TypedDict):
    """One entry of ``status.conditions``."""

    type: str
    status: Status
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


def set_condition(
    current: Sequence[Condition],
    *,
    type_: str,
    status: Status,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """Return ``current`` with ``type_`` set; its transition time moves only on a flip."""
    old = next((c for c in current if c["type"] == type_), None)
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=now
        if old is None or old["status"] != status
        else old["lastTransitionTime"],
        observedGeneration=generation,
    )
    if old is None:
        return [*current, updated]
    return [updated if c["type"] == type_ else c for c in current]
