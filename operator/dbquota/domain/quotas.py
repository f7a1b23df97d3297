"""DatabaseQuota specs and namespace usage, as the admission decision reads them.

:func:`parse_quota` turns a DatabaseQuota's ``name`` and ``spec`` (a plain dict, as kopf and
the API server hand it over) into a frozen :class:`QuotaSpec`, applying the CRD's defaults
for absent fields so that a spec read before defaulting decides the same way as one read
after. :func:`parse_duration` reads Go-style durations (``15m``, ``1h30m``, ``500ms``) such
as ``spec.degradation.maxStaleness``. :class:`Usage` is what a namespace already spends and
holds; the services build it from billing data and the quota's reservations.

Called by the admission handler and the reconciler (through the services), and by
:func:`dbquota.domain.verdicts.decide`. :data:`POLICIES` are the names of
:data:`dbquota.domain.policies.RULES`. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypedDict, TypeVar

from dbquota.domain import fields, policies

Enforcement = Literal["Enforce", "Warn", "DryRun"]
"""What a denial does: Enforce denies; Warn admits with a warning; DryRun only records it."""

Policy = str
"""What admission does while billing is degraded: one of :data:`POLICIES`."""

ENFORCEMENTS: tuple[Enforcement, ...] = ("Enforce", "Warn", "DryRun")
POLICIES: tuple[Policy, ...] = tuple(policies.RULES)
"""The degradation policies, in the CRD enum's order: the names of
:data:`dbquota.domain.policies.RULES`, where each one's rule is."""

DEFAULT_CURRENCY = "USD"
DEFAULT_ENFORCEMENT: Enforcement = "Enforce"
DEFAULT_POLICY: Policy = "Conservative"
DEFAULT_MAX_STALENESS = "15m"
DEFAULT_SAFETY_MARGIN = 1.2
MAX_THRESHOLD = 1000
"""Highest alert threshold, in percent of the budget (over-budget alerts go up to 10x)."""
MAX_THRESHOLDS = 10
"""Most alert thresholds on one quota."""


class HardSpec(TypedDict, total=False):
    """``spec.hard`` of a DatabaseQuota."""

    claims: int
    storageGiB: int


class StrictCapSpec(TypedDict, total=False):
    """``spec.degradation.strictCap`` of a DatabaseQuota."""

    claims: int
    storageGiB: int


class DegradationSpec(TypedDict, total=False):
    """``spec.degradation`` of a DatabaseQuota."""

    policy: Policy
    maxStaleness: str
    safetyMargin: float
    strictCap: StrictCapSpec


class AlertsSpec(TypedDict, total=False):
    """``spec.alerts`` of a DatabaseQuota."""

    thresholds: list[int]


class DatabaseQuotaSpec(TypedDict, total=False):
    """``spec`` of a DatabaseQuota as the API stores it (``monthlyBudget`` is required)."""

    monthlyBudget: float
    currency: str
    hard: HardSpec
    enforcement: Enforcement
    degradation: DegradationSpec
    alerts: AlertsSpec


@dataclass(frozen=True, kw_only=True)
class HardCaps:
    """Caps that need no pricing, as totals over the namespace; None means no cap."""

    claims: int | None = None
    """Most DatabaseClaims in the namespace."""
    storage_gib: int | None = None
    """Most storage over all claims of the namespace, in GiB."""


@dataclass(frozen=True, kw_only=True)
class StrictCap:
    """StrictCap's allowance: the most that may be newly admitted while billing is degraded.

    ``None`` leaves that dimension unlimited (``strictCap: {claims: 2}`` caps claims only);
    0 admits none, as a ResourceQuota hard limit of 0 does. A StrictCap quota that sets
    neither is read as ``claims=0`` (the CRD refuses it; this is the safe reading).
    """

    claims: int | None = None
    """New claims admitted while degraded; None = no limit on the count."""
    storage_gib: int | None = None
    """GiB of storage added (new claims or grown ones) while degraded; None = no limit."""


