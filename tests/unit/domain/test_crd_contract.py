"""The domain agrees with the CRDs in ``crds/``, which are the source of truth.

Checks that the enums the domain decides with (enforcement, degradation policy, the
pricing modes a claim's ``status.pricing`` may show) are exactly the CRDs' enums, that
every field a degradation policy's rule needs is required by a CEL rule of the CRD for
that policy (and no other policy is constrained so), that ``parse_quota`` applies the
same defaults as the DatabaseQuota schema, and that it holds alert thresholds to the
schema's limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dbquota.domain import policies, pricing, quotas

CRDS = Path(__file__).resolve().parents[3] / "crds"


def schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind}.yaml").read_text())
    spec: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    return spec


def test_enums_match_the_crds() -> None:
    quota = schema("databasequotas")["spec"]["properties"]
    assert tuple(quota["enforcement"]["enum"]) == quotas.ENFORCEMENTS
    degradation = quota["degradation"]["properties"]
    assert tuple(degradation["policy"]["enum"]) == quotas.POLICIES
    claim_status = schema("databaseclaims")["status"]["properties"]
    assert tuple(claim_status["pricing"]["enum"]) == pricing.PRICING_MODES


def test_the_crd_requires_what_each_policy_needs() -> None:
    degradation = schema("databasequotas")["spec"]["properties"]["degradation"]
    rules = {v["rule"] for v in degradation.get("x-kubernetes-validations", [])}
    needed = {
        f"!has(self.policy) || self.policy != '{rule.name}' || has(self.{field})"
        for rule in policies.RULES.values()
        for field in rule.needs
    }
    assert needed == {r for r in rules if r.startswith("!has(self.policy)")}


def test_defaults_match_the_crd() -> None:
    spec = schema("databasequotas")["spec"]["properties"]
    degradation = spec["degradation"]["properties"]
    strict = degradation["strictCap"]["properties"]
    parsed = quotas.parse_quota(name="q", spec={"monthlyBudget": 1})
    assert parsed.currency == spec["currency"]["default"]
    assert parsed.enforcement == spec["enforcement"]["default"]
    assert parsed.policy == degradation["policy"]["default"]
    assert parsed.max_staleness == quotas.parse_duration(degradation["maxStaleness"]["default"])
    assert parsed.safety_margin == degradation["safetyMargin"]["default"]
    assert "default" not in strict["claims"]  # absent = no limit on that dimension
    assert "default" not in strict["storageGiB"]
    assert parsed.strict_cap == quotas.StrictCap(claims=0)


def test_alert_threshold_limits_match_the_crd() -> None:
    thresholds = schema("databasequotas")["spec"]["properties"]["alerts"]["properties"]
    thresholds = thresholds["thresholds"]
    assert thresholds["items"]["minimum"] == 1
    assert thresholds["items"]["maximum"] == quotas.MAX_THRESHOLD
    assert thresholds["maxItems"] == quotas.MAX_THRESHOLDS
    assert thresholds["x-kubernetes-list-type"] == "set"  # unique
    assert [r["rule"] for r in thresholds["x-kubernetes-validations"]] == ["self.isSorted()"]
    assert quotas.parse_quota(name="q", spec={"monthlyBudget": 1}).alert_thresholds == ()
