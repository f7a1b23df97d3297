"""Whose quotas count an object, when it names no tenant or an UPDATE moves it to another.

A namespaced object's tenant is its namespace, which the apiserver never lets an UPDATE
change. A cluster-scoped object's (Crossplane's managed resources: :mod:`.rds`) is the
namespace its tenant label names, and an UPDATE can change, add or remove that label.
Admission (:mod:`dbquota.services.admitting`) decides such an UPDATE as a CREATE under
the new tenant: priced in full and counted in the caps of its quotas, since none of them
counted it before. The old tenant's quotas simply stop counting it (their recount no longer
finds it there): nothing is reserved on them. Were the move priced as an UPDATE (its
growth, 0 for a relabel), a tenant could hand an object to another tenant's budget free,
or leave its own.

What takes an object out of every budget is decided here:

- **No tenant** (:func:`unquoted`): it names no tenant namespace, or one without a
  DatabaseQuota. Admitted (with a warning for no tenant), or denied under
  ``--no-quota-policy=Deny``, as for any object no quota counts.
- **Leaving** (:func:`leaving`): an UPDATE takes an object that its old tenant's quotas
  count to no quota, its label removed or naming a namespace with no DatabaseQuota.
  Admitted as a new object there, it would be a way out of the quota for anyone who can
  edit the label, with the database running on. So it is denied while any quota of the
  old tenant enforces, and its message names what to do instead; Warn and DryRun quotas
  admit it with a warning, as they admit whatever they would deny. A new object without
  the label is no such way out: before any quota counted it, it had none to leave.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from dbquota.domain import verdicts


def unchecked(
    *,
    kind: str,
    name: str,
    label: str,
    tenant: str | None,
    before: str | None,
    left: Mapping[str, str],
    deny: bool,
) -> verdicts.Verdict:
    """The verdict on object ``kind name`` when no quota of its ``tenant`` counts it:
    :func:`leaving` the quotas ``left`` of its old tenant ``before`` (each one's enforcement,
    by name; empty unless an UPDATE moves it, or under ``deny``), else :func:`unquoted`.
    ``deny`` is ``--no-quota-policy=Deny``."""
    if left and before is not None:
        return leaving(kind=kind, name=name, before=before, after=tenant, label=label, quotas=left)
    return unquoted(kind=kind, name=name, tenant=tenant, label=label, deny=deny)


def unquoted(
    *, kind: str, name: str, tenant: str | None, label: str, deny: bool
) -> verdicts.Verdict:
    """The verdict on an object no quota counts: its namespace ``tenant`` has none, or
    (cluster-scoped, ``tenant`` None) it names no tenant in its ``label``; ``deny`` is
    ``--no-quota-policy=Deny``."""
    if tenant is not None:
        if deny:
            return verdicts.Verdict(
                allowed=False,
                message=(
                    f"denied: namespace {tenant} has no DatabaseQuota, and this "
                    "cluster requires one (--no-quota-policy=Deny)"
                ),
            )
        return verdicts.Verdict(allowed=True)
    what = f"{kind} {name} names no tenant namespace (no label {label})"
    if deny:
        return verdicts.Verdict(
            allowed=False,
            message=f"denied: {what}, and this cluster requires a DatabaseQuota for "
            "every object (--no-quota-policy=Deny)",
        )
    return verdicts.Verdict(
        allowed=True,
        warnings=(f"dbquota: {what}; admitted without a budget check",),
    )


def enforcement(quota: Mapping[str, object] | None) -> str:
    """A DatabaseQuota's ``spec.enforcement`` as the watch holds it (``Enforce`` when
    absent, as the CRD defaults it)."""
    spec = (quota or {}).get("spec")
    found = spec.get("enforcement") if isinstance(spec, Mapping) else None
    return found if isinstance(found, str) and found else "Enforce"


def leaving(
    *,
    kind: str,
    name: str,
    before: str,
    after: str | None,
    label: str,
    quotas: Mapping[str, str],
) -> verdicts.Verdict:
    """The verdict on an UPDATE that takes object ``kind name``, which the quotas of
    namespace ``before`` count (``quotas``: each one's enforcement, by name, at least one),
    to no quota: its ``label`` removed (``after`` None) or naming namespace ``after``,
    which has none. Denied while one of those quotas enforces (module docstring)."""
    counted = ", ".join(f"DatabaseQuota {before}/{quota}" for quota in sorted(quotas))
    if after is None:
        move = f"removing its label {label} would leave it counted against no quota"
        instead = (
            "keep the label, or set it to a namespace that has a DatabaseQuota (where it is "
            "priced as a new object)"
        )
    else:
        move = (
            f"moving it to namespace {after} (label {label}), which has no DatabaseQuota, "
            "would leave it counted against no quota"
        )
        instead = (
            f"give namespace {after} a DatabaseQuota first (where it is then priced as a new "
            "object), or keep the label"
        )
    what = f"{kind} {name} is counted against {counted}; {move}"
    if any(mode not in ("Warn", "DryRun") for mode in quotas.values()):
        return verdicts.Verdict(
            allowed=False,
            message=f"denied: {what}; {instead}",
        )
    return verdicts.Verdict(
        allowed=True,
        warnings=(f"dbquota: {what}; admitted, as none of them enforces (Warn or DryRun)",),
    )
