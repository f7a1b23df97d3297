"""The CRD files: every printer column points at a path that exists in the schema.

A column whose jsonPath names no schema field prints an empty cell forever; this catches
typos without a cluster. Also checks that the status fields the README's API tables
document exist, and that every schema node holds only OpenAPI keywords (an unquoted comma
in a YAML flow mapping turns the rest of a description into a stray key, which a strict
``kubectl create`` refuses).
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


SCHEMA_KEYWORDS = {
    "type", "description", "properties", "items", "required", "enum", "default", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "uniqueItems", "additionalProperties", "nullable",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
}  # fmt: skip


def schema_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("properties", {}).values():
        found += schema_nodes(child)
    if isinstance(node.get("items"), dict):
        found += schema_nodes(node["items"])
    return found


@pytest.mark.parametrize("name", ["databasequotas.yaml", "databaseclaims.yaml"])
def test_every_schema_node_holds_only_openapi_keywords(name: str) -> None:
    schema = load(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in schema_nodes(schema):
        assert set(node) <= SCHEMA_KEYWORDS, set(node) - SCHEMA_KEYWORDS
