"""Connecting as kubectl does, for ``kubectl dbquota``; and the server-side dry run.

:func:`connect` reads credentials the way kubectl does: the kubeconfig named by
``--kubeconfig``, else by ``KUBECONFIG`` (a ``:``-separated list of files, merged as kubectl
merges them), else ``~/.kube/config``; the context named by ``--context``, else the
current one, whose ``namespace`` is the default namespace (``default`` when it names
none). With no kubeconfig file at all it falls back to a pod's service account, as kubectl
does in a pod. The caller passes ``KUBECONFIG`` in: this module reads no environment.

It returns a :class:`Session`: a :class:`~dbquota.adapters.kube.Kube` for reads, the
default namespace, and :meth:`Session.dry_run`, which sends a create (or a merge patch)
with ``dryRun=All`` and returns what the apiserver answered *including its* ``Warning``
*headers*, where admission webhooks' warnings travel (``Kube`` returns bodies only). A dry
run goes through every admission webhook and persists nothing.

:func:`warning_texts` reads those headers (RFC 7234 ``warn-code warn-agent "warn-text"``,
as client-go's ``ParseWarningHeaders``). Called by :mod:`dbquota.plugin.fetching`. Every
foreign error becomes a :class:`~dbquota.errors.KubeError`; an apiserver *refusal* of a
dry run is an answer (:class:`DryRun` with its status), not an error.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from dbquota.adapters.kube import Kube, Resource
from dbquota.errors import KubeError

DEFAULT_KUBECONFIG = "~/.kube/config"
REQUEST_TIMEOUT = 60.0
"""Seconds one dry run may take (webhooks included)."""
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, kw_only=True)
class DryRun:
    """What the apiserver answered to a dry-run write."""

    status: int
    """HTTP status: 2xx when the object would be written."""
    obj: dict[str, Any]
    """The object as it would be stored (2xx), or the ``Status`` the apiserver sent."""
    warnings: tuple[str, ...]
    """The text of every ``Warning`` header, in order."""

    @property
    def ok(self) -> bool:
        """Whether the write would succeed."""
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """The apiserver's ``Status.message`` of a refusal ("" when it succeeded)."""
        return "" if self.ok else str(self.obj.get("message") or f"HTTP {self.status}")

    @property
    def reason(self) -> str:
        """The apiserver's ``Status.reason`` of a refusal (``Forbidden``, ``Invalid``, ...)."""
        return "" if self.ok else str(self.obj.get("reason") or "")


