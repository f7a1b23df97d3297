"""Timestamps as the Kubernetes API writes them (RFC 3339), to and from epoch seconds.

The one place that formats and parses them: status fields (``reservedAt``,
``lastSuccessfulSync``), condition transition times, Events and Leases all go through
here, and so do the log lines of ``--log-format=json`` (milliseconds). ``MicroTime``
(``2026-11-30T14:55:45.123456Z``) is what Leases and ``events.k8s.io`` Events carry; plain
``Time`` has whole seconds.
"""

from __future__ import annotations

import datetime
import functools
import math
import time

_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
_MICROS = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_rfc3339(epoch: float) -> str:
    """Epoch seconds as the API's ``Time`` (whole seconds, truncated)."""
    return _whole_second(math.floor(epoch))


@functools.lru_cache(maxsize=4)
def _whole_second(second: int) -> str:
    # Memoized: a burst of admissions stamps hundreds of reservations within one second,
    # and strftime is most of what stamping one costs.
    return datetime.datetime.fromtimestamp(second, datetime.UTC).strftime(_SECONDS)


def to_micro(epoch: float) -> str:
    """Epoch seconds as the API's ``MicroTime`` (microseconds)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime(_MICROS)


def to_milli(epoch: float) -> str:
    """Epoch seconds with milliseconds (truncated), ``2026-11-30T14:55:45.123Z``."""
    return to_micro(epoch)[:-4] + "Z"


def from_rfc3339(text: object) -> float:
    """An API timestamp (``Time`` or ``MicroTime``) as epoch seconds; 0.0 for anything else
    (absent or junk reads as "long ago")."""
    if not isinstance(text, str):
        return 0.0
    try:
        return datetime.datetime.fromisoformat(text).timestamp()  # 3.11 reads the trailing Z
    except ValueError:
        return 0.0


def now() -> str:
    """The current time as the API's ``Time``."""
    return to_rfc3339(time.time())
