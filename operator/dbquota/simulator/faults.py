"""What goes wrong in the simulator, set at run time through ``POST /_faults``.

A fault is a JSON object with a ``mode`` and that mode's options (docs/simulator.md has
examples)::

    none                                    healthy again
    outage      style: 503 | hang | reset | refuse, hang_seconds, retry_after
    latency     latency (seconds), jitter (extra random 0..jitter), probability (of a spike)
    rate_limit  retry_after (seconds, in the header), probability
    malformed   style: non_json | missing | string | nan | negative | absurd | mixed,
                probability (per body; per cluster entry in bulk pages),
                field (pricing only: corrupt this field of the real catalog instead of
                serving a canned bad body; one of PRICING_FIELDS)
    partial     drop (share of clusters left out of bulk pages)
    flap        up, down (requests served / failed in turn), or period (seconds each),
                style: 503 | reset

Every mode also takes ``endpoints`` (a subset of ``cluster``, ``bulk``, ``pricing``;
default all) and ``seconds`` (revert to ``none`` after that long; default never). Random
choices come from a generator seeded by the simulator's seed, so a run is repeatable.
What a ``malformed`` fault serves is here too: canned bad bodies (:func:`malformed_body`),
a corrupted bulk entry (:func:`corrupt_entry`) and a catalog with one field corrupted
(:func:`corrupt_pricing`); :mod:`.server` decides when to serve them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

ENDPOINTS = ("cluster", "bulk", "pricing")
MODES = ("none", "outage", "latency", "rate_limit", "malformed", "partial", "flap")
OUTAGE_STYLES = ("503", "hang", "reset", "refuse")
MALFORMED_STYLES = ("non_json", "missing", "string", "nan", "negative", "absurd", "mixed")
PRICING_FIELDS = (
    "instance_hourly",
    "storage_gib_month",
    "vcpu_hourly",
    "memory_gib_hourly",
    "storage_class_gib_month",
    "default_storage_class_gib_month",
)

Action = Literal["serve", "fail_503", "hang", "reset", "rate_limit", "malformed"]


class BadFault(ValueError):
    """The fault JSON cannot be used; the message says why."""


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One parsed fault."""

    mode: str = "none"
    style: str = ""
    endpoints: frozenset[str] = frozenset(ENDPOINTS)
    seconds: float | None = None
    hang_seconds: float = 3600.0
    latency: float = 0.0
    jitter: float = 0.0
    probability: float = 1.0
    retry_after: float = 1.0
    drop: float = 0.2
    up: int = 5
    down: int = 5
    period: float | None = None
    pricing_field: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def _number(body: dict[str, Any], key: str, default: float, *, low: float = 0.0) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise BadFault(f"{key} must be a number >= {low}, got {value!r}")
    return float(value)


