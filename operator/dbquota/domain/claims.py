"""DatabaseClaim specs as the admission decision reads them.

:func:`parse_claim` turns a claim's namespace, name and ``spec`` into a frozen
:class:`ClaimSpec`; :func:`from_object` does the same for a whole object (``metadata`` plus
``spec``), as an AdmissionReview carries it. ``replicas`` defaults to 1 and ``clusterId`` to
``<namespace>/<name>``, as the CRD documents. ``spec`` may be any JSON value: a bad one
raises ``ValueError`` in our words, naming the field and describing what it holds
(:mod:`dbquota.domain.fields`), never with another exception's text.

A :class:`ClaimSpec` is also what the other kinds' readers make of their objects
(:mod:`dbquota.domain.kinds`): ``kind`` names the kind and ``demand`` holds what the
object asks for; :attr:`ClaimSpec.bill` is what pricing reads for every kind
(:mod:`dbquota.domain.bills`).

Called by the admission handler (through the services) and by
:func:`dbquota.domain.verdicts.decide`. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

from dbquota.domain import billing, bills, fields, quantities
from dbquota.domain.kinds import Demand

KIND = "DatabaseClaim"
"""The kind this module reads."""


class DatabaseClaimSpec(TypedDict, total=False):
    """``spec`` of a DatabaseClaim as the API stores it."""

    engine: str
    instanceClass: str
    storageGiB: int
    replicas: int
    clusterId: str


@dataclass(frozen=True, kw_only=True)
class ClaimSpec:
    """One DatabaseClaim's request, validated and with defaults applied."""

    engine: str
    """Database engine, e.g. postgres."""
    instance_class: str
    """Provider instance class, e.g. db.r6g.large."""
    storage_gib: int
    """Allocated storage in GiB (>= 0)."""
    replicas: int = 1
    """Instances, primary included; each is billed (>= 1)."""
    cluster_id: str
    """Billing attribution id; ``<namespace>/<name>`` unless the spec sets one."""
    kind: str = KIND
    """The object's kind (``Cluster``, ``postgresql``, ``Instance`` for other operators')."""
    demand: Demand | None = None
    """What another kind's object asks for (None for a DatabaseClaim, priced from the
    fields above); ``replicas`` is then its instances and ``storage_gib`` its whole storage
    rounded up, for the hard caps."""

    def __post_init__(self) -> None:
        if self.storage_gib < 0:
            raise ValueError(f"storageGiB must be >= 0, got {self.storage_gib}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")

    @property
    def bill(self) -> bills.Bill:
        """What the claim asks for per month, unit by unit (:mod:`dbquota.domain.bills`)."""
        if self.demand is not None:
            return demand_bill(self.demand)
        bill: dict[bills.Unit, float] = {}
        bills.add(
            bill,
            bills.Unit("instance-hours", self.instance_class),
            billing.HOURS_PER_MONTH * self.replicas,
        )
        bills.add(bill, bills.Unit("storage-months"), self.storage_gib)
        return bill

    def grows_from(self, old: ClaimSpec | None) -> bool:
        """Whether this request can cost more than ``old`` (None: a new claim always can).

        A change of instance class counts as growth whatever the prices say; fewer or equal
        replicas and storage in the same class do not. Another kind grows when it asks for
        more of any unit of its bill.
        """
        if self.demand is not None or (old is not None and old.demand is not None):
            return bills.grows(new=self.bill, old=None if old is None else old.bill)
        return (
            old is None
            or self.instance_class != old.instance_class
            or self.replicas > old.replicas
            or self.storage_gib > old.storage_gib
        )

    def storage_growth(self, old: ClaimSpec | None) -> int:
        """GiB this request adds to the namespace (never negative)."""
        return self.storage_gib if old is None else max(0, self.storage_gib - old.storage_gib)


