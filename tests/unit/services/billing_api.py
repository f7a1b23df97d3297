"""A programmable billing provider API behind httpx's MockTransport, and what the tests of
the ingestion worker share (not a test module): :class:`Provider` answers like the
provider (``mode`` picks how: ``ok``, ``down`` for 503s, ``non_json``) and counts what it
was asked; :func:`make_cfg` is settings for it with a small breaker threshold; the
``start`` fixture (``conftest.py``) runs the worker against one on a fake clock.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from dbquota import settings
from dbquota.adapters import metrics
from dbquota.services import ingesting


class Provider:
    """A programmable provider API; ``mode`` picks what every response looks like."""

    def __init__(self, n: int = 5, *, bulk: bool = True) -> None:
        self.costs = {f"c{i}": (100.0 + i, 10.0) for i in range(n)}
        self.bulk = bulk
        self.mode = "ok"
        self.large = 0.2
        self.hidden: set[str] = set()
        self.relisted: dict[str, tuple[float, float]] = {}
        """Clusters a second page of the listing shows again, at these costs (the listing
        shifted while it was paged); none: the listing is one page."""
        self.bad: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.asked: Counter[str] = Counter()  # per-cluster requests by cluster id
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        endpoint = "pricing" if path == "/pricing" else "bulk" if path == "/metrics" else "cluster"
        self.requests[endpoint] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "down":
            return httpx.Response(503, json={"error": "down"})
        if self.mode == "limited":  # a 429 asking for five minutes of quiet
            return httpx.Response(429, headers={"Retry-After": "300"}, json={"error": "slow"})
        if self.mode == "non_json":
            return httpx.Response(200, content=b"<html>oops</html>")
        if endpoint == "pricing":
            return httpx.Response(
                200,
                json={"instance_hourly": {"db.r6g.large": self.large}, "storage_gib_month": 0.1},
            )
        if endpoint == "bulk":
            if not self.bulk:
                return httpx.Response(404, json={})
            if request.url.params.get("page_token") == "2":
                again = [
                    {"cluster_id": cid, "compute_cost": c, "storage_cost": s}
                    for cid, (c, s) in self.relisted.items()
                ]
                return httpx.Response(200, json={"clusters": again, "next_page_token": None})
            entries = [
                {"cluster_id": cid, "compute_cost": c, "storage_cost": s}
                for cid, (c, s) in self.costs.items()
                if cid not in self.hidden and cid not in self.bad
            ]
            raw = ",".join(
                [json.dumps(e) for e in entries] + [b.decode() for b in self.bad.values()]
            )
            more = ', "next_page_token": "2"' if self.relisted else ""
            return httpx.Response(200, content=f'{{"clusters": [{raw}]{more}}}'.encode())
        cid = path.removeprefix("/metrics/")
        self.asked[cid] += 1
        if cid in self.bad:
            return httpx.Response(200, content=self.bad[cid])
        if cid not in self.costs:
            return httpx.Response(404, json={"error": "unknown cluster"})
        c, s = self.costs[cid]
        return httpx.Response(200, json={"compute_cost": c, "storage_cost": s})


def make_cfg(tmp_path: Path, **billing: Any) -> settings.Settings:
    base = settings.Settings()
    return replace(
        base,
        billing=replace(
            base.billing,
            **{"url": "http://billing.test", "rate_limit": 0, "retry_attempts": 2, **billing},
        ),
        breaker=replace(base.breaker, failure_threshold=3, recovery_timeout=30.0),
        cache=replace(base.cache, path=tmp_path / "cache.sqlite3"),
    )


Run = Callable[..., Awaitable[ingesting.Ingestor]]
"""The ``start`` fixture: ``await start(provider, **billing_settings)``."""


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition()`` holds; fails the test if it never does."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0
