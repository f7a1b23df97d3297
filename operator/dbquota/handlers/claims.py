"""kopf admission handler for DatabaseClaim: the validating webhook's entry point.

Reads only the in-memory quota index (never the apiserver, never the billing API) and turns
the domain's verdict into kopf's answer: an ``AdmissionError`` denies with the verdict's
message; warnings go into the admission response.
"""

from __future__ import annotations

from typing import Any

import kopf

from dbquota.domain import verdicts

GROUP = "dbquota.io"


@kopf.on.validate(  # type: ignore[arg-type]
    GROUP,
    "v1alpha1",
    "databaseclaims",
    id="validate-claims",
    operations=["CREATE", "UPDATE"],
    side_effects=True,
)
def validate_claim(
    spec: kopf.Spec,
    namespace: str | None,
    name: str | None,
    quotas_by_namespace: kopf.Index[str | None, dict[str, Any]],
    warnings: list[str],
    **_: Any,
) -> None:
    """Deny a claim that breaks a hard cap of a DatabaseQuota of its namespace."""
    quotas = list(quotas_by_namespace.get(namespace, []))
    verdict = verdicts.check_hard_caps(
        claim_storage_gib=int(spec.get("storageGiB", 0)),
        quotas=[(q["name"], q["spec"]) for q in quotas],
    )
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=403)
