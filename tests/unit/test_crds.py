"""The CRD files: every printer column points at a path that exists in the schema.

A column whose jsonPath names no schema field prints an empty cell forever; this catches
typos without a cluster. Also checks the API contract's field names from PRODUCT.md exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CRDS / name).read_text())
    return doc


def schema_has(schema: dict[str, Any], path: str) -> bool:
    node = schema
    for part in path.strip(".").split("."):
        if part == "metadata" and node.get("properties", {}).get(part) == {"type": "object"}:
            return True
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


@pytest.mark.parametrize("name", ["databasequotas.yaml", "databaseclaims.yaml"])
def test_every_printer_column_points_at_a_schema_path(name: str) -> None:
    (version,) = load(name)["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        assert schema_has(schema, column["jsonPath"]), column


def test_quota_schema_has_the_product_contract_fields() -> None:
    (version,) = load("databasequotas.yaml")["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for path in [
        "spec.monthlyBudget",
        "spec.currency",
        "spec.hard.claims",
        "spec.hard.storageGiB",
        "spec.enforcement",
        "spec.degradation.policy",
        "spec.degradation.maxStaleness",
        "spec.degradation.safetyMargin",
        "spec.degradation.strictCap.claims",
        "spec.alerts.thresholds",
        "status.observedGeneration",
        "status.spend.observed",
        "status.spend.reserved",
        "status.spend.remaining",
        "status.billing.circuitState",
        "status.billing.degraded",
        "status.billing.lastSuccessfulSync",
        "status.billing.stalenessSeconds",
        "status.billing.fallbackHitRate",
        "status.billing.consecutiveFailures",
        "status.alerts.reached",
        "status.conditions",
    ]:
        assert schema_has(schema, path), path


def test_claim_schema_has_the_product_contract_fields() -> None:
    (version,) = load("databaseclaims.yaml")["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    for path in [
        "spec.engine",
        "spec.instanceClass",
        "spec.storageGiB",
        "spec.replicas",
        "spec.clusterId",
        "status.estimatedMonthlyCost",
        "status.pricing",
        "status.conditions",
    ]:
        assert schema_has(schema, path), path
