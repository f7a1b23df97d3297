"""kopf handlers for DatabaseQuota: its status, on every change and on a timer.

- ``first_status``: on the first visit (and on spec changes) a full reconcile, which
  writes every condition (API conventions: present from the first visit).
- ``refresh``: the same, on a timer (``--resync-interval``), so spend, billing health,
  reservations, staleness and breaker state stay current.

Both write through the quota's ledger (never kopf's ``patch``, which would land after the
ledger's compare-and-swap and overwrite it). With ``--peering`` only the elected replica
runs them; the webhook runs on every replica (see :mod:`dbquota.handlers.claims`).
"""

from __future__ import annotations

from typing import Any

import kopf

from dbquota.adapters import metrics
from dbquota.handlers import runtime as runtime_

GROUP, VERSION = "dbquota.io", "v1alpha1"


def _entry(
    namespace: str | None, name: str | None, uid: str | None, meta: kopf.Meta
) -> runtime_.QuotaEntry:
    return runtime_.QuotaEntry(
        namespace=namespace or "",
        name=name or "",
        uid=uid or "",
        generation=int(meta.get("generation", 0)),
    )


@kopf.on.resume(GROUP, VERSION, "databasequotas")
@kopf.on.create(GROUP, VERSION, "databasequotas")
@kopf.on.update(GROUP, VERSION, "databasequotas", field="spec")
async def first_status(
    *,
    namespace: str | None,
    name: str | None,
    uid: str | None,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """The whole status, conditions included, through the quota's ledger."""
    await runtime_.of(memo).reconcile(_entry(namespace, name, uid, meta))


def register_timer(interval: float) -> None:
    """Register the periodic refresh; its interval is a setting, so this runs at start-up."""
    timer = kopf.timer(GROUP, VERSION, "databasequotas", interval=interval, idle=None, id="refresh")
    # kopf types a handler by its first decorator; first_status takes only the kwargs that
    # timers get too (and **_), so the same function serves both.
    timer(first_status)  # type: ignore[arg-type]


@kopf.on.delete(GROUP, VERSION, "databasequotas", optional=True)
def forget(*, namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Drop a deleted quota's ledger and metrics (no finalizer: nothing to clean up
    elsewhere)."""
    metrics.forget_quota(namespace=namespace or "", name=name or "")
    runtime = memo.get("runtime")
    if isinstance(runtime, runtime_.Runtime):
        runtime.forget(namespace=namespace or "", name=name or "")
