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
  for it, so its cost is unbounded; the caller decides (deny it, or price a floor).
- **Per instance.** ``cpu``, ``memory_gib`` and ``volumes`` are one instance's; the whole
  object costs ``instances`` times that, plus its :attr:`Demand.extras`.
- **Tenant namespace.** A namespaced object's tenant is its ``metadata.namespace``. A
  cluster-scoped one (Crossplane's managed resources) names its tenant in a label, by
  default Crossplane's ``crossplane.io/claim-namespace``; without it ``namespace`` is None
  and the caller must decide who pays (e.g. deny unless a cluster-wide quota applies).

Pure: no I/O. Nothing here is wired into admission yet; the claim-kind seam will find a
kind's module by its :class:`Resource`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


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
