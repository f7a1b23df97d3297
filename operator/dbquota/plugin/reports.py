"""What ``kubectl dbquota top`` reports, and the quota figures every report starts from.

:func:`figures` reads one DatabaseQuota into :class:`Figures` (budget, spend, escrow,
% used, billing health); absent or junk status fields read as unknown (``None``, printed
``-``), never as zero, since a quota the operator has not reconciled yet has spent nothing
*that we know of*. :func:`by_use` sorts quotas for ``top`` (% used descending, unknown
last). ``status`` adds more on top of :class:`Figures`: see :mod:`dbquota.plugin.statuses`.

Each report has a table form (``top_table``) and a document form (``top_document``) for
``-o json|yaml``, whose fields docs/kubectl-dbquota.md lists. Pure. Called by
:mod:`dbquota.plugin.main`, :mod:`dbquota.plugin.statuses` and
:mod:`dbquota.plugin.explanations`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dbquota.plugin import fields, tables

API_VERSION = "plugin.dbquota.io/v1"
"""The ``apiVersion`` of every ``-o json|yaml`` document: fields are only ever added."""


@dataclass(frozen=True, kw_only=True)
class Figures:
    """One DatabaseQuota's budget, spend and billing health, as its status says."""

    namespace: str
    name: str
    currency: str
    budget: float | None
    enforcement: str
    policy: str
    observed: float | None
    """``status.spend.observed``: billed run-rate (None until the operator wrote it)."""
    reserved: float | None
    """``status.spend.reserved``: admitted, not billed yet."""
    remaining: float | None
    """``status.spend.remaining``: budget - observed - reserved."""
    escrow: float
    """Sum of ``status.escrow[].cost``: held by webhook replicas ahead of admissions."""
    circuit_state: str | None
    degraded: bool | None
    degraded_reason: str | None
    staleness_seconds: int | None
    """``status.billing.stalenessSeconds`` as the operator last wrote it."""
    last_successful_sync: str | None

    @property
    def used_percent(self) -> float | None:
        """(observed + reserved) / budget x 100; None while spend or budget is unknown."""
        if self.observed is None or self.reserved is None or not self.budget:
            return None
        return (self.observed + self.reserved) / self.budget * 100

    def document(self) -> dict[str, object]:
        """The fields every document shares for a quota."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "currency": self.currency,
            "budget": self.budget,
            "observed": self.observed,
            "reserved": self.reserved,
            "escrow": round(self.escrow, 2),
            "remaining": self.remaining,
            "usedPercent": None if self.used_percent is None else round(self.used_percent, 2),
            "enforcement": self.enforcement,
            "degradationPolicy": self.policy,
            "circuitState": self.circuit_state,
            "degraded": self.degraded,
            "degradedReason": self.degraded_reason,
            "stalenessSeconds": self.staleness_seconds,
            "lastSuccessfulSync": self.last_successful_sync,
        }


def figures(quota: Mapping[str, Any]) -> Figures:
    """The :class:`Figures` of one DatabaseQuota object (as the API returns it)."""
    meta, spec, status = (fields.mapping(quota.get(k)) for k in ("metadata", "spec", "status"))
    spend, billing = fields.mapping(status.get("spend")), fields.mapping(status.get("billing"))
    degradation = fields.mapping(spec.get("degradation"))
    escrow = math.fsum(
        fields.number(e.get("cost")) or 0.0 for e in fields.mappings(status.get("escrow"))
    )
    return Figures(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        currency=fields.string(spec.get("currency")) or "USD",
        budget=fields.number(spec.get("monthlyBudget")),
        enforcement=fields.string(spec.get("enforcement")) or "Enforce",
        policy=fields.string(degradation.get("policy")) or "Conservative",
        observed=fields.number(spend.get("observed")),
        reserved=fields.number(spend.get("reserved")),
        remaining=fields.number(spend.get("remaining")),
        escrow=escrow,
        circuit_state=fields.string(billing.get("circuitState")),
        degraded=fields.boolean(billing.get("degraded")),
        degraded_reason=fields.string(billing.get("degradedReason")),
        staleness_seconds=fields.integer(billing.get("stalenessSeconds")),
        last_successful_sync=fields.string(billing.get("lastSuccessfulSync")),
    )


# -- top ----------------------------------------------------------------------------------


def by_use(quotas: Iterable[Figures]) -> list[Figures]:
    """``quotas`` by % used, highest first; unknown % last; ties by namespace and name."""

    def key(f: Figures) -> tuple[bool, float, str, str]:
        used = f.used_percent
        return (used is None, -(used or 0.0), f.namespace, f.name)

    return sorted(quotas, key=key)


TOP_HEADERS = (
    "NAME",
    "BUDGET",
    "OBSERVED",
    "RESERVED",
    "USED",
    "REMAINING",
    "CIRCUIT",
    "DEGRADED",
    "STALENESS",
)


def top_table(quotas: Sequence[Figures], *, all_namespaces: bool) -> str:
    """``top``'s table, rows in the order given (see :func:`by_use`); a NAMESPACE column
    first with ``-A``, as ``kubectl get -A`` prints."""
    rows = []
    for f in quotas:
        row = [
            f.name,
            tables.money(f.budget),
            tables.money(f.observed),
            tables.money(f.reserved),
            tables.percent(f.used_percent),
            tables.money(f.remaining),
            tables.text(f.circuit_state),
            tables.flag(f.degraded),
            tables.age(f.staleness_seconds),
        ]
        rows.append([f.namespace, *row] if all_namespaces else row)
    headers = ("NAMESPACE", *TOP_HEADERS) if all_namespaces else TOP_HEADERS
    return tables.table(headers, rows)


def top_document(quotas: Sequence[Figures]) -> dict[str, object]:
    """``top -o json|yaml``: ``{apiVersion, kind: QuotaTop, items: [quota fields]}``."""
    return {"apiVersion": API_VERSION, "kind": "QuotaTop", "items": [f.document() for f in quotas]}
