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

import asyncio
import contextlib
import datetime
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, cast

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from dbquota.domain.resources import QuotaObject
from dbquota.errors import Conflict, KubeError, NotFound

logger = logging.getLogger(__name__)

D = TypeVar("D")  # what an Informer derives from each object

GROUP, VERSION = "dbquota.io", "v1alpha1"
QUOTAS, CLAIMS = "databasequotas", "databaseclaims"
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
"""kubernetes-asyncio picks strategic-merge for dicts, which custom resources refuse."""
APPLY_PATCH: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}
"""Server-side apply; its YAML body may be JSON."""


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

    async def apply_validating_webhook_configuration(self, body: Mapping[str, Any]) -> None:
        """Create or update a ValidatingWebhookConfiguration by server-side apply (field
        manager ``dbquota``, forced): how ``--dev-webhook`` registers the webhook."""
        name = str(body["metadata"]["name"])
        api = client.AdmissionregistrationV1Api(self._api_client)
        try:
            await api.patch_validating_webhook_configuration(
                name,
                dict(body),
                field_manager="dbquota",
                force=True,
                **APPLY_PATCH,
            )
        except ApiException as exc:
            raise _translate(exc, f"apply ValidatingWebhookConfiguration {name}") from exc


class Informer(Generic[D]):
    """A watch-fed, in-memory copy of every object of one dbquota kind, cluster-wide.

    ``derive`` turns each object into what readers need (``None`` to skip it) once per
    watch event, so a read costs no parsing however often it happens: the webhook reads a
    namespace's claims on every review.

    The admission webhook reads the namespace's quotas and claims from here, as Kubernetes'
    ResourceQuota admission reads from an informer: no apiserver round trip per review.
    It is deliberately independent of kopf's watches, which kopf's peering pauses on
    standby replicas; every replica serves the webhook, so every replica needs this view.
    It lists, then watches from the list's resourceVersion; when the watch expires (410
    Gone) or fails, it lists again.
    """

    def __init__(
        self,
        kube: Kube,
        *,
        plural: str,
        derive: Callable[[dict[str, Any]], D | None],
        namespace: str = "",
    ) -> None:
        self._kube = kube
        self.plural = plural
        self._derive = derive
        self._namespace = namespace
        self._by_namespace: dict[str, dict[str, tuple[dict[str, Any], D | None]]] = {}
        self.synced = asyncio.Event()

    def in_namespace(self, namespace: str) -> list[D]:
        """What ``derive`` made of every object of the namespace, as last seen."""
        entries = self._by_namespace.get(namespace, {}).values()
        return [derived for _, derived in entries if derived is not None]

    def derived(self, *, namespace: str, name: str) -> D | None:
        """What ``derive`` made of one object, as last seen, or None."""
        entry = self._by_namespace.get(namespace, {}).get(name)
        return None if entry is None else entry[1]

    def get(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        """One object as last seen, or None."""
        entry = self._by_namespace.get(namespace, {}).get(name)
        return None if entry is None else entry[0]

    def _put(
        self, obj: dict[str, Any], into: dict[str, dict[str, tuple[dict[str, Any], D | None]]]
    ) -> None:
        meta = obj.get("metadata", {})
        slot = into.setdefault(meta.get("namespace", ""), {})
        slot[meta.get("name", "")] = (obj, self._derive(obj))

    def _drop(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        self._by_namespace.get(meta.get("namespace", ""), {}).pop(meta.get("name", ""), None)

    async def _list(self) -> str:
        if self._namespace:
            got = await self._kube._custom.list_namespaced_custom_object(
                GROUP, VERSION, self._namespace, self.plural
            )
        else:
            got = await self._kube._custom.list_cluster_custom_object(GROUP, VERSION, self.plural)
        fresh: dict[str, dict[str, tuple[dict[str, Any], D | None]]] = {}
        for obj in got.get("items", []):
            self._put(obj, fresh)
        self._by_namespace = fresh
        self.synced.set()
        return str(got.get("metadata", {}).get("resourceVersion", ""))

    async def run(self) -> None:
        """List and watch until cancelled."""
        while True:
            try:
                version = await self._list()
                while version:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception:  # a watch must outlive any one failure
                logger.exception("%s watch failed; listing again in 1s", self.plural)
                await asyncio.sleep(1)

    async def _watch(self, version: str) -> str:
        """Apply events from ``version`` on; the version to go on from, or "" to relist."""
        custom = self._kube._custom
        func: Callable[..., Awaitable[Any]] = custom.list_cluster_custom_object
        args: tuple[str, ...] = (GROUP, VERSION, self.plural)
        if self._namespace:
            func = custom.list_namespaced_custom_object
            args = (GROUP, VERSION, self._namespace, self.plural)
        async with watch.Watch().stream(
            func,
            *args,
            resource_version=version,
            timeout_seconds=300,
            allow_watch_bookmarks=True,
        ) as stream:
            async for event in stream:
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":  # 410 Gone: the version is too old to watch from
                    logger.info("%s watch expired (%s); listing again", self.plural, obj)
                    return ""
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind in ("ADDED", "MODIFIED"):
                    self._put(obj, self._by_namespace)
                elif kind == "DELETED":
                    self._drop(obj)
        return version
