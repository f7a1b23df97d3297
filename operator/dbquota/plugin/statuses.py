"""What ``kubectl dbquota status`` reports for one quota.

:class:`StatusReport` adds to the quota's :class:`~dbquota.plugin.reports.Figures` what
``status`` shows: reservations in flight, escrow by holder with the state of the holder's
liveness Lease (:func:`lease_state`), hard-cap use, conditions and the quota's Events
(:func:`recent_events`, newest last). It has a table form (:func:`status_text`) and a
document form (:func:`status_document`) for ``-o json|yaml``, whose fields
docs/kubectl-dbquota.md lists. Pure: the current time is passed in. Called by
:mod:`dbquota.plugin.main`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dbquota.kits import timestamps
from dbquota.plugin import fields, tables
from dbquota.plugin.reports import API_VERSION, Figures

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
        spec = fields.mapping(lease.get("spec"))
        if spec.get("holderIdentity") != holder:
            continue
        meta = fields.mapping(lease.get("metadata"))
        renew_time = fields.string(spec.get("renewTime")) or ""
        duration = fields.number(spec.get("leaseDurationSeconds")) or 0.0
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
    if when := timestamps.from_rfc3339(fields.mapping(event.get("series")).get("lastObservedTime")):
        return when
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if when := timestamps.from_rfc3339(event.get(key)):
            return when
    return timestamps.from_rfc3339(fields.mapping(event.get("metadata")).get("creationTimestamp"))


def _event_count(event: Mapping[str, Any]) -> int:
    """Occurrences of an Event: its series' count, else the legacy ``count``, else 1."""
    return (
        fields.integer(fields.mapping(event.get("series")).get("count"))
        or fields.integer(event.get("count"))
        or 1
    )