@dataclass(frozen=True, kw_only=True)
class QuotaSpec:
    """One DatabaseQuota, validated and with the CRD's defaults applied."""

    name: str
    """The DatabaseQuota's name (shown in every message)."""
    monthly_budget: float
    """Money per month for all claims of the namespace, in ``currency``; > 0."""
    currency: str = DEFAULT_CURRENCY
    """ISO 4217 code; default USD."""
    hard: HardCaps = field(default_factory=HardCaps)
    """Caps enforced in every mode; default none."""
    enforcement: Enforcement = DEFAULT_ENFORCEMENT
    """Default Enforce."""
    policy: Policy = DEFAULT_POLICY
    """Degradation policy; default Conservative."""
    max_staleness: float = 900.0
    """Seconds after the last successful sync at which billing data counts as stale; 15m."""
    safety_margin: float = DEFAULT_SAFETY_MARGIN
    """Multiplier (>= 1) on the highest known unit prices for conservative pricing; 1.2."""
    strict_cap: StrictCap = field(default_factory=StrictCap)
    """StrictCap's allowance; default zero claims and zero GiB."""
    alert_thresholds: tuple[int, ...] = ()
    """``alerts.thresholds``: percentages of the budget (1 to :data:`MAX_THRESHOLD`, unique,
    ascending) whose crossing by observed + reserved spend is announced; default none."""

    def __post_init__(self) -> None:
        if not (self.monthly_budget > 0 and math.isfinite(self.monthly_budget)):
            raise ValueError(f"monthlyBudget must be > 0, got {self.monthly_budget!r}")
        if not (self.safety_margin >= 1 and math.isfinite(self.safety_margin)):
            raise ValueError(f"degradation.safetyMargin must be >= 1, got {self.safety_margin!r}")
        if not self.max_staleness >= 0:
            raise ValueError(f"degradation.maxStaleness must be >= 0 s, got {self.max_staleness!r}")
        for label, value in (
            ("hard.claims", self.hard.claims),
            ("hard.storageGiB", self.hard.storage_gib),
            ("degradation.strictCap.claims", self.strict_cap.claims),
            ("degradation.strictCap.storageGiB", self.strict_cap.storage_gib),
        ):
            if value is not None and value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        _check_thresholds(self.alert_thresholds)


def _check_thresholds(thresholds: tuple[int, ...]) -> None:
    """The CRD's rules for ``alerts.thresholds``, for specs that did not pass through it."""
    where = "alerts.thresholds"
    if len(thresholds) > MAX_THRESHOLDS:
        raise ValueError(f"{where} may list at most {MAX_THRESHOLDS}, got {len(thresholds)}")
    for value in thresholds:
        if not 1 <= value <= MAX_THRESHOLD:
            raise ValueError(f"{where} must be percentages from 1 to {MAX_THRESHOLD}, got {value}")
    if list(thresholds) != sorted(set(thresholds)):
        raise ValueError(f"{where} must be unique and in ascending order, got {list(thresholds)}")


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What a namespace already spends and holds, as one quota counts it.

    Money is per month in the quota's currency. For an UPDATE, the claim being updated is
    already counted here (in ``claims``, ``storage_gib`` and, once billed or reserved, in
    the spend); the decision only adds its growth.
    """

    observed: float = 0.0
    """Monthly run-rate billed for the namespace's claims (from the billing snapshot)."""
    reserved: float = 0.0
    """Budget held for admitted claims that billing does not show yet."""
    claims: int = 0
    """DatabaseClaims in the namespace (admitted ones not yet created included)."""
    storage_gib: int = 0
    """Storage over those claims, in GiB."""
    degraded_claims: int = 0
    """New claims admitted while billing was degraded (StrictCap counts these)."""
    degraded_storage_gib: int = 0
    """GiB admitted while billing was degraded, new claims and growth (StrictCap)."""
    escrowed: float = 0.0
    """The part of ``reserved`` that other webhook replicas hold in escrow (not yet spent
    on claims; see :mod:`dbquota.domain.escrow`), named in messages."""

    def __post_init__(self) -> None:
        for label, value in (
            ("observed", self.observed),
            ("reserved", self.reserved),
            ("claims", self.claims),
            ("storage_gib", self.storage_gib),
            ("degraded_claims", self.degraded_claims),
            ("degraded_storage_gib", self.degraded_storage_gib),
            ("escrowed", self.escrowed),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"usage {label} must be a finite number >= 0, got {value!r}")

    @property
    def spend(self) -> float:
        """Observed plus reserved, per month."""
        return self.observed + self.reserved


def remaining(*, quota: QuotaSpec, usage: Usage) -> float:
    """Budget left: ``monthlyBudget - observed - reserved`` (negative when over budget)."""
    return quota.monthly_budget - usage.spend


