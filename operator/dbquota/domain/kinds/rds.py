"""Crossplane RDS ``Instance`` (rds.aws.upbound.io/v1beta1): an AWS RDS DB instance.

A cluster-scoped managed resource of Upbound's provider-aws (v1.14; its CRD:
``package/crds/rds.aws.upbound.io_instances.yaml``), priced like a DatabaseClaim: by
instance class and allocated storage. Read, each from ``spec.forProvider``, else from
``spec.initProvider`` (Crossplane merges the latter in at creation)::

    instanceClass       the instance class (e.g. db.r6g.large); None when neither sets it,
                        which the CRD allows only for an Observe-only resource
    allocatedStorage    GiB of storage, a whole number (the CRD types it as any number) of
                        at most 8 EiB; no volume when absent (e.g. restored from a snapshot)
    storageType         the storage class of that volume (gp2, gp3, io1, standard, …)
    multiAz             a standby in another zone: 2 instances (and 2 volumes) billed

An empty string sets nothing, as null does: ``instanceClass: ""`` in forProvider leaves
initProvider's class to count (and with neither, there is no class).

The tenant is the namespace of the Crossplane claim that made it, in the label
``crossplane.io/claim-namespace`` (or another key the caller passes); None without it.
The same fields exist in the CRD's other served versions (v1beta2, its storage version,
and v1beta3), so objects read at any of them give the same demand.
Pure; called through the kinds registry (see :mod:`dbquota.domain.kinds`).
"""

from __future__ import annotations

from collections.abc import Mapping

from dbquota.domain import kinds, quantities
from dbquota.domain.kinds import Demand, Resource, Volume, reading

RESOURCE = Resource(
    group="rds.aws.upbound.io",
    version="v1beta1",
    plural="instances",
    kind="Instance",
    namespaced=False,
)

CLAIM_NAMESPACE_LABEL = "crossplane.io/claim-namespace"
"""The label Crossplane puts on a managed resource made for a namespaced claim."""
MAX_ALLOCATED_GIB = quantities.MAX_INT64 // 2**30
"""The most whole GiB of ``allocatedStorage`` whose bytes an int64 holds (8 EiB), as the
other kinds' volumes are bounded (:mod:`dbquota.domain.quantities`)."""


def demand(obj: Mapping[str, object], *, namespace_label: str = CLAIM_NAMESPACE_LABEL) -> Demand:
    """The Instance's demand; ``ValueError`` naming the first bad field."""
    top = reading.root(obj)
    metadata = reading.mapping(top, "metadata", path="")
    labels = reading.mapping(metadata, "labels", path="metadata")
    spec = reading.mapping(top, "spec", path="")
    wanted = reading.mapping(spec, "forProvider", path="spec")
    initial = reading.mapping(spec, "initProvider", path="spec")

    def source(key: str) -> tuple[Mapping[str, object], str]:
        """forProvider when it sets ``key`` (null and "" set nothing), else initProvider."""
        if wanted.get(key) not in (None, ""):
            return wanted, "spec.forProvider"
        return initial, "spec.initProvider"

    parent, path = source("instanceClass")
    instance_class = reading.string(parent, "instanceClass", path=path)
    parent, path = source("allocatedStorage")
    storage = _gib(parent, path=path)
    parent, path = source("multiAz")
    multi_az = bool(reading.boolean(parent, "multiAz", path=path))
    parent, path = source("storageType")
    storage_type = reading.string(parent, "storageType", path=path) or None
    return Demand(
        instances=2 if multi_az else 1,
        instance_class=instance_class or None,
        cpu=0.0,
        memory_gib=0.0,
        volumes=() if storage is None else (Volume(storage_class=storage_type, gib=storage),),
        multi_az=multi_az,
        namespace=reading.string(labels, namespace_label, path="metadata.labels"),
    )


def _gib(parent: Mapping[str, object], *, path: str) -> float | None:
    """``allocatedStorage``: a whole number of GiB up to :data:`MAX_ALLOCATED_GIB`."""
    storage = reading.number(parent, "allocatedStorage", path=path)
    if storage is None:
        return None
    if not storage.is_integer():
        raise ValueError(f"{path}.allocatedStorage: must be a whole number of GiB, got {storage!r}")
    if storage > MAX_ALLOCATED_GIB:
        raise ValueError(
            f"{path}.allocatedStorage: must be at most {MAX_ALLOCATED_GIB:,} GiB (8 EiB), "
            f"got {reading.show(storage)}"
        )
    return storage


EXTERNAL_NAME_ANNOTATION = "crossplane.io/external-name"
"""Crossplane's annotation with the cloud resource's own name (the RDS identifier)."""


def read(
    obj: Mapping[str, object],
    *,
    namespace_label: str = CLAIM_NAMESPACE_LABEL,
    field: str = "spec",
) -> kinds.Parsed:
    """The Instance's tenant (the ``namespace_label`` label, None without it) and claim;
    its billing id is its annotation (:data:`dbquota.domain.kinds.CLUSTER_ID_ANNOTATION`),
    else its external name (the RDS identifier), else its name. ``field`` names ``spec``
    in errors (:func:`dbquota.domain.kinds.relabelled`)."""
    try:
        asked = demand(obj, namespace_label=namespace_label or CLAIM_NAMESPACE_LABEL)
        metadata = reading.mapping(reading.root(obj), "metadata", path="")
        annotations = reading.mapping(metadata, "annotations", path="metadata")
        name = reading.string(metadata, "name", path="metadata") or ""
        external = reading.string(
            annotations, EXTERNAL_NAME_ANNOTATION, path="metadata.annotations"
        )
        return kinds.parsed(kind=RESOURCE, obj=obj, demand=asked, default_id=external or name)
    except ValueError as exc:
        raise kinds.relabelled(exc, field=field) from None


KIND = kinds.Kind(
    name="rds",
    resource=RESOURCE,
    owned=False,
    read=read,
    priced_by="instance class, allocated storage by storage type (x2 with Multi-AZ)",
)
