"""The fallback hit rate: how many recent admissions were priced from anything but live data.

Each admission decision that priced a claim counts once: from live prices, or not
(``Cached``, ``Conservative``, ``StrictCap``, ``FailOpen``). The rate is the share of the
latest :data:`DECISION_WINDOW` decisions that were not live. It measures admission, not
ingestion, so admission owns it: the operator's runtime holds one and records every
decision in it (:meth:`dbquota.handlers.runtime.Runtime.observe_admission`), the gauge
``dbquota_fallback_ratio`` reads it when scraped, and the reconciler, which writes quota
status, reads the billing snapshot with the rate put into its health by
:meth:`FallbackRate.onto` (``status.billing.fallbackHitRate``). O(1) per decision; no I/O.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from dbquota.adapters import metrics
from dbquota.domain import billing

DECISION_WINDOW = 1000
"""Admission decisions that the fallback hit rate is computed over (the most recent)."""


class FallbackRate:
    """The share of recent decisions not priced live (module docstring)."""

    def __init__(self) -> None:
        self._decisions: deque[bool] = deque(maxlen=DECISION_WINDOW)
        self._from_cache = 0
        # Read when scraped, not set per decision: nothing on the admission path.
        metrics.fallback_ratio.set_function(lambda: self.rate)

    def record(self, *, from_cache: bool) -> None:
        """Count one decision that priced a claim: ``from_cache`` when not priced live."""
        if len(self._decisions) == self._decisions.maxlen and self._decisions[0]:
            self._from_cache -= 1
        self._decisions.append(from_cache)
        self._from_cache += int(from_cache)

    @property
    def rate(self) -> float:
        """The share (0..1) of the recorded decisions not priced live; 0 before any."""
        return self._from_cache / len(self._decisions) if self._decisions else 0.0

    def onto(self, snapshot: billing.BillingSnapshot) -> billing.BillingSnapshot:
        """``snapshot`` with this rate in its health."""
        health = dataclasses.replace(snapshot.health, fallback_hit_rate=self.rate)
        return dataclasses.replace(snapshot, health=health)
