"""Peering priorities: the oldest replica wins, and no two replicas ever tie.

kopf pauses every operator that sees a live peer of equal priority, so a tie would leave a
Deployment with no reconciler at all; these tests pin the properties that prevent it.
"""

from __future__ import annotations

import pytest

from dbquota.handlers import operating


def test_an_older_replica_has_the_higher_priority_whatever_the_tiebreakers() -> None:
    older = operating.peering_priority(started_ms=1_700_000_000_000, tiebreak=0)
    newer = operating.peering_priority(started_ms=1_700_000_000_001, tiebreak=999)
    assert older > newer


def test_replicas_started_in_the_same_millisecond_are_ordered_by_the_tiebreaker() -> None:
    a = operating.peering_priority(started_ms=1_700_000_000_000, tiebreak=1)
    b = operating.peering_priority(started_ms=1_700_000_000_000, tiebreak=2)
    assert a != b


def test_priority_fits_the_int64_the_apiserver_stores_for_centuries() -> None:
    year_2300_ms = 10_500_000_000_000
    assert abs(operating.peering_priority(started_ms=year_2300_ms, tiebreak=0)) < 2**63


@pytest.mark.parametrize("tiebreak", [-1, 1000])
def test_out_of_range_tiebreaker_is_refused(tiebreak: int) -> None:
    with pytest.raises(ValueError, match="tiebreak"):
        operating.peering_priority(started_ms=0, tiebreak=tiebreak)
