"""Benchmark: the webhook's server alone, over HTTP/2 (the apiserver's way) and HTTP/1.1.

Starts this script with ``--serve`` in a process of its own: dbquota's webhook server
(:mod:`dbquota.handlers.webhook`, on uvloop as the operator runs it, with dev TLS
certificates) and an ``admit`` that answers at once, so there is no admission and no
write. Then, in each round, it POSTs AdmissionReviews of new claims to it at a fixed
open-loop rate over each protocol in turn:

- ``h2``: every review a stream of one TLS connection (``bench/apiclient.py``), as the
  apiserver sends them when the server offers ``h2``;
- ``http/1.1``: keep-alive TLS connections, one review at a time each
  (``bench/admission.py``'s client), as the apiserver sends them with
  ``--no-webhook-http2``.

It reports, per protocol and round, the server's CPU per review (from ``/proc``: user and
system time, all threads), p50 and p99 latency, and errors. What it isolates is the cost of
reading a review and writing its answer, which ``bench/admission.py`` and
``bench/create.py`` measure together with admission and everything around it.

Command (results in ``bench/README.md``)::

    .venv/bin/python bench/webhook_server.py --rate 200 --reviews 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from dbquota.domain import reviews
from dbquota.handlers import webhook
from dbquota.settings import WebhookSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not installed: import it from the repo

from bench import admission, apiclient, measuring  # noqa: E402

PROTOCOLS = ("h2", "http/1.1")
PATH = "/validate-claims?timeout=10s"


async def _serve(cert_dir: Path) -> None:
    """The webhook server with an ``admit`` that answers at once; prints its port."""
    cfg = WebhookSettings(
        dev=True, host="127.0.0.1", port=0, cert_dir=cert_dir, configuration_name=""
    )

    async def admit(_review: reviews.Review) -> reviews.Answer:
        return reviews.Answer(allowed=True)

    async with webhook.serving(cfg, admit=admit, kinds=[("dbquota.io", "DatabaseClaim")]) as port:
        print(port, flush=True)
        await asyncio.Event().wait()


def serve(cert_dir: Path) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(cert_dir))


class Http2:
    """``admission.Poster`` over one HTTP/2 connection (``bench/apiclient.py``)."""

    def __init__(self, url: str, ctx: ssl.SSLContext) -> None:
        self._api = apiclient.ApiClient(server=url, ctx=ctx, connections=1)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        try:
            return await self._api.request("POST", PATH, body)
        except apiclient.ClientError as exc:  # as admission's client says it
            raise admission.ClientError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._api.aclose()


async def measure(
    protocol: str, port: int, cert_dir: Path, *, pid: int, rate: float, reviews: int
) -> str:
    """One protocol's row: server CPU per review, latency, errors (``admission.drive``'s
    open-loop timetable, after 50 reviews that open the connections)."""
    ctx = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
    url = f"https://127.0.0.1:{port}"
    client: Http2 | admission.Connections
    if protocol == "h2":
        client = Http2(url, ctx)
    else:
        ctx.set_alpn_protocols(["http/1.1"])
        client = admission.Connections(url=url + PATH, ctx=ctx, limit=32)
    names = [f"c{i}" for i in range(reviews)]
    warm = admission.Run(phase="warm-up", rate=rate, seconds=50 / rate)
    await admission.drive(client, warm, names=names, counter=itertools.count(), dry_run=False)
    run = admission.Run(phase=protocol, rate=rate, seconds=reviews / rate)
    cpu = measuring.cpu_seconds(pid)
    await admission.drive(client, run, names=names, counter=itertools.count(), dry_run=False)
    per_review = (measuring.cpu_seconds(pid) - cpu) / run.sent * 1000
    await client.aclose()
    errors = sum(run.errors.values()) + sum(warm.errors.values())
    for kind, count in {**warm.errors, **run.errors}.items():
        print(f"{protocol}: {count} x {kind}", file=sys.stderr)
    cells = (protocol, f"{rate:g}", run.sent, errors, f"{per_review:.3f}")
    return (
        "| " + " | ".join(str(c) for c in cells) + f" | {run.pct(0.5):.1f} | {run.pct(0.99):.1f} |"
    )


async def run(args: argparse.Namespace, *, port: int, pid: int, cert_dir: Path) -> int:
    """Every round of both protocols; the table; 1 if any review failed."""
    rows: dict[str, list[str]] = {p: [] for p in PROTOCOLS}
    for _ in range(args.rounds):
        for protocol in PROTOCOLS:
            row = await measure(
                protocol, port, cert_dir, pid=pid, rate=args.rate, reviews=args.reviews
            )
            rows[protocol].append(row)
    header = "| protocol | rate/s | reviews | errors | server CPU ms per review | p50 ms | p99 ms |"
    measuring.table(header, [r for p in PROTOCOLS for r in rows[p]])
    medians = {p: statistics.median(float(r.split("|")[5]) for r in rows[p]) for p in PROTOCOLS}
    print(
        "\nmedian server CPU per review: "
        + ", ".join(f"{p} {m:.3f} ms" for p, m in medians.items())
        + f"; load average at the end {measuring.load()}"
    )
    errors = sum(int(r.split("|")[4]) for p in PROTOCOLS for r in rows[p])
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="reviews per second")
    parser.add_argument("--reviews", type=int, default=3000, help="reviews per protocol and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both protocols")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    print(measuring.machine())
    print(f"command: python bench/webhook_server.py {' '.join(sys.argv[1:])}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dbquota-bench-webhook-") as tmp:
        cert_dir = Path(tmp)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(cert_dir)], stdout=subprocess.PIPE
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline() or 0)
            if not port:
                print("the webhook server did not start", file=sys.stderr)
                return 1
            code = asyncio.run(run(args, port=port, pid=server.pid, cert_dir=cert_dir))
        finally:
            server.kill()
            server.wait()
    print(f"total {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
