"""DatabaseQuota parsing, durations and usage.

Checks that ``parse_quota`` applies every CRD default when fields are absent, reads every
field when present (``alerts.thresholds`` too), and refuses wrong types and values with a
message naming the field;
that ``parse_duration`` reads Go-style durations (``15m``, ``1h30m``, ``90s``, ``500ms``)
and refuses junk, and durations longer than Go's (an int64 of nanoseconds), with a clear
``ValueError``; and that ``Usage`` refuses negative or
non-finite amounts and adds up spend and the remaining budget.
"""

from __future__ import annotations

import math

import pytest

from dbquota.domain import quotas


def test_absent_fields_get_the_crd_defaults() -> None:
    quota = quotas.parse_quota(name="team-a", spec={"monthlyBudget": 5000})
    assert quota == quotas.QuotaSpec(
        name="team-a",
        monthly_budget=5000.0,
        currency="USD",
        hard=quotas.HardCaps(claims=None, storage_gib=None),
        enforcement="Enforce",
        policy="Conservative",
        max_staleness=900.0,
        safety_margin=1.2,
        strict_cap=quotas.StrictCap(claims=0),
    )


def test_every_field_is_read() -> None:
    spec: quotas.DatabaseQuotaSpec = {
        "monthlyBudget": 1234.5,
        "currency": "EUR",
        "hard": {"claims": 20, "storageGiB": 2000},
        "enforcement": "Warn",
        "degradation": {
            "policy": "StrictCap",
            "maxStaleness": "1h30m",
            "safetyMargin": 1.5,
            "strictCap": {"claims": 2, "storageGiB": 100},
        },
        "alerts": {"thresholds": [50, 80, 100, 150]},
    }
    quota = quotas.parse_quota(name="team-b", spec=spec)
    assert quota.monthly_budget == 1234.5
    assert quota.currency == "EUR"
    assert quota.hard == quotas.HardCaps(claims=20, storage_gib=2000)
    assert quota.enforcement == "Warn"
    assert quota.policy == "StrictCap"
    assert quota.max_staleness == 5400.0
    assert quota.safety_margin == 1.5
    assert quota.strict_cap == quotas.StrictCap(claims=2, storage_gib=100)
    assert quota.alert_thresholds == (50, 80, 100, 150)


def test_partial_strict_cap_leaves_the_other_dimension_unlimited() -> None:
    spec = {"monthlyBudget": 10, "degradation": {"strictCap": {"claims": 3}}}
    assert quotas.parse_quota(name="q", spec=spec).strict_cap == quotas.StrictCap(
        claims=3, storage_gib=None
    )


