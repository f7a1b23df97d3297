"""Least privilege, as rendered: RBAC without wildcards, a locked-down pod.

Checks, for every variant of the matrix: no RBAC rule has a ``*`` anywhere; the rules are
exactly the verbs and resources the operator uses (the full table is pinned here, so that
a new permission is a reviewed change); Leases only in the release's namespace; with one
watched namespace the namespaced permissions become a Role there. The pod runs as
a non-root numeric user with ``seccompProfile: RuntimeDefault``, a read-only root
filesystem, no privilege escalation and every capability dropped, with resource requests
and limits, and only its cache and /tmp writable.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.chart.conftest import MATRIX, RELEASE, Doc, Manifests, walk

Rule = tuple[str, str, str, str]  # (apiGroup, resource, verb, resourceName or "")


def rules_of(role: Doc) -> set[Rule]:
    out: set[Rule] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [""]:
                        out.add((group, resource, verb, name))
    return out


def expand(groups: list[str], resources: list[str], verbs: list[str], name: str = "") -> set[Rule]:
    return {(g, r, v, name) for g in groups for r in resources for v in verbs}


CLUSTER_NEEDS = expand(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"])
CLUSTER_NEEDS |= expand([""], ["namespaces"], ["list", "watch"])
NAMESPACED_NEEDS = (
    expand(["dbquota.io"], ["databasequotas"], ["get", "list", "watch", "patch"])
    | expand(["dbquota.io"], ["databaseclaims"], ["get", "list", "watch"])
    | expand(["dbquota.io"], ["databasequotas/status", "databaseclaims/status"], ["get", "patch"])
    | expand([""], ["events"], ["create", "patch"])
    | expand(["events.k8s.io"], ["events"], ["create", "patch"])
)
OPERATOR = f"{RELEASE}-dbquota"
"""The operator's ClusterRole (the others are the tenants': test_tenant_roles.py)."""
LEASE_NEEDS = expand(
    ["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "update", "delete"]
)


def lease_role(manifests: Manifests) -> Doc:
    (role,) = [r for r in manifests.of_kind("Role") if r["metadata"]["name"].endswith("-leases")]
    return role


def test_no_rbac_rule_has_a_wildcard(variant: Manifests) -> None:
    roles = variant.of_kind("ClusterRole") + variant.of_kind("Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(field) or []), (role["metadata"]["name"], rule)
                assert not any("*" in item for item in rule.get(field) or []), rule


def test_cluster_wide_rules_are_exactly_what_the_operator_uses(
    render: Callable[..., Manifests],
) -> None:
    manifests = render()
    role = manifests.one("ClusterRole", OPERATOR)
    assert rules_of(role) == CLUSTER_NEEDS | NAMESPACED_NEEDS
    leases = lease_role(manifests)
    assert leases["metadata"]["namespace"] == "dbquota-system"
    assert rules_of(leases) == LEASE_NEEDS
    assert len(manifests.of_kind("Role")) == 1


def test_one_watched_namespace_gets_a_role_there_and_a_minimal_cluster_role(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(MATRIX["one-namespace"])
    assert rules_of(manifests.one("ClusterRole", OPERATOR)) == CLUSTER_NEEDS
    (role,) = [r for r in manifests.of_kind("Role") if r is not lease_role(manifests)]
    assert role["metadata"]["namespace"] == "team-a"
    assert rules_of(role) == NAMESPACED_NEEDS
    (binding,) = [
        b
        for b in manifests.of_kind("RoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["metadata"]["namespace"] == "team-a"


def test_bindings_grant_the_roles_to_the_pods_service_account(variant: Manifests) -> None:
    account = variant.workload()["spec"]["template"]["spec"]["serviceAccountName"]
    assert variant.one("ServiceAccount")["metadata"]["name"] == account
    for binding in variant.of_kind("ClusterRoleBinding") + variant.of_kind("RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": "dbquota-system"}
        ]


def test_no_rbac_and_no_service_account_when_switched_off(
    render: Callable[..., Manifests],
) -> None:
    manifests = render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "x"}}
    )
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
        assert not manifests.of_kind(kind)
    assert manifests.workload()["spec"]["template"]["spec"]["serviceAccountName"] == "x"


def test_pod_runs_as_non_root_with_runtime_default_seccomp(variant: Manifests) -> None:
    pod = variant.workload()["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert isinstance(pod["runAsUser"], int)
    assert pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}


def test_container_is_locked_down(variant: Manifests) -> None:
    ctx = variant.container()["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["runAsNonRoot"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in ctx or ctx["privileged"] is False


def test_only_the_cache_and_tmp_are_writable(variant: Manifests) -> None:
    mounts = {m["mountPath"]: m for m in variant.container()["volumeMounts"]}
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/var/cache/dbquota", "/tmp"}


def test_container_has_resource_requests_and_limits(variant: Manifests) -> None:
    resources = variant.container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_no_host_namespaces_or_host_paths(variant: Manifests) -> None:
    spec = variant.workload()["spec"]["template"]["spec"]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key)
    assert not [n for n in walk(spec) if isinstance(n, dict) and "hostPath" in n]
