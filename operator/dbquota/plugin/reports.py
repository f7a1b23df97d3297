"""What ``kubectl dbquota top`` and ``status`` report, built from objects the API returned.

:func:`figures` reads one DatabaseQuota into :class:`Figures` (budget, spend, escrow,
% used, billing health); absent or junk status fields read as unknown (``None``, printed
``-``), never as zero, since a quota the operator has not reconciled yet has spent nothing
*that we know of*. :func:`by_use` sorts quotas for ``top`` (% used descending, unknown
last). :func:`status_report` adds what ``status`` shows: reservations in flight, escrow by
holder with the state of the holder's liveness Lease (:func:`lease_state`), conditions and
the quota's Events (newest last).

Each report has a table form (``top_table``, ``status_text``) and a document form
(``top_document``, ``status_document``) for ``-o json|yaml``, whose fields
docs/kubectl-dbquota.md lists. Pure: the current time is passed in. Called by
:mod:`dbquota.plugin.main` and :mod:`dbquota.plugin.explanations`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dbquota.kits import timestamps
from dbquota.plugin import tables

API_VERSION = "plugin.dbquota.io/v1"
"""The ``apiVersion`` of every ``-o json|yaml`` document: fields are only ever added."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _integer(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _boolean(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


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
    meta, spec, status = (_mapping(quota.get(k)) for k in ("metadata", "spec", "status"))
    spend, billing = _mapping(status.get("spend")), _mapping(status.get("billing"))
    escrow = math.fsum(_number(e.get("cost")) or 0.0 for e in _list(status.get("escrow")))
    return Figures(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        currency=_string(spec.get("currency")) or "USD",
        budget=_number(spec.get("monthlyBudget")),
        enforcement=_string(spec.get("enforcement")) or "Enforce",
        policy=_string(_mapping(spec.get("degradation")).get("policy")) or "Conservative",
        observed=_number(spend.get("observed")),
        reserved=_number(spend.get("reserved")),
        remaining=_number(spend.get("remaining")),
        escrow=escrow,
        circuit_state=_string(billing.get("circuitState")),
        degraded=_boolean(billing.get("degraded")),
        degraded_reason=_string(billing.get("degradedReason")),
        staleness_seconds=_integer(billing.get("stalenessSeconds")),
        last_successful_sync=_string(billing.get("lastSuccessfulSync")),
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


# -- status -------------------------------------------------------------------------------

LeaseStateName = Literal["Live", "Lapsed", "Missing", "Unknown"]


@dataclass(frozen=True, kw_only=True)
class LeaseState:
    """Whether an escrow holder's liveness Lease is live, as this machine's clock sees it."""

    state: LeaseStateName
    """``Live``: renewed within its ``leaseDurationSeconds``; ``Lapsed``: not renewed for
    longer (the leader lets its escrow go); ``Missing``: no replica Lease names the holder
    (it shut down, or its Lease was deleted); ``Unknown``: the Leases could not be read."""
    namespace: str = ""
    name: str = ""
    renew_time: str = ""
    renewed_seconds_ago: float | None = None

    def document(self) -> dict[str, object]:
        """``{state, namespace, name, renewTime, renewedSecondsAgo}``."""
        return {
            "state": self.state,
            "namespace": self.namespace or None,
            "name": self.name or None,
            "renewTime": self.renew_time or None,
            "renewedSecondsAgo": None
            if self.renewed_seconds_ago is None
            else round(self.renewed_seconds_ago, 1),
        }


def lease_state(
    holder: str, *, leases: Sequence[Mapping[str, Any]] | None, now: float
) -> LeaseState:
    """The state of ``holder``'s replica Lease among ``leases`` (None: they could not be
    read). Live while ``renewTime + leaseDurationSeconds`` is not past ``now``: this
    compares the replica's clock with ours, where the operator itself compares none (see
    :mod:`dbquota.services.leasing`), so near the boundary it is an estimate."""
    if leases is None:
        return LeaseState(state="Unknown")
    for lease in leases:
        spec = _mapping(lease.get("spec"))
        if spec.get("holderIdentity") != holder:
            continue
        meta = _mapping(lease.get("metadata"))
        renew_time = _string(spec.get("renewTime")) or ""
        duration = _number(spec.get("leaseDurationSeconds")) or 0.0
        renewed = timestamps.from_rfc3339(renew_time)
        ago = now - renewed if renewed else None
        live = ago is not None and ago <= duration
        return LeaseState(
            state="Live" if live else "Lapsed",
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            renew_time=renew_time,
            renewed_seconds_ago=ago,
        )
    return LeaseState(state="Missing")


def _event_time(event: Mapping[str, Any]) -> float:
    """When an Event last happened: its series' latest occurrence (``events.k8s.io/v1``
    Events with repeats), else the first time stamp it has."""
    if when := timestamps.from_rfc3339(_mapping(event.get("series")).get("lastObservedTime")):
        return when
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if when := timestamps.from_rfc3339(event.get(key)):
            return when
    return timestamps.from_rfc3339(_mapping(event.get("metadata")).get("creationTimestamp"))


def _event_count(event: Mapping[str, Any]) -> int:
    """Occurrences of an Event: its series' count, else the legacy ``count``, else 1."""
    return _integer(_mapping(event.get("series")).get("count")) or _integer(event.get("count")) or 1


def recent_events(events: Iterable[Mapping[str, Any]], *, limit: int) -> list[Mapping[str, Any]]:
    """The ``limit`` latest of ``events``, oldest first (newest last, as ``kubectl events``)."""
    ordered = sorted(
        events,
        key=lambda e: (_event_time(e), str(_mapping(e.get("metadata")).get("name", ""))),
    )
    return ordered[-limit:] if limit > 0 else []


@dataclass(frozen=True, kw_only=True)
class StatusReport:
    """Everything ``kubectl dbquota status`` shows for one quota."""

    figures: Figures
    quota: Mapping[str, Any]
    """The DatabaseQuota object."""
    leases: Sequence[Mapping[str, Any]] | None
    """Every replica Lease (None: they could not be read)."""
    events: Sequence[Mapping[str, Any]]
    """The quota's Events, oldest first."""
    now: float

    def _status(self) -> Mapping[str, Any]:
        return _mapping(self.quota.get("status"))

    def reservations(self) -> list[dict[str, object]]:
        """``status.reservations``: admissions in flight, with their age."""
        out: list[dict[str, object]] = []
        for r in _list(self._status().get("reservations")):
            reserved_at = _string(r.get("reservedAt"))
            when = timestamps.from_rfc3339(reserved_at)
            out.append(
                {
                    "claim": _string(r.get("claim")),
                    "uid": _string(r.get("uid")),
                    "generation": _integer(r.get("generation")),
                    "cost": _number(r.get("cost")),
                    "delta": _number(r.get("delta")),
                    "storageGiB": _integer(r.get("storageGiB")),
                    "pricing": _string(r.get("pricing")),
                    "degraded": bool(r.get("degraded")),
                    "newClaim": bool(r.get("newClaim")),
                    "reservedAt": reserved_at,
                    "ageSeconds": round(self.now - when, 1) if when else None,
                    "holder": _string(r.get("holder")),
                }
            )
        return out

    def escrow(self) -> list[dict[str, object]]:
        """``status.escrow``: budget each replica holds, with its Lease's state."""
        out: list[dict[str, object]] = []
        for e in _list(self._status().get("escrow")):
            holder = str(e.get("holder", ""))
            out.append(
                {
                    "holder": holder,
                    "cost": _number(e.get("cost")),
                    "claims": _integer(e.get("claims")),
                    "storageGiB": _integer(e.get("storageGiB")),
                    "generation": _integer(e.get("generation")),
                    "lease": lease_state(holder, leases=self.leases, now=self.now).document(),
                }
            )
        return out

    def conditions(self) -> list[dict[str, object]]:
        """``status.conditions`` as stored."""
        out: list[dict[str, object]] = [
            {
                "type": _string(c.get("type")),
                "status": _string(c.get("status")),
                "reason": _string(c.get("reason")),
                "message": _string(c.get("message")) or "",
                "lastTransitionTime": _string(c.get("lastTransitionTime")),
            }
            for c in _list(self._status().get("conditions"))
        ]
        return out

    def event_entries(self) -> list[dict[str, object]]:
        """The Events, oldest first: ``{type, reason, message, count, lastTimestamp}``."""
        out: list[dict[str, object]] = []
        for e in self.events:
            when = _event_time(e)
            out.append(
                {
                    "type": _string(e.get("type")),
                    "reason": _string(e.get("reason")),
                    "message": _string(e.get("message")) or "",
                    "count": _event_count(e),
                    "lastTimestamp": timestamps.to_rfc3339(when) if when else None,
                }
            )
        return out

    def used(self) -> dict[str, object]:
        """``status.used`` and the hard caps it counts against."""
        used = _mapping(self._status().get("used"))
        hard = _mapping(_mapping(self.quota.get("spec")).get("hard"))
        return {
            "claims": _integer(used.get("claims")),
            "storageGiB": _integer(used.get("storageGiB")),
            "degradedClaims": _integer(used.get("degradedClaims")),
            "degradedStorageGiB": _integer(used.get("degradedStorageGiB")),
            "hardClaims": _integer(hard.get("claims")),
            "hardStorageGiB": _integer(hard.get("storageGiB")),
        }

    def billing(self) -> dict[str, object]:
        """``status.billing`` beyond what :class:`Figures` holds."""
        billing = _mapping(self._status().get("billing"))
        return {
            "fallbackHitRate": _number(billing.get("fallbackHitRate")),
            "consecutiveFailures": _integer(billing.get("consecutiveFailures")),
            "lastError": _string(billing.get("lastError")),
        }


def status_document(report: StatusReport) -> dict[str, object]:
    """``status -o json|yaml``: ``{apiVersion, kind: QuotaStatus, quota, used, billing,
    reservations, escrow, conditions, events}``."""
    return {
        "apiVersion": API_VERSION,
        "kind": "QuotaStatus",
        "quota": report.figures.document(),
        "used": report.used(),
        "billing": report.billing(),
        "reservations": report.reservations(),
        "escrow": report.escrow(),
        "conditions": report.conditions(),
        "events": report.event_entries(),
    }


def _of(used: object, cap: object, unit: str = "") -> str:
    if used is None:
        return tables.NONE
    return f"{used}{unit}" + (f" of {cap}{unit} (hard cap)" if cap is not None else "")


def _section(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return [f"{title}: none"]
    return [f"{title}:", tables.table(headers, rows)]


def status_text(report: StatusReport) -> str:
    """``status``'s table form: the figures, then one table per list (reservations, escrow,
    conditions, events), each saying ``none`` when empty."""
    f, now = report.figures, report.now
    used, billing = report.used(), report.billing()
    fields = [
        ("Quota", f"{f.namespace}/{f.name}"),
        ("Enforcement", f"{f.enforcement}, degradation policy {f.policy}"),
        ("Budget", f"{tables.money(f.budget)} {f.currency}/month"),
        ("Observed", tables.money(f.observed)),
        ("Reserved", tables.money(f.reserved)),
        ("Escrow", f"{tables.money(f.escrow)} (held by webhook replicas ahead of admissions)"),
        ("Remaining", tables.money(f.remaining)),
        ("Used", tables.percent(f.used_percent)),
        ("Claims", _of(used["claims"], used["hardClaims"])),
        ("Storage", _of(used["storageGiB"], used["hardStorageGiB"], " GiB")),
        (
            "Billing",
            f"circuit {tables.text(f.circuit_state)}, degraded {tables.flag(f.degraded)}"
            + (f" ({f.degraded_reason})" if f.degraded_reason else "")
            + f", staleness {tables.age(f.staleness_seconds)}"
            + f", last sync {tables.text(f.last_successful_sync)}"
            + f", failures {tables.text(billing['consecutiveFailures'])}",
        ),
    ]
    if billing["lastError"]:
        fields.append(("Last error", str(billing["lastError"])))
    width = max(len(k) for k, _ in fields) + 2
    lines = [f"{k + ':':<{width}}{v}" for k, v in fields]
    lines.append("")
    lines += _section(
        "Reservations in flight",
        ("CLAIM", "COST", "DELTA", "GIB", "PRICING", "DEGRADED", "HOLDER", "AGE"),
        [
            [
                tables.text(r["claim"]),
                tables.money(_number(r["cost"])),
                tables.money(_number(r["delta"])),
                tables.text(r["storageGiB"]),
                tables.text(r["pricing"]),
                tables.flag(_boolean(r["degraded"])),
                tables.text(r["holder"]),
                tables.age(_number(r["ageSeconds"])),
            ]
            for r in report.reservations()
        ],
    )
    lines.append("")
    escrow_rows = []
    for e in report.escrow():
        lease = _mapping(e["lease"])
        ago = _number(lease.get("renewedSecondsAgo"))
        state = str(lease.get("state"))
        escrow_rows.append(
            [
                str(e["holder"]),
                tables.money(_number(e["cost"])),
                tables.text(e["claims"]),
                tables.text(e["storageGiB"]),
                state + (f" (renewed {tables.age(ago)} ago)" if ago is not None else ""),
            ]
        )
    lines += _section("Escrow", ("HOLDER", "COST", "CLAIMS", "GIB", "LEASE"), escrow_rows)
    lines.append("")
    lines += _section(
        "Conditions",
        ("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"),
        [
            [
                tables.text(c["type"]),
                tables.text(c["status"]),
                tables.text(c["reason"]),
                tables.age(_since(c["lastTransitionTime"], now)),
                str(c["message"]),
            ]
            for c in report.conditions()
        ],
    )
    lines.append("")
    lines += _section(
        "Events (newest last)",
        ("LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"),
        [
            [
                tables.age(_since(e["lastTimestamp"], now)),
                tables.text(e["type"]),
                tables.text(e["reason"]),
                tables.text(e["count"]),
                str(e["message"]),
            ]
            for e in report.event_entries()
        ],
    )
    return "\n".join(lines)


def _since(stamp: object, now: float) -> float | None:
    when = timestamps.from_rfc3339(stamp)
    return now - when if when else None
