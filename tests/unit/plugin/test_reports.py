"""``kubectl dbquota top`` and ``status`` read quotas as their status says, nothing more.

Checks % used ((observed + reserved) / budget, unknown without status), escrow as the
sum of the replicas' holds, junk status fields read as unknown rather than zero; the sort
order of ``top`` (% used descending, ties by namespace and name, unknown last) and its
table with and without ``-A``; each escrow holder's lease state (Live, Lapsed, Missing,
Unknown) on an injected clock; Events newest last and cut to the latest N, an Event with
a series counted and placed by its latest occurrence; and the status table and document.
"""

from __future__ import annotations

from typing import Any

import pytest

from dbquota.kits import timestamps
from dbquota.plugin import reports

NOW = 1_800_000_000.0


def quota(
    name: str = "team-a",
    namespace: str = "ns",
    *,
    budget: float = 1000.0,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"monthlyBudget": budget, **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def spent(observed: float, reserved: float, budget: float = 1000.0) -> dict[str, Any]:
    return {
        "spend": {
            "observed": observed,
            "reserved": reserved,
            "remaining": budget - observed - reserved,
        },
        "billing": {"circuitState": "Closed", "degraded": False, "stalenessSeconds": 4},
    }


def test_used_percent_is_observed_plus_reserved_over_budget() -> None:
    got = reports.figures(quota(status=spent(400, 160.5)))
    assert got.used_percent == pytest.approx(56.05)
    assert (got.observed, got.reserved, got.remaining) == (400, 160.5, 439.5)


def test_a_quota_without_status_has_unknown_spend_not_zero() -> None:
    got = reports.figures(quota())
    assert (got.observed, got.reserved, got.remaining, got.used_percent) == (None,) * 4
    assert (got.circuit_state, got.degraded, got.staleness_seconds) == (None, None, None)
    assert (got.currency, got.enforcement, got.policy) == ("USD", "Enforce", "Conservative")


def test_junk_status_fields_read_as_unknown() -> None:
    status = {"spend": {"observed": "lots", "reserved": True}, "billing": {"degraded": "no"}}
    got = reports.figures(quota(status=status))
    assert (got.observed, got.reserved, got.degraded) == (None, None, None)


def test_escrow_is_the_sum_of_every_replicas_hold() -> None:
    status = {
        **spent(0, 0),
        "escrow": [{"holder": "a", "cost": 12.5}, {"holder": "b", "cost": 7.25}, {"holder": "c"}],
    }
    assert reports.figures(quota(status=status)).escrow == 19.75


def test_top_sorts_by_use_descending_unknown_last_ties_by_name() -> None:
    quotas = [
        reports.figures(quota("low", "b", status=spent(100, 0))),
        reports.figures(quota("new", "a")),
        reports.figures(quota("high", "c", status=spent(900, 50))),
        reports.figures(quota("tie-2", "a", status=spent(500, 0))),
        reports.figures(quota("tie-1", "a", status=spent(250, 250))),
    ]
    ordered = [(f.namespace, f.name) for f in reports.by_use(quotas)]
    assert ordered == [("c", "high"), ("a", "tie-1"), ("a", "tie-2"), ("b", "low"), ("a", "new")]


def test_top_table_layout() -> None:
    rows = reports.by_use(
        [
            reports.figures(quota("roomy", status=spent(100, 0))),
            reports.figures(quota("tight", "team-b", budget=2000, status=spent(1500, 480, 2000))),
            reports.figures(quota("fresh")),
        ]
    )
    assert reports.top_table(rows, all_namespaces=True).splitlines() == [
        "NAMESPACE   NAME    BUDGET     OBSERVED   RESERVED   USED    REMAINING   CIRCUIT   "
        "DEGRADED   STALENESS",
        "team-b      tight   2,000.00   1,500.00   480.00     99.0%   20.00       Closed    "
        "false      4s",
        "ns          roomy   1,000.00   100.00     0.00       10.0%   900.00      Closed    "
        "false      4s",
        "ns          fresh   1,000.00   -          -          -       -           -         -"
        "          -",
    ]
    assert (
        reports.top_table(rows[:1], all_namespaces=False)
        .splitlines()[0]
        .startswith("NAME    BUDGET")
    )


def test_top_document() -> None:
    doc = reports.top_document([reports.figures(quota(status=spent(250, 0)))])
    assert doc == {
        "apiVersion": "plugin.dbquota.io/v1",
        "kind": "QuotaTop",
        "items": [
            {
                "namespace": "ns",
                "name": "team-a",
                "currency": "USD",
                "budget": 1000.0,
                "observed": 250,
                "reserved": 0,
                "escrow": 0.0,
                "remaining": 750.0,
                "usedPercent": 25.0,
                "enforcement": "Enforce",
                "degradationPolicy": "Conservative",
                "circuitState": "Closed",
                "degraded": False,
                "degradedReason": None,
                "stalenessSeconds": 4,
                "lastSuccessfulSync": None,
            }
        ],
    }


def lease(holder: str, *, renewed_ago: float, duration: int = 15) -> dict[str, Any]:
    return {
        "metadata": {"name": f"dbquota-replica-{holder}", "namespace": "dbquota-system"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": timestamps.to_micro(NOW - renewed_ago),
        },
    }


def test_lease_state_of_an_escrow_holder() -> None:
    leases = [lease("live", renewed_ago=3), lease("lapsed", renewed_ago=16)]
    live = reports.lease_state("live", leases=leases, now=NOW)
    assert (live.state, live.name, live.namespace) == (
        "Live",
        "dbquota-replica-live",
        "dbquota-system",
    )
    assert live.renewed_seconds_ago == pytest.approx(3, abs=0.01)
    assert reports.lease_state("lapsed", leases=leases, now=NOW).state == "Lapsed"
    assert reports.lease_state("gone", leases=leases, now=NOW).state == "Missing"
    assert reports.lease_state("live", leases=None, now=NOW).state == "Unknown"


def event(name: str, reason: str, *, ago: float, key: str = "lastTimestamp") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "type": "Normal",
        "reason": reason,
        "message": f"{reason}!",
        key: timestamps.to_rfc3339(NOW - ago),
    }


