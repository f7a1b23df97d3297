"""The Kubernetes API calls dbquota makes, and the watches that feed its in-memory views.

kubernetes-asyncio gives us the connection: it reads the kubeconfig or the in-cluster
service account (refreshing its token) and owns one aiohttp connection pool. On top of
it this module makes plain JSON requests to the few paths dbquota uses, decoded with
msgspec: the generated API classes serialise and deserialise every call through model
objects, which cost more CPU than the apiserver round trip on the paths a busy webhook
and reconciler take (status writes at hundreds per second).

Every failure becomes one of :mod:`dbquota.errors` (``Conflict`` for 409, ``NotFound``
for 404, ``KubeError`` for the rest, closed connections and credentials that could not be
refreshed included) with ``raise ... from exc``; only cancellation passes through. A call
takes at most :data:`REQUEST_TIMEOUT`, or what its caller's own deadline leaves. A merge
patch or a PUT that carries ``metadata.resourceVersion`` is a compare-and-swap: the
apiserver applies it only if the object still has that version, which is how reservations
avoid over-admission (as ResourceQuota's admission does).

:class:`Informer` keeps a watch-fed copy of one kind, as client-go's informers do: it
lists, watches from the list's ``resourceVersion`` (with bookmarks), watches again when
the stream ends or has been silent for :data:`WATCH_SILENCE`, and lists again when the
watch expires (410) or fails. A list comes :data:`LIST_PAGE` objects at a time, and the
informer takes in what it lists a slice at a time (:mod:`dbquota.kits.steps`), letting the
event loop serve admission reviews, lease renewals and probes in between: a relist of
10,000 claims in one piece held the loop for 0.4 s (40,000: 2 s), at start-up and after
every expired or failed watch. Used by every service that reads Kubernetes objects.

Size: every Kubernetes call dbquota makes and the informer that feeds on them in one
adapter, because they share the one connection pool, its credentials and the mapping of
failures to :mod:`dbquota.errors`; import-linter keeps adapters independent of each other,
so a second module would have to duplicate that, not import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast
from urllib.parse import quote, urlencode

import aiohttp
import msgspec
import yarl
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from dbquota.domain import kinds
from dbquota.domain.kinds import registry
from dbquota.domain.resources import ClaimStatus, Event, EventSeries, QuotaObject
from dbquota.errors import Conflict, KubeError, NotFound
from dbquota.kits import steps

logger = logging.getLogger(__name__)


def _env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` name for ``url`` and its credentials,
    unless ``NO_PROXY`` excludes it; (None, None) without one."""
    try:
        proxy, auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(url))
    except (LookupError, ValueError):
        return None, None
    return str(proxy), auth


D = TypeVar("D")  # what an Informer derives from each object

MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"  # server-side apply; its YAML may be JSON
_json_decode = msgspec.json.Decoder(dict[str, Any]).decode
_json_encode = msgspec.json.Encoder().encode

WATCH_SILENCE = 45.0
"""Seconds a watch may bring nothing (no event, no bookmark) and still count as working.

Below ``--reservation-grace`` (60 s by default), so that a claim created while its watch is
stalled shows up before its reservation is judged never created: the reconciler judges
that only while the claim informer is :attr:`Informer.current`, which it is not past this
silence. Past it, :meth:`Kube.watch` also stops reading (its read timeout), and the
informer watches again from the version it has: a new connection, which replays what was
missed (or a 410, and a list). A quiet kind is this silent as a matter of course: the
apiserver sends a watch a BOOKMARK about every minute, and skips the first one while the
kind's version has not moved since the watch began (seen on 1.36: 120 s between two). So
the apiserver accepting the new watch counts as hearing from it (:data:`OPENED`): in a
quiet cluster an informer watches anew every 45 s, one request, no list. Before, the only
bound was a read timeout of 330 s, and for all of it an absence in the copy passed for an
absence in the cluster."""

