"""Breaker transitions are announced as Events in the order they happened.

Each transition is posted from its own background task; the first POST is made slow here,
as a busy apiserver can make it, and the Events must still be created in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dbquota.domain import billing
from dbquota.services import reconciling


class SlowFirstPost:
    def __init__(self) -> None:
        self.created: list[str] = []

    async def post_event(self, *, reason: str, **_: Any) -> None:
        if not self.created and reason == "CircuitHalfOpen":
            await asyncio.sleep(0.05)
        self.created.append(reason)


async def test_transitions_are_posted_in_order() -> None:
    kube = SlowFirstPost()
    reconciler = reconciling.Reconciler(
        kube=kube,  # type: ignore[arg-type]
        ledgers=None,  # type: ignore[arg-type]
        snapshot=billing.BillingSnapshot,
        clock=lambda: 0.0,
        grace=300.0,
    )
    quota = reconciling.QuotaRef(namespace="ns", name="q", uid="u")
    first = asyncio.create_task(
        reconciler.announce_transition([quota], old="Open", new="HalfOpen", reason="timeout")
    )
    second = asyncio.create_task(
        reconciler.announce_transition([quota], old="HalfOpen", new="Closed", reason="probe")
    )
    await asyncio.gather(first, second)
    assert kube.created == ["CircuitHalfOpen", "CircuitClosed"]
