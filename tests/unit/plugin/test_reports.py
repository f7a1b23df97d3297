"""``kubectl dbquota top`` reads quotas as their status says, nothing more.

Checks % used ((observed + reserved) / budget, unknown without status), escrow as the
sum of the replicas' holds, junk status fields read as unknown rather than zero; the sort
order of ``top`` (% used descending, ties by namespace and name, unknown last) and its
table with and without ``-A``, and its document.
"""

from __future__ import annotations

import pytest

from dbquota.plugin import reports
from tests.unit.plugin.quotas import quota, spent


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