REQUEST_TIMEOUT = 30.0
"""Seconds one API call (not a watch) may take unless its caller has a deadline of its own
and passes what is left of it: a lease renewal (:mod:`dbquota.services.leasing`) must end
in time to try again before its holder stops trusting its lease, whatever the state of the
pooled connection it went out on."""

LOOKUP_TIMEOUT = 2.0
"""Seconds a LIST of a namespace's DatabaseQuotas that a review waits on may take: the
apiserver gives the webhook 5 s by default (the chart's ``webhook.timeoutSeconds``), and
the reservation's compare-and-swap comes after it."""
LIST_PAGE = 500
"""Objects per page of a list (client-go's informers page by 500 too): each page is read
and decoded while the event loop serves others between pages."""
OPENED = "OPENED"
"""What :meth:`Kube.watch` yields first, with no object, once the apiserver has accepted the
watch (HTTP 200): it will send everything after the version asked for, so the stream is
alive, as a BOOKMARK says."""


class Resource(NamedTuple):
    """One kind of object as the API serves it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        """The URL path of the collection, of one object, or of its subresource."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if subresource:
            base += f"/{subresource}"
        return base

    @property
    def api_version(self) -> str:
        """``group/version`` (or ``version`` for the core group)."""
        return f"{self.group}/{self.version}" if self.group else self.version


def of_kind(resource: kinds.Resource) -> Resource:
    """The :class:`Resource` of a kind of :mod:`dbquota.domain.kinds`."""
    return Resource(
        resource.group, resource.version, resource.plural, resource.kind, resource.namespaced
    )


QUOTAS = of_kind(kinds.QUOTAS)
CLAIMS = of_kind(registry.CLAIMS)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
EVENTS = Resource("", "v1", "events", "Event")
EVENTS_V1 = Resource("events.k8s.io", "v1", "events", "Event")
WEBHOOKS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)


def _message(status: int, body: bytes) -> str:
    with contextlib.suppress(msgspec.DecodeError, TypeError, AttributeError):
        text = _json_decode(body).get("message")
        if isinstance(text, str):
            return text
    return body[:200].decode("utf-8", "replace") or f"HTTP {status}"


