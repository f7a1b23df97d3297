"""Zalando postgresql: its demand read from examples/zalando-postgresql.yaml and variants.

Checks the example's instances, requests, volume and its pooler; when poolers exist (the
flag, a connectionPooler section without the flag, the replica flag) and their defaults
(2 pods of 500m / 100Mi); that a quantity matching the CRD's pattern but refused by
apimachinery (``1K``) is refused; and that each bad field is refused naming its path.
"""

from __future__ import annotations

from typing import Any

import pytest

from dbquota.domain.kinds import Demand, Volume, Workload, zalando
from tests.unit.domain.kinds import DELETE, edited, example

PG = example("zalando-postgresql")


def pooler(name: str, *, instances: int = 2, cpu: float = 0.25, memory: float = 0.125) -> Workload:
    return Workload(
        name=f"connection pooler ({name})", instances=instances, cpu=cpu, memory_gib=memory
    )


def test_the_example_postgresql() -> None:
    assert zalando.demand(PG) == Demand(
        instances=2,
        instance_class=None,
        cpu=0.5,
        memory_gib=2.0,
        volumes=(Volume("gp3", 50.0),),
        namespace="team-a",
        extras=(pooler("primary"),),
    )
    assert zalando.RESOURCE.api_version == PG["apiVersion"]
    assert (zalando.RESOURCE.kind, zalando.RESOURCE.plural) == ("postgresql", "postgresqls")


def test_which_poolers_run() -> None:
    off = edited(PG, "spec.enableConnectionPooler", False)
    assert zalando.demand(off).extras == ()
    section_only = edited(PG, "spec.enableConnectionPooler", DELETE)
    assert zalando.demand(section_only).extras == (pooler("primary"),)
    nothing = edited(section_only, "spec.connectionPooler", DELETE)
    assert zalando.demand(nothing).extras == ()
    both = edited(PG, "spec.enableReplicaConnectionPooler", True)
    assert zalando.demand(both).extras == (pooler("primary"), pooler("replica"))
    replica_only = edited(off, "spec.enableReplicaConnectionPooler", True)
    assert zalando.demand(replica_only).extras == (pooler("replica"),)


def test_a_pooler_without_settings_gets_the_operators_defaults() -> None:
    bare = edited(PG, "spec.connectionPooler", DELETE)
    assert zalando.demand(bare).extras == (pooler("primary", cpu=0.5, memory=100 / 1024),)
    no_requests = edited(PG, "spec.connectionPooler.resources.requests", DELETE)
    assert zalando.demand(no_requests).extras == (pooler("primary", cpu=0.5, memory=100 / 1024),)


def test_a_quantity_the_crd_allows_but_the_operator_cannot_parse_is_refused() -> None:
    with pytest.raises(ValueError, match=r'^spec.resources.requests.memory: invalid quantity "1K"'):
        zalando.demand(edited(PG, "spec.resources.requests.memory", "1K"))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.numberOfInstances", DELETE, "spec.numberOfInstances: required"),
        ("spec.numberOfInstances", -1, "spec.numberOfInstances: must be an integer from 0"),
        ("spec.volume", DELETE, "spec.volume.size: required"),
        ("spec.volume.size", "lots", 'spec.volume.size: invalid quantity "lots"'),
        ("spec.volume.storageClass", False, "spec.volume.storageClass: must be a string"),
        ("spec.enableConnectionPooler", "yes", "spec.enableConnectionPooler: must be true or"),
        (
            "spec.connectionPooler.numberOfInstances",
            0,
            "spec.connectionPooler.numberOfInstances: must be an integer from 1",
        ),
        (
            "spec.connectionPooler.resources.requests.cpu",
            "fast",
            'spec.connectionPooler.resources.requests.cpu: invalid quantity "fast"',
        ),
        (
            "spec.connectionPooler.resources.limits.memory",
            {},
            "spec.connectionPooler.resources.limits.memory: must be a quantity",
        ),
        ("spec.resources.limits.cpu", "-1", "spec.resources.limits.cpu: must be a quantity of"),
    ],
)
def test_a_bad_field_is_refused_naming_it(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        zalando.demand(edited(PG, path, value))


def test_zero_instances_is_a_stopped_cluster() -> None:
    got = zalando.demand(edited(PG, "spec.numberOfInstances", 0))
    assert got.instances == 0
