"""Degradation: when billing counts as degraded for a quota, and how it says why.

Checks each cause on its own (breaker Open or HalfOpen, data older than maxStaleness, no
sync ever, no prices or an empty catalog), that data exactly at maxStaleness is not stale,
that healthy data is Live after a successful sync and Cached after failed ones, and the
wording of causes and ages.
"""

from __future__ import annotations

import math

import pytest

from dbquota.domain import billing, degradation
from tests.unit.domain import samples


def assess(
    snapshot: billing.BillingSnapshot, max_staleness: float = 900.0
) -> degradation.Degradation:
    return degradation.assess(snapshot=snapshot, max_staleness=max_staleness, now=samples.NOW)


def test_fresh_closed_with_prices_is_live() -> None:
    state = assess(samples.healthy(age=30))
    assert not state.degraded
    assert state.causes == ()
    assert state.healthy_mode == "Live"
    assert state.staleness == 30
    assert state.describe() == "billing healthy"


def test_failed_syncs_within_max_staleness_serve_cached_prices() -> None:
    state = assess(samples.healthy(age=720, failures=2))
    assert not state.degraded
    assert state.healthy_mode == "Cached"


def test_exactly_max_staleness_old_is_not_stale() -> None:
    assert not assess(samples.healthy(age=900)).degraded
    assert assess(samples.healthy(age=900.5)).degraded


@pytest.mark.parametrize(
    ("snapshot", "described"),
    [
        (
            samples.degraded(circuit="Open", age=1234),
            "billing degraded (circuit Open, data 1,234s old > maxStaleness 900s)",
        ),
        (samples.degraded(circuit="HalfOpen", age=10), "billing degraded (circuit HalfOpen)"),
        (
            samples.degraded(circuit="Closed", age=3600),
            "billing degraded (data 3,600s old > maxStaleness 900s)",
        ),
        (
            samples.degraded(circuit="Closed", age=None, prices=None, highest=None),
            "billing degraded (no successful sync yet, no prices)",
        ),
        (samples.healthy(prices=None), "billing degraded (no prices)"),
        (
            samples.healthy(
                prices=billing.PriceBook(instance_hourly={}, storage_gib_month=0.1, observed_at=0)
            ),
            "billing degraded (no prices)",
        ),
    ],
)
def test_each_cause_degrades_and_is_named(
    snapshot: billing.BillingSnapshot, described: str
) -> None:
    state = assess(snapshot)
    assert state.degraded
    assert state.describe() == described


def test_never_synced_is_infinitely_stale() -> None:
    state = assess(samples.degraded(age=None))
    assert math.isinf(state.staleness)


def test_sub_second_max_staleness_is_written_as_given() -> None:
    state = assess(samples.healthy(age=2), max_staleness=0.5)
    assert state.describe() == "billing degraded (data 2s old > maxStaleness 0.5s)"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 seconds"),
        (1, "1 second"),
        (42.9, "42 seconds"),
        (60, "1 minute"),
        (720, "12 minutes"),
        (7200, "2 hours"),
        (86400 * 3, "3 days"),
    ],
)
def test_ages_for_people(seconds: float, text: str) -> None:
    assert degradation.describe_age(seconds) == text
