"""CloudNativePG ``Cluster`` (postgresql.cnpg.io/v1): what a PostgreSQL cluster asks for.

Read, as CloudNativePG v1.27 reads them (its CRD: ``config/crd/bases/
postgresql.cnpg.io_clusters.yaml``)::

    spec.instances                      PostgreSQL instances (pods), 1 when absent (the
                                        CRD's default), at least 1
    spec.resources.requests|limits      cpu and memory of each instance (requests, else
                                        limits; see dbquota.domain.kinds)
    spec.storage                        each instance's data volume: size, else
                                        pvcTemplate.resources.requests.storage (one is
                                        required); storageClass, else
                                        pvcTemplate.storageClassName, else the default class
    spec.walStorage                     an optional WAL volume, read the same way
    spec.tablespaces[].storage          one more volume per tablespace, the same way

Connection poolers are separate ``Pooler`` objects in CloudNativePG, not part of the
Cluster, so they are not priced with it. ``storage.size`` is a plain string in the CRD (no
quantity pattern), so a bad size reaches dbquota: it is refused here with the field's path.
Pure; called through the kinds registry (see :mod:`dbquota.domain.kinds`).
"""

from __future__ import annotations

from collections.abc import Mapping

from dbquota.domain import kinds, quantities
from dbquota.domain.kinds import Demand, Resource, Volume, reading

RESOURCE = Resource(
    group="postgresql.cnpg.io", version="v1", plural="clusters", kind="Cluster", namespaced=True
)


def demand(obj: Mapping[str, object]) -> Demand:
    """The Cluster's demand; ``ValueError`` naming the first bad field."""
    top = reading.root(obj)
    metadata = reading.mapping(top, "metadata", path="")
    spec = reading.mapping(top, "spec", path="")
    volumes = [_volume(reading.mapping(spec, "storage", path="spec"), path="spec.storage")]
    wal = reading.optional_mapping(spec, "walStorage", path="spec")
    if wal is not None:
        volumes.append(_volume(wal, path="spec.walStorage"))
    for index, item in enumerate(reading.array(spec, "tablespaces", path="spec")):
        where = reading.join("spec.tablespaces", index)
        tablespace = reading.as_mapping(item, path=where)
        storage = reading.optional_mapping(tablespace, "storage", path=where)
        if storage is None:
            raise ValueError(f"{where}.storage: required")
        volumes.append(_volume(storage, path=f"{where}.storage"))
    cpu, memory = reading.requests(
        reading.mapping(spec, "resources", path="spec"), path="spec.resources"
    )
    return Demand(
        instances=reading.integer(spec, "instances", path="spec", default=1, minimum=1),
        instance_class=None,
        cpu=cpu,
        memory_gib=memory,
        volumes=tuple(volumes),
        namespace=reading.string(metadata, "namespace", path="metadata"),
    )


def _volume(storage: Mapping[str, object], *, path: str) -> Volume:
    """One ``StorageConfiguration``: its size (or its PVC template's) and class."""
    template = reading.mapping(storage, "pvcTemplate", path=path)
    template_path = reading.join(path, "pvcTemplate")
    size = reading.quantity(storage, "size", path=path, unit=quantities.gib)
    if size is None:
        resources = reading.mapping(template, "resources", path=template_path)
        asked = reading.mapping(resources, "requests", path=f"{template_path}.resources")
        size = reading.quantity(
            asked, "storage", path=f"{template_path}.resources.requests", unit=quantities.gib
        )
    if size is None:
        raise ValueError(f"{path}.size: required (or {template_path}.resources.requests.storage)")
    storage_class = reading.string(storage, "storageClass", path=path)
    if storage_class is None:
        storage_class = reading.string(template, "storageClassName", path=template_path)
    return Volume(storage_class=storage_class, gib=size)


read = kinds.namespaced_reader(RESOURCE, demand)
"""The object's tenant (its namespace) and claim (:func:`.namespaced_reader`)."""

KIND = kinds.Kind(
    name="cnpg",
    resource=RESOURCE,
    owned=False,
    read=read,
    priced_by="CPU and memory requests, volumes by storage class",
)
