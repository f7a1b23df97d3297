"""Crossplane RDS Instance: its demand read from examples/rds-instance.yaml and variants.

Checks the example (Multi-AZ: two instances and two volumes of gp3), the tenant from the
claim-namespace label or another label key, None without it, initProvider as the fallback
for forProvider, no volume without allocatedStorage, and that each bad field is refused
naming its path (a fractional allocatedStorage, which the CRD's ``number`` type allows).
"""

from __future__ import annotations

from typing import Any

import pytest

from dbquota.domain.kinds import Demand, Volume, rds
from tests.unit.domain.kinds import DELETE, edited, example

INSTANCE = example("rds-instance")


def without_label(obj: dict[str, Any]) -> dict[str, Any]:
    result = edited(obj, "metadata.labels", dict(obj["metadata"]["labels"]))
    del result["metadata"]["labels"]["crossplane.io/claim-namespace"]
    return result


def test_the_example_instance() -> None:
    assert rds.demand(INSTANCE) == Demand(
        instances=2,
        instance_class="db.r6g.large",
        cpu=0.0,
        memory_gib=0.0,
        volumes=(Volume("gp3", 200.0),),
        multi_az=True,
        namespace="team-a",
    )
    assert rds.RESOURCE.api_version == INSTANCE["apiVersion"]
    assert not rds.RESOURCE.namespaced


def test_single_az_is_one_instance() -> None:
    got = rds.demand(edited(INSTANCE, "spec.forProvider.multiAz", False))
    assert (got.instances, got.multi_az) == (1, False)
    got = rds.demand(edited(INSTANCE, "spec.forProvider.multiAz", DELETE))
    assert (got.instances, got.multi_az) == (1, False)


def test_the_tenant_label_and_what_happens_without_it() -> None:
    assert rds.demand(without_label(INSTANCE)).namespace is None
    assert rds.demand(INSTANCE, namespace_label="crossplane.io/claim-name").namespace == (
        "billing-db"
    )
    bad = edited(INSTANCE, "metadata.labels", {"crossplane.io/claim-namespace": 5})
    with pytest.raises(
        ValueError, match=r'^metadata.labels\["crossplane.io/claim-namespace"\]: must be a string'
    ):
        rds.demand(bad)


def test_init_provider_fills_in_for_for_provider() -> None:
    obj = edited(INSTANCE, "spec.forProvider.instanceClass", DELETE)
    obj = edited(obj, "spec.forProvider.allocatedStorage", DELETE)
    obj = edited(
        obj, "spec.initProvider", {"instanceClass": "db.m6g.large", "allocatedStorage": 50}
    )
    got = rds.demand(obj)
    assert (got.instance_class, got.volumes) == ("db.m6g.large", (Volume("gp3", 50.0),))
    with pytest.raises(ValueError, match=r"^spec.initProvider.allocatedStorage: must be a whole"):
        rds.demand(edited(obj, "spec.initProvider.allocatedStorage", 50.5))


def test_no_storage_no_volume_and_no_class_is_none() -> None:
    obj = edited(INSTANCE, "spec.forProvider.allocatedStorage", DELETE)
    obj = edited(obj, "spec.forProvider.instanceClass", DELETE)
    got = rds.demand(obj)
    assert (got.volumes, got.instance_class) == ((), None)
    untyped = rds.demand(edited(INSTANCE, "spec.forProvider.storageType", DELETE))
    assert untyped.volumes == (Volume(None, 200.0),)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "spec.forProvider.allocatedStorage",
            20.5,
            "spec.forProvider.allocatedStorage: must be a whole number of GiB, got 20.5",
        ),
        (
            "spec.forProvider.allocatedStorage",
            "200",
            'spec.forProvider.allocatedStorage: must be a number, got "200"',
        ),
        (
            "spec.forProvider.allocatedStorage",
            -1,
            "spec.forProvider.allocatedStorage: must be a finite number of at least 0",
        ),
        (
            "spec.forProvider.allocatedStorage",
            10**400,
            "spec.forProvider.allocatedStorage: must be a finite number",
        ),
        ("spec.forProvider.instanceClass", 1, "spec.forProvider.instanceClass: must be a string"),
        (
            "spec.forProvider.multiAz",
            "true",
            'spec.forProvider.multiAz: must be true or false, got "true"',
        ),
        (
            "spec.forProvider.storageType",
            ["gp3"],
            "spec.forProvider.storageType: must be a string, got an array",
        ),
        ("spec.forProvider", "x", 'spec.forProvider: must be an object, got "x"'),
        ("metadata.labels", [], "metadata.labels: must be an object, got an array"),
    ],
)
def test_a_bad_field_is_refused_naming_it(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        rds.demand(edited(INSTANCE, path, value))


def test_an_empty_for_provider_field_is_absent_and_init_provider_fills_in() -> None:
    """``instanceClass: ""`` in forProvider used to hide initProvider's class (and then
    read as no class: storage priced alone); "" is absent, as a class and a type."""
    obj = edited(INSTANCE, "spec.forProvider.instanceClass", "")
    obj = edited(obj, "spec.forProvider.storageType", "")
    obj = edited(obj, "spec.initProvider", {"instanceClass": "db.r6g.xlarge", "storageType": "io1"})
    got = rds.demand(obj)
    assert (got.instance_class, got.volumes) == ("db.r6g.xlarge", (Volume("io1", 200.0),))
    alone = rds.demand(edited(obj, "spec.initProvider", DELETE))
    assert (alone.instance_class, alone.volumes) == (None, (Volume(None, 200.0),))


@pytest.mark.parametrize("size", [1.7e308, 2**33, 10**30])
def test_allocated_storage_beyond_an_int64_of_bytes_is_refused(size: float) -> None:
    with pytest.raises(
        ValueError,
        match=r"^spec.forProvider.allocatedStorage: must be at most 8,589,934,591 GiB \(8 EiB\)",
    ):
        rds.demand(edited(INSTANCE, "spec.forProvider.allocatedStorage", size))
    most = rds.demand(edited(INSTANCE, "spec.forProvider.allocatedStorage", 2**33 - 1))
    assert most.volumes == (Volume("gp3", 2**33 - 1),)
