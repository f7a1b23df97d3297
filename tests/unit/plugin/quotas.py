"""DatabaseQuota objects as the API returns them, for the plugin's report tests."""

from __future__ import annotations

from typing import Any

NOW = 1_800_000_000.0


def quota(
    name: str = "team-a",
    namespace: str = "ns",
    *,
    budget: float = 1000.0,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"monthlyBudget": budget, **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def spent(observed: float, reserved: float, budget: float = 1000.0) -> dict[str, Any]:
    return {
        "spend": {
            "observed": observed,
            "reserved": reserved,
            "remaining": budget - observed - reserved,
        },
        "billing": {"circuitState": "Closed", "degraded": False, "stalenessSeconds": 4},
    }
