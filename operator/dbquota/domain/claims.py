"""DatabaseClaim specs as the admission decision reads them.

:func:`parse_claim` turns a claim's namespace, name and ``spec`` into a frozen
:class:`ClaimSpec`; :func:`from_object` does the same for a whole object (``metadata`` plus
``spec``), as an AdmissionReview carries it. ``replicas`` defaults to 1 and ``clusterId`` to
``<namespace>/<name>``, as the CRD documents. ``spec`` may be any JSON value: a bad one
raises ``ValueError`` in our words, naming the field and describing what it holds
(:mod:`dbquota.domain.fields`), never with another exception's text.

Called by the admission handler (through the services) and by
:func:`dbquota.domain.verdicts.decide`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

from dbquota.domain import fields


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

    def __post_init__(self) -> None:
        if self.storage_gib < 0:
            raise ValueError(f"storageGiB must be >= 0, got {self.storage_gib}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")

    def grows_from(self, old: ClaimSpec | None) -> bool:
        """Whether this request can cost more than ``old`` (None: a new claim always can).

        A change of instance class counts as growth whatever the prices say; fewer or equal
        replicas and storage in the same class do not.
        """
        return (
            old is None
            or self.instance_class != old.instance_class
            or self.replicas > old.replicas
            or self.storage_gib > old.storage_gib
        )

    def storage_growth(self, old: ClaimSpec | None) -> int:
        """GiB this request adds to the namespace (never negative)."""
        return self.storage_gib if old is None else max(0, self.storage_gib - old.storage_gib)


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
