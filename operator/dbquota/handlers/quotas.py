"""kopf handlers for DatabaseQuota: an in-memory index, status on every change and timer.

- ``quotas_by_namespace``: each quota's namespace, name, uid and generation; admission
  reads it to know which quotas apply, never listing them from the apiserver.
- ``first_status``: on the first visit (and on spec changes) a full reconcile, which
  writes every condition (API conventions: present from the first visit).
- ``refresh``: a timer (``--resync-interval``) that recomputes spend, billing health,
  reservations and conditions, so staleness and breaker state stay current.
"""

from __future__ import annotations

from typing import Any

import kopf

from dbquota.domain import reservations
from dbquota.handlers import runtime as runtime_

GROUP, VERSION = "dbquota.io", "v1alpha1"


@kopf.index(GROUP, VERSION, "databasequotas")
def quotas_by_namespace(
    *, namespace: str | None, name: str | None, uid: str | None, meta: kopf.Meta, **_: Any
) -> dict[str | None, runtime_.QuotaEntry]:
    """``{namespace: QuotaEntry}`` for every quota kopf has seen."""
    return {
        namespace: runtime_.QuotaEntry(
            namespace=namespace or "",
            name=name or "",
            uid=uid or "",
            generation=int(meta.get("generation", 0)),
        )
    }


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
@kopf.on.update(GROUP, VERSION, "databasequotas", field="spec")  # type: ignore[arg-type]  # indexes come by name through **kwargs
async def first_status(
    *,
    namespace: str | None,
    name: str | None,
    uid: str | None,
    meta: kopf.Meta,
    memo: kopf.Memo,
    claims_by_namespace: kopf.Index[str | None, reservations.ClaimRef],
    **_: Any,
) -> None:
    """The whole status, conditions included, through the quota's ledger (never kopf's
    patch, which would land after the ledger's write and overwrite it)."""
    runtime = runtime_.of(memo)
    await runtime.reconcile(
        _entry(namespace, name, uid, meta), claims=list(claims_by_namespace.get(namespace, []))
    )


def register_timer(interval: float) -> None:
    """Register the periodic refresh; its interval is a setting, so this runs at start-up."""

    @kopf.timer(GROUP, VERSION, "databasequotas", interval=interval, idle=None, id="refresh")  # type: ignore[arg-type]  # indexes come by name through **kwargs
    async def refresh(
        *,
        namespace: str | None,
        name: str | None,
        uid: str | None,
        meta: kopf.Meta,
        memo: kopf.Memo,
        claims_by_namespace: kopf.Index[str | None, reservations.ClaimRef],
        **_: Any,
    ) -> None:
        runtime = runtime_.of(memo)
        await runtime.reconcile(
            _entry(namespace, name, uid, meta), claims=list(claims_by_namespace.get(namespace, []))
        )


@kopf.on.delete(GROUP, VERSION, "databasequotas", optional=True)
def forget(*, namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Drop a deleted quota's ledger (no finalizer: nothing to clean up elsewhere)."""
    runtime = memo.get("runtime")
    if isinstance(runtime, runtime_.Runtime):
        runtime.forget(namespace=namespace or "", name=name or "")