def _unquote(text: str, start: int) -> tuple[str, int]:
    """The quoted-string starting at ``text[start]`` (a ``"``) unescaped, and the index
    after its closing quote (the end of ``text`` when it has none)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    return "".join(out), i


def warning_texts(values: Iterable[str]) -> list[str]:
    """The warn-text of every warning in ``Warning`` header ``values``.

    Each value holds one or more comma-separated ``code agent "text" ["date"]`` entries
    (the apiserver sends ``299 - "text"``, one header per warning); quotes and backslashes
    in the text are ``\\``-escaped. A value that does not parse is kept whole, so nothing
    the apiserver said is dropped.
    """
    texts: list[str] = []
    for value in values:
        rest = value.strip()
        while rest:
            parts = rest.split(" ", 2)
            if len(parts) < 3 or not parts[0].isdigit() or not parts[2].startswith('"'):
                texts.append(rest)
                break
            text, end = _unquote(parts[2], 0)
            texts.append(text)
            tail = parts[2][end:].lstrip()
            if tail.startswith('"'):  # a warn-date
                _, date_end = _unquote(tail, 0)
                tail = tail[date_end:].lstrip()
            rest = tail[1:].strip() if tail.startswith(",") else ""
    return texts


@dataclass(frozen=True, kw_only=True)
class Session:
    """A connection as kubectl would make it: reads, a default namespace, dry runs."""

    kube: Kube
    namespace: str
    """The context's namespace (``default`` when it names none)."""
    context: str
    """The context in use ("" in a pod)."""
    api_client: client.ApiClient

    async def close(self) -> None:
        """Close the connection."""
        await self.kube.close()

    async def dry_run(
        self,
        resource: Resource,
        *,
        namespace: str,
        body: Mapping[str, Any],
        patch_name: str = "",
    ) -> DryRun:
        """Create ``body`` with ``dryRun=All`` (or, with ``patch_name``, merge-patch that
        object with it), in ``namespace`` unless ``resource`` is cluster-scoped; the
        apiserver's answer, refusals included."""
        api = client.CustomObjectsApi(self.api_client)
        group, version, plural = resource.group, resource.version, resource.plural
        # Honoured by the generated client, missing from its stubs; without it a dict body
        # would be sent as a JSON patch.
        merge: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
        options: dict[str, Any] = {"dry_run": "All", "_request_timeout": REQUEST_TIMEOUT}
        try:
            if patch_name and resource.namespaced:
                got = await api.patch_namespaced_custom_object_with_http_info(
                    group, version, namespace, plural, patch_name, dict(body), **options, **merge
                )
            elif patch_name:  # cluster-scoped: no namespace in the call
                got = await api.patch_cluster_custom_object_with_http_info(
                    group, version, plural, patch_name, dict(body), **options, **merge
                )
            elif resource.namespaced:
                got = await api.create_namespaced_custom_object_with_http_info(
                    group, version, namespace, plural, dict(body), **options
                )
            else:
                got = await api.create_cluster_custom_object_with_http_info(
                    group, version, plural, dict(body), **options
                )
        except ApiException as exc:
            return DryRun(
                status=int(exc.status or 0),
                obj=_status_body(exc.body),
                warnings=tuple(_warnings(exc.headers)),
            )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KubeError(
                f"dry run of {resource.kind} {namespace + '/' if resource.namespaced else ''}"
                f"{patch_name or body.get('metadata', {}).get('name', '')}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        data, status, headers = got
        return DryRun(
            status=int(status),
            obj=data if isinstance(data, dict) else {},
            warnings=tuple(_warnings(headers)),
        )


def _warnings(headers: object) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is None:
        return []
    return warning_texts(str(v) for v in getall("Warning", []))


def _status_body(body: object) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        with contextlib.suppress(ValueError):
            decoded = json.loads(body)
            if isinstance(decoded, dict):
                return decoded
        return {"message": body[:500]}
    return {}


def _plain(node: object) -> dict[str, Any]:
    """A kubeconfig node (kubernetes-asyncio's ConfigNode, or a dict) as a dict."""
    value = getattr(node, "value", node)
    return value if isinstance(value, dict) else {}


def _pod_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def kubeconfig_files(kubeconfig: str | None) -> list[Path]:
    """The kubeconfig files that exist among ``kubeconfig`` (``KUBECONFIG``'s value or the
    ``--kubeconfig`` flag: a ``:``-separated list) or else ``~/.kube/config``."""
    paths = (kubeconfig or DEFAULT_KUBECONFIG).split(":")
    return [p for p in (Path(s).expanduser() for s in paths if s) if p.is_file()]


async def connect(*, kubeconfig: str | None, context: str | None) -> Session:
    """A :class:`Session` for ``kubeconfig`` (see :func:`kubeconfig_files`) and ``context``
    (the current one when None); a pod's service account when no kubeconfig file exists.

    Raises :class:`KubeError` saying what is missing: the file, the context, credentials.
    """
    configuration = client.Configuration()
    files = kubeconfig_files(kubeconfig)
    if files:
        try:
            loader = await config.load_kube_config(
                config_file=":".join(str(f) for f in files),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
            current = _plain(loader.current_context)
            used = str(current.get("name") or "")
            namespace = str(_plain(current.get("context")).get("namespace") or "default")
        except (ConfigException, AssertionError, KeyError, TypeError, OSError) as exc:
            where = ", ".join(str(f) for f in files)
            what = f"context {context!r}" if context else "the current context"
            raise KubeError(f"cannot use {what} of the kubeconfig ({where}): {exc}") from exc
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            looked = kubeconfig or DEFAULT_KUBECONFIG
            raise KubeError(
                f"no kubeconfig found (looked at {looked}) and not running in a pod: "
                "set KUBECONFIG or pass --kubeconfig"
            ) from exc
        used, namespace = "", _pod_namespace()
    api_client = client.ApiClient(configuration)
    return Session(kube=Kube(api_client), namespace=namespace, context=used, api_client=api_client)
