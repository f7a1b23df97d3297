"""Billing health shared between replicas, and the worst of it that quota status shows.

Checks that what a replica shares reads back as it was (its error cut to
``MAX_SHARED_ERROR``), that anything else reads as None (junk, another shape, NaN,
negative or boolean numbers, an unknown circuit state); and that :func:`billing.worst`
keeps this replica's health when it is alone, and otherwise takes the least closed
circuit, the oldest last success (none if one replica never synced), the most failures,
the highest fallback rate, and the last error of the replica worst off, named when it is
another one.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import billing
from dbquota.domain.billing import BillingHealth

healths = st.builds(
    BillingHealth,
    circuit_state=st.sampled_from(["Closed", "HalfOpen", "Open"]),
    last_success=st.none() | st.floats(min_value=0, max_value=4e9),
    consecutive_failures=st.integers(min_value=0, max_value=10_000),
    last_error=st.text(max_size=billing.MAX_SHARED_ERROR),
    fallback_hit_rate=st.floats(min_value=0, max_value=1).map(lambda r: round(r, 4)),
    left_out=st.integers(min_value=0, max_value=10_000),
)


@given(healths)
def test_what_a_replica_shares_reads_back_as_it_was(health: BillingHealth) -> None:
    assert billing.from_shared(json.loads(json.dumps(billing.shared(health)))) == health


def test_a_long_error_is_cut_short() -> None:
    shared = billing.shared(BillingHealth(last_error="x" * 5000))
    read = billing.from_shared(shared)
    assert read is not None
    assert read.last_error == "x" * billing.MAX_SHARED_ERROR


GOOD = billing.shared(BillingHealth(circuit_state="Open", last_success=10.0))


@pytest.mark.parametrize(
    "data",
    [
        None,
        "Open",
        [GOOD],
        {**GOOD, "circuitState": "Ajar"},
        {**GOOD, "circuitState": None},
        {**GOOD, "lastSuccess": "yesterday"},
        {**GOOD, "lastSuccess": math.nan},
        {**GOOD, "consecutiveFailures": -1},
        {**GOOD, "consecutiveFailures": True},
        {**GOOD, "fallbackHitRate": math.inf},
        {**GOOD, "leftOut": "3"},
        {**GOOD, "lastError": 42},
        {k: v for k, v in GOOD.items() if k != "consecutiveFailures"},
    ],
)
def test_anything_else_reads_as_none(data: object) -> None:
    assert billing.from_shared(data) is None


def test_alone_a_replica_shows_its_own_health() -> None:
    own = BillingHealth(circuit_state="HalfOpen", last_error="slow")
    assert billing.worst(own, {}) is own


def test_the_worst_of_every_replica_and_whose_error_it_is() -> None:
    own = BillingHealth(last_success=100.0, fallback_hit_rate=0.5, last_error="")
    others = {
        "b": BillingHealth(
            circuit_state="Open", last_success=40.0, consecutive_failures=7, last_error="refused"
        ),
        "c": BillingHealth(circuit_state="HalfOpen", last_success=90.0, left_out=3),
    }
    assert billing.worst(own, others) == BillingHealth(
        circuit_state="Open",
        last_success=40.0,
        consecutive_failures=7,
        last_error="replica b: refused",
        fallback_hit_rate=0.5,
        left_out=3,
    )


def test_a_replica_that_never_synced_leaves_no_last_success() -> None:
    own = BillingHealth(last_success=100.0)
    assert billing.worst(own, {"b": BillingHealth(last_success=None)}).last_success is None


def test_when_this_replica_is_worst_off_its_error_is_not_named() -> None:
    own = BillingHealth(circuit_state="Open", consecutive_failures=3, last_error="timeout")
    others = {"b": BillingHealth(circuit_state="Closed", last_success=5.0)}
    assert billing.worst(own, others).last_error == "timeout"


def test_a_tie_on_circuit_goes_to_the_most_failures_then_the_stalest() -> None:
    own = BillingHealth(circuit_state="Open", consecutive_failures=2, last_success=50.0)
    others = {
        "b": BillingHealth(
            circuit_state="Open", consecutive_failures=2, last_success=20.0, last_error="old"
        ),
        "c": BillingHealth(
            circuit_state="Open", consecutive_failures=1, last_success=None, last_error="new"
        ),
    }
    assert billing.worst(own, others).last_error == "replica b: old"
