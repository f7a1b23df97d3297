"""HTTP/2 for the admission webhook: every review the apiserver sends on one connection.

Why HTTP/2: over HTTP/1.1 a connection carries one review at a time, so the apiserver
opens a connection per review in flight and keeps at most 25 idle ones (client-go's
transport). When reviews in flight outnumber that, every extra one costs a new TLS
handshake (with the client certificate checked), and the handshakes take the CPU the
answers need: at 150 creates per second on a 2-core machine, handshakes were half the
operator's CPU and the connections swung between 25 and 560 (``bench/README.md``). Over
HTTP/2 the apiserver multiplexes all of them on one connection, as Go's client does by
default when the server offers ``h2`` in ALPN.

:class:`H2Connection` is the :class:`asyncio.Protocol` for a connection that negotiated
``h2``; :mod:`dbquota.handlers.webhook` switches to it right after the handshake and keeps
HTTP/1.1 for every other client. Each stream goes through the same steps as HTTP/1.1
(``webhook.triage`` then ``webhook.answer``): the same limits (a body over ``max_body``
gets 413 and its stream is reset; a request not complete ``patience`` seconds after it
began gets 408; a body that all connections together cannot hold, ``webhook.MAX_HELD``,
gets 503 on its stream alone), the same refusals and counters. Streams are answered as
their admissions finish, in any order, as HTTP/2 allows; flow control is honoured both ways.

Why the framing is written here (RFC 9113, server side only) and only HPACK is taken from
a library (``hpack``, the python-hyper project's): the webhook reads a request's method,
path and body, and answers with a status, two headers and a body. The ``h2`` state machine
did the same with every check and event object of a general HTTP/2 endpoint, and logged
each frame's ``repr`` to a logger that discards it: 0.64 to 0.69 ms of server CPU per review
over HTTP/2, against 0.26 to 0.29 ms over HTTP/1.1, and 0.36 to 0.38 ms with this framing
(``bench/webhook_server.py``: the server alone, an ``admit`` that answers at once, 200
reviews/s; ``bench/README.md``). This keeps what the
webhook needs of the protocol: the connection preface, SETTINGS (acknowledged; the peer's
window size and frame size honoured), PING, GOAWAY, RST_STREAM, WINDOW_UPDATE both ways,
HEADERS with CONTINUATION and padding, DATA with padding; PRIORITY and unknown frame types
are ignored, as the RFC asks. A peer that breaks the protocol (a bad preface, a frame too
long or malformed, a stream id out of order, a header block that does not decode, a flow
control window overrun) gets GOAWAY with the error code the RFC names, and the connection
closes; a stream-level error resets that stream only.

What a hostile client can make it spend is bounded (docs/security.md lists each class):
streams it resets, or makes this side reset, before their answer (Rapid Reset, CVE-2023-44487,
and MadeYouReset), SETTINGS frames and the CONTINUATIONs of one header block each have a
budget, past which it gets GOAWAY ENHANCE_YOUR_CALM; a header block decodes to at most
:data:`MAX_HEADER_LIST` bytes (an HPACK bomb gets COMPRESSION_ERROR); a connection
WINDOW_UPDATE costs what it lets out, not a pass over every stream; the connection stops
reading while its client does not take what is written (``pause_writing``), so a PING or
SETTINGS flood cannot make it hold answers without bound; and an answer the client does
not take within :data:`SEND_PATIENCE` is given up (its stream reset, or the connection
aborted). A connection past its age
(``--webhook-max-connection-age``) says GOAWAY too: at once when nothing is in flight,
else in the RFC's two steps (:meth:`H2Connection._drain`) once its streams are answered;
it closes a second after its last GOAWAY, unless the client closes it first.

Size: the server side of RFC 9113 in one module, one method per frame type, so that a
reader checks each against its section of the RFC in one place; the rest of the webhook
(what a request is and how it is answered) stays in :mod:`dbquota.handlers.webhook`.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import hpack

from dbquota.domain import reviews

MAX_STREAMS: Final = 1000
"""Streams one connection may have open at once (the apiserver opens another connection
beyond that)."""
CONNECTION_WINDOW: Final = 16 * 1024 * 1024
"""Bytes of request bodies the apiserver may have in flight on one connection (HTTP/2's
default, 64 KiB, would hold reviews back while earlier ones are read). It is given back
as requests are read whole (or dropped), not as their bytes arrive, so it also bounds the
bodies one connection makes the server hold."""
BUSY: Final = "the webhook holds too many request bytes at once; try again"
"""The 503's text for a body that all connections cannot hold (``webhook.MAX_HELD``)."""
MAX_HEADER_BLOCK: Final = 64 * 1024
"""Bytes of one request's encoded header block (HEADERS and its CONTINUATIONs)."""
MAX_HEADER_LIST: Final = MAX_HEADER_BLOCK
"""Bytes a header block may decode to, counted as RFC 7541 does (name, value and 32 more
per field): a few bytes can name a dynamic-table entry of 4 KiB thousands of times (an
HPACK bomb). ``hpack`` stops there by default too (64 KiB); set here so that no change of
the library's default loosens it. The apiserver's headers are well under 1 KiB."""
MAX_CONTINUATIONS: Final = 8
"""CONTINUATION frames one header block may have. :data:`MAX_HEADER_BLOCK` bounds its
bytes, but empty CONTINUATIONs add none: without a count a client could send them for
ever, each one read and handled (CVE-2024-27316 and its family). A block of
:data:`MAX_HEADER_BLOCK` bytes in frames of the RFC's default 16 KiB takes 4; 8 is
nghttp2's limit (Apache httpd's, curl's, Node's)."""
RESET_BURST: Final = 1000
"""Streams still under way here (read, admitted or answered in part) that a connection may
see end early, reset by the client or by this side for the client's error: that many at
once (every stream :data:`MAX_STREAMS` allows), then :data:`RESET_RATE` a second; past
that, GOAWAY ENHANCE_YOUR_CALM. A stream reset is no longer one of the :data:`MAX_STREAMS`,
so without a budget a client could open and reset streams without end, each costing its
triage and the start of its admission (Rapid Reset, CVE-2023-44487; MadeYouReset when it
makes this side reset them). nghttp2's values; the apiserver resets a stream only when its
own caller gives up, or at its timeout (which ``webhook.patience`` answers before)."""
RESET_RATE: Final = 33.0
"""Streams a second that :data:`RESET_BURST` refills with."""
SETTINGS_BURST: Final = 100
"""SETTINGS frames (not acknowledgements) a connection may send at once, then
:data:`SETTINGS_RATE` a second; past that, GOAWAY ENHANCE_YOUR_CALM. Each is acknowledged,
and one that changes SETTINGS_INITIAL_WINDOW_SIZE moves the window of every open stream
(RFC 9113, 6.9.2), up to :data:`MAX_STREAMS` of them: a pass over every stream for 15
bytes read. Go's client, the apiserver's, sends one per connection."""
SETTINGS_RATE: Final = 10.0
"""SETTINGS frames a second that :data:`SETTINGS_BURST` refills with."""
SEND_PATIENCE: Final = 30.0
"""Seconds an answer may wait for the client to take it: for the stream's flow-control
window to open (then the stream is reset, CANCEL), or for the connection's writes to drain
(then the connection is aborted; HTTP/1.1 alike). The apiserver waits at most 30 s for a
webhook (``timeoutSeconds``' maximum) and resets the stream then: an answer still held
later serves no one, and a client that reads nothing would hold its memory and socket for
ever."""
DRAIN_GRACE: Final = 1.0
"""Seconds after the first GOAWAY of a connection past its age before the last one, so
that streams the client opened before it saw the first are still read; and after the last
one before the connection closes, unless the client closes it first."""
DRAIN_PATIENCE: Final = 30.0
"""Seconds a connection past its age keeps serving a client that still opens streams
after its GOAWAY; then new streams are refused and it closes after the last answer."""

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_MAX_FRAME: Final = 16_384  # ours, the RFC's default: a longer frame is an error
_DEFAULT_WINDOW: Final = 65_535
_MAX_WINDOW: Final = 2**31 - 1
_MAX_STREAM_ID: Final = 2**31 - 1
_TABLE: Final = 4096  # the RFC's default HPACK table: our answers' encoder uses no more

# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Error codes (section 7).
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB
# Settings (section 6.5.2).
_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS = 1, 2, 3
_INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = 4, 5

_HEAD = struct.Struct(">HBBBI")  # a 24-bit length as 16 + 8 bits, type, flags, stream id
_WORD = struct.Struct(">I")


class ProtocolViolation(Exception):
    """The peer broke the protocol: GOAWAY with ``code``, then close."""

    reason = "http"
    """The refusal's label in ``dbquota_webhook_rejected_requests_total``."""
    what = "unparsable HTTP/2"

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class Flood(ProtocolViolation):
    """The peer sent more of something than any client needs (a budget above):
    GOAWAY ENHANCE_YOUR_CALM (RFC 9113, 5.4.1), then close."""

    reason = "flood"
    what = "HTTP/2 flood"

    def __init__(self, why: str) -> None:
        super().__init__(ENHANCE_YOUR_CALM, why)


class _Budget:
    """A token bucket: ``burst`` spendings at once, then ``rate`` a second."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self._burst, self._rate, self._tokens, self._at = burst, rate, burst, now

    def spend(self, now: float) -> bool:
        """One spending at ``now``; False, spending nothing, when none is left."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


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

    def hold(self, size: int) -> bool: ...

    def release(self, size: int) -> None: ...

    def triage(self, request: Any, *, peer: str, client_ok: bool) -> Any: ...

    async def answer(self, review: reviews.Review, *, target: bytes, peer: str) -> Any: ...

    def abandon(self, task: asyncio.Task[None]) -> None: ...


