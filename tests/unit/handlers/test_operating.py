"""Peering priorities, and the operator's logs on the admission path.

- Peering: the oldest replica wins, and no two replicas ever tie. kopf pauses every
  operator that sees a live peer of equal priority, so a tie would leave a Deployment with
  no reconciler at all; these tests pin the properties that prevent it.
- Logs: an admitted review logs nothing at INFO (no access line, no "succeeded" line),
  while denials, other handlers' lines and everything at debug level stay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

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


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, access, objects = (logging.getLogger(n) for n in ("", "aiohttp.access", "kopf.objects"))
    saved = (root.level, access.level, list(objects.filters))
    yield
    root.setLevel(saved[0])
    access.setLevel(saved[1])
    objects.filters[:] = saved[2]


def _passes(logger: str, level: int, message: str) -> bool:
    record = logging.LogRecord(logger, level, __file__, 1, message, None, None)
    return logging.getLogger(logger).isEnabledFor(level) and logging.getLogger(logger).filter(
        record
    )


@pytest.mark.usefixtures("restore_logging")
def test_admission_requests_log_nothing_at_info_but_denials_and_other_handlers_still_do() -> None:
    logging.getLogger().setLevel(logging.INFO)
    operating.quiet_admission_logs()
    operating.quiet_admission_logs()  # idempotent: configure runs once per start-up
    assert not _passes("aiohttp.access", logging.INFO, '127.0.0.1 "POST /validate-claims" 200')
    assert _passes("aiohttp.access", logging.WARNING, "something is wrong")
    assert not _passes("kopf.objects", logging.INFO, "Webhook 'validate-claims' succeeded.")
    assert _passes("kopf.objects", logging.INFO, "Handler 'first_status' succeeded.")
    denied = "Webhook 'validate-claims' failed permanently: denied by DatabaseQuota q"
    assert _passes("kopf.objects", logging.ERROR, denied)
    assert len(logging.getLogger("kopf.objects").filters) == 1


@pytest.mark.usefixtures("restore_logging")
def test_debug_logging_keeps_every_admission_line() -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    operating.quiet_admission_logs()
    assert _passes("aiohttp.access", logging.INFO, '127.0.0.1 "POST /validate-claims" 200')
    assert _passes("kopf.objects", logging.INFO, "Webhook 'validate-claims' succeeded.")
