"""The chart's ``claimKinds``: the webhook's rules, the RBAC and the flag follow the enabled kinds.

Checks: by default only DatabaseClaims (one rule, DatabaseClaim status writable, no other
operator's resource in the RBAC); with every kind enabled, one webhook rule per kind
(Crossplane RDS cluster-scoped), read-only list/watch of the other operators' kinds (RDS
in the ClusterRole even when one namespace is watched, with a Role for its Events in
namespace default then), never a write on them, and
``--claim-kinds`` passed to the operator in the same order; the rules and the kinds match
the operator's own registry; an unknown kind, an empty list or a repeat is refused by
the schema.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dbquota.domain.kinds import registry
from tests.chart.conftest import MATRIX, RELEASE, HelmError, Manifests

ALL = ["databaseclaims", "cnpg", "zalando", "rds"]


def rules(manifests: Manifests) -> list[dict[str, object]]:
    webhook = manifests.one("ValidatingWebhookConfiguration")["webhooks"][0]
    found: list[dict[str, object]] = webhook["rules"]
    return found


def rbac_rules(manifests: Manifests) -> list[dict[str, list[str]]]:
    return [
        rule
        for kind in ("ClusterRole", "Role")
        for role in manifests.of_kind(kind)
        for rule in role.get("rules") or []
    ]


def test_by_default_only_database_claims_are_watched_and_admitted(
    render: Callable[..., Manifests],
) -> None:
    manifests = render()
    assert [r["resources"] for r in rules(manifests)] == [["databaseclaims"]]
    groups = {g for rule in rbac_rules(manifests) for g in rule["apiGroups"]}
    assert not groups & {"postgresql.cnpg.io", "acid.zalan.do", "rds.aws.upbound.io"}
    assert "--claim-kinds=databaseclaims" in manifests.container()["args"]


def test_every_enabled_kind_gets_a_rule_as_the_registry_names_it(
    render: Callable[..., Manifests],
) -> None:
    manifests = render({"claimKinds": ALL})
    expected = [
        {
            "apiGroups": [kind.resource.group],
            "apiVersions": [kind.resource.version],
            "resources": [kind.resource.plural],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced" if kind.resource.namespaced else "Cluster",
        }
        for kind in registry.enabled(ALL)
    ]
    assert rules(manifests) == expected
    assert f"--claim-kinds={','.join(ALL)}" in manifests.container()["args"]


@pytest.mark.parametrize("variant_name", ["default", "one-namespace"])
def test_other_operators_kinds_are_read_only(
    render: Callable[..., Manifests], variant_name: str
) -> None:
    manifests = render({**MATRIX.get(variant_name, {}), "claimKinds": ALL})
    for kind in registry.enabled(ALL):
        group, plural = kind.resource.group, kind.resource.plural
        granted = {
            verb
            for rule in rbac_rules(manifests)
            if group in rule["apiGroups"]
            for resource in rule["resources"]
            if resource.split("/")[0] == plural
            for verb in rule["verbs"]
        }
        assert {"list", "watch"} <= granted, kind.name
        if not kind.owned:
            assert granted == {"get", "list", "watch"}, kind.name
    cluster_role = manifests.one("ClusterRole", f"{RELEASE}-dbquota")
    assert any("rds.aws.upbound.io" in r["apiGroups"] for r in cluster_role["rules"])


@pytest.mark.parametrize("kinds", [["nope"], [], ["cnpg", "cnpg"]])
def test_the_schema_refuses_unknown_empty_or_repeated_kinds(
    render: Callable[..., Manifests], kinds: list[str]
) -> None:
    with pytest.raises(HelmError, match="claimKinds"):
        render({"claimKinds": kinds})


def test_with_one_namespace_rds_events_get_a_role_in_default(
    render: Callable[..., Manifests],
) -> None:
    manifests = render({**MATRIX["one-namespace"], "claimKinds": ALL})
    events = [r for r in manifests.of_kind("Role") if r["metadata"]["namespace"] == "default"]
    assert [r["metadata"]["name"].endswith("-events") for r in events] == [True]
    assert {v for rule in events[0]["rules"] for v in rule["verbs"]} == {"create", "patch"}
    assert not [
        r
        for r in render({**MATRIX["one-namespace"], "claimKinds": ["cnpg"]}).of_kind("Role")
        if r["metadata"]["namespace"] == "default"
    ]
