"""The admission webhook's HTTPS server: ``POST /validate-claims``, served by dbquota itself.

``async with webhook.serving(settings.webhook, admit=..., kinds=...) as port:`` listens
until the block ends, then stops accepting, lets the reviews in flight finish (at most
:data:`STOP_PATIENCE` seconds) and closes. :mod:`dbquota.handlers.operating` enters it once
the runtime is built, with an ``admit`` that calls admission; nothing here knows about
quotas. Each request, in this order:

1. another path gets 404, another method 405;
2. with ``--webhook-client-names``, a client certificate carrying none of those names
   (CN or SAN) gets 403;
3. a body over :data:`MAX_BODY` bytes (Kubernetes objects are at most 1.5 MiB and a review
   carries two) gets 413, an HTTP/1.1 head over :data:`_MAX_HEAD` bytes 431, a request not
   complete :data:`BODY_PATIENCE` seconds after its first byte 408, HTTP that cannot be
   parsed 400 (each closes the connection), and a body whose bytes would take what all
   connections hold past :data:`MAX_HELD` gets 503 (HTTP/1.1 closes the connection; HTTP/2
   answers that stream only);
4. the body is decoded (:func:`dbquota.domain.reviews.decode`): not an AdmissionReview
   gets 400 with the short fixed message (``malformed AdmissionReview: request.uid
   missing``), never the input or an exception's text;
5. a write of the status of a kind in ``owned`` (a DatabaseClaim's holds the price every
   quota of its namespace counts it at) is admitted only if it changes nothing there:
   the configuration sends this webhook only the status writes of users other than
   dbquota (its ``matchConditions``), so any other is a tenant pinning or lowering its
   own claim's price. dbquota's own writes (``own_user``, should one arrive: a
   configuration made by hand) are admitted. Denied with 403 and the user's name, counted in
   ``dbquota_webhook_status_writes_denied_total`` and logged as refusals are; any
   operation but CREATE and UPDATE, and any kind not in ``kinds``, is admitted at once;
6. else ``admit(review)`` is awaited and its :class:`~dbquota.domain.reviews.Answer`
   encoded. An exception there is a bug: the review is denied with the fixed message
   :data:`INTERNAL_ERROR` and the exception logged once at ERROR with its traceback.
   The apiserver says in the request how long it waits (``?timeout=10s``: the webhook's
   ``timeoutSeconds``, or less if its own request has less left). An admission not
   decided shortly before that (:func:`patience`) is cancelled, and the review denied
   with 503 and a message to try again (``dbquota_webhook_late_reviews_total``, logged
   as a refusal is): a denial that says why, rather than a call the apiserver gives up
   on, which fails the create ("failed calling webhook") under ``failurePolicy: Fail``
   and admits it unchecked under ``Ignore``;
7. a review whose client gives up before its answer anyway (it resets the HTTP/2 stream
   or closes the connection: the apiserver does so at its timeout) has its admission
   cancelled, and is counted in
   ``dbquota_webhook_abandoned_reviews_total``. An admission still queued for a write of
   its quota then reserves nothing (:mod:`dbquota.services.reserving`): the create it was
   for has failed.

Every refused request (1-4) is counted in ``dbquota_webhook_rejected_requests_total
{reason}`` and logged as one WARNING line without traceback, at most one line per second
(the next line says how many were not logged), as is every late review (6). Nothing is
logged per request otherwise. A client that takes no answer (its connection holds more than
the transport's high-water mark unwritten) is read no more until it does, and after
``webhook_h2.SEND_PATIENCE`` seconds (30) is cut off, counted as ``stalled``; so is a
connection that never lets itself be closed.

A client that offers ``h2`` in ALPN (the apiserver does) gets HTTP/2 (unless
``--no-webhook-http2``)
(:mod:`dbquota.handlers.webhook_h2`): every review in flight on one connection, so that a
burst costs no new TLS handshakes. Any other client gets HTTP/1.1, spoken on an asyncio
protocol with httptools (the llhttp parser, as aiohttp's own C parser): keep-alive,
pipelined requests answered in order, one review admitted at a time per connection (the
apiserver sends one per connection), answers without a task when no admission is needed.
aiohttp's low-level server did the same job for about 0.1 ms more CPU per review
(``bench/README.md``), a sixth of the budget of a whole admission.

A connection serves new reviews for ``--webhook-max-connection-age`` (60 s, less up to a
tenth drawn per connection; 0: for ever), as gRPC's ``MaxConnectionAge``: then HTTP/2
says GOAWAY (:mod:`dbquota.handlers.webhook_h2`) and HTTP/1.1 answers its next request
with ``Connection: close``; the reviews under way are answered, and the apiserver opens a
new connection, which a Service may send to another replica. Without it, an apiserver's
one HTTP/2 connection would stay on the replica it first reached, however many were
added later. An idle HTTP/1.1 connection past its age is left to the client's idle
timeout (closing it could race a request the client is sending on it).

TLS (at least 1.2; :mod:`dbquota.handlers.webhook_tls`) uses ``tls.crt`` and ``tls.key``
of ``--webhook-cert-dir`` (generated there in dev mode), reloaded within seconds when they
change: connections already open keep their certificate, new ones get the new one. With
``--webhook-client-ca`` the server requires a client certificate signed by that bundle
(reloaded the same way): only the apiserver, configured with a client certificate for
webhooks (docs/security.md), gets past the handshake.

Size: the server's steps, its HTTP/1.1 connection and its shutdown in one module, because
each refusal, limit and deadline of the module docstring is one place in it that a reader
checks against the docstring; TLS and HTTP/2 are modules of their own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import httptools

from dbquota.adapters import metrics
from dbquota.domain import quotas, reviews
from dbquota.errors import MalformedReview
from dbquota.handlers import webhook_h2
from dbquota.handlers.webhook_tls import reload_forever, tls_for
from dbquota.settings import WebhookSettings

logger = logging.getLogger(__name__)

Admit = Callable[[reviews.Review], Awaitable[reviews.Answer]]
"""What the server asks about each review it does not answer itself."""

PATH: Final = "/validate-claims"
"""The one path served (the Helm chart's ValidatingWebhookConfiguration calls it)."""
MAX_BODY: Final = 4 * 1024 * 1024
"""Bytes of the largest body read; a larger one is refused with 413."""
MAX_HELD: Final = 64 * 1024 * 1024
"""Request body bytes held at once across every connection, read but not yet decoded. Each
connection alone is bounded (HTTP/1.1: :data:`_MAX_QUEUED` requests; HTTP/2: its flow-
control window), but not their number: without a client CA or a NetworkPolicy, anyone who
reaches the port could open hundreds and make the operator hold gigabytes. The apiserver's
reviews are a few KiB each, so legitimate traffic stays far below."""
BODY_PATIENCE: Final = 10.0
"""Seconds a request may take to arrive from its first byte (408 after that), and a TLS
handshake to complete."""
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
LATE_MARGIN: Final = 0.1
"""Share of the apiserver's timeout left for the answer to reach it (:func:`patience`)."""
LATE_MARGIN_MIN: Final = 0.25
"""Seconds left for that at least, while half the timeout remains for the admission."""


@functools.lru_cache(maxsize=16)
def patience(target: bytes) -> float | None:
    """Seconds an admission may take for the request ``target``, from the apiserver's
    ``?timeout=`` (a Go duration): that timeout less :data:`LATE_MARGIN` of it, or less
    :data:`LATE_MARGIN_MIN` s if that is more, but never under half of it (``5s`` gives
    4.5, ``1s`` 0.75, ``100ms`` 0.05). None without a readable timeout (a client that sets
    none waits as long as it likes). Memoized: an apiserver sends the same target with
    every review, so this is read once, not once per review."""
    try:  # a target that is not ASCII, or a timeout that is not a duration: none
        query = target.partition(b"?")[2].decode("ascii")
        value = dict(urllib.parse.parse_qsl(query)).get("timeout")
        timeout = quotas.parse_duration(value) if value is not None else 0.0
    except (UnicodeDecodeError, ValueError):
        return None
    if timeout <= 0:
        return None
    return max(timeout / 2, timeout - max(LATE_MARGIN_MIN, timeout * LATE_MARGIN))


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
        self._log("refused a request from", peer, detail)

    def status(self, *, peer: str, detail: str) -> None:
        """One status write denied (step 5)."""
        metrics.webhook_status_denied.inc()
        self._log("denied a status write from", peer, detail)

    def late(self, *, peer: str, detail: str) -> None:
        """One review denied because it was not decided in time (step 6)."""
        metrics.webhook_late.inc()
        self._log("denied a late review from", peer, detail)

    def _log(self, what: str, peer: str, detail: str) -> None:
        now = self._clock()
        if now - self._last < self._interval:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        logger.warning("webhook %s %s: %s%s", what, peer, detail, more)
        self._last, self._unlogged = now, 0


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


_PHRASES: Final = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}
_JSON, _TEXT = b"application/json", b"text/plain; charset=utf-8"


