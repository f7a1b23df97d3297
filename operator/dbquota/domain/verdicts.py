"""Admission verdicts: whether a claim is admitted, and a message a tenant can act on.

Pure: callers pass the claim and the quotas' specs; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """The outcome of one admission decision."""

    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


def check_hard_caps(
    *, claim_storage_gib: int, quotas: Sequence[tuple[str, Mapping[str, Any]]]
) -> Verdict:
    """Deny when the claim alone exceeds a quota's ``hard.storageGiB`` (no pricing needed)."""
    for name, spec in quotas:
        cap = (spec.get("hard") or {}).get("storageGiB")
        if cap is not None and claim_storage_gib > int(cap):
            return Verdict(
                allowed=False,
                message=(
                    f"denied by DatabaseQuota {name}: storageGiB {claim_storage_gib} exceeds "
                    f"the hard cap of {int(cap)} GiB by {claim_storage_gib - int(cap)}"
                ),
            )
    return Verdict(allowed=True)