def demand_bill(demand: Demand) -> bills.Bill:
    """The bill of another kind's demand: its instances by class (cloud instances) or by
    requests (pods), their volumes by storage class, and its other pods by requests."""
    hours = billing.HOURS_PER_MONTH
    bill: dict[bills.Unit, float] = {}
    if demand.instance_class is not None:
        bills.add(
            bill, bills.Unit("instance-hours", demand.instance_class), hours * demand.instances
        )
    bills.add(bill, bills.Unit("vcpu-hours"), hours * demand.instances * demand.cpu)
    bills.add(bill, bills.Unit("memory-hours"), hours * demand.instances * demand.memory_gib)
    for workload in demand.extras:
        bills.add(bill, bills.Unit("vcpu-hours"), hours * workload.instances * workload.cpu)
        bills.add(
            bill, bills.Unit("memory-hours"), hours * workload.instances * workload.memory_gib
        )
    for volume in demand.volumes:
        bills.add(
            bill, bills.Unit("class-months", volume.storage_class), demand.instances * volume.gib
        )
    return bill


def of_demand(*, kind: str, demand: Demand, cluster_id: str) -> ClaimSpec:
    """The :class:`ClaimSpec` of another kind's object: its instances as ``replicas`` and
    its whole storage (all instances' volumes, in GiB rounded up) as ``storage_gib``.

    ``ValueError`` when that whole is more than 8 EiB (:data:`~dbquota.domain.quantities.
    MAX_GIB`), the most one Kubernetes quantity holds: each volume is at most that, but
    instances times volumes need not be, and ``storage_gib`` goes into int64 fields (a
    reservation's, a quota status's), where a billion such objects still sum within one.
    """
    storage = demand.instances * sum(volume.gib for volume in demand.volumes)
    if not storage <= quantities.MAX_GIB:  # inf and NaN too: never math.ceil() them
        raise ValueError(
            f"spec: {demand.instances:,} instances ask for more than 8 EiB of storage in all "
            f"({quantities.MAX_GIB:,} GiB, 2^63 bytes), more than Kubernetes counts"
        )
    return ClaimSpec(
        engine=kind,
        instance_class=demand.instance_class or "",
        storage_gib=math.ceil(storage),
        replicas=max(1, demand.instances),
        cluster_id=cluster_id,
        kind=kind,
        demand=demand,
    )


def parse_claim(*, namespace: str, name: str, spec: object, field: str = "spec") -> ClaimSpec:
    """A :class:`ClaimSpec` from a claim's namespace, name and ``spec``; ``ValueError`` if bad.

    ``spec`` may be any JSON value (as an AdmissionReview carries it); anything but a valid
    spec raises ``ValueError`` naming the field and what it holds, e.g. ``DatabaseClaim
    team-a/x: spec must be an object, got null``. ``field`` names ``spec`` in messages
    (``oldObject.spec`` for the previous version of an UPDATE).
    """
    where = f"DatabaseClaim {namespace}/{name}: {field}"
    try:
        data = fields.as_object(spec, where=where)
        return ClaimSpec(
            engine=fields.string(data, "engine", where=where),
            instance_class=fields.string(data, "instanceClass", where=where),
            storage_gib=fields.integer(data, "storageGiB", where=where),
            replicas=fields.integer(data, "replicas", where=where, default=1),
            cluster_id=fields.string(data, "clusterId", where=where, default=f"{namespace}/{name}"),
        )
    except ValueError as exc:
        message = str(exc)
        if message.startswith("DatabaseClaim "):
            raise
        raise ValueError(f"{where}.{message}") from exc


def from_object(obj: Mapping[str, object]) -> ClaimSpec:
    """A :class:`ClaimSpec` from a whole DatabaseClaim object (``metadata`` and ``spec``)."""
    metadata = fields.mapping(obj, "metadata", where="DatabaseClaim")
    name = fields.string(metadata, "name", where="DatabaseClaim.metadata")
    namespace = fields.string(metadata, "namespace", where="DatabaseClaim.metadata")
    spec = fields.mapping(obj, "spec", where=f"DatabaseClaim {namespace}/{name}")
    return parse_claim(namespace=namespace, name=name, spec=spec)