@dataclass(frozen=True)
class _Request:
    """One complete HTTP request, as far as the webhook reads it."""

    method: bytes
    target: bytes
    body: bytes
    keep_alive: bool


@dataclass(frozen=True)
class _Response:
    """One answer; :meth:`encode` writes it as HTTP/1.1."""

    status: int
    body: bytes
    content_type: bytes = _TEXT
    close: bool = False

    def encode(self) -> bytes:
        allow = b"Allow: POST\r\n" if self.status == 405 else b""
        connection = b"Connection: close\r\n" if self.close else b""
        return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
            self.status,
            _PHRASES.get(self.status, b"Unknown"),
            self.content_type,
            len(self.body),
            allow,
            connection,
            self.body,
        )


class _Webhook:
    """What every connection shares: the steps of the module docstring, and its tasks."""

    def __init__(
        self,
        *,
        admit: Admit,
        kinds: Collection[tuple[str, str]],
        client_names: Iterable[str],
        rejections: Rejections,
        max_age: float = 0.0,
    ) -> None:
        self._admit = admit
        self._kinds = frozenset(kinds)
        self._owned: frozenset[tuple[str, str]] = frozenset()
        self._own_user = ""
        self.client_names = frozenset(client_names)
        self.max_age = max_age
        self.reject = rejections
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False
        """Past the stop's patience: admissions still running are cancelled by us, not
        abandoned by their clients."""
        self.held = 0
        """Request body bytes every connection holds (:data:`MAX_HELD`)."""

    def guard_status(self, owned: Collection[tuple[str, str]], *, own_user: str) -> None:
        """Deny writes of the status of the ``owned`` kinds by anyone but ``own_user``
        that would change it (step 5)."""
        self._owned, self._own_user = frozenset(owned), own_user

    def hold(self, size: int) -> bool:
        """Count ``size`` more body bytes held; False, counting nothing, past :data:`MAX_HELD`."""
        if self.held + size > MAX_HELD:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        """``size`` body bytes no longer held (decoded, dropped, or their connection gone)."""
        self.held -= size

    def refuse(self, peer: str, status: int, reason: str, text: str) -> _Response:
        self.reject(reason, peer=peer, detail=f"{status} {text}")
        close = status in (400, 408, 413, 503) and reason != "malformed"
        return _Response(status=status, body=text.encode() + b"\n", close=close)

    def abandon(self, task: asyncio.Task[None]) -> None:
        """The client gave up on a review before its answer: cancel its admission (step 7)."""
        if not task.done():
            task.cancel()
            if not self.stopped:
                metrics.webhook_abandoned.inc()

    def triage(
        self, request: _Request, *, peer: str, client_ok: bool
    ) -> _Response | reviews.Review:
        """The answer to ``request`` when it needs no admission, else its review."""
        if request.target.split(b"?", 1)[0] != _PATH:
            return self.refuse(peer, 404, "path", f"not found; the webhook is at {PATH}")
        if request.method != b"POST":
            return self.refuse(peer, 405, "method", f"{PATH} takes POST only")
        if not client_ok:
            return self.refuse(peer, 403, "client", "client certificate name not allowed")
        try:
            review = reviews.decode(request.body)
        except MalformedReview as exc:
            return self.refuse(peer, 400, "malformed", str(exc))
        incoming = review.request
        if incoming.sub_resource == "status":
            answer = self._status(review, peer)
        elif incoming.operation in ("CREATE", "UPDATE") and (
            (incoming.kind.group, incoming.kind.kind) in self._kinds
        ):
            return review
        else:
            answer = _ADMITTED
        return _Response(200, reviews.encode(review, answer), _JSON)

    def _status(self, review: reviews.Review, peer: str) -> reviews.Answer:
        """The answer to a write of a status (step 5): admitted unless it changes the
        status of a kind dbquota owns."""
        incoming = review.request
        old = incoming.old_object.status if incoming.old_object is not None else None
        new = incoming.object.status if incoming.object is not None else None
        if (
            (incoming.kind.group, incoming.kind.kind) not in self._owned
            or old == new
            or (self._own_user and incoming.user_info.username == self._own_user)
        ):
            return _ADMITTED
        who = incoming.user_info.username or "an unnamed user"
        what = f"{incoming.kind.kind} {incoming.namespace}/{incoming.object_name}"
        self.reject.status(peer=peer, detail=f"{who} may not change the status of {what}")
        return reviews.Answer(
            allowed=False,
            code=403,
            message=(
                f"the status of {what} is written by dbquota only: it holds the price every "
                f"DatabaseQuota of the namespace counts the claim at; {who} may not change it"
            ),
        )

    async def answer(
        self, review: reviews.Review, *, target: bytes = b"", peer: str = ""
    ) -> _Response:
        """``admit``'s answer to ``review``; a fixed denial if it raises (a bug), a denial
        to try again if it takes longer than the request ``target`` allows (step 6)."""
        within = patience(target)
        limit = asyncio.timeout(within)
        try:
            async with limit:
                answer = await self._admit(review)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and limit.expired():
                answer = self._late(review, within, peer)
            else:
                incoming = review.request
                logger.exception(
                    "admission of %s %s/%s raised; denied it with %r",
                    incoming.kind.kind,
                    incoming.namespace,
                    incoming.object_name,
                    INTERNAL_ERROR.message,
                )
                answer = INTERNAL_ERROR
        return _Response(200, reviews.encode(review, answer), _JSON)

    def _late(self, review: reviews.Review, within: float | None, peer: str) -> reviews.Answer:
        """The denial of a review not decided ``within`` seconds (step 6), counted and logged."""
        incoming = review.request
        what = f"{incoming.kind.kind} {incoming.namespace}/{incoming.object_name}"
        self.reject.late(peer=peer, detail=f"{what} not decided within {within:.2f}s")
        return reviews.Answer(
            allowed=False,
            message=(
                f"dbquota could not decide now: {what} was not decided within the "
                "apiserver's webhook timeout (it was still waiting on its namespace's "
                "DatabaseQuota: a write of its status, or budget another replica holds); "
                "try again"
            ),
            code=503,
        )


