"""A small L4 TCP proxy: each new connection goes to the next backend, round robin; on
request it cuts every connection off, as a network partition does.

    python -m e2e.tcp_proxy --port PORT --backend 127.0.0.1:A [--backend 127.0.0.1:B ...]

Two uses, both started through :func:`e2e.harness.start_proxy`:

- What a Kubernetes Service does for the webhook's replicas (kube-proxy balances
  connections, not requests): in front of replicas that share one serving certificate, so
  the apiserver sees one webhook endpoint and TLS passes through untouched
  (``bench/create.py``'s phase ``dbquota-2``, the chaos suite's two replicas).
- A replica's road to the apiserver that a test can cut (its kubeconfig names the proxy):
  ``SIGUSR1`` *cuts*: from then on no byte is forwarded either way on any connection, old
  or new, and new connections are accepted and left hanging, so the client sees a silent
  network (timeouts), not a refusal. ``SIGUSR2`` *heals*: the connections held during the
  cut are closed (their streams are broken anyway) and new ones are forwarded again.

Its own process, so that its CPU is measured apart from everything else. It prints
``listening on 127.0.0.1:PORT`` once it listens, ``cut`` and ``healed`` as it obeys, and
runs until SIGTERM or SIGINT. Written by hand: a few lines of asyncio, where a dependency
(toxiproxy, a Go binary) would be another thing to build for one test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal


class Proxy:
    """The proxy's state: where the next connection goes, and whether the wire is cut."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.turn = itertools.cycle(backends)
        self.healed = asyncio.Event()
        self.healed.set()
        self.held: set[asyncio.StreamWriter] = set()

    def cut(self) -> None:
        self.healed.clear()
        print("cut", flush=True)

    def heal(self) -> None:
        for writer in self.held:
            writer.close()
        self.held.clear()
        self.healed.set()
        print("healed", flush=True)

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy bytes until end of stream, then close the write side; while cut, what is
        read is dropped (and the connection is closed when the cut heals)."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not self.healed.is_set():
                    self.held.add(writer)
                    continue
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self.healed.is_set():  # accepted, then nothing: a silent network
            self.held.add(client_w)
            await self.healed.wait()
            client_w.close()
            return
        host, backend_port = next(self.turn)
        try:
            server_r, server_w = await asyncio.open_connection(host, backend_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self.pipe(client_r, server_w), self.pipe(server_r, client_w))
        finally:
            for w in (client_w, server_w):
                w.close()


async def serve(port: int, backends: list[tuple[str, int]]) -> None:
    proxy = Proxy(backends)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    loop.add_signal_handler(signal.SIGUSR2, proxy.heal)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (loopback)")
    parser.add_argument(
        "--backend", action="append", required=True, help="host:port (repeat for more)"
    )
    args = parser.parse_args()
    backends = [(b.rsplit(":", 1)[0], int(b.rsplit(":", 1)[1])) for b in args.backend]
    asyncio.run(serve(args.port, backends))


if __name__ == "__main__":
    main()
