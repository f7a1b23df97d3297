"""The admission webhook's HTTPS server: ``POST /validate-claims``, served by dbquota itself.

``async with webhook.serving(settings.webhook, admit=..., kinds=...) as port:`` listens
until the block ends, then stops accepting, lets the requests in flight finish (at most
:data:`STOP_PATIENCE` seconds) and closes. :mod:`dbquota.handlers.operating` enters it once
the runtime is built, with an ``admit`` that calls admission; nothing here knows about
quotas. It is aiohttp's low-level server (no router, no middlewares, no access log): one
coroutine per request, which in this order

1. answers 404 to any other path and 405 to any other method;
2. with ``--webhook-client-names``, answers 403 to a client certificate carrying none of
   those names (CN or SAN);
3. reads the body, at most :data:`MAX_BODY` bytes (Kubernetes objects are at most 1.5 MiB
   and a review carries two), else 413; 408 if it does not arrive within
   :data:`BODY_PATIENCE` seconds;
4. decodes it (:func:`dbquota.domain.reviews.decode`): not an AdmissionReview is a 400
   whose body is the short fixed message (``malformed AdmissionReview: request.uid
   missing``), never the input or an exception's text;
5. admits at once, without work, any operation but CREATE and UPDATE and any kind not in
   ``kinds``;
6. else awaits ``admit(review)`` and encodes its :class:`~dbquota.domain.reviews.Answer`.
   An exception there is a bug: the review is denied with the fixed message
   :data:`INTERNAL_ERROR` and the exception logged once at ERROR with its traceback.

Every refused request (1-4, and HTTP that aiohttp cannot parse) is counted in
``dbquota_webhook_rejected_requests_total{reason}`` and logged as one WARNING line with no
traceback, at most one line per second (the next line says how many were not logged).
Nothing is logged per request otherwise.

TLS (at least 1.2) uses ``tls.crt`` and ``tls.key`` of ``--webhook-cert-dir`` (generated
there by :func:`ensure_dev_certificates` in dev mode). Every :data:`RELOAD_INTERVAL` seconds
the files' modification times are compared; when they changed a new context is built, and
the listening context's SNI callback, which OpenSSL calls at every handshake (with or
without SNI), gives each new handshake the newest one: connections already open keep their
certificate, new ones get the new one, and files caught half-written are retried when they
change again. With ``--webhook-client-ca`` the server requires a client certificate signed
by that bundle (reloaded the same way): only the apiserver, configured with a client
certificate for webhooks (docs/security.md), gets past the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from dbquota.adapters import metrics
from dbquota.domain import reviews
from dbquota.errors import ConfigurationError, MalformedReview
from dbquota.kits import certs
from dbquota.settings import WebhookSettings

logger = logging.getLogger(__name__)

Admit = Callable[[reviews.Review], Awaitable[reviews.Answer]]
"""What the server asks about each review it does not answer itself."""

PATH: Final = "/validate-claims"
"""The one path served (the Helm chart's ValidatingWebhookConfiguration calls it)."""
MAX_BODY: Final = 4 * 1024 * 1024
"""Bytes of the largest body read; a larger one is refused with 413."""
BODY_PATIENCE: Final = 10.0
"""Seconds a request's body may take to arrive after its headers (408 after that)."""
RELOAD_INTERVAL: Final = 3.0
"""Seconds between two looks at the certificate files' modification times."""
STOP_PATIENCE: Final = 5.0
"""Seconds the requests in flight get to finish when the server stops."""
IDLE_TIMEOUT: Final = 120.0
"""Seconds an idle keep-alive connection stays open (the apiserver reuses them)."""
LOG_INTERVAL: Final = 1.0
"""Seconds between two WARNING lines about refused requests."""
INTERNAL_ERROR: Final = reviews.Answer(
    allowed=False, message="internal error; see the operator log", code=500
)
"""The answer to a review whose admission raised: the exception's text stays in the log."""

_CERT, _KEY, _CA = "tls.crt", "tls.key", "ca.crt"


def ensure_dev_certificates(*, cert_dir: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for ``host`` in ``cert_dir``, made once, then reused.

    Returns the paths of the CA certificate (the caBundle to register), the serving
    certificate and its key.
    """
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = cert_dir / _CA, cert_dir / _CERT, cert_dir / _KEY
    if not (ca_path.exists() and cert_path.exists() and key_path.exists()):
        ca = certs.new_ca(common_name="dbquota-webhook-ca")
        hosts = tuple(dict.fromkeys((host, "127.0.0.1", "localhost")))
        leaf = certs.issue(ca=ca, common_name=host, hosts=hosts, server=True)
        ca_path.write_bytes(ca.cert_pem)
        leaf.write(cert_path=cert_path, key_path=key_path)
        logger.info("generated a webhook CA and serving certificate in %s", cert_dir)
    return ca_path, cert_path, key_path


class Tls:
    """The server's TLS contexts, rebuilt from their files when these change.

    :attr:`context` is the listening context; its SNI callback hands every new handshake
    the context most recently built from the files (see the module docstring).
    """

    def __init__(self, *, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._stamp = self._stamps()
        try:
            self._current = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the webhook's TLS files: {exc}") from exc
        self.context = self._build()
        self.context.sni_callback = self._handshake
        self.reloads = 0
        """How many times new files were loaded."""

    def _files(self) -> list[Path]:
        return [self._cert, self._key, *([self._client_ca] if self._client_ca else [])]

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._files():
            try:
                st = path.stat()  # follows the kubelet's ..data symlink to the new files
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(self._cert, self._key)
        if self._client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=os.fspath(self._client_ca))
        return context

    def _handshake(self, connection: Any, _server_name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self._current

    def reload_if_changed(self) -> bool:
        """Build a new context if the files changed since the last look; True if loaded.

        Files that cannot be loaded (e.g. caught between two renames) keep the current
        context and are tried again when they change again.
        """
        stamp = self._stamps()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self._current = self._build()
        except (OSError, ssl.SSLError) as exc:
            logger.warning(
                "the webhook's TLS files changed but cannot be loaded (%s); "
                "serving the previous ones until they change again",
                exc,
            )
            return False
        self.reloads += 1
        logger.info("the webhook's TLS files changed: new connections use them")
        return True


class Rejections:
    """Counts refused requests and logs them, at most one line per ``interval`` seconds."""

    def __init__(
        self, *, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._last = -interval
        self._unlogged = 0

    def __call__(self, reason: str, *, peer: str, detail: str) -> None:
        """One refused request: ``reason`` is the metric label, ``detail`` fixed words."""
        metrics.webhook_rejected.labels(reason=reason).inc()
        now = self._clock()
        if now - self._last < self._interval:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        logger.warning("webhook refused a request from %s: %s%s", peer, detail, more)
        self._last, self._unlogged = now, 0


class _HttpLog(logging.Logger):
    """The logger aiohttp's connections report to: a request it cannot parse (its
    "Error handling request") becomes a counted, rate-limited refusal without traceback;
    anything else goes to this module's logger as it came."""

    def __init__(self, rejections: Rejections) -> None:
        super().__init__(f"{__name__}.http")
        self.parent = logger
        self._rejections = rejections

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(msg, str) and msg.startswith("Error handling request"):
            peer = str(args[0]) if args else "?"
            kind = type(error).__name__ if isinstance(error, BaseException) else "error"
            self._rejections("http", peer=peer, detail=f"400 unparsable HTTP ({kind})")
            return
        super().exception(msg, *args, **kwargs)


def _names(peercert: Mapping[str, Any]) -> set[str]:
    """The CN and the DNS/IP SANs of a certificate as ``getpeercert()`` decodes it."""
    names = {
        str(value)
        for rdn in peercert.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    }
    names |= {
        str(value)
        for kind, value in peercert.get("subjectAltName", ())
        if kind in ("DNS", "IP Address")
    }
    return names


class _Server:
    """One request at a time, as the module docstring lists the steps."""

    def __init__(
        self,
        *,
        admit: Admit,
        kinds: Collection[tuple[str, str]],
        client_names: Iterable[str],
        rejections: Rejections,
    ) -> None:
        self._admit = admit
        self._kinds = frozenset(kinds)
        self._client_names = frozenset(client_names)
        self._reject = rejections
        self._clients: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()

    def _refuse(
        self, request: web.BaseRequest, status: int, reason: str, text: str
    ) -> web.Response:
        self._reject(reason, peer=request.remote or "?", detail=f"{status} {text}")
        return web.Response(status=status, text=text + "\n")

    def _client_allowed(self, request: web.BaseRequest) -> bool:
        transport = request.transport
        if transport is None:
            return False
        with contextlib.suppress(TypeError):
            known = self._clients.get(transport)
            if known is not None:
                return known
        allowed = bool(_names(transport.get_extra_info("peercert") or {}) & self._client_names)
        with contextlib.suppress(TypeError):  # a transport that takes no weak reference
            self._clients[transport] = allowed
        return allowed

    def _refusal(self, request: web.BaseRequest) -> web.Response | None:
        """The answer to a request refused on its headers alone, else None."""
        if request.path != PATH:
            return self._refuse(request, 404, "path", f"not found; the webhook is at {PATH}")
        if request.method != "POST":
            return self._refuse(request, 405, "method", f"{PATH} takes POST only")
        if self._client_names and not self._client_allowed(request):
            return self._refuse(request, 403, "client", "client certificate name not allowed")
        if (request.content_length or 0) > MAX_BODY:
            return self._refuse(request, 413, "too_large", f"body over {MAX_BODY} bytes")
        return None

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        refusal = self._refusal(request)
        body = b""
        if refusal is None:
            body, refusal = await self._body(request)
        if refusal is not None:
            return refusal
        try:
            review = reviews.decode(body)
        except MalformedReview as exc:
            return self._refuse(request, 400, "malformed", str(exc))
        answer = reviews.Answer(allowed=True)
        incoming = review.request
        if incoming.operation in ("CREATE", "UPDATE") and (
            (incoming.kind.group, incoming.kind.kind) in self._kinds
        ):
            try:
                answer = await self._admit(review)
            except Exception:
                logger.exception(
                    "admission of %s %s/%s raised; denied it with %r",
                    incoming.kind.kind,
                    incoming.namespace,
                    incoming.object_name,
                    INTERNAL_ERROR.message,
                )
                answer = INTERNAL_ERROR
        return web.Response(body=reviews.encode(review, answer), content_type="application/json")

    async def _body(self, request: web.BaseRequest) -> tuple[bytes, web.Response | None]:
        """The body, or a refusal when it grows past :data:`MAX_BODY` or is too slow."""
        content = request.content
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_PATIENCE):
                while chunk := await content.readany():
                    size += len(chunk)
                    if size > MAX_BODY:
                        too_large = f"body over {MAX_BODY} bytes"
                        return b"", self._refuse(request, 413, "too_large", too_large)
                    chunks.append(chunk)
        except TimeoutError:
            return b"", self._refuse(request, 408, "timeout", "the body did not arrive in time")
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), None


