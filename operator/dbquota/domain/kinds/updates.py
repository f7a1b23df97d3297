"""What admission makes of a review's objects, read by their kind, when an UPDATE's old object
cannot be read or the UPDATE changes another kind's billing id.

Admission (:mod:`dbquota.services.admitting`) reads the new object and, for an UPDATE, the
old one with the kind's reader (:mod:`dbquota.domain.kinds`), and prices the UPDATE as the
growth from one to the other. Another operator's objects are stored under its CRD, not
ours, and it lets through some that dbquota cannot read: CloudNativePG's ``storage.size``
is a plain string (``ten gigs``), Zalando's memory pattern admits ``1K``. Such an object
exists when it was created before its kind was enabled in ``--claim-kinds``, or while no
replica answered a webhook with ``failurePolicy: Ignore``. No quota counts it: the recount
cannot read it either (:func:`dbquota.domain.reservations.foreign_ref`). :func:`read`
decides:

- **The new object unreadable**: denied, naming the field (``invalid Cluster team-a/x:
  spec.storage.size: …``).
- **The old object unreadable, the new one readable** (the spec fixed): decided as a
  CREATE of the new object. Nothing of the old one can be credited, since no quota counted
  it, so its whole price is growth, and it joins the hard caps (``claims``); its billing id
  is not checked, as at a CREATE. A warning names the old object's field
  (``oldObject.spec.storage.size: …``). Denied for its old object, as it was, such an
  object could never be fixed.
- **Both unreadable, the spec unchanged**: a change of metadata only (an annotation, the
  owning operator's finalizer removed on delete). Admitted at once, with a warning that it
  cannot be priced and no quota counts it: it adds nothing any quota could count, and
  denying it kept the other operator from deleting its object. Under
  ``--no-quota-policy=Deny`` too, for the same reason. A change to another unreadable spec
  is denied, naming the new object's field.

**Billing id** (:func:`rebilled`). Another kind's object names its billing id in dbquota's
annotation ``dbquota.io/cluster-id`` (:data:`dbquota.domain.kinds.CLUSTER_ID_ANNOTATION`),
which nothing else reads. Every recount counts an existing object at the billed cost of the
cluster its id names, so an UPDATE that re-points the id would move it onto another bill
(one that costs less, or that no other object names) without any price being decided: a
cluster charged 11,404.00 a month counted as 1.00. An UPDATE that adds, changes or removes
the annotation so that the id changes is therefore denied, whatever the quota's
enforcement (this is no budget decision: a ``Warn`` quota would count the object at the
wrong bill from then on); its message says to delete the object and create it again.
Admission asks for this verdict only where a quota counts the object: where none does
(``--no-quota-policy=Admit``), nothing is checked, as when such an object is created.
Not refused:

- a DatabaseClaim's id is its ``spec.clusterId``, which its CRD fixes (a CEL rule, checked
  before any webhook is called); the annotation is not its id;
- the ``crossplane.io/external-name`` of an RDS Instance (its id when not annotated) is
  Crossplane's: the provider records the RDS identifier there once the instance exists,
  and a new one makes the object manage that other database, whose bill is then the right
  one.

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbquota.domain import kinds, verdicts

if TYPE_CHECKING:
    from dbquota.domain.claims import ClaimSpec

OLD = "oldObject.spec"
"""How messages name the old object's ``spec``, as the AdmissionReview does."""


@dataclass(frozen=True, kw_only=True)
class Read:
    """A review's objects as admission decides on them."""

    tenant: str | None
    """The new object's tenant (None: it names none)."""
    claim: ClaimSpec
    """The new object's claim."""
    old: ClaimSpec | None
    """The old object's claim; None for a CREATE, or an UPDATE decided as one (its old
    object unreadable)."""
    before: str | None
    """The old object's tenant (``tenant`` for a CREATE, or when it cannot be read)."""
    warnings: tuple[str, ...] = ()
    """What the verdict says beyond the quotas' decisions."""
    rebilled: verdicts.Verdict | None = None
    """The denial of an UPDATE that changes the billing id (:func:`rebilled`), for where a
    quota counts the object; None otherwise."""


