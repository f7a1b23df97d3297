"""HTTP/2 for the admission webhook: every review the apiserver sends on one connection.

Why: over HTTP/1.1 a connection carries one review at a time, so the apiserver opens a
connection per review in flight and keeps at most 25 idle ones (client-go's transport).
When reviews in flight outnumber that, every extra one costs a new TLS handshake (with the
client certificate checked), and the handshakes take the CPU the answers need: at 150
creates per second on a 2-core machine, handshakes were half the operator's CPU and the
connections swung between 25 and 560 (``bench/README.md``). Over HTTP/2 the apiserver
multiplexes all of them on one connection, as Go's client does by default when the server
offers ``h2`` in ALPN.

:class:`H2Connection` is the :class:`asyncio.Protocol` for a connection that negotiated
``h2``; :mod:`dbquota.handlers.webhook` switches to it right after the handshake and keeps
HTTP/1.1 for every other client. It speaks HTTP/2 through the ``h2`` state machine (the
python-hyper project's; it does no I/O) and answers each stream through the same steps as
HTTP/1.1 (``webhook.triage`` then ``webhook.answer``): the same limits (a body over
``max_body`` gets 413 and its stream is reset; a request not complete ``patience`` seconds
after it began gets 408), the same refusals and counters. Streams are answered as their
admissions finish, in any order, as HTTP/2 allows; flow control is honoured both ways.
Written here rather than taken from a server library because the webhook's own server
(httptools, one protocol object per connection) is what keeps a review under a
millisecond; this adds only the framing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from dbquota.domain import reviews

MAX_STREAMS = 1000
"""Streams one connection may have open at once (the apiserver opens another connection
beyond that)."""


CONNECTION_WINDOW = 16 * 1024 * 1024
"""Bytes of request bodies the apiserver may have in flight on one connection (HTTP/2's
default, 64 KiB, would hold reviews back while earlier ones are read)."""


class Response(Protocol):
    """What the webhook answers a request with."""

    status: int
    body: bytes
    content_type: bytes


class Webhook(Protocol):
    """The part of the webhook server every connection shares."""

    connections: set[Any]
    tasks: set[asyncio.Task[None]]

    def refuse(self, peer: str, status: int, reason: str, text: str) -> Any: ...

    def triage(self, request: Any, *, peer: str, client_ok: bool) -> Any: ...

    async def answer(self, review: reviews.Review) -> Any: ...


@dataclass
class _Stream:
    method: bytes = b""
    target: bytes = b""
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    deadline: float = 0.0
    answered: bool = False


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection: streams decoded, triaged and answered as they complete."""

    def __init__(
        self,
        webhook: Webhook,
        *,
        peer: str,
        client_ok: bool,
        make_request: Callable[..., Any],
        max_body: int,
        patience: float,
        idle_timeout: float,
    ) -> None:
        self._webhook = webhook
        self._peer = peer
        self._client_ok = client_ok
        self._make_request = make_request
        self._max_body = max_body
        self._patience = patience
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self._streams: dict[int, _Stream] = {}
        self._pending: dict[int, bytes] = {}
        """Answer bytes a stream's flow-control window did not let out yet."""
        self._transport: asyncio.Transport | None = None
        self._busy = 0
        self._closing = False
        self._stopping = False
        self.deadline = self._loop.time() + idle_timeout

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self._max_body,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW)
        self._flush()
        self._webhook.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._streams.clear()
        self._pending.clear()
        self._webhook.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._webhook.refuse(self._peer, 400, "http", "unparsable HTTP/2")
            self._close()
            return
        for event in events:
            self._on(event)
        self._flush()

    def eof_received(self) -> bool | None:
        return None

    # -- events

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._begin(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._streams.pop(event.stream_id, None)
            self._pending.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            self._resume(event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _begin(self, event: h2.events.RequestReceived) -> None:
        headers = dict(event.headers or [])
        self._streams[event.stream_id] = _Stream(
            method=bytes(headers.get(b":method", b"")),
            target=bytes(headers.get(b":path", b"")),
            deadline=self._loop.time() + self._patience,
        )

    def _data(self, event: h2.events.DataReceived) -> None:
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is None or stream.answered:
            return
        stream.size += len(event.data or b"")
        if stream.size > self._max_body:
            text = f"body over {self._max_body} bytes"
            self._respond(event.stream_id, self._webhook.refuse(self._peer, 413, "too_large", text))
            return
        stream.body.append(event.data or b"")

    def _complete(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.answered:
            return
        if self._stopping:  # the client retries a refused stream elsewhere
            self._streams.pop(stream_id, None)
            self._h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        request = self._make_request(
            method=stream.method,
            target=stream.target,
            body=b"".join(stream.body),
            keep_alive=True,
        )
        stream.body = []
        outcome = self._webhook.triage(request, peer=self._peer, client_ok=self._client_ok)
        if isinstance(outcome, reviews.Review):
            stream.answered = True  # its answer is on the way; the deadline no longer applies
            self._busy += 1
            task = self._loop.create_task(self._admit(stream_id, outcome))
            self._webhook.tasks.add(task)
            task.add_done_callback(self._webhook.tasks.discard)
        else:
            self._respond(stream_id, outcome)

    async def _admit(self, stream_id: int, review: reviews.Review) -> None:
        try:
            response = await self._webhook.answer(review)
        finally:
            self._busy -= 1
        if not self._closing:
            self._respond(stream_id, response)
            if self._stopping and not self._busy:
                self._h2.close_connection()
                self._flush()
                self._close()
            self._flush()

    # -- answering

    def _respond(self, stream_id: int, response: Response) -> None:
        """Headers and body of one answer; the stream ends with it (reset if the client
        was still sending)."""
        stream = self._streams.get(stream_id)
        if stream is None or self._closing:
            return
        stream.answered = True
        headers = [
            (b":status", str(response.status).encode()),
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
        ]
        try:
            self._h2.send_headers(stream_id, headers)
        except h2.exceptions.StreamClosedError:
            self._streams.pop(stream_id, None)
            return
        self._pending[stream_id] = response.body
        self._resume(stream_id)

    def _resume(self, stream_id: int) -> None:
        """Send what the flow-control windows allow of the pending answers (one stream's,
        or every stream's when the connection's window opened)."""
        ids = list(self._pending) if stream_id == 0 else [stream_id]
        for sid in ids:
            body = self._pending.get(sid)
            if body is None:
                continue
            try:
                while body:
                    window = min(
                        self._h2.local_flow_control_window(sid),
                        self._h2.max_outbound_frame_size,
                    )
                    if window <= 0:
                        break
                    self._h2.send_data(sid, body[:window])
                    body = body[window:]
                if body:
                    self._pending[sid] = body
                    continue
                del self._pending[sid]
                self._h2.end_stream(sid)
                stream = self._streams.pop(sid, None)
                if stream is not None and stream.size > self._max_body:  # still sending
                    self._h2.reset_stream(sid, error_code=h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:
                self._pending.pop(sid, None)
                self._streams.pop(sid, None)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    # -- what the server's sweep and stop ask of every connection

    def expire(self, now: float) -> None:
        """A stream not complete in time gets 408; an idle connection is closed."""
        if self._closing:
            return
        late = [sid for sid, s in self._streams.items() if not s.answered and now >= s.deadline]
        for sid in late:
            text = "the request did not arrive in time"
            self._respond(sid, self._webhook.refuse(self._peer, 408, "timeout", text))
        if late:
            self._flush()
        if not self._streams and not self._busy:
            if now >= self.deadline:
                self._h2.close_connection()
                self._flush()
                self._close()
        else:
            self.deadline = now + self._idle_timeout

    def stop(self) -> None:
        """Refuse new streams; once the answers in flight are written, say GOAWAY and close
        (at once when none is in flight). Some clients fail every open stream on a GOAWAY,
        so it waits for the last answer."""
        self._stopping = True
        if self._closing or self._busy:
            return
        self._h2.close_connection()
        self._flush()
        self._close()

    def abort(self) -> None:
        """Close at once, dropping whatever was not written."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
