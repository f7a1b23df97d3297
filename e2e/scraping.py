"""Prometheus metrics as the e2e suite and the benchmarks read them.

Parsed with prometheus-client's own text parser (the operator already depends on it),
not by splitting lines by hand.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str) -> list[Sample]:
    """Every sample of a ``/metrics`` page."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(parsed: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in parsed
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
