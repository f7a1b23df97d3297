"""``kubectl dbquota status`` shows a quota's holds, holders, conditions and Events.

Checks each escrow holder's lease state (Live, Lapsed, Missing, Unknown) on an injected
clock; Events newest last and cut to the latest N, an Event with a series counted and
placed by its latest occurrence; and the status table and document, empty lists saying
``none``.
"""

from __future__ import annotations

from typing import Any

import pytest

from dbquota.kits import timestamps
from dbquota.plugin import reports, statuses
from tests.unit.plugin.quotas import NOW, quota, spent


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
    live = statuses.lease_state("live", leases=leases, now=NOW)
    assert (live.state, live.name, live.namespace) == (
        "Live",
        "dbquota-replica-live",
        "dbquota-system",
    )
    assert live.renewed_seconds_ago == pytest.approx(3, abs=0.01)
    assert statuses.lease_state("lapsed", leases=leases, now=NOW).state == "Lapsed"
    assert statuses.lease_state("gone", leases=leases, now=NOW).state == "Missing"
    assert statuses.lease_state("live", leases=None, now=NOW).state == "Unknown"


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
    got = statuses.recent_events(events, limit=2)
    assert [e["reason"] for e in got] == ["CircuitHalfOpen", "CircuitClosed"]
    assert statuses.recent_events(events, limit=0) == []


def test_an_event_series_counts_its_repeats_and_sorts_by_the_latest() -> None:
    repeated = event("a", "WouldDeny", ago=300, key="eventTime")
    repeated["series"] = {
        "count": 1000,
        "lastObservedTime": timestamps.to_micro(NOW - 5),
    }
    single = event("b", "CircuitOpen", ago=60, key="eventTime")
    ordered = statuses.recent_events([repeated, single], limit=5)
    assert [e["reason"] for e in ordered] == ["CircuitOpen", "WouldDeny"]
    report = statuses.StatusReport(
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
    report = statuses.StatusReport(
        figures=reports.figures(q),
        quota=q,
        leases=[lease("r1", renewed_ago=1)],
        events=[event("a", "WithinBudget", ago=30)],
        now=NOW,
    )
    text = statuses.status_text(report)
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
    doc = statuses.status_document(report)
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
    report = statuses.StatusReport(
        figures=reports.figures(q), quota=q, leases=[], events=[], now=NOW
    )
    text = statuses.status_text(report)
    for title in ("Reservations in flight", "Escrow", "Conditions", "Events (newest last)"):
        assert f"\n{title}: none" in text
