"""``DatabaseClaim`` (dbquota.io/v1alpha1): dbquota's own kind, as one kind of the registry.

Read by :mod:`dbquota.domain.claims` (``engine``, ``instanceClass``, ``storageGiB``,
``replicas``, ``clusterId``; the tenant is the claim's namespace). dbquota owns it: the
admission's price is published on the claim's status, so the quota holds a reservation
only until the claim's status shows it. Pure; found through :mod:`.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping

from dbquota.domain import claims, fields, kinds

RESOURCE = kinds.Resource(
    group=kinds.GROUP,
    version=kinds.VERSION,
    plural="databaseclaims",
    kind=claims.KIND,
    namespaced=True,
)


def read(
    obj: Mapping[str, object], *, namespace_label: str = "", field: str = "spec"
) -> kinds.Parsed:
    """The claim's namespace and spec (``field`` names ``spec`` in messages:
    ``oldObject.spec`` for the old version of an UPDATE)."""
    del namespace_label
    metadata = fields.mapping(obj, "metadata", where=claims.KIND)
    name = fields.string(metadata, "name", where=f"{claims.KIND}.metadata")
    namespace = fields.string(metadata, "namespace", where=f"{claims.KIND}.metadata")
    spec = claims.parse_claim(namespace=namespace, name=name, spec=obj.get("spec"), field=field)
    return kinds.Parsed(tenant=namespace, claim=spec)


KIND = kinds.Kind(
    name="databaseclaims",
    resource=RESOURCE,
    owned=True,
    read=read,
    priced_by="instance class x replicas, storageGiB",
)
