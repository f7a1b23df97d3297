"""kopf handlers for DatabaseQuota: they tell the reconciler which quota to refresh.

- ``changed``: a quota created, resumed at start-up, or whose spec changed: refresh it
  (its status is written whole, every condition included: API conventions want them
  present from the first visit).
- ``refresh``: on a timer (``--resync-interval``), so staleness and billing health stay
  current even when nothing happens.
- ``forget``: a deleted quota (that object: kopf may tell of it once a new quota of the
  same name exists, which keeps its own ledger and marks).

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
async def forget(
    *, namespace: str | None, name: str | None, memo: kopf.Memo, uid: str | None = None, **_: Any
) -> None:
    """Drop a deleted quota's ledger, dirty mark and metrics (no finalizer: nothing to clean
    up elsewhere). Only the deleted object's (``uid``): kopf may tell of the delete after
    a new quota of the same name has appeared (``kubectl replace --force``), whose ledger
    and marks are its own. A coroutine, so that kopf runs it on the event loop, where the
    ledger's writer task is cancelled (kopf runs a plain function in a thread)."""
    namespace, name = namespace or "", name or ""
    runtime = memo.get("runtime")
    if isinstance(runtime, runtime_.Runtime):
        now = runtime.quota_informer.derived(namespace=namespace, name=name)
        if uid and now is not None and now.uid != uid:
            return
        runtime.ledgers.drop(namespace=namespace, name=name, uid=uid or "")
        runtime.reconciler.forget(namespace, name, uid=uid or "")
    metrics.forget_quota(namespace=namespace, name=name)
