"""kopf handlers for DatabaseQuota: keep an in-memory index and write the status.

The index (``quotas_by_namespace``) is the in-memory view the admission webhook reads, so
admission never lists quotas from the apiserver. The first visit of a quota writes a status
with every condition present as ``Unknown`` (Kubernetes API conventions), which later
reconciliation refines.
"""

from __future__ import annotations

from typing import Any

import kopf

from dbquota.domain import conditions

GROUP = "dbquota.io"


@kopf.index(GROUP, "v1alpha1", "databasequotas")
def quotas_by_namespace(
    namespace: str | None, name: str | None, spec: kopf.Spec, **_: Any
) -> dict[str | None, dict[str, Any]]:
    """Index every quota's spec under its namespace: ``{namespace: [{"name":…, "spec":…}]}``."""
    return {namespace: {"name": name, "spec": dict(spec)}}


@kopf.on.resume(GROUP, "v1alpha1", "databasequotas")
@kopf.on.create(GROUP, "v1alpha1", "databasequotas")
@kopf.on.update(GROUP, "v1alpha1", "databasequotas", field="spec")
def first_status(status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    """Write the conditions on the first visit, even as Unknown, and the observed generation."""
    now = conditions.now()
    current = list(status.get("conditions") or [])
    patch.status["conditions"] = conditions.initial(
        current, now=now, generation=meta.get("generation", 0)
    )
    patch.status["observedGeneration"] = meta.get("generation", 0)