class Kube:
    """A connection to the Kubernetes API for dbquota's objects, Leases and Events."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api_client = api_client
        self._host = str(api_client.configuration.host or "").rstrip("/")
        self._closed = False
        self._own_session: aiohttp.ClientSession | None = None
        self._proxy, self._proxy_auth = (
            (api_client.configuration.proxy, None)
            if api_client.configuration.proxy
            else _env_proxy(self._host)
        )

    @property
    def _session(self) -> aiohttp.ClientSession:
        """kubernetes-asyncio's connection pool, without its ``trust_env``.

        Its session trusts the environment, so aiohttp looks up ``~/.netrc`` (in a worker
        thread) and the proxy variables again for every request: a fifth of the operator's
        CPU at a hundred claims per second. The proxy for the apiserver is looked up once
        instead (``HTTPS_PROXY``/``NO_PROXY``, as client-go honours them); a netrc has no
        say in Kubernetes authentication.
        """
        if self._own_session is None:
            pool = self._api_client.rest_client.pool_manager
            self._own_session = aiohttp.ClientSession(
                connector=pool.connector,
                connector_owner=False,
                trust_env=False,
                read_bufsize=2**21,  # watch events of large objects, as kubernetes-asyncio
            )
        return self._own_session

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
        configuration.connection_pool_maxsize = 64
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        """Close the connection pool; later calls raise ``KubeError``."""
        self._closed = True
        if self._own_session is not None:
            await self._own_session.close()
        await self._api_client.close()

    async def _headers(self, content_type: str | None, *, what: str) -> dict[str, str]:
        """The request's headers, credentials included.

        kubernetes-asyncio refreshes the credentials here when they are due (in a pod it
        reads the service account's token file again every minute), so this fails as a
        file read or a kubeconfig plugin fails (``OSError``, ``ConfigException``): that is
        a failed call like any other, a ``KubeError``, which callers that retry already
        handle. Cancellation passes through.
        """
        headers: dict[str, str] = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            await self._api_client.update_params_for_auth(headers, [], ["BearerToken"])
        except Exception as exc:
            raise KubeError(
                f"{what}: could not get credentials: {type(exc).__name__}: {exc}"
            ) from exc
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str | None = None,
        seconds: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        """One API call; the decoded JSON answer. ``what`` names it in errors; ``seconds``
        bounds the exchange with the apiserver (callers with a deadline of their own pass
        what is left of it).

        Whatever fails on the way (credentials, connection, timeout, a session closed
        while shutting down, anything else aiohttp raises) is a ``KubeError``, so that a
        caller that retries on one never dies of another; cancellation passes through.
        """
        if self._closed:
            raise KubeError(f"{what}: the Kubernetes connection is closed")
        url = self._host + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else _json_encode(body)
        kind = content_type or ("application/json" if data else None)
        headers = await self._headers(kind, what=what)
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except Exception as exc:  # e.g. RuntimeError: "Session is closed" while shutting down
            raise KubeError(f"{what}: {type(exc).__name__}: {exc}") from exc
        if status == 409:
            raise Conflict(f"{what}: {_message(status, raw)}")
        if status == 404:
            raise NotFound(f"{what}: {_message(status, raw)}")
        if not 200 <= status < 300:
            raise KubeError(f"{what}: HTTP {status} {_message(status, raw)}")
        try:
            return _json_decode(raw) if raw else {}
        except msgspec.DecodeError as exc:
            raise KubeError(f"{what}: the apiserver answered with invalid JSON") from exc

    # -- objects ------------------------------------------------------------------------

    async def get(
        self, resource: Resource, *, namespace: str, name: str, seconds: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """One object."""
        return await self.request(
            "GET",
            resource.path(namespace, name),
            what=f"get {resource.kind} {namespace}/{name}",
            seconds=seconds,
        )

    async def create(
        self,
        resource: Resource,
        *,
        namespace: str,
        body: Mapping[str, Any],
        seconds: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        """Create one object (``Conflict`` when it exists)."""
        name = body.get("metadata", {}).get("name", "")
        return await self.request(
            "POST",
            resource.path(namespace),
            what=f"create {resource.kind} {namespace}/{name}",
            body=body,
            seconds=seconds,
        )

    async def replace(
        self,
        resource: Resource,
        *,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        seconds: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        """Replace one object; with ``metadata.resourceVersion`` it is a compare-and-swap."""
        return await self.request(
            "PUT",
            resource.path(namespace, name),
            what=f"replace {resource.kind} {namespace}/{name}",
            body=body,
            seconds=seconds,
        )

    async def patch(
        self,
        resource: Resource,
        *,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        subresource: str = "",
    ) -> dict[str, Any]:
        """Merge-patch one object (or its ``subresource``)."""
        return await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            what=f"patch {resource.kind} {namespace}/{name}"
            + (f"/{subresource}" * bool(subresource)),
            body=body,
            content_type=MERGE,
        )

    async def delete(
        self, resource: Resource, *, namespace: str, name: str, seconds: float = REQUEST_TIMEOUT
    ) -> None:
        """Delete one object (gone already is fine)."""
        with contextlib.suppress(NotFound):
            await self.request(
                "DELETE",
                resource.path(namespace, name),
                what=f"delete {resource.kind} {namespace}/{name}",
                seconds=seconds,
            )

    async def list(
        self, resource: Resource, *, namespace: str = "", seconds: float = 120.0
    ) -> dict[str, Any]:
        """Every object of ``resource`` (in ``namespace``, or everywhere), read
        :data:`LIST_PAGE` at a time, each page within ``seconds``: the apiserver serves
        every page from the snapshot of the first (one ``resourceVersion``, that of the
        answer). A continue token that expired meanwhile (410, etcd compacted) is a
        ``KubeError``: list again."""
        query = {"limit": str(LIST_PAGE)}
        items: list[dict[str, Any]] = []
        while True:
            page = await self.request(
                "GET",
                resource.path(namespace),
                what=f"list {resource.plural}",
                query=query,
                seconds=seconds,
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                page["items"] = items
                return page
            query = {"limit": str(LIST_PAGE), "continue": str(token)}

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str = "",
        version: str,
        seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events (type, object) from ``version`` until the server ends the stream,
        or until it has brought nothing for :data:`WATCH_SILENCE` (dead or stalled: the
        caller watches again).

        First ``(OPENED, {})`` once the apiserver has accepted the watch. BOOKMARKs come
        through as they are (``("BOOKMARK", {"metadata": {"resourceVersion": ...}})``): no
        object, a version to go on from and a sign the stream is alive.
        """
        what = f"watch {resource.plural}"
        if self._closed:
            raise KubeError(f"{what}: the Kubernetes connection is closed")
        query = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        url = f"{self._host}{resource.path(namespace)}?{urlencode(query)}"
        headers = await self._headers(None, what=what)
        try:
            async with self._session.get(
                url,
                headers=headers,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=WATCH_SILENCE, sock_read=WATCH_SILENCE
                ),
            ) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    raise KubeError(f"{what}: HTTP {resp.status} {_message(resp.status, raw)}")
                yield OPENED, {}
                while True:
                    try:
                        line = await resp.content.readline()
                    except aiohttp.SocketTimeoutError:
                        logger.debug("%s: nothing for %.0fs; watching again", what, WATCH_SILENCE)
                        return
                    if not line:
                        return
                    try:
                        event = _json_decode(line)
                    except msgspec.DecodeError as exc:
                        raise KubeError(f"{what}: invalid JSON in the stream") from exc
                    yield str(event.get("type", "")), event.get("object") or {}
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            raise KubeError(f"{what}: {type(exc).__name__}: {exc}") from exc

    # -- dbquota's own objects ----------------------------------------------------------

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        """Read one DatabaseQuota, status included."""
        return cast(QuotaObject, await self.get(QUOTAS, namespace=namespace, name=name))

    async def list_quotas(self, *, namespace: str) -> Sequence[dict[str, Any]]:
        """Every DatabaseQuota of ``namespace`` now, for a review that waits on the answer
        (:mod:`dbquota.services.lookups`): each page within :data:`LOOKUP_TIMEOUT`."""
        listed = await self.list(QUOTAS, namespace=namespace, seconds=LOOKUP_TIMEOUT)
        return cast(Sequence[dict[str, Any]], listed.get("items") or [])

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
        obj = await self.patch(
            QUOTAS, namespace=namespace, name=name, body=body, subresource="status"
        )
        return cast(QuotaObject, obj)

    async def patch_claim_status(
        self, *, namespace: str, name: str, uid: str, status: ClaimStatus
    ) -> dict[str, Any]:
        """Merge-patch a DatabaseClaim's status, only if it is still the object ``uid``."""
        body = {"metadata": {"uid": uid}, "status": dict(status)}
        return await self.patch(
            CLAIMS, namespace=namespace, name=name, body=body, subresource="status"
        )

    async def create_event(self, *, namespace: str, event: Event) -> Event:
        """Create an ``events.k8s.io/v1`` Event (``Conflict`` when its name is taken)."""
        return cast(Event, await self.create(EVENTS_V1, namespace=namespace, body=event))

    async def patch_event_series(
        self, *, namespace: str, name: str, series: EventSeries, note: str
    ) -> None:
        """Update an Event's ``series`` and note (``NotFound`` when it is gone).

        Through the core/v1 view of the same object: ``events.k8s.io/v1`` refuses any
        change of ``note`` on update ("field is immutable"), core/v1 validates only its
        legacy rules, and client-go's ``tools/record`` aggregator patches ``message`` and
        ``count`` the same way.
        """
        body = {"series": dict(series), "message": note}
        await self.patch(EVENTS, namespace=namespace, name=name, body=body)

    async def whoami(self) -> str:
        """The user name the apiserver knows this connection by (a SelfSubjectReview,
        ``authentication.k8s.io/v1``): what admission reviews of our own writes carry in
        ``request.userInfo.username``."""
        review = await self.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            what="SelfSubjectReview",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        return str(((review.get("status") or {}).get("userInfo") or {}).get("username", ""))

    async def apply_validating_webhook_configuration(self, body: Mapping[str, Any]) -> None:
        """Create or update a ValidatingWebhookConfiguration by server-side apply (field
        manager ``dbquota``, forced): how ``--dev-webhook`` registers the webhook."""
        name = str(body["metadata"]["name"])
        await self.request(
            "PATCH",
            WEBHOOKS.path(name=name),
            what=f"apply ValidatingWebhookConfiguration {name}",
            query={"fieldManager": "dbquota", "force": "true"},
            body=body,
            content_type=APPLY,
        )


