"""The database operators' own CRDs in the real apiserver, and dbquota's readers of them.

Installs the CRDs of CloudNativePG (Cluster), Zalando (postgresql) and Crossplane's
provider-aws (RDS Instance), fetched from their Go modules at pinned versions
(:func:`e2e.controlplane.upstream_crds`), with ``kubectl apply --server-side`` (the CNPG
CRD is too large for client-side apply's annotation), and waits for Established. Then
creates the object of each kind in ``examples/`` and reads it back: the apiserver keeps
every field dbquota prices, and the kind's reader gives the same demand from the object
the apiserver returns as from the file. The RDS Instance is written as v1beta1, stored as
v1beta2 (the CRD's storage version, converted with strategy None) and served by default
as v1beta3 (the highest version): it reads the same at all three. Also shows why the
readers check what the schemas let through: CNPG's ``storage.size`` has no pattern (``ten
gigs`` is stored) and Zalando's memory pattern admits ``1K``, which apimachinery refuses;
the readers refuse both, naming the field.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from dbquota.domain.kinds import Demand, cnpg, rds, zalando
from e2e import controlplane
from e2e.harness import Kubectl
from tests.unit.domain.kinds import example

CRD_NAMES = {
    "Cluster.postgresql.cnpg.io": "clusters.postgresql.cnpg.io",
    "postgresql.acid.zalan.do": "postgresqls.acid.zalan.do",
    "Instance.rds.aws.upbound.io": "instances.rds.aws.upbound.io",
}


@pytest.fixture(scope="module")
def upstream(kubectl: Kubectl) -> None:
    paths = controlplane.upstream_crds()
    assert set(paths) == set(CRD_NAMES)
    for path in paths.values():
        kubectl("apply", "--server-side", "--field-manager=dbquota-e2e", "-f", str(path))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{name}" for name in CRD_NAMES.values()),
    )


@pytest.fixture
def created(
    kubectl: Kubectl, upstream: None, namespace: str
) -> Iterator[Callable[[dict[str, Any]], dict[str, Any]]]:
    """Create an object (in the test's namespace, or cluster-wide) and return it as the
    apiserver reads it back; everything created is deleted after the test."""
    made: list[tuple[str, ...]] = []

    def create(obj: dict[str, Any]) -> dict[str, Any]:
        kubectl.apply(obj, extra=("--server-side", "--field-manager=dbquota-e2e"))
        resource = f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0]}"
        where = ("-n", obj["metadata"]["namespace"]) if "namespace" in obj["metadata"] else ()
        made.append((resource, obj["metadata"]["name"], *where))
        return kubectl.get_json(resource, obj["metadata"]["name"], *where)

    yield create
    for args in made:
        kubectl("delete", *args, "--wait=false", check=False)


def in_namespace(name: str, namespace: str) -> dict[str, Any]:
    obj = copy.deepcopy(example(name))
    obj["metadata"]["namespace"] = namespace
    return obj


def test_the_crds_are_established_with_the_scopes_and_versions_dbquota_reads(
    kubectl: Kubectl, upstream: None
) -> None:
    for module in (cnpg, zalando, rds):
        resource = module.RESOURCE
        crd = kubectl.get_json("crd", f"{resource.plural}.{resource.group}")
        assert crd["spec"]["names"]["kind"] == resource.kind
        assert (crd["spec"]["scope"] == "Namespaced") == resource.namespaced
        served = {v["name"] for v in crd["spec"]["versions"] if v["served"]}
        assert resource.version in served
    rds_crd = kubectl.get_json("crd", "instances.rds.aws.upbound.io")
    storage = [v["name"] for v in rds_crd["spec"]["versions"] if v["storage"]]
    assert storage == ["v1beta2"]  # v1beta1 objects are converted (strategy None)


@pytest.mark.parametrize(
    ("name", "read"),
    [("cnpg-cluster", cnpg.demand), ("zalando-postgresql", zalando.demand)],
)
def test_a_namespaced_database_reads_back_with_the_same_demand(
    created: Callable[[dict[str, Any]], dict[str, Any]],
    namespace: str,
    name: str,
    read: Callable[[Mapping[str, object]], Demand],
) -> None:
    obj = in_namespace(name, namespace)
    back = created(obj)
    assert back["metadata"]["uid"]
    assert back["spec"]["resources"] == obj["spec"]["resources"]
    demand = read(back)
    assert demand == read(obj)
    assert demand.namespace == namespace
    assert demand.instances >= 2
    assert demand.volumes


def test_a_cluster_scoped_rds_instance_reads_back_with_the_same_demand_at_every_version(
    kubectl: Kubectl, created: Callable[[dict[str, Any]], dict[str, Any]], namespace: str
) -> None:
    obj = copy.deepcopy(example("rds-instance"))
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    obj["metadata"]["name"] = name
    obj["metadata"]["labels"]["crossplane.io/claim-namespace"] = namespace
    preferred = created(obj)
    assert "namespace" not in preferred["metadata"]
    # Written as v1beta1, stored as v1beta2; a client asking for no version gets v1beta3.
    assert preferred["apiVersion"] == "rds.aws.upbound.io/v1beta3"
    expected = rds.demand(obj)
    assert (expected.namespace, expected.instances, expected.instance_class) == (
        namespace,
        2,
        "db.r6g.large",
    )
    for version in ("v1beta1", "v1beta2", "v1beta3"):
        back = kubectl.get_json(f"instances.{version}.rds.aws.upbound.io", name)
        assert back["apiVersion"] == f"rds.aws.upbound.io/{version}"
        for field in ("instanceClass", "allocatedStorage", "storageType", "multiAz"):
            assert back["spec"]["forProvider"][field] == obj["spec"]["forProvider"][field]
        assert rds.demand(back) == expected


def test_what_the_schemas_let_through_the_readers_refuse_naming_the_field(
    created: Callable[[dict[str, Any]], dict[str, Any]], namespace: str
) -> None:
    cluster = in_namespace("cnpg-cluster", namespace)
    cluster["spec"]["storage"]["size"] = "ten gigs"
    back = created(cluster)
    assert back["spec"]["storage"]["size"] == "ten gigs"  # the apiserver stored it
    with pytest.raises(ValueError, match=r'^spec.storage.size: invalid quantity "ten gigs"'):
        cnpg.demand(back)

    pg = in_namespace("zalando-postgresql", namespace)
    pg["spec"]["resources"]["requests"]["memory"] = "1K"
    back = created(pg)
    assert back["spec"]["resources"]["requests"]["memory"] == "1K"
    with pytest.raises(ValueError, match=r'^spec.resources.requests.memory: invalid quantity "1K"'):
        zalando.demand(back)