_PATH: Final = PATH.encode()
_ADMITTED: Final = reviews.Answer(allowed=True)
_MAX_TARGET = 8192
"""Bytes of the longest request target read (the apiserver's is
``/validate-claims?timeout=10s``)."""
_MAX_HEAD = 64 * 1024
"""Bytes of a request's head (request line and headers) read before it ends; more gets
431. httptools joins the pieces of one header as they arrive, a copy of all of it per read:
an endless header would take memory and CPU (20 MiB: 2 s, growing as its square) until the
request's patience. HTTP/2's header block has the same bound (``MAX_HEADER_BLOCK``); the
apiserver's heads are well under 1 KiB."""
_MAX_QUEUED = 8
"""Pipelined requests queued on one connection before it stops reading."""


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 parsed by httptools, answered in order.

    Requests on a connection are answered one after another (pipelined ones wait, and
    reading pauses when :data:`_MAX_QUEUED` wait, or while the client does not take its
    answers: :meth:`pause_writing`). A request that needs admission runs as a task;
    everything else is answered at once, without one. Deadlines are plain numbers that
    :func:`_sweep_forever` checks every second: a request must arrive within
    :data:`BODY_PATIENCE` seconds of its first byte (else 408), an idle connection closes
    after :data:`IDLE_TIMEOUT`, and one whose client takes nothing written for
    ``webhook_h2.SEND_PATIENCE`` seconds (writes paused, or closing) is aborted.
    """

    def __init__(self, webhook: _Webhook) -> None:
        self._webhook = webhook
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._peer = "?"
        self._client_ok = True
        self._target: list[bytes] = []
        self._target_size = 0
        self._body: list[bytes] = []
        self._size = 0
        self._held = 0  # body bytes of this connection counted in the webhook's held
        self._shed = False  # a body did not fit in MAX_HELD: answer 503 and close
        self._in_message = False
        self._in_head = False  # the message's request line and headers are still coming
        self._head = 0  # bytes of those, counted by whole reads (_MAX_HEAD)
        self._expect = False
        self._queue: collections.deque[_Request] = collections.deque()
        self._busy = False
        self._admitting: asyncio.Task[None] | None = None  # the admission in flight
        self._paused = False
        self._blocked = False  # the client does not take its answers (pause_writing)
        self._hang_up = math.inf  # when to abort it for that, or for not letting it close
        self._closing = False
        self._stopping = False
        self.deadline = self._loop.time() + IDLE_TIMEOUT
        self._ends_at = self._loop.time() + webhook_h2.age_limit(webhook.max_age)

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._webhook.client_names:
            names = _names(transport.get_extra_info("peercert") or {})
            self._client_ok = bool(names & self._webhook.client_names)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() == "h2":
            self._closing = True  # this object is done: the connection speaks HTTP/2
            multiplexed = webhook_h2.H2Connection(
                self._webhook,
                peer=self._peer,
                client_ok=self._client_ok,
                make_request=_Request,
                max_body=MAX_BODY,
                patience=BODY_PATIENCE,
                idle_timeout=IDLE_TIMEOUT,
                max_age=self._webhook.max_age,
            )
            self._transport.set_protocol(multiplexed)
            multiplexed.connection_made(transport)
            return
        self._webhook.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._admitting is not None:  # the client gave up on it (the apiserver's timeout)
            self._webhook.abandon(self._admitting)
            self._admitting = None
        self._queue.clear()
        self._webhook.release(self._held)
        self._held = 0
        self._webhook.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._stopping:
            return
        in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            kind = "an upgrade" if isinstance(exc, httptools.HttpParserUpgrade) else "unparsable"
            self._fail(self._webhook.refuse(self._peer, 400, "http", f"{kind} HTTP request"))
            return
        if in_head and self._in_head:  # all of data was head
            self._head += len(data)
            if self._head > _MAX_HEAD:
                text = f"request head over {_MAX_HEAD} bytes"
                self._fail(self._webhook.refuse(self._peer, 431, "too_large", text))
                return
        if self._size > MAX_BODY:
            self._fail(
                self._webhook.refuse(self._peer, 413, "too_large", f"body over {MAX_BODY} bytes")
            )
            return
        if self._shed:
            self._fail(self._webhook.refuse(self._peer, 503, "busy", webhook_h2.BUSY))
            return
        if len(self._queue) >= _MAX_QUEUED and not self._paused:
            self._paused = True
            self._transport_or_fail().pause_reading()
        self._next()

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close once the answers are written

    def pause_writing(self) -> None:
        """The transport holds more than its high-water mark unwritten: the client reads
        slower than it sends. Read nothing more until that drains: a client that pipelines
        requests and reads no answer (a 404 is longer than its request) would otherwise
        make the server hold every answer."""
        self._blocked = True
        self._hang_up = min(self._hang_up, self._loop.time() + webhook_h2.SEND_PATIENCE)
        if not self._closing:
            self._transport_or_fail().pause_reading()

    def resume_writing(self) -> None:
        self._blocked = False
        if self._closing:
            return
        self._hang_up = math.inf
        if not self._paused:
            self._transport_or_fail().resume_reading()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._in_message = self._in_head = True
        self._head = 0
        self._target, self._target_size, self._body, self._size = [], 0, [], 0
        self.deadline = self._loop.time() + BODY_PATIENCE

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._expect:  # curl asks before a body over 1 KiB; the apiserver never does
            self._expect = False
            self._transport_or_fail().write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_url(self, url: bytes) -> None:
        self._target_size += len(url)
        if self._target_size > _MAX_TARGET:
            raise ValueError("request target too long")  # feed_data raises a parser error
        self._target.append(url)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= MAX_BODY and not self._shed:
            if self._webhook.hold(len(body)):
                self._held += len(body)
                self._body.append(body)
            else:
                self._shed = True

    def on_message_complete(self) -> None:
        self._in_message = False
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._queue.append(
            _Request(
                method=self._parser.get_method(),
                target=b"".join(self._target),
                body=body,
                keep_alive=self._parser.should_keep_alive(),
            )
        )
        self._body = []

    # -- answering

    def _transport_or_fail(self) -> asyncio.Transport:
        assert self._transport is not None, "no connection yet"
        return self._transport

    def _next(self) -> None:
        """Answer the queued requests in order, until one needs admission."""
        while not self._busy and self._queue and not self._closing:
            request = self._queue.popleft()
            self._held -= len(request.body)  # decoded by triage, not held after it
            self._webhook.release(len(request.body))
            outcome = self._webhook.triage(request, peer=self._peer, client_ok=self._client_ok)
            if isinstance(outcome, reviews.Review):
                self._busy = True
                task = self._loop.create_task(
                    self._admit(outcome, target=request.target, keep_alive=request.keep_alive)
                )
                self._webhook.tasks.add(task)
                task.add_done_callback(self._webhook.tasks.discard)
                self._admitting = task
                return
            self._send(outcome, keep_alive=request.keep_alive)
        if self._paused and len(self._queue) < _MAX_QUEUED // 2 and not self._closing:
            self._paused = False
            if not self._blocked:
                self._transport_or_fail().resume_reading()
        if not (self._busy or self._queue or self._in_message):
            self.deadline = self._loop.time() + IDLE_TIMEOUT

    async def _admit(self, review: reviews.Review, *, target: bytes, keep_alive: bool) -> None:
        response = await self._webhook.answer(review, target=target, peer=self._peer)
        self._busy = False
        self._admitting = None
        if not self._closing:
            self._send(response, keep_alive=keep_alive and not self._stopping)
            self._next()

    def _send(self, response: _Response, *, keep_alive: bool) -> None:
        transport = self._transport_or_fail()
        if transport.is_closing():
            return
        close = response.close or not keep_alive or self._loop.time() >= self._ends_at
        if close and not response.close:
            response = _Response(response.status, response.body, response.content_type, True)
        transport.write(response.encode())
        if close:
            self._close()

    def _fail(self, response: _Response) -> None:
        """Answer a request the connection cannot go on after, and close."""
        self._queue.clear()
        self._send(response, keep_alive=False)

    def expire(self, now: float) -> None:
        """Past its deadline: a request too slow to arrive gets 408; an idle one closes;
        one whose client has taken nothing written for a while is aborted."""
        if now >= self._hang_up:
            text = f"took nothing written for {webhook_h2.SEND_PATIENCE:g}s"
            self._webhook.refuse(self._peer, 408, "stalled", text)
            self.abort()
            return
        if self._busy or self._closing or now < self.deadline:
            return
        if self._in_message:
            text = "the request did not arrive in time"
            self._fail(self._webhook.refuse(self._peer, 408, "timeout", text))
        elif not self._queue:
            self._close()

    def _close(self) -> None:
        """Close once what is written is taken; aborted if it is not in time (:meth:`expire`)."""
        self._closing = True
        self._hang_up = min(self._hang_up, self._loop.time() + webhook_h2.SEND_PATIENCE)
        self._transport_or_fail().close()

    def stop(self) -> None:
        """Close now if idle, else right after the answer in flight; read nothing more."""
        self._stopping = True
        self._queue.clear()
        if not self._busy:
            self._close()

    def abort(self) -> None:
        """Close at once, dropping whatever was not written."""
        self._closing = True
        self._hang_up = math.inf
        self._transport_or_fail().abort()


SWEEP_EVERY = 1.0
"""Seconds between two checks of every connection's deadlines (:func:`_sweep_forever`)."""