def test_events_newest_last_cut_to_the_latest() -> None:
    events = [
        event("c", "CircuitClosed", ago=10),
        event("a", "CircuitOpen", ago=300),
        event("b", "CircuitHalfOpen", ago=100, key="eventTime"),
    ]
    got = reports.recent_events(events, limit=2)
    assert [e["reason"] for e in got] == ["CircuitHalfOpen", "CircuitClosed"]
    assert reports.recent_events(events, limit=0) == []


def test_an_event_series_counts_its_repeats_and_sorts_by_the_latest() -> None:
    repeated = event("a", "WouldDeny", ago=300, key="eventTime")
    repeated["series"] = {
        "count": 1000,
        "lastObservedTime": timestamps.to_micro(NOW - 5),
    }
    single = event("b", "CircuitOpen", ago=60, key="eventTime")
    ordered = reports.recent_events([repeated, single], limit=5)
    assert [e["reason"] for e in ordered] == ["CircuitOpen", "WouldDeny"]
    report = reports.StatusReport(
        figures=reports.figures(quota()), quota=quota(), leases=[], events=ordered, now=NOW
    )
    entries = report.event_entries()
    assert [e["count"] for e in entries] == [1, 1000]
    assert entries[1]["lastTimestamp"] == timestamps.to_rfc3339(NOW - 5)


def test_status_text_and_document() -> None:
    status = {
        **spent(400, 160, 1000),
        "used": {"claims": 3, "storageGiB": 300},
        "reservations": [
            {
                "claim": "orders",
                "cost": 100.0,
                "delta": 100.0,
                "storageGiB": 100,
                "pricing": "Live",
                "reservedAt": timestamps.to_rfc3339(NOW - 2),
                "holder": "r1",
            }
        ],
        "escrow": [{"holder": "r1", "cost": 60.0}, {"holder": "r2", "cost": 20.0}],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "ok",
                "lastTransitionTime": timestamps.to_rfc3339(NOW - 600),
            }
        ],
    }
    q = quota(status=status, hard={"claims": 10})
    report = reports.StatusReport(
        figures=reports.figures(q),
        quota=q,
        leases=[lease("r1", renewed_ago=1)],
        events=[event("a", "WithinBudget", ago=30)],
        now=NOW,
    )
    text = reports.status_text(report)
    assert text.splitlines()[:10] == [
        "Quota:       ns/team-a",
        "Enforcement: Enforce, degradation policy Conservative",
        "Budget:      1,000.00 USD/month",
        "Observed:    400.00",
        "Reserved:    160.00",
        "Escrow:      80.00 (held by webhook replicas ahead of admissions)",
        "Remaining:   440.00",
        "Used:        56.0%",
        "Claims:      3 of 10 (hard cap)",
        "Storage:     300 GiB",
    ]
    assert text.split("\n\n")[1:] == [
        "Reservations in flight:\n"
        "CLAIM    COST     DELTA    GIB   PRICING   DEGRADED   HOLDER   AGE\n"
        "orders   100.00   100.00   100   Live      false      r1       2s",
        "Escrow:\n"
        "HOLDER   COST    CLAIMS   GIB   LEASE\n"
        "r1       60.00   -        -     Live (renewed 1s ago)\n"
        "r2       20.00   -        -     Missing",
        "Conditions:\n"
        "TYPE    STATUS   REASON       SINCE   MESSAGE\n"
        "Ready   True     Reconciled   10m     ok",
        "Events (newest last):\n"
        "LAST SEEN   TYPE     REASON         COUNT   MESSAGE\n"
        "30s         Normal   WithinBudget   1       WithinBudget!",
    ]
    doc = reports.status_document(report)
    assert list(doc) == [
        "apiVersion",
        "kind",
        "quota",
        "used",
        "billing",
        "reservations",
        "escrow",
        "conditions",
        "events",
    ]
    assert doc["used"] == {
        "claims": 3,
        "storageGiB": 300,
        "degradedClaims": None,
        "degradedStorageGiB": None,
        "hardClaims": 10,
        "hardStorageGiB": None,
    }
    escrow = report.escrow()
    assert doc["escrow"] == escrow
    states = [(e["holder"], dict(e["lease"])["state"]) for e in escrow]  # type: ignore[call-overload]
    assert states == [("r1", "Live"), ("r2", "Missing")]


def test_empty_lists_say_none() -> None:
    q = quota(status=spent(0, 0))
    report = reports.StatusReport(
        figures=reports.figures(q), quota=q, leases=[], events=[], now=NOW
    )
    text = reports.status_text(report)
    for title in ("Reservations in flight", "Escrow", "Conditions", "Events (newest last)"):
        assert f"\n{title}: none" in text
