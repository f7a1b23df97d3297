"""The simulator's HTTP server (aiohttp) and its process entry point.

Provider API (what dbquota's HTTP provider calls)::

    GET  /metrics/{cluster_id}        {"compute_cost": float, "storage_cost": float}; 404 unknown
    GET  /metrics?page_token=&page_size=
                                      {"clusters": [{"cluster_id", "compute_cost",
                                        "storage_cost"}…], "next_page_token": str | null}
    GET  /pricing                     {"currency", "instance_hourly": {class: float},
                                        "storage_gib_month": float, "period": int,
                                        "vcpu_hourly": float, "memory_gib_hourly": float,
                                        "storage_class_gib_month": {class: float},
                                        "default_storage_class_gib_month": float}

Control API (never faulted)::

    POST /_faults   set the fault (see :mod:`.faults`);  GET /_faults  the active one
    GET  /_stats    requests received and their outcomes, by endpoint;  DELETE /_stats  reset
    GET  /_health   200 "ok" whatever the fault (for start-up probes)

``outage`` with style ``refuse`` closes the listening socket (new connections are refused)
and resets requests on open keep-alive connections, until the fault is cleared or its
``seconds`` run out; control requests then need the port back, so give ``seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from dbquota.simulator import add_arguments, catalog, faults

logger = logging.getLogger("dbquota.billing-sim")

_MAX_PAGE = 5000


class Stats:
    """Requests received and outcomes, by endpoint."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "received": dict(self.received),
            "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
            "total": sum(self.received.values()),
        }