_DURATION_UNITS: Mapping[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts the micro sign and the Greek mu
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_DURATION_HINT = "expected a duration such as 90s, 15m, 1h30m or 500ms"
MAX_DURATION = (2**63 - 1) / 1e9
"""The longest duration Go holds (``time.Duration``, an int64 of nanoseconds): about 292
years, ``2562047h47m16.854775807s``. Go's ``ParseDuration`` refuses longer ones."""


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration: ``15m`` → 900.0, ``1h30m`` → 5400.0, ``500ms`` → 0.5.

    Accepts what Go's ``time.ParseDuration`` accepts without a sign: a sequence of decimal
    numbers each with a unit (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``), or a bare
    ``0``, up to :data:`MAX_DURATION`. Anything else raises ``ValueError`` saying what was
    expected. (Longer ones read as infinity or centuries: a ``maxStaleness`` so long would
    never count billing data as stale, however old.)
    """
    if text == "0":
        return 0.0
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}: {_DURATION_HINT}")
    seconds = sum(
        float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(text)
    )
    if not seconds <= MAX_DURATION:
        shown = text if len(text) <= 40 else f"{text[:37]}..."
        raise ValueError(
            f"invalid duration {shown!r}: longer than 2562047h47m16.854775807s (about 292 "
            "years), the most Go holds"
        )
    return seconds


_Choice = TypeVar("_Choice", bound=str)


def _choice(value: str, choices: tuple[_Choice, ...], *, where: str) -> _Choice:
    for choice in choices:
        if value == choice:
            return choice
    raise ValueError(f"{where} must be one of {', '.join(choices)}, got {value!r}")


def _strict_cap(strict: Mapping[str, object], *, where: str) -> StrictCap:
    claims = fields.optional_integer(strict, "claims", where=where)
    storage = fields.optional_integer(strict, "storageGiB", where=where)
    if claims is None and storage is None:
        return StrictCap(claims=0)
    return StrictCap(claims=claims, storage_gib=storage)


def _thresholds(alerts: Mapping[str, object], *, where: str) -> tuple[int, ...]:
    values = alerts.get("thresholds")
    if values is None:
        return ()
    if not isinstance(values, list):  # ValueError: callers handle one type for invalid fields
        raise ValueError(  # noqa: TRY004
            f"{where}.thresholds must be a list of percentages, got {values!r}"
        )
    return tuple(
        fields.integer({"thresholds": value}, "thresholds", where=where) for value in values
    )


def parse_quota(*, name: str, spec: Mapping[str, object]) -> QuotaSpec:
    """A :class:`QuotaSpec` from a DatabaseQuota's name and ``spec``; ``ValueError`` if invalid.

    Absent fields get the CRD's defaults: currency USD, enforcement Enforce, policy
    Conservative, maxStaleness 15m, safetyMargin 1.2, strictCap 0 claims / 0 GiB, no hard
    caps, no alert thresholds.
    """
    where = f"DatabaseQuota {name}: spec"
    hard = fields.mapping(spec, "hard", where=where)
    degradation = fields.mapping(spec, "degradation", where=where)
    strict = fields.mapping(degradation, "strictCap", where=f"{where}.degradation")
    alerts = fields.mapping(spec, "alerts", where=where)
    max_staleness = fields.string(
        degradation, "maxStaleness", where=f"{where}.degradation", default=DEFAULT_MAX_STALENESS
    )
    try:
        staleness_seconds = parse_duration(max_staleness)
    except ValueError as exc:
        raise ValueError(f"{where}.degradation.maxStaleness: {exc}") from exc
    try:
        return QuotaSpec(
            name=name,
            monthly_budget=fields.number(spec, "monthlyBudget", where=where),
            currency=fields.string(spec, "currency", where=where, default=DEFAULT_CURRENCY),
            hard=HardCaps(
                claims=fields.optional_integer(hard, "claims", where=f"{where}.hard"),
                storage_gib=fields.optional_integer(hard, "storageGiB", where=f"{where}.hard"),
            ),
            enforcement=_choice(
                fields.string(spec, "enforcement", where=where, default=DEFAULT_ENFORCEMENT),
                ENFORCEMENTS,
                where=f"{where}.enforcement",
            ),
            policy=_choice(
                fields.string(
                    degradation, "policy", where=f"{where}.degradation", default=DEFAULT_POLICY
                ),
                POLICIES,
                where=f"{where}.degradation.policy",
            ),
            max_staleness=staleness_seconds,
            safety_margin=fields.number(
                degradation,
                "safetyMargin",
                where=f"{where}.degradation",
                default=DEFAULT_SAFETY_MARGIN,
            ),
            strict_cap=_strict_cap(strict, where=f"{where}.degradation.strictCap"),
            alert_thresholds=_thresholds(alerts, where=f"{where}.alerts"),
        )
    except ValueError as exc:
        message = str(exc)
        if message.startswith("DatabaseQuota "):
            raise
        raise ValueError(f"{where}.{message}") from exc
