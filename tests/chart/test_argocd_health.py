"""The chart's Argo CD health check for DatabaseQuota, run by a real Lua 5.1 interpreter.

Argo CD runs health checks in gopher-lua (Lua 5.1) with the object as the global ``obj``;
here lupa's Lua 5.1 runs charts/dbquota/files/argocd-health.lua the same way, with the io,
os and module-loading libraries removed as Argo CD leaves them out. The cases are in Argo
CD's own fixture format under tests/chart/argocd/dbquota.io/DatabaseQuota
(health_test.yaml, testdata/*.yaml). Checks that each fixture gets its expected status
and message; that the fixtures cover Progressing, Degraded and Healthy and use every
testdata file; that the check never fails on a bare object; and that the chart README
tells how to install it under the key Argo CD looks for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa
import pytest
import yaml

from tests.chart.conftest import CHART

CHECK = CHART / "files" / "argocd-health.lua"
FIXTURES = Path(__file__).parent / "argocd" / "dbquota.io" / "DatabaseQuota"
CASES: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "health_test.yaml").read_text())["tests"]


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the check on ``obj`` as Argo CD does; its result as a dict."""
    lua = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    env = lua.globals()
    for unsafe in ("io", "os", "require", "dofile", "loadfile", "package", "debug"):
        env[unsafe] = None
    # As JSON, the way Argo CD hands objects over: timestamps stay strings.
    plain = json.loads(json.dumps(obj, default=str))
    env.obj = lua.table_from(plain, recursive=True)
    result = lua.execute(CHECK.read_text())
    return {key: str(value) for key, value in result.items()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: Path(c["inputPath"]).stem)
def test_each_fixture_gets_its_health(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((FIXTURES / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


def test_the_fixtures_cover_every_status_and_every_input() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} == {"Progressing", "Degraded", "Healthy"}
    used = {c["inputPath"] for c in CASES}
    assert used == {f"testdata/{p.name}" for p in (FIXTURES / "testdata").glob("*.yaml")}


def test_a_bare_object_is_progressing_not_an_error() -> None:
    assert health({"apiVersion": "dbquota.io/v1alpha1", "kind": "DatabaseQuota"}) == {
        "status": "Progressing",
        "message": "Waiting for the dbquota operator to write the quota's status",
    }


def test_a_ready_quota_without_spend_reads_as_nothing_spent() -> None:
    obj = {
        "spec": {"monthlyBudget": 100},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert health(obj) == {
        "status": "Healthy",
        "message": "0.00 of 100.00 USD/month used (observed 0.00 + reserved 0.00)",
    }


def test_the_chart_readme_tells_how_to_install_it() -> None:
    readme = (CHART / "README.md").read_text()
    assert "resource.customizations.health.dbquota.io_DatabaseQuota" in readme
    assert "files/argocd-health.lua" in readme