async def _sweep_forever(webhook: _Webhook) -> None:
    """Check every connection's deadlines each :data:`SWEEP_EVERY` seconds, for good: the
    408s, idle closes, aborts of stalled clients and connection aging all hang on it."""
    loop = asyncio.get_running_loop()
    logged: set[tuple[str, str, int | None]] = set()
    while True:
        await asyncio.sleep(SWEEP_EVERY)
        now = loop.time()
        for connection in list(webhook.connections):
            _expire(webhook, connection, now=now, logged=logged)


def _expire(
    webhook: _Webhook,
    connection: _Connection,
    *,
    now: float,
    logged: set[tuple[str, str, int | None]],
) -> None:
    """One connection's deadlines. An error there (a bug) aborts that connection alone,
    logged with its traceback the first time it comes from that line of code and in one
    line after that (``logged``: where each came from), so that the sweep goes on."""
    try:
        connection.expire(now)
    except Exception as exc:  # one connection must not stop the sweep
        where = traceback.extract_tb(exc.__traceback__)[-1]
        origin = (type(exc).__name__, where.filename, where.lineno)
        if origin in logged:
            logger.warning(
                "checking a webhook connection's deadlines failed again (%r); aborting it", exc
            )
        else:
            logged.add(origin)
            logger.exception("checking a webhook connection's deadlines failed; aborting it")
        try:
            connection.abort()
        except Exception:  # noqa: BLE001 - said above; it is swept no more
            webhook.connections.discard(connection)