class Simulator:
    """The state behind the app: data, the fault, the counts, and the listener."""

    def __init__(self, cat: catalog.Catalog, *, bulk: bool, token: str | None) -> None:
        self.catalog = cat
        self.bulk = bulk
        self.token = token
        self.faults = faults.FaultState(seed=cat.seed)
        self.stats = Stats()
        self.on_refuse: Callable[[float | None], None] = lambda _: None
        self.fault_changed = asyncio.Event()

    def now(self) -> float:
        return time.time()

    # -- plumbing shared by the provider endpoints --------------------------------------

    async def _guard(  # noqa: PLR0911 - one early answer per fault kind reads best
        self, request: web.Request, endpoint: str
    ) -> web.StreamResponse | None:
        """Count the request, apply auth and the fault; a response means: answer with it."""
        self.stats.received[endpoint] += 1
        outcomes = self.stats.outcomes[endpoint]
        if self.faults.refusing(self.now()):
            outcomes["reset"] += 1
            return _reset(request)
        if self.token is not None and (
            request.headers.get("Authorization", "") != f"Bearer {self.token}"
        ):
            outcomes["401"] += 1
            return web.json_response({"error": "unauthorized"}, status=401)
        decision = self.faults.decide(endpoint, now=self.now())
        if decision.action == "hang":
            outcomes["hang"] += 1
            await asyncio.sleep(decision.delay)
            return web.json_response({"error": "hung"}, status=503)
        if decision.action == "reset":
            outcomes["reset"] += 1
            return _reset(request)
        if decision.action == "fail_503":
            outcomes["503"] += 1
            return web.json_response({"error": "service unavailable"}, status=503)
        if decision.action == "rate_limit":
            outcomes["429"] += 1
            retry_after = self.faults.fault.retry_after
            return web.json_response(
                {"error": "rate limited"},
                status=429,
                headers={"Retry-After": _retry_after_header(retry_after)},
            )
        if decision.action == "malformed":
            outcomes["malformed"] += 1
            if endpoint == "pricing" and self.faults.fault.pricing_field:
                body = faults.corrupt_pricing(
                    self._pricing_body(), self.faults.fault.pricing_field, decision.style
                )
                if body is not None:
                    return _json(body)
            return _malformed(decision.style, endpoint)
        if decision.delay > 0:
            outcomes["delayed"] += 1
            await asyncio.sleep(decision.delay)
        return None

    # -- provider endpoints -------------------------------------------------------------

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        early = await self._guard(request, "cluster")
        if early is not None:
            return early
        found = self.catalog.by_id.get(request.match_info["cluster_id"])
        if found is None:
            self.stats.outcomes["cluster"]["404"] += 1
            return web.json_response({"error": "unknown cluster"}, status=404)
        compute, storage = self.catalog.cost(found, self.now())
        self.stats.outcomes["cluster"]["ok"] += 1
        return _json({"compute_cost": compute, "storage_cost": storage})

    async def bulk_page(self, request: web.Request) -> web.StreamResponse:
        if not self.bulk:
            self.stats.received["bulk"] += 1
            self.stats.outcomes["bulk"]["404"] += 1
            return web.json_response({"error": "no bulk listing"}, status=404)
        early = await self._guard(request, "bulk")
        if early is not None:
            return early
        try:
            offset = int(request.query.get("page_token") or 0)
            size = min(_MAX_PAGE, max(1, int(request.query.get("page_size") or 500)))
        except ValueError:
            self.stats.outcomes["bulk"]["400"] += 1
            return web.json_response({"error": "bad page_token or page_size"}, status=400)
        now = self.now()
        clusters = self.catalog.clusters[offset : offset + size]
        entries: list[dict[str, Any]] = []
        for c in clusters:
            if self.faults.dropped(c.cluster_id):
                continue
            compute, storage = self.catalog.cost(c, now)
            entry: dict[str, Any] = {
                "cluster_id": c.cluster_id,
                "compute_cost": compute,
                "storage_cost": storage,
            }
            style = self.faults.corrupt_entry()
            if style:
                entry = faults.corrupt_entry(entry, style)
            entries.append(entry)
        nxt = offset + size
        body = {
            "clusters": entries,
            "next_page_token": str(nxt) if nxt < len(self.catalog.clusters) else None,
        }
        self.stats.outcomes["bulk"]["ok"] += 1
        return _json(body)

    async def pricing(self, request: web.Request) -> web.StreamResponse:
        early = await self._guard(request, "pricing")
        if early is not None:
            return early
        self.stats.outcomes["pricing"]["ok"] += 1
        return _json(self._pricing_body())

    def _pricing_body(self) -> dict[str, Any]:
        prices = self.catalog.prices(self.now())
        return {
            "currency": "USD",
            "period": prices.period,
            "instance_hourly": prices.instance_hourly,
            "storage_gib_month": prices.storage_gib_month,
            "vcpu_hourly": prices.vcpu_hourly,
            "memory_gib_hourly": prices.memory_gib_hourly,
            "storage_class_gib_month": prices.storage_class_gib_month,
            "default_storage_class_gib_month": prices.default_storage_class_gib_month,
        }

    # -- control endpoints --------------------------------------------------------------

    async def set_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            fault = faults.parse(await request.json())
        except (json.JSONDecodeError, faults.BadFault) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.set(fault, now=self.now())
        self.fault_changed.set()
        logger.info("fault set: %s", fault.raw)
        if fault.mode == "outage" and fault.style == "refuse":
            self.on_refuse(fault.seconds)
        return web.json_response({"fault": fault.raw or {"mode": "none"}})

    async def get_fault(self, _: web.Request) -> web.StreamResponse:
        fault = self.faults.current(self.now())
        return web.json_response({"fault": fault.raw or {"mode": "none"}})

    async def get_stats(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats.as_json())

    async def reset_stats(self, _: web.Request) -> web.StreamResponse:
        self.stats = Stats()
        return web.json_response(self.stats.as_json())

    async def health(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")


def _json(body: object) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")


def _retry_after_header(seconds: float) -> str:
    return str(max(0, math.ceil(seconds)))


def _reset(request: web.Request) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # the connection is gone; nothing to answer


def _malformed(style: str, endpoint: str) -> web.Response:
    # A 200 with a JSON content type: the client must not trust the header.
    return web.Response(
        body=faults.malformed_body(style, endpoint), content_type="application/json"
    )


def make_app(sim: Simulator) -> web.Application:
    """The aiohttp application serving ``sim``."""
    app = web.Application()
    app.router.add_get("/metrics/{cluster_id:.+}", sim.cluster)
    app.router.add_get("/metrics", sim.bulk_page)
    app.router.add_get("/pricing", sim.pricing)
    app.router.add_post("/_faults", sim.set_fault)
    app.router.add_get("/_faults", sim.get_fault)
    app.router.add_get("/_stats", sim.get_stats)
    app.router.add_delete("/_stats", sim.reset_stats)
    app.router.add_get("/_health", sim.health)
    return app


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text().strip()
    if not token:
        raise SystemExit(f"billing-sim: {path} holds no token")
    return token


async def serve(args: argparse.Namespace, *, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT or SIGTERM."""
    cat = catalog.Catalog(
        clusters=args.clusters,
        seed=args.seed,
        extra_ids=tuple(args.cluster_id),
        price_period=args.price_period,
    )
    sim = Simulator(cat, bulk=not args.no_bulk, token=_read_token(args.token_file))
    if args.faults:
        try:
            sim.faults.set(faults.parse(json.loads(args.faults)), now=sim.now())
        except (json.JSONDecodeError, faults.BadFault) as exc:
            raise SystemExit(f"billing-sim: --faults: {exc}") from exc
    runner = web.AppRunner(make_app(sim), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port: int = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reopen: asyncio.Task[None] | None = None

    async def refuse_then_reopen(seconds: float | None) -> None:
        nonlocal site
        await asyncio.sleep(0.05)  # let the POST /_faults answer go out first
        await site.stop()
        while sim.faults.refusing(sim.now()):
            sim.fault_changed.clear()
            left = 3600.0 if seconds is None else sim.faults.since + seconds - sim.now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sim.fault_changed.wait(), timeout=max(0.01, left))
        site = web.TCPSite(runner, args.host, port)
        await site.start()
        logger.info("listening again on port %d", port)

    def on_refuse(seconds: float | None) -> None:
        nonlocal reopen
        if reopen is None or reopen.done():
            reopen = asyncio.ensure_future(refuse_then_reopen(seconds))

    sim.on_refuse = on_refuse
    announce(
        f"billing-sim listening on http://{args.host}:{port} "
        f"({len(cat.clusters)} clusters, seed {args.seed})"
    )
    try:
        await stop.wait()
    finally:
        if reopen is not None:
            reopen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reopen
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m dbquota.simulator.server``: the same as ``dbquota billing-sim``."""
    parser = argparse.ArgumentParser(prog="dbquota billing-sim", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the simulator with parsed flags; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args, announce=lambda line: print(line, flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
