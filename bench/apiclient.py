"""A lean HTTP/2 client of the kube-apiserver, for benchmarks that create through it.

kubectl, Argo CD and Flux talk HTTP/2 to the apiserver: every request in flight is a
stream on one TLS connection. ``bench/create.py`` needs the same, because on today's code
a create can wait up to the webhook's 30 s timeout and thousands are in flight at once;
one HTTP/1.1 connection each would cost the client more than it measures.

Why not httpx (``httpx[http2]``): the client shares the 2 cores with the apiserver, the
operator and etcd, so its CPU per request shows up as their latency; httpx costs about
ten times what these few lines cost per request (``bench/admission.py`` measured the
same for HTTP/1.1). ``h2`` is the protocol's state machine (framing, HPACK, flow control,
settings); the I/O is asyncio streams over TLS with ALPN ``h2``.

:class:`ApiClient` keeps up to ``connections`` connections, each carrying as many streams
as the server allows (``SETTINGS_MAX_CONCURRENT_STREAMS``, 250 for kube-apiserver), opens
the next one when those are full and otherwise queues requests in FIFO order. A request
the server's GOAWAY says it never processed is sent again on another connection, as Go's
client does.
Authentication is the TLS client certificate of the given ``ssl.SSLContext``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

_WINDOW = 2**24
"""Receive window per stream and for the connection: large answers (``/metrics``, lists)
flow without waiting for our acknowledgements."""


class ClientError(Exception):
    """The connection broke or the server reset the stream; the message says which."""


class Unprocessed(ClientError):
    """The server's GOAWAY says it never processed this stream: safe to send again."""


@dataclass
class _Stream:
    done: asyncio.Future[tuple[int, bytes]]
    status: int = 0
    chunks: list[bytes] = field(default_factory=list)


class _Connection:
    """One HTTP/2 connection and its reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        # Header validation and normalisation cost a third of the client's CPU per request;
        # our headers are fixed and well-formed, and the apiserver's are Go's.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.streams: dict[int, _Stream] = {}
        self.settled = asyncio.Event()  # the server's first SETTINGS arrived
        self.window = asyncio.Event()  # set whenever the server opened flow-control window
        self.broken: str = ""
        self.draining = False
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
        self.h2.increment_flow_control_window(_WINDOW)
        self.flush()
        self.task = asyncio.get_running_loop().create_task(self._read())

    @property
    def capacity(self) -> int:
        """Streams it may still open."""
        if self.broken or self.draining or not self.settled.is_set():
            return 0
        allowed = min(self.h2.remote_settings.max_concurrent_streams, 1000)
        return allowed - len(self.streams)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    async def request(
        self, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> tuple[int, bytes]:
        sid = self.h2.get_next_available_stream_id()
        stream = _Stream(done=asyncio.get_running_loop().create_future())
        self.streams[sid] = stream
        self.h2.send_headers(sid, headers, end_stream=not body)
        try:
            offset = 0
            while body and offset < len(body):
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if room <= 0:
                    self.flush()
                    self.window.clear()
                    await self.window.wait()
                    continue
                chunk = body[offset : offset + room]
                offset += len(chunk)
                self.h2.send_data(sid, chunk, end_stream=offset >= len(body))
            self.flush()  # headers and body in one write
            return await stream.done
        except asyncio.CancelledError:  # the caller's timeout: give the stream up
            if sid in self.streams and not self.broken:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.reset_stream(sid)
                    self.flush()
            raise
        finally:
            self.streams.pop(sid, None)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.h2.receive_data(data):
                    self._on(event)
                self.flush()
            self._fail("the server closed the connection")
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}")

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.status = int(dict(event.headers or [])[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.chunks.append(event.data or b"")
            self.h2.acknowledge_received_data(
                event.flow_controlled_length or 0, event.stream_id or 0
            )
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and not stream.done.done():
                stream.done.set_result((stream.status, b"".join(stream.chunks)))
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and not stream.done.done():
                stream.done.set_exception(ClientError(f"stream reset ({event.error_code!r})"))
        elif isinstance(event, h2.events.WindowUpdated):
            self.window.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settled.set()
            self.window.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: no new streams; those up to last_stream_id are still answered.
            self.draining = True
            last = event.last_stream_id or 0
            for sid, stream in self.streams.items():
                if sid > last and not stream.done.done():
                    stream.done.set_exception(Unprocessed(f"GOAWAY ({event.error_code!r})"))

    def _fail(self, why: str) -> None:
        self.broken = why or "broken"
        self.settled.set()
        self.window.set()
        for stream in self.streams.values():
            if not stream.done.done():
                stream.done.set_exception(ClientError(self.broken))

    async def aclose(self) -> None:
        if not self.broken:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
                self.flush()
        self.broken = self.broken or "closed"
        self.task.cancel()
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
            await self.writer.wait_closed()


class ApiClient:
    """HTTP/2 requests to ``server`` (``https://host:port``) over at most ``connections``
    connections; see the module docstring."""

    def __init__(self, *, server: str, ctx: ssl.SSLContext, connections: int = 8) -> None:
        url = urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.authority = f"{self.host}:{self.port}".encode()
        ctx.set_alpn_protocols(["h2"])
        self._ctx = ctx
        self._limit = connections
        self._conns: list[_Connection] = []
        self._opening = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.opened = 0

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """Send one request; its status code and body."""
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", path.encode()),
            (b"accept", b"application/json"),
            (b"user-agent", b"dbquota-bench"),
        ]
        if body:
            headers += [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ]
        retries = 2
        while True:
            conn = await self._acquire()
            try:
                return await conn.request(headers, body)
            except Unprocessed:  # as Go's client does: again, on another connection
                if not retries:
                    raise
                retries -= 1
            finally:
                self._wake()

    async def _acquire(self) -> _Connection:
        while True:
            self._conns = [c for c in self._conns if not c.broken]
            for conn in [c for c in self._conns if c.draining and not c.streams]:
                self._conns.remove(conn)
                await conn.aclose()
            for conn in self._conns:  # fill the first one with room, as Go's client does
                if conn.capacity > 0:
                    return conn
            if len(self._conns) + self._opening < self._limit:
                self._opening += 1
                try:
                    conn = await self._open()
                finally:
                    self._opening -= 1
                self._conns.append(conn)
                continue
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self._ctx, server_hostname=self.host
        )
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            raise ClientError(f"{self.host}:{self.port} does not speak HTTP/2")
        conn = _Connection(reader, writer)
        await asyncio.wait_for(conn.settled.wait(), timeout=10)
        if conn.broken:
            raise ClientError(f"connection failed at once: {conn.broken}")
        self.opened += 1
        return conn

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        for conn in self._conns:
            await conn.aclose()
        self._conns = []