def test_empty_strict_cap_admits_no_new_claims() -> None:
    spec = {"monthlyBudget": 10, "degradation": {"policy": "StrictCap", "strictCap": {}}}
    assert quotas.parse_quota(name="q", spec=spec).strict_cap == quotas.StrictCap(claims=0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "DatabaseQuota q: spec.monthlyBudget is required"),
        ({"monthlyBudget": "lots"}, "spec.monthlyBudget must be a number, got 'lots'"),
        ({"monthlyBudget": True}, "spec.monthlyBudget must be a number, got true"),
        ({"monthlyBudget": math.nan}, "spec.monthlyBudget must be a finite number"),
        ({"monthlyBudget": 0}, "DatabaseQuota q: spec.monthlyBudget must be > 0, got 0.0"),
        ({"monthlyBudget": 1, "enforcement": "Audit"}, "must be one of Enforce, Warn, DryRun"),
        (
            {"monthlyBudget": 1, "degradation": {"policy": "YOLO"}},
            "spec.degradation.policy must be one of Conservative, StrictCap, FailClosed",
        ),
        (
            {"monthlyBudget": 1, "degradation": {"maxStaleness": "soon"}},
            "spec.degradation.maxStaleness: invalid duration 'soon'",
        ),
        (
            {"monthlyBudget": 1, "degradation": {"safetyMargin": 0.5}},
            "spec.degradation.safetyMargin must be >= 1, got 0.5",
        ),
        ({"monthlyBudget": 1, "hard": {"claims": -1}}, "spec.hard.claims must be >= 0, got -1"),
        ({"monthlyBudget": 1, "hard": {"claims": 1.5}}, "spec.hard.claims must be an integer"),
        ({"monthlyBudget": 1, "hard": [1]}, "spec.hard must be an object, got a list"),
        ({"monthlyBudget": 1, "currency": ""}, "spec.currency must be a non-empty string"),
        (
            {"monthlyBudget": 1, "alerts": {"thresholds": 80}},
            "spec.alerts.thresholds must be a list of percentages, got 80",
        ),
        (
            {"monthlyBudget": 1, "alerts": {"thresholds": [50, "80%"]}},
            "spec.alerts.thresholds must be an integer, got '80%'",
        ),
        (
            {"monthlyBudget": 1, "alerts": {"thresholds": [0, 50]}},
            "spec.alerts.thresholds must be percentages from 1 to 1000, got 0",
        ),
        (
            {"monthlyBudget": 1, "alerts": {"thresholds": [80, 50]}},
            "spec.alerts.thresholds must be unique and in ascending order, got [80, 50]",
        ),
        (
            {"monthlyBudget": 1, "alerts": {"thresholds": [50, 50]}},
            "spec.alerts.thresholds must be unique and in ascending order",
        ),
        (
            {"monthlyBudget": 1, "alerts": {"thresholds": list(range(1, 12))}},
            "spec.alerts.thresholds may list at most 10, got 11",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"^DatabaseQuota q: ") as info:
        quotas.parse_quota(name="q", spec=spec)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5m", 30.0),
        ("2h0m3s", 7203.0),
        ("1m1ms", 60.001),
        ("0", 0.0),
        ("0s", 0.0),
        ("10us", 1e-5),
        ("10µs", 1e-5),
        ("100ns", 1e-7),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert quotas.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "15", "m", "15 m", "15min", "-5m", "+5m", "1h 30m", "1d", "5.m5", "..5s", "NaNs"]
)
def test_junk_durations_are_refused_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 90s, 15m, 1h30m or 500ms"):
        quotas.parse_duration(text)


def test_usage_adds_spend_and_remaining() -> None:
    usage = quotas.Usage(observed=4500.0, reserved=300.0)
    assert usage.spend == 4800.0
    quota = quotas.parse_quota(name="q", spec={"monthlyBudget": 5000})
    assert quotas.remaining(quota=quota, usage=usage) == 200.0
    over = quotas.Usage(observed=5100.0)
    assert quotas.remaining(quota=quota, usage=over) == -100.0


@pytest.mark.parametrize(
    "fields",
    [{"observed": -1.0}, {"reserved": math.inf}, {"claims": -1}, {"degraded_storage_gib": -5}],
)
def test_usage_refuses_negative_or_infinite_amounts(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        quotas.Usage(**fields)  # type: ignore[arg-type]


def test_durations_go_up_to_what_go_holds() -> None:
    """Go's ``time.Duration`` is an int64 of nanoseconds: about 292 years."""
    assert quotas.parse_duration("2562047h47m16s") == 2562047 * 3600 + 47 * 60 + 16


@pytest.mark.parametrize(
    "text", ["2562048h", "100000000000000h", "9" * 400 + "h", "1" * 309 + "h", "2562047h48m"]
)
def test_durations_beyond_what_go_holds_are_refused(text: str) -> None:
    """They read as infinity or centuries: billing data would never count as stale (and
    billing as degraded for it), however old."""
    with pytest.raises(ValueError, match=r"longer than 2562047h47m16\.854775807s"):
        quotas.parse_duration(text)
    with pytest.raises(ValueError, match=r"^DatabaseQuota q: spec\.degradation\.maxStaleness: "):
        quotas.parse_quota(
            name="q", spec={"monthlyBudget": 100, "degradation": {"maxStaleness": text}}
        )
