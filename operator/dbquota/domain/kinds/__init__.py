"""What a database object of another operator asks for, in the terms dbquota prices.

dbquota prices its own ``DatabaseClaim`` and, through one small module per kind, the
databases that platform teams already run:

=====================  ==============================  ===========  =====================
module                 kind (group/version)            scope        priced by
=====================  ==============================  ===========  =====================
:mod:`.cnpg`           ``Cluster``                     namespaced   requests + volumes
                       (postgresql.cnpg.io/v1)
:mod:`.zalando`        ``postgresql``                  namespaced   requests + volume,
                       (acid.zalan.do/v1)                           + connection poolers
:mod:`.rds`            ``Instance``                    cluster      instance class +
                       (rds.aws.upbound.io/v1beta1)                 storage type
=====================  ==============================  ===========  =====================

Each module exposes ``RESOURCE`` (its :class:`Resource` identity) and
``demand(obj) -> Demand``, a pure reader of the object's price-relevant fields. Every field
it cannot use raises ``ValueError`` whose message starts with the field's path and says
why (``spec.storage.size: invalid quantity "ten gigs": …``), never another exception, so a
caller handles one error type for any object.

Conventions shared by the readers:

- **Requests, else limits.** cpu and memory are the pods' *requests*; a resource with a
  limit and no request is read at its limit, as Kubernetes itself defaults a container's
  missing request to its limit. With neither, the value is ``0.0``: nothing is reserved
  for it, so its cost is unbounded; admission prices it at 0 and warns
  (:func:`unrequested`).
- **Per instance.** ``cpu``, ``memory_gib`` and ``volumes`` are one instance's; the whole
  object costs ``instances`` times that, plus its :attr:`Demand.extras`.
- **Tenant namespace.** A namespaced object's tenant is its ``metadata.namespace``. A
  cluster-scoped one (Crossplane's managed resources) names its tenant in a label, by
  default Crossplane's ``crossplane.io/claim-namespace``; without it ``namespace`` is None
  and no quota counts it: admission admits it with a warning, or denies it under
  ``--no-quota-policy=Deny``. An UPDATE may change the label: :mod:`.tenancy`.

The seam: each module also exposes ``KIND``, a :class:`Kind` (its ``--claim-kinds`` name,
its resource, whether dbquota owns it, and ``read``: the whole object to its tenant and
its :class:`~dbquota.domain.claims.ClaimSpec`); :mod:`.registry` holds them all, as
Kubernetes' quota evaluators sit in a registry. ``DatabaseClaim`` is a kind like the others
(:mod:`.databaseclaims`). A new kind is one module here plus its tests, and its name in
:data:`.registry.KINDS`.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from dbquota.domain.claims import ClaimSpec

GROUP = "dbquota.io"
"""dbquota's own API group (DatabaseQuota, DatabaseClaim; also its annotations' prefix)."""
VERSION = "v1alpha1"
"""The version of dbquota's own API."""
CLUSTER_ID_ANNOTATION = f"{GROUP}/cluster-id"
"""An annotation that sets another kind's billing id (its ``spec`` has no field for it)."""


@dataclass(frozen=True, kw_only=True)
class Resource:
    """Which Kubernetes resource a kind module reads."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``group/version``, as an object's ``apiVersion`` says it."""
        return f"{self.group}/{self.version}"


class Volume(NamedTuple):
    """One volume of one instance: its storage class (None: the cluster's default class,
    or an RDS instance with no storage type) and its size in GiB.

    A tuple, so a list of them is what :func:`dbquota.domain.pricing.requests_cost` takes.
    """

    storage_class: str | None
    gib: float


@dataclass(frozen=True, kw_only=True)
class Workload:
    """Other pods an object runs beside its database instances, priced by requests."""

    name: str
    """What they are, for messages (``connection pooler (primary)``)."""
    instances: int
    cpu: float
    """vCPU requested by one instance."""
    memory_gib: float
    """GiB of memory requested by one instance."""


@dataclass(frozen=True, kw_only=True)
class Demand:
    """What one object asks for, as pricing needs it (see the module's conventions)."""

    instances: int
    """Database instances (pods, or cloud instances: a Multi-AZ RDS instance counts 2)."""
    instance_class: str | None
    """The cloud instance class when priced by class (RDS); None for pods."""
    cpu: float
    """vCPU requested by one instance (0.0 when priced by class or nothing is set)."""
    memory_gib: float
    """GiB of memory requested by one instance (0.0 likewise)."""
    volumes: tuple[Volume, ...]
    """One instance's volumes."""
    multi_az: bool = False
    """Whether the instance has a standby in another zone (already counted in instances)."""
    namespace: str | None = None
    """The tenant namespace, or None when a cluster-scoped object names none."""
    extras: tuple[Workload, ...] = ()
    """Other pods the object runs (Zalando's connection poolers)."""


