"""The PrometheusRule: rendered by the real helm, checked and unit-tested by a real promtool.

Checks that the rule is off by default; that, on, it holds the alerts on-call needs, each
with a severity, a summary and a description, and a runbook section in the chart README
(a ``runbook_url`` to it when ``runbookUrl`` is set); that thresholds, ``for`` durations,
extra labels and each alert's switch come from values, with one alert per configured
budget threshold; that the apiserver alerts select the webhook the chart registers
(DbquotaWebhookUnreachable only its failed calls, not its denials) and DbquotaOperatorDown
the job and namespace the chart's ServiceMonitor gives the metrics Service's targets; that
every ``dbquota_*`` metric in the rules is one the operator exports (read from its
registry); that ``promtool check rules`` accepts the rules with the defaults and with every
knob turned; that every fixture in tests/chart/promtool passes ``promtool test rules``
(input series, evaluation times, expected alerts), that together they see each alert both
firing and not firing, and that each fixture fails with its expectations turned round (the
harness can fail).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, MATRIX, NAMESPACE, Manifests
from tests.chart.promql import dbquota_names, exported_series, run_promtool

FIXTURES = Path(__file__).parent / "promtool"
ON: dict[str, Any] = {"metrics": {"prometheusRule": {"enabled": True}}}
ALERTS = {
    "DbquotaBillingCircuitOpen",
    "DbquotaBillingDataStale",
    "DbquotaAdmissionSlow",
    "DbquotaQuotaBudgetUsed",
    "DbquotaWebhookFailingOpen",
    "DbquotaWebhookUnreachable",
    "DbquotaAdmissionTimeouts",
    "DbquotaEscrowExpired",
    "DbquotaNoLeader",
    "DbquotaOperatorDown",
}
TURNED: dict[str, Any] = {
    "metrics": {
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "alertLabels": {"team": "platform"},
            "runbookUrl": "https://git.example.com/dbquota/blob/main/charts/dbquota/README.md",
            "circuitOpen": {"for": "3m", "severity": "critical"},
            "billingStale": {"for": "1m"},
            "admissionLatency": {"thresholdSeconds": 0.25, "for": "2m"},
            "quotaUsage": {
                "thresholds": [
                    {"ratio": 0.5, "for": "1h", "severity": "info"},
                    {"ratio": 0.9, "for": "30m", "severity": "warning"},
                    {"ratio": 1.0, "for": "0m", "severity": "critical"},
                ]
            },
            "webhookFailOpen": {"window": "30m"},
            "webhookUnreachable": {"window": "20m", "severity": "warning"},
            "admissionTimeouts": {"window": "15m", "severity": "critical"},
            "escrowExpired": {"window": "1h", "severity": "info"},
            "noLeader": {"for": "10m", "severity": "warning"},
            "operatorDown": {"for": "3m", "severity": "warning"},
        }
    }
}


def rules_of(manifests: Manifests) -> list[dict[str, Any]]:
    (rule,) = manifests.of_kind("PrometheusRule")
    (group,) = rule["spec"]["groups"]
    found: list[dict[str, Any]] = group["rules"]
    return found


def write_rules(manifests: Manifests, path: Path) -> None:
    """The PrometheusRule's ``spec`` is a Prometheus rule file."""
    (rule,) = manifests.of_kind("PrometheusRule")
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))


def test_no_rule_by_default(render: Callable[..., Manifests]) -> None:
    assert not render().of_kind("PrometheusRule")


