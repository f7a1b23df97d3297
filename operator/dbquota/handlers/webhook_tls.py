"""The admission webhook's TLS: certificates made for dev mode, contexts reloaded from files.

:func:`tls_for` checks the settings' files and builds a :class:`Tls`, whose listening
context hands every new handshake the context most recently built from the files (its SNI
callback; OpenSSL calls it at every handshake, with or without SNI);
:func:`reload_forever` looks at the files' modification times every
:data:`RELOAD_INTERVAL` seconds. With ``--webhook-client-ca`` the contexts require a client
certificate signed by that bundle; ALPN offers ``h2`` unless ``--no-webhook-http2``.
:func:`ensure_dev_certificates` makes a CA and a serving certificate once, for dev mode
and the tests. Used by :mod:`dbquota.handlers.webhook`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path
from typing import Any, Final

from dbquota.errors import ConfigurationError
from dbquota.kits import certs
from dbquota.settings import WebhookSettings

logger = logging.getLogger(__name__)

RELOAD_INTERVAL: Final = 3.0
"""Seconds between two looks at the certificate files' modification times."""

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

    def __init__(
        self, *, cert: Path, key: Path, client_ca: Path | None, http2: bool = True
    ) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._alpn = ["h2", "http/1.1"] if http2 else ["http/1.1"]
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
        context.set_alpn_protocols(self._alpn)
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


def tls_for(settings: WebhookSettings) -> Tls:
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
    return Tls(cert=cert, key=key, client_ca=settings.client_ca, http2=settings.http2)


async def reload_forever(tls: Tls) -> None:
    """Look at the files every :data:`RELOAD_INTERVAL`. A look that fails in a way
    :meth:`Tls.reload_if_changed` does not expect (a bug) is logged and the next look goes
    on: had it ended the loop, certificates the kubelet rotates would no longer be picked
    up, and the webhook would go on serving the old ones until they expired."""
    while True:
        await asyncio.sleep(RELOAD_INTERVAL)
        try:
            tls.reload_if_changed()
        except Exception:
            logger.exception(
                "looking at the webhook's TLS files failed; looking again in %gs",
                RELOAD_INTERVAL,
            )
