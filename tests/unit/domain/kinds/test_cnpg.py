"""CloudNativePG Cluster: its demand read from examples/cnpg-cluster.yaml and variants.

Checks the example's instances, requests, data + WAL + tablespace volumes with their
classes and namespace; limits used when requests are absent and 0 with neither; the PVC
template's size and class when ``size``/``storageClass`` are absent; the CRD's default of
one instance; and that each bad field is refused naming its path and the reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from dbquota.domain.kinds import Demand, Volume, cnpg
from tests.unit.domain.kinds import DELETE, edited, example

CLUSTER = example("cnpg-cluster")


def test_the_example_cluster() -> None:
    assert cnpg.demand(CLUSTER) == Demand(
        instances=3,
        instance_class=None,
        cpu=2.0,
        memory_gib=8.0,
        volumes=(
            Volume("premium-rwo", 100.0),
            Volume("premium-rwo", 20.0),
            Volume("standard", 50.0),
        ),
        namespace="team-a",
    )
    assert cnpg.RESOURCE.api_version == CLUSTER["apiVersion"]
    assert (cnpg.RESOURCE.kind, cnpg.RESOURCE.plural, cnpg.RESOURCE.namespaced) == (
        "Cluster",
        "clusters",
        True,
    )


def test_limits_stand_in_for_absent_requests_and_nothing_is_zero() -> None:
    only_limits = edited(CLUSTER, "spec.resources.requests", DELETE)
    got = cnpg.demand(only_limits)
    assert (got.cpu, got.memory_gib) == (4.0, 8.0)
    nothing = edited(CLUSTER, "spec.resources", DELETE)
    got = cnpg.demand(nothing)
    assert (got.cpu, got.memory_gib) == (0.0, 0.0)
    half = edited(CLUSTER, "spec.resources.requests", {"cpu": "500m"})
    got = cnpg.demand(half)
    assert (got.cpu, got.memory_gib) == (0.5, 8.0)  # memory from its limit


def test_the_pvc_template_gives_size_and_class_when_the_fields_are_absent() -> None:
    storage = {
        "pvcTemplate": {
            "storageClassName": "gp3",
            "resources": {"requests": {"storage": "1.5Ti"}},
        }
    }
    obj = edited(edited(CLUSTER, "spec.storage", storage), "spec.walStorage", DELETE)
    obj = edited(obj, "spec.tablespaces", DELETE)
    assert cnpg.demand(obj).volumes == (Volume("gp3", 1536.0),)
    explicit = edited(obj, "spec.storage.size", "10Gi")
    assert cnpg.demand(explicit).volumes == (Volume("gp3", 10.0),)


def test_defaults_one_instance_and_the_default_storage_class() -> None:
    obj = edited(CLUSTER, "spec.instances", DELETE)
    obj = edited(obj, "spec.storage.storageClass", DELETE)
    got = cnpg.demand(obj)
    assert got.instances == 1
    assert got.volumes[0] == Volume(None, 100.0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.storage.size", "ten gigs", 'spec.storage.size: invalid quantity "ten gigs"'),
        ("spec.storage.size", "-5Gi", "spec.storage.size: must be a quantity of at least 0"),
        ("spec.storage", DELETE, "spec.storage.size: required"),
        ("spec.storage.size", DELETE, "spec.storage.size: required"),
        ("spec.storage.storageClass", 7, "spec.storage.storageClass: must be a string, got 7"),
        ("spec.walStorage", {"storageClass": "x"}, "spec.walStorage.size: required"),
        ("spec.walStorage", "big", 'spec.walStorage: must be an object, got "big"'),
        ("spec.tablespaces[0].storage", DELETE, "spec.tablespaces[0].storage: required"),
        ("spec.tablespaces[0]", 3, "spec.tablespaces[0]: must be an object, got 3"),
        ("spec.tablespaces", {"a": 1}, "spec.tablespaces: must be an array, got an object"),
        ("spec.instances", 0, "spec.instances: must be an integer from 1 to 2147483647, got 0"),
        ("spec.instances", "3", 'spec.instances: must be an integer, got "3"'),
        ("spec.instances", True, "spec.instances: must be an integer, got true"),
        ("spec.instances", 2**31, "spec.instances: must be an integer from 1"),
        ("spec.resources.requests.cpu", "1K", 'spec.resources.requests.cpu: invalid quantity "1K"'),
        ("spec.resources.limits.memory", [], "spec.resources.limits.memory: must be a quantity"),
        ("spec.resources.requests", "big", 'spec.resources.requests: must be an object, got "big"'),
        ("spec", [], "spec: must be an object, got an array"),
        ("metadata.namespace", 1, "metadata.namespace: must be a string, got 1"),
    ],
)
def test_a_bad_field_is_refused_naming_it(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[")):
        cnpg.demand(edited(CLUSTER, path, value))


def test_numbers_and_integer_floats_are_quantities_and_counts() -> None:
    obj = edited(CLUSTER, "spec.resources.requests.cpu", 2)
    obj = edited(obj, "spec.instances", 3.0)
    got = cnpg.demand(obj)
    assert (got.cpu, got.instances) == (2.0, 3)