QUOTAS = Resource(
    group=GROUP, version=VERSION, plural="databasequotas", kind="DatabaseQuota", namespaced=True
)
"""The DatabaseQuota resource (not a claim kind; here so that one module names the API)."""


class Parsed(NamedTuple):
    """What a kind makes of one object: who pays for it, and its claim."""

    tenant: str | None
    """The tenant namespace, whose quotas the object counts against; None when a
    cluster-scoped object names none."""
    claim: ClaimSpec


@dataclass(frozen=True, kw_only=True)
class Kind:
    """One kind of database object dbquota prices (an evaluator, in Kubernetes' words)."""

    name: str
    """Its name in ``--claim-kinds`` (``databaseclaims``, ``cnpg``, ``zalando``, ``rds``)."""
    resource: Resource
    owned: bool
    """Whether dbquota owns the kind: the admission's price is published on the object's
    status (the objects are the ledger). Otherwise dbquota cannot write the object: the
    price goes into an Event on it, and once the object exists every recount prices it
    from its spec, until billing shows it (:mod:`dbquota.domain.reservations`)."""
    read: Callable[..., Parsed]
    """``read(obj, *, namespace_label, field="spec")``: the whole object (``metadata`` and
    ``spec``) to :class:`Parsed`; ``ValueError`` naming the first bad field."""
    priced_by: str
    """What is priced, for people (the README's table, messages)."""

    def ref(self, name: str) -> str:
        """How reservations and Events name one object: its name for an owned kind,
        ``Kind/name`` for the others."""
        return name if self.owned else f"{self.resource.kind}/{name}"


def cluster_id(obj: Mapping[str, object], *, default: str) -> str:
    """The billing id of another kind's object: its :data:`CLUSTER_ID_ANNOTATION`, else
    ``default``."""
    return annotated_id(obj) or default


def annotated_id(obj: Mapping[str, object]) -> str:
    """The object's :data:`CLUSTER_ID_ANNOTATION`; empty when it has none (or an empty one,
    which sets nothing)."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    found = annotations.get(CLUSTER_ID_ANNOTATION) if isinstance(annotations, Mapping) else None
    return found if isinstance(found, str) else ""


def relabelled(error: ValueError, *, field: str) -> ValueError:
    """A reader's ``error``, whose message starts with a path from the object's root
    (``spec.storage.size: …``, ``object: …`` for the whole), said of the object whose
    ``spec`` is at ``field``: ``oldObject.spec.storage.size: …`` for an UPDATE's old object,
    as the AdmissionReview names it. ``error`` itself for ``field="spec"``."""
    root = field.removesuffix("spec")  # "oldObject."
    if not root or root == field:
        return error
    message = str(error)
    if message.startswith("object"):  # the whole object is no JSON object
        return ValueError(root.removesuffix(".") + message.removeprefix("object"))
    return ValueError(root + message)


def parsed(*, kind: Resource, obj: Mapping[str, object], demand: Demand, default_id: str) -> Parsed:
    """The :class:`Parsed` of another kind's object from its demand."""
    from dbquota.domain import claims  # noqa: PLC0415  (claims imports this package)

    return Parsed(
        tenant=demand.namespace,
        claim=claims.of_demand(
            kind=kind.kind, demand=demand, cluster_id=cluster_id(obj, default=default_id)
        ),
    )


def namespaced_reader(
    resource: Resource, demand: Callable[[Mapping[str, object]], Demand]
) -> Callable[..., Parsed]:
    """``read`` for a namespaced kind: the tenant is the object's namespace, the billing id
    ``<namespace>/<name>`` unless annotated (:data:`CLUSTER_ID_ANNOTATION`). ``field``
    names ``spec`` in errors (:func:`relabelled`); ``namespace_label`` does not apply."""

    def read(obj: Mapping[str, object], *, field: str = "spec", **_: object) -> Parsed:
        try:
            asked = demand(obj)
            metadata = obj.get("metadata")
            name = metadata.get("name") if isinstance(metadata, Mapping) else None
            return parsed(
                kind=resource, obj=obj, demand=asked, default_id=f"{asked.namespace}/{name or ''}"
            )
        except ValueError as exc:
            raise relabelled(exc, field=field) from None

    return read


def unrequested(claim: ClaimSpec, *, name: str) -> str:
    """The warning for pods priced by requests that request no CPU or no memory (nor set a
    limit): that part is priced at 0, so the quota cannot bound it. Empty otherwise."""
    demand = claim.demand
    if demand is None or demand.instance_class is not None or not demand.instances:
        return ""
    missing = [
        what for what, amount in (("cpu", demand.cpu), ("memory", demand.memory_gib)) if not amount
    ]
    if not missing:
        return ""
    what = " and ".join(missing)
    return (
        f"dbquota: {name} requests no {what} (nor sets a limit), so its {what} is priced at 0; "
        "set resources.requests to have it counted against the budget"
    )
