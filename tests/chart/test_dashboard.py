"""The Grafana dashboard: its ConfigMap, and that every panel queries real dbquota metrics.

Checks that the dashboard is off by default; that, on, it is a ConfigMap carrying the
sidecar's label (``grafana_dashboard: "1"``, key, value, namespace and annotations
configurable) whose JSON is files/grafana-dashboard.json unchanged; that every panel has
queries, each naming at least one metric, and every ``dbquota_*`` name in them is one the
operator exports (read from its registry, so a rename breaks this test); that the panels
on-call needs are there (breaker state, billing data age, fallback ratio, admission
latency percentiles, decisions by outcome and pricing, decisions made while billing was
degraded, budget use and spend vs budget per quota, billing call outcomes, which replica
leads); that panel ids are unique and panels
fit the 24-column grid; and that every query is valid PromQL (promtool parses them as
recording rules, Grafana's variables replaced by values).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, NAMESPACE, Manifests
from tests.chart.promql import dbquota_names, exported_series, run_promtool

DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
ON = {"metrics": {"grafanaDashboard": {"enabled": True}}}

# Grafana's variables, as the queries use them, and a value PromQL accepts for each.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*"}


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of the dashboard, rows' nested panels included (rows themselves not)."""
    for panel in node.get("panels", []):
        if panel["type"] != "row":
            yield panel
        yield from panels(panel)


def expressions() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of every panel."""
    return [(p["title"], t["expr"]) for p in panels(DASHBOARD) for t in p["targets"]]


def test_no_dashboard_by_default(render: Callable[..., Manifests]) -> None:
    assert not [c for c in render().of_kind("ConfigMap") if "dashboard" in c["metadata"]["name"]]


def test_the_dashboard_is_a_configmap_for_the_grafana_sidecar(
    render: Callable[..., Manifests],
) -> None:
    (configmap,) = render(ON).of_kind("ConfigMap")
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in configmap["metadata"]
    (text,) = configmap["data"].values()
    assert json.loads(text) == DASHBOARD


def test_label_namespace_and_annotations_are_configurable(
    render: Callable[..., Manifests],
) -> None:
    values = {
        "metrics": {
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "labelKey": "example.com/dashboard",
                "labelValue": "dbquota",
                "annotations": {"grafana_folder": "FinOps"},
            }
        }
    }
    (configmap,) = render(values).of_kind("ConfigMap")
    meta = configmap["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["example.com/dashboard"] == "dbquota"
    assert "grafana_dashboard" not in meta["labels"]
    assert meta["annotations"] == {"grafana_folder": "FinOps"}


def test_every_query_names_metrics_the_operator_exports() -> None:
    exported = exported_series()
    assert "dbquota_quota_used_ratio" in exported  # the registry is what we think it is
    assert expressions()
    for title, expr in expressions():
        names = dbquota_names(expr)
        assert names, f"{title}: {expr} names no dbquota metric"
        assert names <= exported, f"{title}: not exported: {sorted(names - exported)}"


def test_every_panel_has_queries() -> None:
    for panel in panels(DASHBOARD):
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize(
    "metric",
    [
        "dbquota_billing_circuit_state",
        "dbquota_billing_last_success_timestamp_seconds",
        "dbquota_fallback_ratio",
        "dbquota_admission_duration_seconds_bucket",
        "dbquota_admission_decisions_total",
        "dbquota_quota_used_ratio",
        "dbquota_quota_spend",
        "dbquota_quota_budget",
        "dbquota_billing_calls_total",
        "dbquota_leader",
    ],
)
def test_the_dashboard_shows_what_on_call_needs(metric: str) -> None:
    assert any(metric in dbquota_names(expr) for _, expr in expressions())


def test_a_panel_shows_the_decisions_made_while_billing_was_degraded() -> None:
    (degraded,) = [p for p in panels(DASHBOARD) if p["title"] == "Degraded decisions"]
    (target,) = degraded["targets"]
    assert dbquota_names(target["expr"]) == {"dbquota_admission_decisions_total"}
    assert 'degraded="true"' in target["expr"]


def test_admission_latency_shows_three_percentiles() -> None:
    (latency,) = [p for p in panels(DASHBOARD) if p["title"] == "Admission latency"]
    exprs = [t["expr"] for t in latency["targets"]]
    assert [e.split(",")[0] for e in exprs] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.9",
        "histogram_quantile(0.99",
    ]


def test_panel_ids_are_unique_and_panels_fit_the_grid() -> None:
    every = list(panels(DASHBOARD)) + [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(expressions()):
        promql = expr
        for variable, value in GRAFANA_VARIABLES.items():
            promql = promql.replace(variable, value)
        assert "$" not in promql, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": promql})
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    checked = run_promtool(promtool, "check", "rules", "queries.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
