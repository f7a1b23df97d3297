"""The API calls ``kubectl dbquota`` makes, through a :mod:`~dbquota.adapters.kubeconfig` session.

- :func:`require_crds`: API discovery of ``dbquota.io/v1alpha1``; without both kinds the
  CRDs are not installed, which every command says in the same words (:data:`NO_CRDS`).
- :func:`quotas`, :func:`quota`: DatabaseQuotas with their status.
- :func:`replica_leases`: every Lease labelled ``dbquota.io/lease=replica``, in every
  namespace (None when RBAC does not allow listing them: the lease state is then unknown).
- :func:`quota_events`: the core/v1 Events whose ``involvedObject`` is the quota.
- :func:`dry_run`: a server-side dry-run create of a claim (of any kind dbquota prices;
  a cluster-scoped one at cluster scope); when the claim exists already,
  a dry-run merge patch of its ``spec``, ``labels`` and ``annotations`` instead, so the
  webhook judges the change as it would judge ``kubectl apply`` (an UPDATE, charged its
  growth).

Nothing here formats anything. Called by :mod:`dbquota.plugin.main`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from dbquota.adapters.kube import CLAIMS, EVENTS, LEASES, QUOTAS, Resource
from dbquota.adapters.kubeconfig import DryRun, Session
from dbquota.errors import KubeError, NotFound
from dbquota.services import leasing

NO_CRDS = (
    "the dbquota CRDs are not installed in this cluster: kubectl apply -f crds/ or helm "
    "install dbquota charts/dbquota (see the README)"
)


async def require_crds(session: Session) -> None:
    """Raise :class:`KubeError` (:data:`NO_CRDS`) unless the apiserver serves both kinds."""
    path = f"/apis/{QUOTAS.group}/{QUOTAS.version}"
    try:
        found = await session.kube.request("GET", path, what=f"discover {QUOTAS.api_version}")
    except NotFound as exc:
        raise KubeError(NO_CRDS) from exc
    served = {str(r.get("name")) for r in found.get("resources") or [] if isinstance(r, dict)}
    if not {QUOTAS.plural, CLAIMS.plural} <= served:
        raise KubeError(NO_CRDS)


async def quotas(session: Session, *, namespace: str | None) -> list[dict[str, Any]]:
    """The DatabaseQuotas of ``namespace`` (None: of every namespace)."""
    got = await session.kube.list(QUOTAS, namespace=namespace or "")
    return [q for q in got.get("items") or [] if isinstance(q, dict)]


async def quota(session: Session, *, namespace: str, name: str) -> dict[str, Any]:
    """One DatabaseQuota; :class:`KubeError` saying so when there is none of that name."""
    try:
        return await session.kube.get(QUOTAS, namespace=namespace, name=name)
    except NotFound as exc:
        raise KubeError(
            f'DatabaseQuota "{name}" not found in namespace {namespace} (kubectl dbquota '
            "top -A lists every quota)"
        ) from exc


async def replica_leases(session: Session) -> list[dict[str, Any]] | None:
    """Every replica Lease in the cluster, or None when they cannot be listed."""
    try:
        got = await session.kube.request(
            "GET",
            LEASES.path(),
            what="list replica leases",
            query={"labelSelector": f"{leasing.ROLE_LABEL}=replica"},
        )
    except KubeError:
        return None
    return [item for item in got.get("items") or [] if isinstance(item, dict)]


async def quota_events(
    session: Session, *, namespace: str, name: str, uid: str
) -> list[dict[str, Any]]:
    """The Events recorded on the quota (this object: an older quota's of the same name are
    left out when the Event names a uid)."""
    selector = f"involvedObject.kind={QUOTAS.kind},involvedObject.name={name}"
    got = await session.kube.request(
        "GET",
        EVENTS.path(namespace),
        what=f"list events of {QUOTAS.kind} {namespace}/{name}",
        query={"fieldSelector": selector},
    )
    items = [e for e in got.get("items") or [] if isinstance(e, dict)]
    return [e for e in items if (e.get("involvedObject") or {}).get("uid") in (None, "", uid)]


async def dry_run(
    session: Session, *, resource: Resource, namespace: str, claim: Mapping[str, Any]
) -> tuple[Literal["CREATE", "UPDATE"], DryRun]:
    """Create ``claim``, an object of ``resource`` (in ``namespace`` if it is namespaced),
    with ``dryRun=All`` (nothing is stored or reserved); if it exists, dry-run the change
    to it instead. Returns the operation and the apiserver's answer.

    Existence is read first: the apiserver runs admission before it finds that a name is
    taken, so a create of an existing claim would be judged as a new claim."""
    meta = dict(claim.get("metadata") or {})
    if resource.namespaced:
        meta["namespace"] = namespace
    body = {**claim, "metadata": meta}
    name = str(meta.get("name") or "")
    exists = False
    if name:
        try:
            await session.kube.get(resource, namespace=namespace, name=name)
            exists = True
        except NotFound:
            pass
    if not exists:
        return "CREATE", await session.dry_run(resource, namespace=namespace, body=body)
    change = {
        "metadata": {k: meta[k] for k in ("labels", "annotations") if k in meta},
        "spec": body.get("spec") or {},
    }
    return "UPDATE", await session.dry_run(
        resource, namespace=namespace, body=change, patch_name=name
    )