@contextlib.asynccontextmanager
async def serving(
    settings: WebhookSettings,
    *,
    admit: Admit,
    kinds: Collection[tuple[str, str]],
    owned: Collection[tuple[str, str]] = (),
    own_user: str = "",
) -> AsyncIterator[int]:
    """Serve the webhook while the block runs; yields the bound port.

    ``kinds``: the (group, kind) pairs ``admit`` handles (others are admitted unasked);
    ``owned``: those whose status only ``own_user``, dbquota, writes (step 5). Listens on
    ``--webhook-host`` in dev mode, else on ``--webhook-listen``; raises
    :class:`~dbquota.errors.ConfigurationError` when the TLS files are missing or unusable.
    """
    tls, names, age = tls_for(settings), settings.client_names, settings.max_connection_age
    webhook = _Webhook(
        admit=admit, kinds=kinds, client_names=names, rejections=Rejections(), max_age=age
    )
    webhook.guard_status(owned, own_user=own_user)
    host = settings.host if settings.dev else settings.listen
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(webhook),
        host,
        settings.port,
        ssl=tls.context,
        ssl_handshake_timeout=BODY_PATIENCE,
        reuse_address=True,
    )
    helpers = [
        asyncio.create_task(reload_forever(tls), name="webhook certificates"),
        asyncio.create_task(_sweep_forever(webhook), name="webhook deadlines"),
    ]
    try:
        port = int(server.sockets[0].getsockname()[1])
        logger.info(
            "serving the admission webhook on https://%s:%d%s (client certificates %s)",
            host,
            port,
            PATH,
            "required" if settings.client_ca else "not asked for",
        )
        yield port
    finally:
        server.close()
        for connection in list(webhook.connections):
            connection.stop()
        if webhook.tasks:
            await asyncio.wait(set(webhook.tasks), timeout=STOP_PATIENCE)
        for helper in helpers:
            helper.cancel()
        webhook.stopped = True
        for connection in list(webhook.connections):
            connection.abort()
        await server.wait_closed()
