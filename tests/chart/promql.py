"""PromQL as the chart's dashboard and alert rules use it: which metrics dbquota exports,
which metrics an expression names, and ``promtool`` run on rule files.

:func:`exported_series` reads the names from the operator's own registry
(:data:`dbquota.adapters.metrics.REGISTRY`), with the suffixes Prometheus sees (``_total``
on counters; ``_bucket``, ``_count`` and ``_sum`` of histograms), so renaming a metric in
the code fails the tests of every expression still using the old name. Used by
``test_dashboard.py`` and ``test_prometheus_rules.py``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from dbquota.adapters import metrics

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')


def exported_series() -> frozenset[str]:
    """Every series name the operator's ``/metrics`` can show."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        suffixes = _SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return frozenset(names)


def dbquota_names(expr: str) -> set[str]:
    """The ``dbquota_*`` metric names an expression uses (label values are skipped)."""
    return {n for n in _IDENTIFIER.findall(_STRINGS.sub('""', expr)) if n.startswith("dbquota_")}


def run_promtool(binary: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``promtool args...`` in ``cwd``; the caller checks the exit code and output."""
    return subprocess.run(
        [str(binary), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
