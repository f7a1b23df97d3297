"""A small L4 TCP proxy: each new connection goes to the next backend, round robin.

    python bench/tcp_proxy.py --port PORT --backend 127.0.0.1:A --backend 127.0.0.1:B

What a Kubernetes Service does for the webhook's replicas (kube-proxy balances
connections, not requests): ``bench/create.py`` (phase ``dbquota-2``) starts it in front
of two operator replicas that share one serving certificate, so the apiserver sees one
webhook endpoint and TLS passes through untouched. Its own process, so that its CPU is
measured apart from everything else. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes from ``reader`` to ``writer`` until end of stream, then close the write side."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def serve(port: int, backends: list[tuple[str, int]]) -> None:
    turn = itertools.cycle(backends)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, backend_port = next(turn)
        try:
            server_r, server_w = await asyncio.open_connection(host, backend_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        finally:
            for w in (client_w, server_w):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