def read(
    *,
    kind: kinds.Kind,
    new: Mapping[str, object],
    old: Mapping[str, object] | None,
    namespace_label: str,
    namespace: str,
    name: str,
) -> Read | verdicts.Verdict:
    """The objects of a review of object ``name`` in ``namespace`` ("" for a
    cluster-scoped one) of ``kind``: ``new`` and, for an UPDATE, ``old``, whole (metadata
    and spec). The verdict instead when one is due before any quota decides: a denial
    for an unreadable new object, an admission for a metadata-only change of an
    unreadable one (module docstring). Every review of a claim comes here: the words of a
    message are put together only when there is one."""
    try:
        tenant, claim = kind.read(new, namespace_label=namespace_label)
    except ValueError as exc:
        kept = (  # a metadata-only change: the old object cannot be read either
            old is not None
            and old.get("spec") == new.get("spec")
            and _fails(kind, old, namespace_label)
        )
        return _unreadable(kind, _named(namespace, name), exc, kept=kept)
    if old is None:
        return Read(tenant=tenant, claim=claim, old=None, before=tenant)
    try:
        before, was = kind.read(old, namespace_label=namespace_label, field=OLD)
    except ValueError as exc:  # priced as new: no quota counted it, under any id
        what = f"{kind.resource.kind} {_named(namespace, name)}"
        return Read(
            tenant=tenant, claim=claim, old=None, before=tenant, warnings=(_new(what, exc),)
        )
    changed = None  # a DatabaseClaim's id is fixed by its CRD
    if not kind.owned and claim.cluster_id != was.cluster_id:
        what = f"{kind.resource.kind} {_named(namespace, name)}"
        changed = rebilled(
            what=what, new=new, old=old, new_id=claim.cluster_id, old_id=was.cluster_id
        )
    return Read(tenant=tenant, claim=claim, old=was, before=before, rebilled=changed)


def _named(namespace: str, name: str) -> str:
    """``namespace/name``, or ``name`` alone for a cluster-scoped object."""
    return "/".join(p for p in (namespace, name) if p)


def _unreadable(kind: kinds.Kind, name: str, error: ValueError, *, kept: bool) -> verdicts.Verdict:
    """The verdict on a review of object ``name`` of ``kind`` whose new object cannot be
    read: admitted unpriced if the UPDATE ``kept`` a spec that could not be read before
    either (a metadata-only change), else denied naming the field."""
    what = f"{kind.resource.kind} {name}"
    if kept:
        return verdicts.Verdict(allowed=True, warnings=(_unpriced(what, error),))
    where = "" if kind.owned else f" {name}"
    return verdicts.Verdict(allowed=False, message=f"invalid {kind.resource.kind}{where}: {error}")


def _fails(kind: kinds.Kind, obj: Mapping[str, object], namespace_label: str) -> bool:
    """Whether ``kind`` cannot read ``obj``, an UPDATE's old object."""
    try:
        kind.read(obj, namespace_label=namespace_label, field=OLD)
    except ValueError:
        return True
    return False


def _new(what: str, error: ValueError) -> str:
    """The warning on an UPDATE decided as a CREATE: its old object cannot be read."""
    return (
        f"dbquota: {what} was stored unreadable ({error}), so no DatabaseQuota counts it "
        "yet; this update is priced as a new object, in full"
    )


def _unpriced(what: str, error: ValueError) -> str:
    """The warning on a metadata-only UPDATE of an object that cannot be read."""
    return (
        f"dbquota: {what} cannot be read ({error}), so no DatabaseQuota counts it; this "
        "update changes no spec and is admitted unpriced (fix the spec to have it counted)"
    )


def rebilled(
    *,
    what: str,
    new: Mapping[str, object],
    old: Mapping[str, object],
    new_id: str,
    old_id: str,
) -> verdicts.Verdict | None:
    """The denial of an UPDATE of another kind's object ``what`` whose billing annotation,
    from ``old`` to ``new``, changes its billing id from ``old_id`` to ``new_id``; None
    when the annotation, or the id, stays (module docstring)."""
    before, after = kinds.annotated_id(old), kinds.annotated_id(new)
    if before == after or old_id == new_id:
        return None
    how = "adding" if not before else "removing" if not after else "changing"
    return verdicts.Verdict(
        allowed=False,
        message=(
            f"denied: the billing id of {what} is fixed when it is created; {how} its "
            f"annotation {kinds.CLUSTER_ID_ANNOTATION} would change it from "
            f"{json.dumps(old_id)} to {json.dumps(new_id)}. To bill it under another id, "
            "delete it and create it again with the annotation it should have"
        ),
    )