class Source(Protocol):
    """What an :class:`Informer` reads from (:class:`Kube`; a fake in unit tests)."""

    async def list(self, resource: Resource, *, namespace: str = "") -> dict[str, Any]:
        """Every object of ``resource``, and the list's resourceVersion."""
        ...

    def watch(
        self, resource: Resource, *, namespace: str = "", version: str, seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events from ``version`` on."""
        ...


Listener = Callable[[str, str, D | None, D | None], None]
"""``listener(namespace, name, before, after)``: an object appeared (before None), changed,
or went away (after None), as the informer derived it."""


@dataclass
class _Entry(Generic[D]):
    version: str
    derived: D | None
    obj: dict[str, Any] | None


def _rv(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def _later(a: str, b: str) -> bool:
    """Whether resourceVersion ``a`` is later than ``b`` (see
    :func:`dbquota.domain.views.newer` for why integers are compared)."""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


class Informer(Generic[D]):
    """A watch-fed, in-memory copy of every object of one kind (in one namespace or all).

    ``derive`` turns each object into what readers need (``None`` to skip it) once per
    watch event, so a read costs no parsing however often it happens. Full objects are
    kept only with ``keep_objects`` (quotas, which are few and read whole by the
    reservation ledgers); claims keep only what was derived, so 10,000 of them cost a few
    MiB. Listeners hear of every change, including those found by a relist, so services
    react to events instead of polling. Writers hand their own results to :meth:`put`, so
    readers see a write before its watch event arrives.
    """

    def __init__(
        self,
        kube: Source,
        resource: Resource,
        *,
        derive: Callable[[dict[str, Any]], D | None],
        namespace: str = "",
        keep_objects: bool = False,
    ) -> None:
        self._kube = kube
        self.resource = resource
        self._derive = derive
        self._namespace = namespace
        self._keep = keep_objects
        self._store: dict[str, dict[str, _Entry[D]]] = {}
        self._listeners: list[Listener[D]] = []
        self.synced = asyncio.Event()
        self._current = False  # listed, and watching since without a failure or a 410
        self._heard = -float("inf")  # monotonic: the last list, or anything the watch brought

    @property
    def plural(self) -> str:
        """The resource's plural name (for messages)."""
        return self.resource.plural

    def add_listener(self, listener: Listener[D]) -> None:
        """Call ``listener`` on every change from now on."""
        self._listeners.append(listener)

    def in_namespace(self, namespace: str) -> list[D]:
        """What ``derive`` made of every object of the namespace, as last seen."""
        entries = self._store.get(namespace, {}).values()
        return [e.derived for e in entries if e.derived is not None]

    def namespaces(self) -> list[str]:
        """Namespaces with at least one object."""
        return [ns for ns, entries in self._store.items() if entries]

    def derived(self, *, namespace: str, name: str) -> D | None:
        """What ``derive`` made of one object, as last seen, or None."""
        entry = self._store.get(namespace, {}).get(name)
        return None if entry is None else entry.derived

    def get(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        """One object as last seen (only with ``keep_objects``), or None."""
        entry = self._store.get(namespace, {}).get(name)
        return None if entry is None else entry.obj

    def put(self, obj: dict[str, Any]) -> None:
        """An object as a write of ours returned it: kept if it is newer than our copy."""
        self._apply("MODIFIED", obj)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        slot = self._store.setdefault(namespace, {})
        before = slot.get(name)
        if kind == "DELETED":
            if before is None:
                return
            del slot[name]
            self._tell(namespace, name, before.derived, None)
            return
        version = _rv(obj)
        if before is not None and not _later(version, before.version):
            return
        entry = _Entry(version, self._derive(obj), obj if self._keep else None)
        slot[name] = entry
        self._tell(namespace, name, None if before is None else before.derived, entry.derived)

    def _tell(self, namespace: str, name: str, before: D | None, after: D | None) -> None:
        if before is None and after is None:
            return
        for listener in self._listeners:
            try:
                listener(namespace, name, before, after)
            except Exception:
                logger.exception("a %s listener failed", self.plural)

    async def _list(self) -> str:
        """List every object and take them in, a slice at a time (module docstring); the
        version to watch from."""
        got = await self._kube.list(self.resource, namespace=self._namespace)
        seen: set[tuple[str, str]] = set()
        for part in steps.slices(got.get("items") or []):
            for obj in part:
                meta = obj.get("metadata") or {}
                seen.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
                self._apply("ADDED", obj)
            await asyncio.sleep(0)
        for namespace, slot in list(self._store.items()):
            for name in [n for n in slot if (namespace, n) not in seen]:
                before = slot.pop(name)
                self._tell(namespace, name, before.derived, None)
        self.synced.set()
        self._current = True
        self._heard = time.monotonic()
        return str(got.get("metadata", {}).get("resourceVersion", ""))

    @property
    def current(self) -> bool:
        """Whether this copy is up to date: listed, watching since with no failure and no
        410, and the watch heard from (an event, a bookmark, the apiserver accepting it)
        within :data:`WATCH_SILENCE`.

        While it is not (the apiserver restarting, the watch broken, expired or silent and
        not watching or listed again yet), objects may exist that it does not show; a
        caller must not conclude from their absence that they do not exist (say, to release
        budget held for them).
        """
        return self._current and time.monotonic() - self._heard < WATCH_SILENCE

    async def run(self) -> None:
        """List and watch until cancelled."""
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                while version:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:  # the apiserver busy or restarting: say so, no traceback
                self._current = False
                failures += 1
                delay = min(8.0, 0.5 * 2 ** min(failures, 4))
                logger.warning(
                    "%s watch failed (%s); listing again in %.0fs", self.plural, exc, delay
                )
                await asyncio.sleep(delay)
            except Exception:  # a watch must outlive any one failure
                self._current = False
                logger.exception("%s watch failed; listing again in 1s", self.plural)
                await asyncio.sleep(1)

    async def _watch(self, version: str) -> str:
        """Apply events from ``version`` on; the version to go on from, or "" to relist.

        A BOOKMARK (or :data:`OPENED`) is no object: only its version is kept, and the time
        it came, as for every event (one clock read, all this adds per claim event)."""
        clock = time.monotonic
        async for kind, obj in self._kube.watch(
            self.resource, namespace=self._namespace, version=version
        ):
            self._heard = clock()
            if kind == "ERROR":  # 410 Gone: the version is too old to watch from
                self._current = False  # until the relist is done: we may miss anything
                logger.info("%s watch expired (%s); listing again", self.plural, obj.get("message"))
                return ""
            version = _rv(obj) or version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(kind, obj)
        return version