@dataclass
class _Stream:
    method: bytes = b""
    target: bytes = b""
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    deadline: float = 0.0
    answered: bool = False
    receiving: bool = True
    """The client has not ended the stream yet."""
    window: int = _DEFAULT_WINDOW
    """Bytes of answer the client lets us send on this stream."""
    unacknowledged: int = 0
    """Body bytes received since this stream's window was last replenished."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, serialised."""
    size = len(payload)
    return _HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def age_limit(max_age: float) -> float:
    """How long a connection may serve new requests: ``max_age`` seconds less up to a
    tenth, drawn per connection, so that the connections of one client opened together
    do not all end together (``inf`` when ``max_age`` is 0: never)."""
    if max_age <= 0:
        return math.inf
    return max_age * random.uniform(0.9, 1.0)  # noqa: S311 - spreading, not a secret


def _unpadded(payload: bytes, flags: int) -> bytes:
    """A DATA or HEADERS payload without its padding (PROTOCOL_ERROR if it does not fit)."""
    if not flags & PADDED:
        return payload
    if not payload:
        raise ProtocolViolation(FRAME_SIZE_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolViolation(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]


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
        max_age: float = 0.0,
    ) -> None:
        self._webhook = webhook
        self._peer = peer
        self._client_ok = client_ok
        self._make_request = make_request
        self._max_body = max_body
        self._patience = patience
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self._encoder = hpack.Encoder()
        self._buffer = bytearray()
        self._preface = False
        self._streams: dict[int, _Stream] = {}
        self._pending: dict[int, bytes] = {}
        """Answer bytes a flow-control window did not let out yet."""
        self._last_stream = 0
        self._block: tuple[int, int, bytearray] | None = None
        """A header block waiting for CONTINUATION: stream id, flags of its HEADERS, bytes."""
        self._continuations = 0  # CONTINUATION frames of that block so far
        self._starved: collections.OrderedDict[int, None] = collections.OrderedDict()
        """Streams whose pending answer waits for the connection's window alone (their own
        is open), oldest first: what a connection WINDOW_UPDATE lets out (:meth:`_resume`)."""
        self._window = _DEFAULT_WINDOW  # what the client lets us send on the connection
        self._initial_window = _DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self._max_frame = _MAX_FRAME  # the client's SETTINGS_MAX_FRAME_SIZE
        self._unacknowledged = 0  # body bytes received since the connection window's update
        self._released = 0  # of those, bytes no longer held (read whole, dropped, padding)
        self._out: list[bytes] = []
        self._handlers = self._handlers_by_type()
        self._transport: asyncio.Transport | None = None
        self._admitting: dict[int, asyncio.Task[None]] = {}
        """Each stream's admission in flight, to cancel when the client resets it."""
        now = self._loop.time()
        self._resets = _Budget(RESET_BURST, RESET_RATE, now)
        self._settings_budget = _Budget(SETTINGS_BURST, SETTINGS_RATE, now)
        self._hang_up = math.inf
        """When to abort a connection whose client takes nothing written: its writes paused,
        or it closing, for :data:`SEND_PATIENCE`."""
        self._closing = False
        self._stopping = False
        self.deadline = now + idle_timeout
        self._ends_at = now + age_limit(max_age)
        self._draining: float | None = None
        """When the first GOAWAY of a connection past its age went out."""
        self._lingering: float | None = None
        """When a connection past its age that said its last GOAWAY closes."""

    def _handlers_by_type(self) -> dict[int, Callable[[int, int, bytes], None]]:
        return {
            DATA: self._data,
            HEADERS: self._headers,
            PRIORITY: self._priority,
            RST_STREAM: self._rst_stream,
            SETTINGS: self._settings,
            PUSH_PROMISE: self._push_promise,
            PING: self._ping,
            GOAWAY: self._goaway_received,
            WINDOW_UPDATE: self._window_update,
            CONTINUATION: self._continuation,
        }

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        settings = struct.pack(
            ">HIHI", _MAX_CONCURRENT_STREAMS, MAX_STREAMS, _INITIAL_WINDOW_SIZE, self._max_body
        )
        self._out.append(frame(SETTINGS, 0, 0, settings))
        self._out.append(frame(WINDOW_UPDATE, 0, 0, _WORD.pack(CONNECTION_WINDOW)))
        self._flush()
        self._webhook.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for task in self._admitting.values():
            self._webhook.abandon(task)
        self._admitting.clear()
        self._webhook.release(sum(len(part) for s in self._streams.values() for part in s.body))
        self._streams.clear()
        self._pending.clear()
        self._webhook.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer += data
        try:
            self._frames()
        except ProtocolViolation as exc:
            self._webhook.refuse(self._peer, 400, exc.reason, f"{exc.what} ({exc})")
            self._goaway(exc.code)
            return
        self._flush()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        """The transport holds more than its high-water mark unwritten: the client takes
        answers slower than it asks for them. Read nothing more until that drains, so that
        what it sends (PINGs, SETTINGS, requests, frames that get a reset) cannot make this
        side hold answers without bound; one that takes nothing for :data:`SEND_PATIENCE`
        is cut off (:meth:`expire`)."""
        self._hang_up = min(self._hang_up, self._loop.time() + SEND_PATIENCE)
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._closing:
            return
        self._hang_up = math.inf
        if self._transport is not None:
            self._transport.resume_reading()

    # -- frames in

    def _frames(self) -> None:
        buffer = self._buffer
        if not self._preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    raise ProtocolViolation(PROTOCOL_ERROR, "not the HTTP/2 preface")
                return
            if buffer[: len(PREFACE)] != PREFACE:
                raise ProtocolViolation(PROTOCOL_ERROR, "not the HTTP/2 preface")
            del buffer[: len(PREFACE)]
            self._preface = True
        start = 0
        try:
            while len(buffer) - start >= 9 and not self._closing:
                length = buffer[start] << 16 | buffer[start + 1] << 8 | buffer[start + 2]
                if length > _MAX_FRAME:
                    raise ProtocolViolation(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                end = start + 9 + length
                if len(buffer) < end:
                    break
                kind, flags = buffer[start + 3], buffer[start + 4]
                stream_id = _WORD.unpack_from(buffer, start + 5)[0] & 0x7FFFFFFF
                payload = bytes(buffer[start + 9 : end])
                start = end
                self._frame(kind, flags, stream_id, payload)
        finally:
            del buffer[:start]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise ProtocolViolation(PROTOCOL_ERROR, "a header block cut by another frame")
        handler = self._handlers.get(kind)
        if handler is not None:  # any other type is ignored (RFC 9113, section 4.1)
            handler(flags, stream_id, payload)

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "PING not 8 bytes long")
        if not flags & ACK:
            self._out.append(frame(PING, ACK, 0, payload))

    def _rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or len(payload) != 4:
            raise ProtocolViolation(PROTOCOL_ERROR, "malformed RST_STREAM")
        self._idle_check(stream_id)
        if self._forget(stream_id):  # the client gave up on it (the apiserver's timeout)
            self._spend_reset()

    def _priority(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or len(payload) != 5:
            raise ProtocolViolation(PROTOCOL_ERROR, "malformed PRIORITY")

    def _goaway_received(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._close()

    def _push_promise(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ProtocolViolation(PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    def _idle_check(self, stream_id: int) -> None:
        """A frame other than HEADERS on a stream the client never opened is an error."""
        if stream_id > self._last_stream:
            raise ProtocolViolation(PROTOCOL_ERROR, f"a frame on idle stream {stream_id}")

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS of a length not a multiple of 6")
        if not self._settings_budget.spend(self._loop.time()):
            raise Flood(f"SETTINGS more often than {SETTINGS_RATE:g} a second")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == _HEADER_TABLE_SIZE:  # the most it may be: a larger table only costs us
                self._encoder.header_table_size = min(value, _TABLE)
            elif key == _ENABLE_PUSH and value > 1:
                raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif key == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "initial window over 2^31-1")
                self._new_initial_window(value)
            elif key == _MAX_FRAME_SIZE:
                if not _MAX_FRAME <= value <= 2**24 - 1:
                    raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._max_frame = value
        self._out.append(frame(SETTINGS, ACK, 0))
        self._resume(0)

    def _new_initial_window(self, value: int) -> None:
        """SETTINGS_INITIAL_WINDOW_SIZE changed: every stream's window moves by the
        difference (RFC 9113, 6.9.2); a pending answer it opens then waits for the
        connection's window alone."""
        delta, self._initial_window = value - self._initial_window, value
        if not delta:
            return
        for sid, stream in self._streams.items():
            stream.window += delta
            if stream.window > _MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, f"stream {sid}'s window over 2^31-1")
            if delta > 0 and stream.window > 0 and sid in self._pending:
                self._starved[sid] = None

    def _window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes long")
        increment = _WORD.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ProtocolViolation(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._window += increment
            if self._window > _MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._resume(0)
            return
        self._idle_check(stream_id)
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # closed already: nothing more to send there
        stream.window += increment
        if increment == 0 or stream.window > _MAX_WINDOW:
            self._stream_error(stream_id, PROTOCOL_ERROR if increment == 0 else FLOW_CONTROL_ERROR)
            return
        self._resume(stream_id)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = _unpadded(payload, flags)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            block = block[5:]
        self._block = (stream_id, flags, bytearray(block))
        self._continuations = 0
        if flags & END_HEADERS:
            self._header_block()

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is None or self._block[0] != stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        self._continuations += 1
        if self._continuations > MAX_CONTINUATIONS:
            raise Flood(f"a header block in over {MAX_CONTINUATIONS} CONTINUATION frames")
        self._block[2].extend(payload)
        if len(self._block[2]) > MAX_HEADER_BLOCK:
            raise ProtocolViolation(PROTOCOL_ERROR, f"a header block over {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            self._header_block()

    def _header_block(self) -> None:
        assert self._block is not None
        stream_id, flags, block = self._block
        self._block = None
        try:  # decoded even for a stream refused below: HPACK's table is the connection's
            headers = self._decoder.decode(bytes(block), raw=True)
        except (hpack.HPACKError, ValueError, IndexError) as exc:
            raise ProtocolViolation(
                COMPRESSION_ERROR, "a header block that does not decode"
            ) from exc
        if stream_id <= self._last_stream:  # trailers, or a stream we closed: nothing to read
            stream = self._streams.get(stream_id)
            if stream is None or not stream.receiving:
                raise ProtocolViolation(STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
            if not flags & END_STREAM:
                raise ProtocolViolation(PROTOCOL_ERROR, "trailers that do not end the stream")
            self._end(stream_id)
            return
        self._last_stream = stream_id
        if len(self._streams) >= MAX_STREAMS or self._stopping:
            self._reset(stream_id, REFUSED_STREAM)
            return
        method = target = b""
        for name, value in headers:
            if name == b":method":
                method = value
            elif name == b":path":
                target = value
        self._streams[stream_id] = _Stream(
            method=method,
            target=target,
            deadline=self._loop.time() + self._patience,
            window=self._initial_window,
        )
        if flags & END_STREAM:
            self._end(stream_id)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        self._idle_check(stream_id)
        self._unacknowledged += len(payload)  # padding included: it is flow-controlled too
        if self._unacknowledged > CONNECTION_WINDOW + _DEFAULT_WINDOW:
            raise ProtocolViolation(FLOW_CONTROL_ERROR, "more data than the connection window")
        stream = self._streams.get(stream_id)
        if stream is None or not stream.receiving:
            self._release(len(payload))  # reset or answered already: nothing is kept
            if stream is not None:  # half-closed: the client ended it (RFC 9113, 5.1)
                self._stream_error(stream_id, STREAM_CLOSED)
            return
        stream.unacknowledged += len(payload)
        if stream.unacknowledged > self._max_body:
            self._release(len(payload))
            self._stream_error(stream_id, FLOW_CONTROL_ERROR)
            return
        if stream.unacknowledged >= self._max_body // 2 and not flags & END_STREAM:
            update = _WORD.pack(stream.unacknowledged)
            self._out.append(frame(WINDOW_UPDATE, 0, stream_id, update))
            stream.unacknowledged = 0
        body = _unpadded(payload, flags)
        kept = 0
        if not stream.answered:
            stream.size += len(body)
            if stream.size > self._max_body:
                text = f"body over {self._max_body} bytes"
                self._respond(stream_id, self._webhook.refuse(self._peer, 413, "too_large", text))
            elif not self._webhook.hold(len(body)):  # all connections hold too much
                self._respond(stream_id, self._webhook.refuse(self._peer, 503, "busy", BUSY))
            elif body:  # an empty DATA frame keeps nothing (else a flood of them would grow it)
                stream.body.append(body)
                kept = len(body)
        self._release(len(payload) - kept)
        if flags & END_STREAM:
            self._end(stream_id)

    def _end(self, stream_id: int) -> None:
        """The client ended the stream: its request is complete."""
        stream = self._streams.get(stream_id)
        if stream is None:  # answered (413) and reset by the frame that ended it
            return
        stream.receiving = False
        if stream.answered:
            if stream_id not in self._pending:
                self._drop(stream_id)
            return
        if self._stopping:  # the client retries a refused stream elsewhere
            self._reset(stream_id, REFUSED_STREAM)
            return
        request = self._make_request(
            method=stream.method,
            target=stream.target,
            body=b"".join(stream.body),
            keep_alive=True,
        )
        self._let_go(stream.size)
        stream.body = []
        outcome = self._webhook.triage(request, peer=self._peer, client_ok=self._client_ok)
        if isinstance(outcome, reviews.Review):
            stream.answered = True  # its answer is on the way; the deadline no longer applies
            task = self._loop.create_task(self._admit(stream_id, outcome, request.target))
            self._webhook.tasks.add(task)
            task.add_done_callback(self._webhook.tasks.discard)
            self._admitting[stream_id] = task
        else:
            self._respond(stream_id, outcome)

    async def _admit(self, stream_id: int, review: reviews.Review, target: bytes) -> None:
        """Admit and answer. The admissions in flight are :attr:`_admitting`, which a reset
        of the stream empties too (:meth:`_forget`): a task cancelled before it starts
        never runs this, ``finally`` included."""
        response = None
        try:
            response = await self._webhook.answer(review, target=target, peer=self._peer)
        finally:  # also when the client reset the stream and the admission was cancelled
            self._admitting.pop(stream_id, None)
            if not self._closing:
                if response is not None:
                    self._respond(stream_id, response)
                if self._stopping and not self._admitting:
                    self._goaway(NO_ERROR)
                else:
                    self._flush()

    # -- frames out

    def _respond(self, stream_id: int, response: Response) -> None:
        """Headers and body of one answer; the stream ends with it (reset if the client
        was still sending)."""
        stream = self._streams.get(stream_id)
        if stream is None or self._closing:
            return
        stream.answered = True
        block = self._encoder.encode(
            [
                (b":status", str(response.status).encode()),
                (b"content-type", response.content_type),
                (b"content-length", str(len(response.body)).encode()),
            ]
        )
        flags = END_HEADERS if response.body else END_HEADERS | END_STREAM
        self._out.append(frame(HEADERS, flags, stream_id, block))
        if response.body:
            self._pending[stream_id] = response.body
            stream.deadline = self._loop.time() + SEND_PATIENCE  # for the client to take it
            self._resume(stream_id)
        else:
            self._finished(stream_id)

    def _resume(self, stream_id: int) -> None:
        """Send what the flow-control windows allow of one stream's pending answer, or
        (``stream_id`` 0: the connection's window opened) of those waiting for the
        connection's window alone, oldest first, while it stays open. Streams waiting for
        their own window are not looked at: a connection WINDOW_UPDATE or SETTINGS costs
        what it lets out, not a pass over every stream."""
        if stream_id:
            self._send_pending(stream_id)
            return
        while self._starved and self._window > 0:
            self._send_pending(next(iter(self._starved)))

    def _send_pending(self, sid: int) -> None:
        """What the windows allow of stream ``sid``'s pending answer; after it, the stream
        is in :attr:`_starved` only if the connection's window alone holds it back."""
        body = self._pending.get(sid)
        stream = self._streams.get(sid)
        if body is None or stream is None:
            self._starved.pop(sid, None)
            return
        while body:
            size = min(len(body), stream.window, self._window, self._max_frame)
            if size <= 0:
                break
            chunk, body = body[:size], body[size:]
            stream.window -= size
            self._window -= size
            self._out.append(frame(DATA, 0 if body else END_STREAM, sid, chunk))
        if body:
            self._pending[sid] = body
            if stream.window > 0:
                self._starved[sid] = None
            else:
                self._starved.pop(sid, None)
            return
        del self._pending[sid]
        self._finished(sid)

    def _finished(self, stream_id: int) -> None:
        """Our answer is all out: the stream is done (reset if the client still sends)."""
        stream = self._drop(stream_id)
        if stream is not None and stream.receiving:  # e.g. 413 while the body still comes
            self._reset(stream_id, NO_ERROR)

    def _reset(self, stream_id: int, code: int) -> None:
        """RST_STREAM with ``code``; this side forgets the stream (:meth:`_forget`)."""
        self._forget(stream_id)
        self._out.append(frame(RST_STREAM, 0, stream_id, _WORD.pack(code)))

    def _stream_error(self, stream_id: int, code: int) -> None:
        """A stream error of the client's making: the stream reset (its admission
        cancelled), counted against :data:`RESET_BURST` as a reset by the client is."""
        self._spend_reset()
        self._reset(stream_id, code)

    def _spend_reset(self) -> None:
        if not self._resets.spend(self._loop.time()):
            raise Flood(f"streams ended early more often than {RESET_RATE:g} a second")

    def _forget(self, stream_id: int) -> bool:
        """Forget a stream and cancel its admission; True if either was under way."""
        stream = self._drop(stream_id)
        task = self._admitting.pop(stream_id, None)
        if task is not None:
            self._webhook.abandon(task)
        return stream is not None or task is not None

    def _drop(self, stream_id: int) -> _Stream | None:
        """Forget a stream; the body bytes it held are let go (:meth:`_let_go`)."""
        self._pending.pop(stream_id, None)
        self._starved.pop(stream_id, None)
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.body:
            self._let_go(sum(len(part) for part in stream.body))
            stream.body = []
        return stream

    def _let_go(self, size: int) -> None:
        """``size`` body bytes a stream held are let go: out of the webhook's count of all
        connections' bytes, and back to the client's window (:meth:`_release`)."""
        self._webhook.release(size)
        self._release(size)

    def _release(self, size: int) -> None:
        """``size`` bytes of the connection window no longer held: given back to the
        client once half the window is (one WINDOW_UPDATE, not one per request)."""
        self._released += size
        if self._released >= CONNECTION_WINDOW // 2:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, _WORD.pack(self._released)))
            self._unacknowledged -= self._released
            self._released = 0

    def _goaway(self, code: int) -> None:
        """Say GOAWAY (the last stream this side saw) and close."""
        self._out.append(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, code)))
        self._flush()
        self._close()

    def _flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._hang_up = min(self._hang_up, self._loop.time() + SEND_PATIENCE)
        if self._transport is not None:
            self._transport.close()  # once what is written is taken: aborted if never

    # -- what the server's sweep and stop ask of every connection

    def expire(self, now: float) -> None:
        """A stream not complete in time gets 408, an answer not taken in time is given up
        (:meth:`_late`); an idle connection is closed; one past its age drains
        (:meth:`_drain`); one whose client takes nothing written is aborted."""
        if now >= self._hang_up:
            text = f"took nothing written for {SEND_PATIENCE:g}s"
            self._webhook.refuse(self._peer, 408, "stalled", text)
            self.abort()
            return
        if self._closing:
            return
        self._late(now)
        idle = not self._streams and not self._admitting
        if self._aged(now, idle=idle):
            return
        if idle:
            if now >= self.deadline:
                self._goaway(NO_ERROR)
        else:
            self.deadline = now + self._idle_timeout

    def _late(self, now: float) -> None:
        """408 for each request not complete by its deadline; for each answer whose stream
        window the client has kept shut :data:`SEND_PATIENCE` seconds, a reset (CANCEL):
        its bytes are let go, and the connection may idle out."""
        late = [
            sid
            for sid, s in self._streams.items()
            if now >= s.deadline and (not s.answered or sid in self._pending)
        ]
        for sid in late:
            if sid in self._pending:
                text = f"an answer's window stayed shut {SEND_PATIENCE:g}s"
                self._webhook.refuse(self._peer, 408, "stalled", text)
                self._reset(sid, CANCEL)
            else:
                text = "the request did not arrive in time"
                self._respond(sid, self._webhook.refuse(self._peer, 408, "timeout", text))
        if late:
            self._flush()

    def _aged(self, now: float, *, idle: bool) -> bool:
        """The steps of a connection past its age; True once it says its last GOAWAY."""
        if self._lingering is not None:
            if now >= self._lingering:
                self._close()
            return True
        if self._draining is None and now >= self._ends_at:
            if idle:  # nothing in flight: the last GOAWAY at once
                self._last_goaway(now)
                return True
            self._drain(now)
        if self._draining is not None and not self._stopping:
            if idle and now - self._draining >= DRAIN_GRACE:
                self._last_goaway(now)  # the streams it saw are all answered
                return True
            if now - self._draining >= DRAIN_PATIENCE:
                self.stop()
                return True
        return False

    def _drain(self, now: float) -> None:
        """Past its age with reviews in flight: GOAWAY naming the highest stream id there
        can be, so the client opens its next streams on a new connection (behind a
        Service, maybe to another replica) while every stream it opened here is still
        answered (RFC 9113, 6.8: the graceful shutdown, in two GOAWAYs, as Go's client,
        the apiserver's, expects). The last one follows once they are. (Python's ``h2``
        client fails its open streams on any GOAWAY; an idle connection gets only the
        last one.)"""
        self._draining = now
        self._out.append(frame(GOAWAY, 0, 0, struct.pack(">II", _MAX_STREAM_ID, NO_ERROR)))
        self._flush()

    def _last_goaway(self, now: float) -> None:
        """GOAWAY naming the last stream read; a stream opened after it is refused (the
        client sends it again elsewhere), and the connection closes :data:`DRAIN_GRACE`
        later unless the client closes it first. Closing at once could answer a request
        already on its way with a TCP reset, which may discard the GOAWAY unread."""
        self._stopping = True
        self._out.append(frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, NO_ERROR)))
        self._flush()
        self._lingering = now + DRAIN_GRACE

    def stop(self) -> None:
        """Refuse new streams; once the answers in flight are written, say GOAWAY and close
        (at once when none is in flight). Some clients fail every open stream on a GOAWAY,
        so it waits for the last answer."""
        self._stopping = True
        if self._closing or self._admitting:
            return
        self._goaway(NO_ERROR)

    def abort(self) -> None:
        """Close at once, dropping whatever was not written."""
        self._closing = True
        self._hang_up = math.inf
        if self._transport is not None:
            self._transport.abort()
