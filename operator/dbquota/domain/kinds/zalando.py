"""Zalando ``postgresql`` (acid.zalan.do/v1): what a Zalando Postgres cluster asks for.

Read, as the Zalando postgres-operator v1.14 reads them (its CRD:
``manifests/postgresql.crd.yaml``)::

    spec.numberOfInstances              PostgreSQL instances (pods), required, at least 0
    spec.resources.requests|limits      cpu and memory of each instance (requests, else
                                        limits; see dbquota.domain.kinds)
    spec.volume.size, .storageClass     each instance's volume (size required)
    spec.enableConnectionPooler         a pooler for the primary: when true, or when
                                        spec.connectionPooler is set and this is absent
    spec.enableReplicaConnectionPooler  a pooler for the replicas, when true
    spec.connectionPooler               both poolers' numberOfInstances (default 2) and
                                        resources (requests; default 500m cpu, 100Mi
                                        memory, the operator's built-in defaults)

A pooler's missing request falls back to the operator's built-in default, as the operator
fills it, not to its limit. The database pods' missing requests have no built-in default
(the operator's configuration may set one, which dbquota cannot see), so they follow the
general rule: requests, else limits, else 0. Sidecars are not priced.

The CRD's patterns differ from apimachinery's parser: memory ``1K`` matches the CRD but
the operator cannot parse it (the upper-case K is no suffix), so it is refused here.
Pure; called through the kinds registry (see :mod:`dbquota.domain.kinds`).
"""

from __future__ import annotations

from collections.abc import Mapping

from dbquota.domain import kinds, quantities
from dbquota.domain.kinds import Demand, Resource, Volume, Workload, reading

RESOURCE = Resource(
    group="acid.zalan.do", version="v1", plural="postgresqls", kind="postgresql", namespaced=True
)

POOLER_INSTANCES = 2
"""Pooler pods when ``spec.connectionPooler.numberOfInstances`` is absent (the operator's
``connection_pooler_number_of_instances`` default)."""
POOLER_REQUESTS = (0.5, 100 / 1024)
"""A pooler pod's (vCPU, memory GiB) when its requests are absent: 500m and 100Mi."""


def demand(obj: Mapping[str, object]) -> Demand:
    """The postgresql's demand; ``ValueError`` naming the first bad field."""
    top = reading.root(obj)
    metadata = reading.mapping(top, "metadata", path="")
    spec = reading.mapping(top, "spec", path="")
    volume = reading.mapping(spec, "volume", path="spec")
    size = reading.quantity(volume, "size", path="spec.volume", unit=quantities.gib)
    if size is None:
        raise ValueError("spec.volume.size: required")
    cpu, memory = reading.requests(
        reading.mapping(spec, "resources", path="spec"), path="spec.resources"
    )
    return Demand(
        instances=reading.integer(spec, "numberOfInstances", path="spec", default=None),
        instance_class=None,
        cpu=cpu,
        memory_gib=memory,
        volumes=(
            Volume(
                storage_class=reading.string(volume, "storageClass", path="spec.volume"),
                gib=size,
            ),
        ),
        namespace=reading.string(metadata, "namespace", path="metadata"),
        extras=_poolers(spec),
    )


def _poolers(spec: Mapping[str, object]) -> tuple[Workload, ...]:
    section = reading.optional_mapping(spec, "connectionPooler", path="spec")
    primary = reading.boolean(spec, "enableConnectionPooler", path="spec")
    replica = reading.boolean(spec, "enableReplicaConnectionPooler", path="spec")
    wanted = [
        name
        for name, on in (
            ("primary", primary or (primary is None and section is not None)),
            ("replica", bool(replica)),
        )
        if on
    ]
    if not wanted:
        return ()
    pooler = section or reading.EMPTY
    path = "spec.connectionPooler"
    instances = reading.integer(
        pooler, "numberOfInstances", path=path, default=POOLER_INSTANCES, minimum=1
    )
    resources = reading.mapping(pooler, "resources", path=path)
    asked = reading.mapping(resources, "requests", path=f"{path}.resources")
    requests_path = f"{path}.resources.requests"
    cpu = reading.quantity(asked, "cpu", path=requests_path, unit=quantities.cores)
    memory = reading.quantity(asked, "memory", path=requests_path, unit=quantities.gib)
    reading.requests(resources, path=f"{path}.resources")  # the limits must be valid too
    return tuple(
        Workload(
            name=f"connection pooler ({name})",
            instances=instances,
            cpu=POOLER_REQUESTS[0] if cpu is None else cpu,
            memory_gib=POOLER_REQUESTS[1] if memory is None else memory,
        )
        for name in wanted
    )


read = kinds.namespaced_reader(RESOURCE, demand)
"""The object's tenant (its namespace) and claim (:func:`.namespaced_reader`)."""

KIND = kinds.Kind(
    name="zalando",
    resource=RESOURCE,
    owned=False,
    read=read,
    priced_by="CPU and memory requests, the volume by storage class, connection poolers",
)