def parse(body: object) -> Fault:
    """A :class:`Fault` from the JSON body of ``POST /_faults``, or :class:`BadFault`."""
    if not isinstance(body, dict):
        raise BadFault("expected a JSON object")
    mode = body.get("mode")
    if mode not in MODES:
        raise BadFault(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    endpoints = body.get("endpoints", list(ENDPOINTS))
    if not isinstance(endpoints, list) or not set(endpoints) <= set(ENDPOINTS) or not endpoints:
        raise BadFault(f"endpoints must be a non-empty subset of {list(ENDPOINTS)}")
    style = str(body.get("style", ""))
    if mode == "outage":
        style = style or "503"
        if style not in OUTAGE_STYLES:
            raise BadFault(f"outage style must be one of {OUTAGE_STYLES}")
    elif mode == "malformed":
        style = style or "mixed"
        if style not in MALFORMED_STYLES:
            raise BadFault(f"malformed style must be one of {MALFORMED_STYLES}")
    target = body.get("field", "")
    if target and (mode != "malformed" or target not in PRICING_FIELDS):
        raise BadFault(f"field is for malformed pricing, one of {', '.join(PRICING_FIELDS)}")
    if mode == "flap":
        style = style or "503"
        if style not in ("503", "reset"):
            raise BadFault("flap style must be 503 or reset")
    probability = _number(body, "probability", 1.0)
    if probability > 1.0:
        raise BadFault("probability must be within 0..1")
    drop = _number(body, "drop", 0.2)
    if drop > 1.0:
        raise BadFault("drop must be within 0..1")
    seconds = body.get("seconds")
    period = body.get("period")
    return Fault(
        mode=str(mode),
        style=style,
        endpoints=frozenset(endpoints),
        seconds=None if seconds is None else _number(body, "seconds", 0.0),
        hang_seconds=_number(body, "hang_seconds", 3600.0),
        latency=_number(body, "latency", 0.0),
        jitter=_number(body, "jitter", 0.0),
        probability=probability,
        retry_after=_number(body, "retry_after", 1.0),
        drop=drop,
        up=int(_number(body, "up", 5)),
        down=int(_number(body, "down", 5, low=1)),
        period=None if period is None else _number(body, "period", 0.0, low=0.001),
        pricing_field=str(target),
        raw=dict(body),
    )


@dataclass(frozen=True)
class Decision:
    """What to do with one request."""

    action: Action
    delay: float = 0.0
    style: str = ""
    outcome: str = "ok"


class FaultState:
    """The active fault and the decisions it makes, request by request."""

    def __init__(self, *, seed: int) -> None:
        self.fault = Fault()
        self.since = 0.0
        self._count = 0
        self._rng = random.Random(seed)  # noqa: S311 - repeatable simulation

    def set(self, fault: Fault, *, now: float) -> None:
        """Make ``fault`` the active one from ``now``."""
        self.fault = fault
        self.since = now
        self._count = 0

    def current(self, now: float) -> Fault:
        """The active fault, reverting to none once its ``seconds`` have passed."""
        f = self.fault
        if f.seconds is not None and now - self.since >= f.seconds and f.mode != "none":
            self.set(Fault(), now=now)
        return self.fault

    def refusing(self, now: float) -> bool:
        """Whether the listener should be closed now (outage with style refuse)."""
        f = self.current(now)
        return f.mode == "outage" and f.style == "refuse"

    def dropped(self, cluster_id: str) -> bool:
        """Whether a partial fault leaves this cluster out of bulk pages."""
        f = self.fault
        if f.mode != "partial" or "bulk" not in f.endpoints:
            return False
        return random.Random(f"{cluster_id}").random() < f.drop  # noqa: S311 - stable per id

    def corrupt_entry(self) -> str:
        """A malformed style for one bulk entry, or '' to leave it intact."""
        f = self.fault
        if f.mode != "malformed" or f.style == "non_json" or "bulk" not in f.endpoints:
            return ""
        if self._rng.random() >= f.probability:
            return ""
        return self._style()

    def _style(self) -> str:
        if self.fault.style != "mixed":
            return self.fault.style
        return self._rng.choice(MALFORMED_STYLES[1:])

    def decide(self, endpoint: str, *, now: float) -> Decision:  # noqa: PLR0911, PLR0912 - a branch per mode reads best
        """The decision for one request to ``endpoint`` at ``now``."""
        f = self.current(now)
        if f.mode == "none" or endpoint not in f.endpoints:
            return Decision("serve")
        self._count += 1
        if f.mode == "outage":
            if f.style == "hang":
                return Decision("hang", delay=f.hang_seconds, outcome="hang")
            if f.style in ("reset", "refuse"):
                return Decision("reset", outcome="reset")
            return Decision("fail_503", outcome="503")
        if f.mode == "latency":
            if self._rng.random() < f.probability:
                delay = f.latency + self._rng.uniform(0.0, f.jitter)
                return Decision("serve", delay=delay, outcome="ok_delayed")
            return Decision("serve")
        if f.mode == "rate_limit":
            if self._rng.random() < f.probability:
                return Decision("rate_limit", outcome="429")
            return Decision("serve")
        if f.mode == "malformed":
            if endpoint == "bulk" and f.style != "non_json":
                return Decision("serve")  # entries are corrupted one by one
            if self._rng.random() < f.probability:
                return Decision("malformed", style=self._style(), outcome="malformed")
            return Decision("serve")
        if f.mode == "flap":
            if f.period is not None:
                down = int((now - self.since) // f.period) % 2 == 1
            else:
                down = (self._count - 1) % (f.up + f.down) >= f.up
            if down:
                if f.style == "reset":
                    return Decision("reset", outcome="reset")
                return Decision("fail_503", outcome="503")
            return Decision("serve")
        return Decision("serve")  # partial: pages are filtered while serving


# -- malformed payloads -------------------------------------------------------------------

MALFORMED_BODIES = {
    "non_json": b"<html><body>502 Bad Gateway</body></html>",
    "missing": b'{"compute_cost": 12.5}',
    "string": b'{"compute_cost": "NaN-ish", "storage_cost": "12"}',
    "nan": b'{"compute_cost": NaN, "storage_cost": 1.0}',
    "negative": b'{"compute_cost": -250.0, "storage_cost": 3.0}',
    "absurd": b'{"compute_cost": 1e300, "storage_cost": 3.0}',
}
MALFORMED_PRICING = {
    "non_json": b"<html><body>502 Bad Gateway</body></html>",
    "missing": b'{"currency": "USD", "instance_hourly": {"db.r6g.large": 0.2}}',
    "string": b'{"instance_hourly": {"db.r6g.large": "cheap"}, "storage_gib_month": 0.1}',
    "nan": b'{"instance_hourly": {"db.r6g.large": NaN}, "storage_gib_month": 0.1}',
    "negative": b'{"instance_hourly": {"db.r6g.large": -1.0}, "storage_gib_month": 0.1}',
    "absurd": b'{"instance_hourly": {"db.r6g.large": 1e12}, "storage_gib_month": 0.1}',
}


def malformed_body(style: str, endpoint: str) -> bytes:
    """A canned bad body of malformed ``style`` for ``endpoint`` (served as a 200)."""
    table = MALFORMED_PRICING if endpoint == "pricing" else MALFORMED_BODIES
    return table[style]


def corrupt_entry(entry: dict[str, Any], style: str) -> dict[str, Any]:
    """One bulk-page entry corrupted by malformed ``style``."""
    corrupted = dict(entry)
    if style == "missing":
        del corrupted["storage_cost"]
    elif style == "string":
        corrupted["compute_cost"] = "NaN-ish"
    elif style == "nan":
        corrupted["compute_cost"] = math.nan  # msgspec writes null: still not a number
    elif style == "negative":
        corrupted["compute_cost"] = -abs(entry["compute_cost"]) - 1.0
    elif style == "absurd":
        corrupted["compute_cost"] = 1e300
    return corrupted


def corrupt_pricing(body: dict[str, Any], name: str, style: str) -> dict[str, Any] | None:
    """The real catalog with field ``name`` corrupted by ``style`` (None: ``non_json``,
    which has no field to corrupt). In a per-class field, the first class is corrupted."""
    if style == "non_json":
        return None
    corrupted = dict(body)
    if style == "missing":
        del corrupted[name]
        return corrupted
    value = corrupted[name]
    key = None
    if isinstance(value, dict):
        key = min(value)
        value = value[key]
    bad: object = {
        "string": "cheap",
        "nan": math.nan,  # msgspec writes null: still not a number
        "negative": -abs(value) - 1.0,
        "absurd": 1e300,
    }[style]
    if key is None:
        corrupted[name] = bad
    else:
        corrupted[name] = {**corrupted[name], key: bad}
    return corrupted
