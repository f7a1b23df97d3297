"""kopf handlers for DatabaseQuota: they tell the reconciler which quota to refresh.

- ``changed``: a quota created, resumed at start-up, or whose spec changed: refresh it
  (its status is written whole, every condition included: API conventions want them
  present from the first visit).
- ``refresh``: on a timer (``--resync-interval``), so staleness and billing health stay
  current even when nothing happens.
- ``forget``: a deleted quota.

The handlers only mark the quota dirty (:meth:`dbquota.services.reconciling.Reconciler.mark`);
the reconciler, on the leader only, writes the status by compare-and-swap, at most once
per short interval however many marks arrive. They run on every replica (kopf standalone);
leadership is decided by a Lease (:mod:`dbquota.services.leasing`), not by kopf peering.
"""

from __future__ import annotations

from typing import Any

import kopf

from dbquota.adapters import metrics
from dbquota.domain import kinds
from dbquota.handlers import runtime as runtime_

GROUP, VERSION, PLURAL = kinds.QUOTAS.group, kinds.QUOTAS.version, kinds.QUOTAS.plural


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def changed(*, namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Refresh the quota's whole status soon (on the leader)."""
    runtime_.of(memo).reconciler.mark(namespace or "", name or "", force=True)


def register_timer(interval: float) -> None:
    """Register the periodic refresh; its interval is a setting, so this runs at start-up."""
    timer = kopf.timer(GROUP, VERSION, PLURAL, interval=interval, idle=None, id="refresh")
    # kopf types a handler by its first decorator; `changed` takes only the kwargs that
    # timers get too (and **_), so the same function serves both.
    timer(changed)  # type: ignore[arg-type]


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(*, namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Drop a deleted quota's ledger, dirty mark and metrics (no finalizer: nothing to clean
    up elsewhere)."""
    metrics.forget_quota(namespace=namespace or "", name=name or "")
    runtime = memo.get("runtime")
    if isinstance(runtime, runtime_.Runtime):
        runtime.ledgers.drop(namespace=namespace or "", name=name or "")
        runtime.reconciler.forget(namespace or "", name or "")
