"""The Kubernetes API calls dbquota makes, through kubernetes-asyncio, with our errors.

Used by the reservation and reconciliation services. Every foreign error becomes one of
:mod:`dbquota.errors` (``Conflict`` for 409, ``NotFound`` for 404, ``KubeError`` for the
rest) with ``raise ... from exc``. A merge patch that carries ``metadata.resourceVersion``
is a compare-and-swap: the apiserver applies it only if the object still has that version,
which is how reservations avoid over-admission (as ResourceQuota's admission does).

kopf has its own API client for watching; this one serves the request/response calls that
must be awaited on the admission path (one persistent aiohttp connection pool).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid
from collections.abc import Mapping
from typing import Any, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from dbquota.domain.resources import ClaimObject, QuotaObject
from dbquota.errors import Conflict, KubeError, NotFound

GROUP, VERSION = "dbquota.io", "v1alpha1"
QUOTAS, CLAIMS = "databasequotas", "databaseclaims"
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
"""kubernetes-asyncio picks strategic-merge for dicts, which custom resources refuse."""


def _translate(exc: ApiException, what: str) -> KubeError:
    reason = exc.reason or ""
    with contextlib.suppress(ValueError, AttributeError):  # keep the HTTP reason then
        reason = json.loads(exc.body or "{}").get("message", reason)
    if exc.status == 409:
        return Conflict(f"{what}: {reason}")
    if exc.status == 404:
        return NotFound(f"{what}: {reason}")
    return KubeError(f"{what}: HTTP {exc.status} {reason}")


class Kube:
    """A connection to the Kubernetes API for dbquota's own objects and Events."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    @classmethod
    async def connect(cls, *, kubeconfig: str | None = None) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG``)."""
        configuration = client.Configuration()
        try:
            if kubeconfig is None:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                raise ConfigException("kubeconfig given")  # noqa: TRY301 - one fallback path
        except ConfigException:
            try:
                await config.load_kube_config(
                    config_file=kubeconfig, client_configuration=configuration
                )
            except (ConfigException, OSError) as exc:
                raise KubeError(f"no Kubernetes credentials: {exc}") from exc
        configuration.connection_pool_maxsize = 32
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._api_client.close()

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        """Read one DatabaseQuota, status included."""
        try:
            obj = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, QUOTAS, name
            )
        except ApiException as exc:
            raise _translate(exc, f"get DatabaseQuota {namespace}/{name}") from exc
        return cast(QuotaObject, obj)

    async def list_quotas(self, *, namespace: str) -> list[QuotaObject]:
        """Every DatabaseQuota of a namespace."""
        try:
            got = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, QUOTAS
            )
        except ApiException as exc:
            raise _translate(exc, f"list DatabaseQuotas in {namespace}") from exc
        return cast(list[QuotaObject], got.get("items", []))

    async def patch_quota_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> QuotaObject:
        """Merge-patch ``status``; with ``resource_version`` it is a compare-and-swap.

        Raises :class:`Conflict` when the quota changed since ``resource_version`` was read.
        """
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            obj = await self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, QUOTAS, name, body, **MERGE_PATCH
            )
        except ApiException as exc:
            raise _translate(exc, f"patch DatabaseQuota {namespace}/{name} status") from exc
        return cast(QuotaObject, obj)

    async def patch_claim_status(
        self, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> ClaimObject:
        """Merge-patch a DatabaseClaim's status."""
        try:
            obj = await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                CLAIMS,
                name,
                {"status": dict(status)},
                **MERGE_PATCH,
            )
        except ApiException as exc:
            raise _translate(exc, f"patch DatabaseClaim {namespace}/{name} status") from exc
        return cast(ClaimObject, obj)

    async def post_event(
        self,
        *,
        namespace: str,
        kind: str,
        name: str,
        uid: str,
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        """Record a core/v1 Event on one of our objects (``kubectl describe`` shows it)."""
        now = datetime.datetime.now(datetime.UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": kind,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "dbquota"},
            "reportingComponent": "dbquota.io/operator",
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            await self._core.create_namespaced_event(namespace, cast(Any, event))
        except ApiException as exc:
            raise _translate(exc, f"post Event on {kind} {namespace}/{name}") from exc