def _tls_for(settings: WebhookSettings) -> Tls:
    """The serving certificate (generated in dev mode) and the client CA, loaded."""
    cert_dir = settings.cert_dir
    if settings.dev:
        ensure_dev_certificates(cert_dir=cert_dir, host=settings.host)
    cert, key = cert_dir / _CERT, cert_dir / _KEY
    if not (cert.exists() and key.exists()):
        raise ConfigurationError(
            f"no webhook certificate: {cert} and {key} must exist (mount the chart's "
            "Secret there, or use --dev-webhook for a local cluster)"
        )
    if settings.client_ca is not None and not settings.client_ca.is_file():
        raise ConfigurationError(f"--webhook-client-ca {settings.client_ca}: no such file")
    if settings.client_names and settings.client_ca is None:
        raise ConfigurationError("--webhook-client-names needs --webhook-client-ca")
    return Tls(cert=cert, key=key, client_ca=settings.client_ca)


async def _reload_forever(tls: Tls) -> None:
    while True:
        await asyncio.sleep(RELOAD_INTERVAL)
        tls.reload_if_changed()


@contextlib.asynccontextmanager
async def serving(
    settings: WebhookSettings,
    *,
    admit: Admit,
    kinds: Collection[tuple[str, str]],
) -> AsyncIterator[int]:
    """Serve the webhook while the block runs; yields the bound port.

    ``kinds`` are the (group, kind) pairs ``admit`` handles; reviews of any other kind are
    admitted without asking it. Listens on ``--webhook-host`` in dev mode, else on
    ``--webhook-listen``. Raises :class:`~dbquota.errors.ConfigurationError` when the TLS
    files are missing or unusable.
    """
    tls = _tls_for(settings)
    rejections = Rejections()
    server = web.Server(
        _Server(
            admit=admit, kinds=kinds, client_names=settings.client_names, rejections=rejections
        ),
        access_log=None,
        logger=_HttpLog(rejections),
        keepalive_timeout=IDLE_TIMEOUT,
        lingering_time=0,  # a refused body is not drained: the connection closes
    )
    runner = web.ServerRunner(server, shutdown_timeout=STOP_PATIENCE)
    await runner.setup()
    reloader: asyncio.Task[None] | None = None
    try:
        host = settings.host if settings.dev else settings.listen
        site = web.TCPSite(runner, host, settings.port, ssl_context=tls.context)
        await site.start()
        reloader = asyncio.create_task(_reload_forever(tls), name="webhook certificates")
        port = int(runner.addresses[0][1])
        logger.info(
            "serving the admission webhook on https://%s:%d%s (client certificates %s)",
            host,
            port,
            PATH,
            "required" if settings.client_ca else "not asked for",
        )
        yield port
    finally:
        if reloader is not None:
            reloader.cancel()
        await runner.cleanup()
