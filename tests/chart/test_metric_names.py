"""The operator's /metrics passes promtool's own lint of metric names and types.

``promtool check metrics`` reads an exposition and reports what breaks Prometheus' naming
practice (non-base units, counters without ``_total``, reserved suffixes, missing help).
Checks that dbquota's registry, with a series of every labelled metric and one published
quota, passes it, and that every family is namespaced ``dbquota_``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbquota.adapters import metrics
from dbquota.domain.resources import QuotaStatus


@pytest.fixture
def published() -> Iterator[None]:
    metrics.publish_quota(
        namespace="lint",
        name="q",
        spec={"monthlyBudget": 100},
        status=QuotaStatus(spend={"observed": 10.0, "reserved": 5.0, "remaining": 85.0}),
    )
    yield
    metrics.forget_quota(namespace="lint", name="q")


@pytest.mark.usefixtures("published")
def test_the_exposition_passes_promtool_check_metrics(promtool: Path) -> None:
    metrics.billing_calls.labels(endpoint="pricing", outcome="ok").inc(0)
    metrics.admission_decisions.labels(
        outcome="admitted", pricing="Live", reason="WithinBudget", dry_run="false", degraded="false"
    ).inc(0)
    metrics.sync_duration.labels(result="ok")
    text = metrics.exposition()
    assert b'dbquota_quota_used_ratio{namespace="lint",quota="q"} 0.15' in text
    checked = subprocess.run(
        [str(promtool), "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


def test_every_family_is_namespaced() -> None:
    for family in metrics.REGISTRY.collect():
        assert family.name.startswith("dbquota_"), family.name
        assert family.documentation, family.name