def recent_events(events: Iterable[Mapping[str, Any]], *, limit: int) -> list[Mapping[str, Any]]:
    """The ``limit`` latest of ``events``, oldest first (newest last, as ``kubectl events``)."""
    ordered = sorted(
        events,
        key=lambda e: (_event_time(e), str(fields.mapping(e.get("metadata")).get("name", ""))),
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
        return fields.mapping(self.quota.get("status"))

    def reservations(self) -> list[dict[str, object]]:
        """``status.reservations``: admissions in flight, with their age."""
        out: list[dict[str, object]] = []
        for r in fields.mappings(self._status().get("reservations")):
            reserved_at = fields.string(r.get("reservedAt"))
            when = timestamps.from_rfc3339(reserved_at)
            out.append(
                {
                    "claim": fields.string(r.get("claim")),
                    "uid": fields.string(r.get("uid")),
                    "generation": fields.integer(r.get("generation")),
                    "cost": fields.number(r.get("cost")),
                    "delta": fields.number(r.get("delta")),
                    "storageGiB": fields.integer(r.get("storageGiB")),
                    "pricing": fields.string(r.get("pricing")),
                    "degraded": bool(r.get("degraded")),
                    "newClaim": bool(r.get("newClaim")),
                    "reservedAt": reserved_at,
                    "ageSeconds": round(self.now - when, 1) if when else None,
                    "holder": fields.string(r.get("holder")),
                }
            )
        return out

    def escrow(self) -> list[dict[str, object]]:
        """``status.escrow``: budget each replica holds, with its Lease's state."""
        out: list[dict[str, object]] = []
        for e in fields.mappings(self._status().get("escrow")):
            holder = str(e.get("holder", ""))
            out.append(
                {
                    "holder": holder,
                    "cost": fields.number(e.get("cost")),
                    "claims": fields.integer(e.get("claims")),
                    "storageGiB": fields.integer(e.get("storageGiB")),
                    "generation": fields.integer(e.get("generation")),
                    "lease": lease_state(holder, leases=self.leases, now=self.now).document(),
                }
            )
        return out

    def conditions(self) -> list[dict[str, object]]:
        """``status.conditions`` as stored."""
        out: list[dict[str, object]] = [
            {
                "type": fields.string(c.get("type")),
                "status": fields.string(c.get("status")),
                "reason": fields.string(c.get("reason")),
                "message": fields.string(c.get("message")) or "",
                "lastTransitionTime": fields.string(c.get("lastTransitionTime")),
            }
            for c in fields.mappings(self._status().get("conditions"))
        ]
        return out

    def event_entries(self) -> list[dict[str, object]]:
        """The Events, oldest first: ``{type, reason, message, count, lastTimestamp}``."""
        out: list[dict[str, object]] = []
        for e in self.events:
            when = _event_time(e)
            out.append(
                {
                    "type": fields.string(e.get("type")),
                    "reason": fields.string(e.get("reason")),
                    "message": fields.string(e.get("message")) or "",
                    "count": _event_count(e),
                    "lastTimestamp": timestamps.to_rfc3339(when) if when else None,
                }
            )
        return out

    def used(self) -> dict[str, object]:
        """``status.used`` and the hard caps it counts against."""
        used = fields.mapping(self._status().get("used"))
        hard = fields.mapping(fields.mapping(self.quota.get("spec")).get("hard"))
        return {
            "claims": fields.integer(used.get("claims")),
            "storageGiB": fields.integer(used.get("storageGiB")),
            "degradedClaims": fields.integer(used.get("degradedClaims")),
            "degradedStorageGiB": fields.integer(used.get("degradedStorageGiB")),
            "hardClaims": fields.integer(hard.get("claims")),
            "hardStorageGiB": fields.integer(hard.get("storageGiB")),
        }

    def billing(self) -> dict[str, object]:
        """``status.billing`` beyond what :class:`Figures` holds."""
        billing = fields.mapping(self._status().get("billing"))
        return {
            "fallbackHitRate": fields.number(billing.get("fallbackHitRate")),
            "consecutiveFailures": fields.integer(billing.get("consecutiveFailures")),
            "lastError": fields.string(billing.get("lastError")),
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


def _summary(report: StatusReport) -> list[str]:
    """The figures as ``Key:  value`` lines."""
    f, used, billing = report.figures, report.used(), report.billing()
    pairs = [
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
        pairs.append(("Last error", str(billing["lastError"])))
    width = max(len(k) for k, _ in pairs) + 2
    return [f"{k + ':':<{width}}{v}" for k, v in pairs]


def _reservation_rows(report: StatusReport) -> list[list[str]]:
    return [
        [
            tables.text(r["claim"]),
            tables.money(fields.number(r["cost"])),
            tables.money(fields.number(r["delta"])),
            tables.text(r["storageGiB"]),
            tables.text(r["pricing"]),
            tables.flag(fields.boolean(r["degraded"])),
            tables.text(r["holder"]),
            tables.age(fields.number(r["ageSeconds"])),
        ]
        for r in report.reservations()
    ]


def _escrow_rows(report: StatusReport) -> list[list[str]]:
    rows = []
    for e in report.escrow():
        lease = fields.mapping(e["lease"])
        ago = fields.number(lease.get("renewedSecondsAgo"))
        state = str(lease.get("state"))
        rows.append(
            [
                str(e["holder"]),
                tables.money(fields.number(e["cost"])),
                tables.text(e["claims"]),
                tables.text(e["storageGiB"]),
                state + (f" (renewed {tables.age(ago)} ago)" if ago is not None else ""),
            ]
        )
    return rows


def _condition_rows(report: StatusReport) -> list[list[str]]:
    return [
        [
            tables.text(c["type"]),
            tables.text(c["status"]),
            tables.text(c["reason"]),
            tables.age(_since(c["lastTransitionTime"], report.now)),
            str(c["message"]),
        ]
        for c in report.conditions()
    ]


def _event_rows(report: StatusReport) -> list[list[str]]:
    return [
        [
            tables.age(_since(e["lastTimestamp"], report.now)),
            tables.text(e["type"]),
            tables.text(e["reason"]),
            tables.text(e["count"]),
            str(e["message"]),
        ]
        for e in report.event_entries()
    ]


_SECTIONS = (
    (
        "Reservations in flight",
        ("CLAIM", "COST", "DELTA", "GIB", "PRICING", "DEGRADED", "HOLDER", "AGE"),
        _reservation_rows,
    ),
    ("Escrow", ("HOLDER", "COST", "CLAIMS", "GIB", "LEASE"), _escrow_rows),
    ("Conditions", ("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"), _condition_rows),
    ("Events (newest last)", ("LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"), _event_rows),
)


def status_text(report: StatusReport) -> str:
    """``status``'s table form: the figures, then one table per list (reservations, escrow,
    conditions, events), each saying ``none`` when empty."""
    lines = _summary(report)
    for title, headers, rows in _SECTIONS:
        lines.append("")
        lines += _section(title, headers, rows(report))
    return "\n".join(lines)


def _since(stamp: object, now: float) -> float | None:
    when = timestamps.from_rfc3339(stamp)
    return now - when if when else None
