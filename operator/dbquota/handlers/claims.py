"""kopf's validating webhook for DatabaseClaim (path ``/validate-claims``).

It reads only the runtime's watches (quotas, kept on every replica, so a standby decides
as well as the leader) and the billing snapshot, reserves through the quota's ledger, and
turns the verdict into kopf's answer: ``AdmissionError`` denies with the verdict's
message; warnings go into the admission response (kubectl prints them). The claim's
status is written by :mod:`dbquota.services.publishing`, not here.
"""

from __future__ import annotations

import time
from typing import Any

import kopf

from dbquota.handlers import runtime as runtime_
from dbquota.services import admitting

GROUP, VERSION = "dbquota.io", "v1alpha1"


@kopf.on.validate(
    GROUP,
    VERSION,
    "databaseclaims",
    id="validate-claims",
    operations=["CREATE", "UPDATE"],
    side_effects=True,
)
async def validate_claim(
    *,
    spec: kopf.Spec,
    meta: kopf.Meta,
    old: kopf.Body | None = None,
    namespace: str | None,
    name: str | None,
    dryrun: bool,
    warnings: list[str],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Admit or deny a DatabaseClaim against its namespace's quotas (see module docstring)."""
    runtime = runtime_.of(memo)
    started = time.perf_counter()
    generation = meta.get("generation", 1)
    review = admitting.Review(
        namespace=namespace or "",
        name=name or "",
        spec=dict(spec),
        old_spec=dict(old.get("spec", {})) if old else None,
        old_status=dict(old.get("status") or {}) if old else None,
        dry_run=dryrun,
        uid=str(meta.get("uid", "")),
        generation=generation if isinstance(generation, int) else 1,
    )
    verdict = await runtime.admission.review(review)
    runtime.observe_admission(
        verdict,
        namespace=namespace or "",
        claim=name or "",
        seconds=time.perf_counter() - started,
        dry_run=dryrun,
    )
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=403)