def test_every_alert_is_there_with_severity_summary_and_description(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(ON)
    (rule,) = manifests.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    rules = rules_of(manifests)
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert r["labels"]["severity"], r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert r["annotations"]["description"].strip(), r["alert"]
        assert "runbook_url" not in r["annotations"]


def test_every_alert_has_a_runbook_in_the_chart_readme(render: Callable[..., Manifests]) -> None:
    readme = (CHART / "README.md").read_text()
    headings = {line.removeprefix("#### ").strip() for line in readme.splitlines()}
    for r in rules_of(render(TURNED)):
        assert r["alert"] in headings, f"no '#### {r['alert']}' runbook in the chart README"
        base = TURNED["metrics"]["prometheusRule"]["runbookUrl"]
        assert r["annotations"]["runbook_url"] == f"{base}#{r['alert'].lower()}"


def test_values_set_thresholds_durations_and_labels(render: Callable[..., Manifests]) -> None:
    manifests = render(TURNED)
    (rule,) = manifests.of_kind("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = rules_of(manifests)
    by_name = {r["alert"]: r for r in rules}
    assert by_name["DbquotaBillingCircuitOpen"]["for"] == "3m"
    assert by_name["DbquotaBillingCircuitOpen"]["labels"]["severity"] == "critical"
    assert by_name["DbquotaAdmissionSlow"]["expr"].rstrip().endswith("> 0.25")
    assert "[30m]" in by_name["DbquotaWebhookFailingOpen"]["expr"]
    assert "[1h]" in by_name["DbquotaEscrowExpired"]["expr"]
    assert "[15m]" in by_name["DbquotaAdmissionTimeouts"]["expr"]
    assert by_name["DbquotaAdmissionTimeouts"]["labels"]["severity"] == "critical"
    assert by_name["DbquotaNoLeader"]["for"] == "10m"
    assert by_name["DbquotaNoLeader"]["labels"]["severity"] == "warning"
    assert "[20m]" in by_name["DbquotaWebhookUnreachable"]["expr"]
    assert "offset 20m" in by_name["DbquotaWebhookUnreachable"]["expr"]
    assert by_name["DbquotaWebhookUnreachable"]["labels"]["severity"] == "warning"
    assert by_name["DbquotaOperatorDown"]["for"] == "3m"
    assert by_name["DbquotaOperatorDown"]["labels"]["severity"] == "warning"
    usage = [r for r in rules if r["alert"] == "DbquotaQuotaBudgetUsed"]
    assert [(r["labels"]["threshold"], r["for"], r["labels"]["severity"]) for r in usage] == [
        ("0.5", "1h", "info"),
        ("0.9", "30m", "warning"),
        ("1", "0m", "critical"),
    ]
    assert [r["expr"].split(">=")[1].strip() for r in usage] == ["0.5", "0.9", "1"]
    assert all(r["labels"]["team"] == "platform" for r in rules)


def test_each_alert_can_be_switched_off(render: Callable[..., Manifests]) -> None:
    switches = {
        "circuitOpen": "DbquotaBillingCircuitOpen",
        "billingStale": "DbquotaBillingDataStale",
        "admissionLatency": "DbquotaAdmissionSlow",
        "quotaUsage": "DbquotaQuotaBudgetUsed",
        "webhookFailOpen": "DbquotaWebhookFailingOpen",
        "webhookUnreachable": "DbquotaWebhookUnreachable",
        "admissionTimeouts": "DbquotaAdmissionTimeouts",
        "escrowExpired": "DbquotaEscrowExpired",
        "noLeader": "DbquotaNoLeader",
        "operatorDown": "DbquotaOperatorDown",
    }
    for key, alert in switches.items():
        values = {"metrics": {"prometheusRule": {"enabled": True, key: {"enabled": False}}}}
        assert {r["alert"] for r in rules_of(render(values))} == ALERTS - {alert}, key


def test_the_fail_open_alert_watches_the_webhook_the_chart_registers(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(ON)
    webhook = manifests.one("ValidatingWebhookConfiguration")["webhooks"][0]
    (alert,) = [r for r in rules_of(manifests) if r["alert"] == "DbquotaWebhookFailingOpen"]
    selectors = re.findall(r"apiserver_admission_webhook_fail_open_count\{([^}]*)\}", alert["expr"])
    assert selectors
    assert set(selectors) == {f'name="{webhook["name"]}"'}


def test_the_unreachable_alert_counts_failed_calls_to_the_webhook_the_chart_registers(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(ON)
    webhook = manifests.one("ValidatingWebhookConfiguration")["webhooks"][0]
    (alert,) = [r for r in rules_of(manifests) if r["alert"] == "DbquotaWebhookUnreachable"]
    selectors = re.findall(r"apiserver_admission_webhook_rejection_count\{([^}]*)\}", alert["expr"])
    assert len(selectors) == 3  # increase(), and the new series: now unless then
    # Failed calls only: the webhook's own denials are error_type="no_error".
    assert set(selectors) == {f'name="{webhook["name"]}", error_type="calling_webhook_error"'}


def test_the_operator_down_alert_looks_for_the_job_the_service_monitor_makes(
    render: Callable[..., Manifests],
) -> None:
    """The Prometheus Operator names a ServiceMonitor's job after the Service it scrapes
    (unless ``jobLabel`` is set), and its ``namespace`` label is the Service's."""
    manifests = render(MATRIX["monitoring"])
    monitor = manifests.one("ServiceMonitor")
    assert "jobLabel" not in monitor["spec"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    (service,) = [
        s
        for s in manifests.of_kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    job, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    (alert,) = [r for r in rules_of(manifests) if r["alert"] == "DbquotaOperatorDown"]
    assert alert["expr"] == f'absent(up{{job="{job}", namespace="{namespace}"}} == 1)'
    assert alert["labels"]["job"] == job
    assert alert["labels"]["namespace"] == namespace == NAMESPACE


def test_rules_name_only_metrics_the_operator_exports(render: Callable[..., Manifests]) -> None:
    exported = exported_series()
    for r in rules_of(render(TURNED)):
        assert dbquota_names(r["expr"]) <= exported, r["alert"]


@pytest.mark.parametrize("values", [ON, TURNED], ids=["defaults", "every-knob"])
def test_promtool_check_rules_accepts_them(
    render: Callable[..., Manifests], promtool: Path, tmp_path: Path, values: dict[str, Any]
) -> None:
    manifests = render(values)
    write_rules(manifests, tmp_path / "rules.yaml")
    checked = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules_of(manifests))} rules found" in checked.stdout


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.yaml"))


def run_fixture(
    fixture: Path, *, render: Callable[..., Manifests], promtool: Path, tmp_path: Path
) -> tuple[int, str]:
    """Copy a fixture beside the rules rendered with the default values; run it."""
    assert yaml.safe_load(fixture.read_text())["rule_files"] == ["rules.yaml"], fixture.name
    write_rules(render(ON), tmp_path / "rules.yaml")
    shutil.copy(fixture, tmp_path / fixture.name)
    result = run_promtool(promtool, "test", "rules", fixture.name, cwd=tmp_path)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("fixture", fixture_files(), ids=lambda p: p.stem)
def test_promtool_unit_tests_pass(
    render: Callable[..., Manifests], promtool: Path, tmp_path: Path, fixture: Path
) -> None:
    code, output = run_fixture(fixture, render=render, promtool=promtool, tmp_path=tmp_path)
    assert code == 0, output
    assert "SUCCESS" in output


def test_the_fixtures_see_every_alert_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for fixture in fixture_files():
        for test in yaml.safe_load(fixture.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing == ALERTS
    assert silent == ALERTS


@pytest.mark.parametrize("fixture", fixture_files(), ids=lambda p: p.stem)
def test_a_wrong_expectation_fails(
    render: Callable[..., Manifests], promtool: Path, tmp_path: Path, fixture: Path
) -> None:
    wrong = yaml.safe_load(fixture.read_text())
    for test in wrong["tests"]:
        for case in test["alert_rule_test"]:
            case["exp_alerts"] = [] if case.get("exp_alerts") else [{"exp_labels": {}}]
    (tmp_path / "src").mkdir()
    fixture = tmp_path / "src" / "wrong.yaml"
    fixture.write_text(yaml.safe_dump(wrong))
    code, output = run_fixture(fixture, render=render, promtool=promtool, tmp_path=tmp_path)
    assert code != 0
    assert "FAILED" in output
