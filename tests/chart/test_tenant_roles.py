"""The tenants' ClusterRoles: what namespace users get through Kubernetes' built-in roles.

Checks: by default two ClusterRoles, ``<fullname>-view`` and ``<fullname>-edit``, labelled
to aggregate into the built-in view, edit and admin roles (view into all three, edit into
edit and admin), bound to no one by the chart; their rules, pinned here: view reads
DatabaseQuotas and DatabaseClaims, edit reads them too and creates, updates, patches and
deletes DatabaseClaims. In every variant of the matrix, and with every claim kind enabled,
no tenant rule writes a DatabaseQuota, names a subresource (``/status``), a wildcard or
another group than dbquota.io (the other operators' kinds are theirs to grant). Without
``databaseclaims`` in ``claimKinds`` there is no edit role (no claim the webhook checks);
``rbac.aggregateToDefaultRoles: false`` or ``rbac.create: false`` renders neither.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.conftest import RELEASE, Doc, Manifests
from tests.chart.test_security import expand, rules_of

FULLNAME = f"{RELEASE}-dbquota"
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]
VIEW_RULES = expand(["dbquota.io"], ["databasequotas", "databaseclaims"], READ)
EDIT_RULES = VIEW_RULES | expand(["dbquota.io"], ["databaseclaims"], WRITE)


def tenant_roles(manifests: Manifests) -> dict[str, Doc]:
    """The ClusterRoles that aggregate into a built-in role, by name."""
    return {
        role["metadata"]["name"]: role
        for role in manifests.of_kind("ClusterRole")
        if any(key.startswith(AGGREGATE) for key in role["metadata"]["labels"])
    }


def aggregates_into(role: Doc) -> set[str]:
    return {
        key.removeprefix(AGGREGATE)
        for key, value in role["metadata"]["labels"].items()
        if key.startswith(AGGREGATE) and value == "true"
    }


def test_view_and_edit_aggregate_into_the_built_in_roles(render: Callable[..., Manifests]) -> None:
    roles = tenant_roles(render())
    assert set(roles) == {f"{FULLNAME}-view", f"{FULLNAME}-edit"}
    view, edit = roles[f"{FULLNAME}-view"], roles[f"{FULLNAME}-edit"]
    # Aggregation does not chain: a role reaches each built-in role through its own label.
    assert aggregates_into(view) == {"view", "edit", "admin"}
    assert aggregates_into(edit) == {"edit", "admin"}
    assert rules_of(view) == VIEW_RULES
    assert rules_of(edit) == EDIT_RULES
    for role in (view, edit):
        assert "aggregationRule" not in role


def test_the_chart_binds_no_one_to_them(render: Callable[..., Manifests]) -> None:
    manifests = render()
    names = set(tenant_roles(manifests))
    for binding in manifests.of_kind("ClusterRoleBinding") + manifests.of_kind("RoleBinding"):
        assert binding["roleRef"]["name"] not in names


def check_tenant_rules(manifests: Manifests) -> None:
    roles = tenant_roles(manifests)
    assert roles
    for name, role in roles.items():
        for group, resource, verb, resource_name in rules_of(role):
            assert group == "dbquota.io", (name, group)
            assert "/" not in resource, (name, resource)  # no status, no subresource
            assert "*" not in (group + resource + verb), name
            assert not resource_name, name
            if resource == "databasequotas":
                assert verb in READ, (name, verb)
            else:
                assert resource == "databaseclaims", (name, resource)


def test_no_tenant_writes_a_quota_or_a_status(variant: Manifests) -> None:
    check_tenant_rules(variant)


@pytest.mark.parametrize("extra", [{}, {"watchNamespace": "team-a"}], ids=["all", "one-ns"])
def test_other_operators_kinds_are_not_granted(
    render: Callable[..., Manifests], extra: dict[str, str]
) -> None:
    manifests = render({**extra, "claimKinds": ["databaseclaims", "cnpg", "zalando", "rds"]})
    check_tenant_rules(manifests)
    assert rules_of(tenant_roles(manifests)[f"{FULLNAME}-edit"]) == EDIT_RULES


def test_without_database_claims_in_claim_kinds_tenants_only_read(
    render: Callable[..., Manifests],
) -> None:
    roles = tenant_roles(render({"claimKinds": ["cnpg"]}))
    assert set(roles) == {f"{FULLNAME}-view"}
    assert rules_of(roles[f"{FULLNAME}-view"]) == VIEW_RULES


@pytest.mark.parametrize(
    "rbac", [{"aggregateToDefaultRoles": False}, {"create": False}], ids=["off", "no-rbac"]
)
def test_switched_off(render: Callable[..., Manifests], rbac: dict[str, bool]) -> None:
    manifests = render({"rbac": rbac, "serviceAccount": {"name": "x"}})
    assert not tenant_roles(manifests)
    operator_roles = {r["metadata"]["name"] for r in manifests.of_kind("ClusterRole")}
    assert operator_roles == ({FULLNAME} if rbac.get("create", True) else set())
