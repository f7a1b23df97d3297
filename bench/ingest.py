"""Benchmark: a full billing sync of many clusters from the simulator, three ways.

    python bench/ingest.py [--clusters 10000] [--naive-clusters 1000] [--max-concurrency 8]
                           [--latency-ms 20] [--latency-concurrency 16]

Starts two ``dbquota billing-sim`` processes (one with a bulk listing, one without;
:class:`e2e.harness.Harness` starts and stops them) and
measures, each mode in its own child process so that peak RSS is per mode:

- ``bulk``         dbquota's sync through the bulk listing (pages of --page-size)
- ``per-cluster``  dbquota's sync with per-cluster fetches (bounded concurrency, coalesced)
- ``naive``        a straightforward client: sequential awaits on one httpx client, then
                   for every row a new sqlite3 connection, INSERT OR REPLACE and commit

and, separately, the cache's write rate: one ``write_sync`` of the bulk run's clusters
(latest + history + prices + journal rows) into a fresh file. It runs twice: on bare
loopback (the provider answers at once), and with ``--latency-ms`` of latency injected
into every provider response (the simulator's ``latency`` fault), closer to a real
provider's round trip. Prints Markdown tables. The client-side rate limit is off
(``--rate-limit 0``): this measures capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from dbquota import settings
from dbquota.adapters import cache as cache_
from dbquota.adapters.billing import HttpBillingProvider
from dbquota.kits.clock import SystemClock
from dbquota.services import ingesting

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def config(url: str, path: Path, args: argparse.Namespace) -> settings.Settings:
    base = settings.Settings()
    return replace(
        base,
        billing=replace(
            base.billing,
            url=url,
            rate_limit=0,
            max_concurrency=args.max_concurrency,
            page_size=args.page_size,
        ),
        cache=replace(base.cache, path=path),
    )


async def run_dbquota(
    url: str, path: Path, args: argparse.Namespace, *, bulk: bool
) -> dict[str, Any]:
    cfg = config(url, path, args)
    clock = SystemClock()
    cache = await cache_.Cache.open(path)
    provider = HttpBillingProvider(cfg.billing, clock=clock)
    try:
        ing = await ingesting.load(cfg, provider=provider, cache=cache, clock=clock)
        if not bulk:
            ing.track(f"cluster-{i:05d}" for i in range(args.clusters))
        started = time.perf_counter()
        await ing.sync_once()
        elapsed = time.perf_counter() - started
        snap = ing.snapshot()
        assert snap.health.last_success is not None, snap.health.last_error
        assert len(snap.costs) == args.clusters, len(snap.costs)
        result: dict[str, Any] = {
            "clusters": len(snap.costs),
            "seconds": elapsed,
            "clusters_per_s": len(snap.costs) / elapsed,
        }
        if bulk:  # the cache's own write rate, on a fresh file, with this run's data
            fresh = await cache_.Cache.open(path.with_name("write-rate.sqlite3"))
            record = cache_.SyncRecord(
                started_at=0,
                finished_at=0,
                ok=True,
                costs=list(snap.costs.values()),
                prices=snap.prices,
            )
            started = time.perf_counter()
            rows = await fresh.write_sync(record)
            write_s = time.perf_counter() - started
            await fresh.close()
            result.update(rows=rows, write_seconds=write_s, rows_per_s=rows / write_s)
    finally:
        await provider.aclose()
        await cache.close()
    result["peak_rss_mib"] = peak_rss_mib()
    return result


async def run_naive(url: str, path: Path, n: int) -> dict[str, Any]:
    """A straightforward client's data path, for comparison (no breaker, no batching)."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS billing_cache (cluster_id TEXT PRIMARY KEY, "
            "compute_cost REAL, storage_cost REAL, last_updated REAL)"
        )
    conn.close()
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=5.0) as client:
        for i in range(n):
            cid = f"cluster-{i:05d}"
            resp = await client.get(f"{url}/metrics/{cid}")
            resp.raise_for_status()
            data = resp.json()
            conn = sqlite3.connect(path)  # one connection and one commit per row
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO billing_cache VALUES (?, ?, ?, ?)",
                    (cid, data["compute_cost"], data["storage_cost"], time.time()),
                )
            conn.close()
    elapsed = time.perf_counter() - started
    return {
        "clusters": n,
        "seconds": elapsed,
        "clusters_per_s": n / elapsed,
        "rows": n,
        "rows_per_s": n / elapsed,
        "peak_rss_mib": peak_rss_mib(),
    }


def child(
    mode: str, url: str, args: argparse.Namespace, *, concurrency: int, naive: int
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", mode, "--url", url]
    argv += ["--clusters", str(args.clusters), "--naive-clusters", str(naive)]
    argv += ["--max-concurrency", str(concurrency), "--page-size", str(args.page_size)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def report(title: str, results: dict[str, dict[str, Any]], *, concurrency: int) -> None:
    naive = results["naive"]["clusters_per_s"]
    print(f"\n### {title} (max concurrency {concurrency})\n")
    print("| mode | clusters | seconds | clusters/s | x naive | cache rows/s | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, r in results.items():
        rows = f"{r['rows_per_s']:,.0f}" if "rows_per_s" in r else "-"
        print(
            f"| {mode} | {r['clusters']:,} | {r['seconds']:.2f} | {r['clusters_per_s']:,.0f} "
            f"| {r['clusters_per_s'] / naive:.1f} | {rows} | {r['peak_rss_mib']:.0f} |"
        )
    bulk = results["bulk"]
    print(
        f"\ncache write: {bulk['rows']:,} rows (latest + history + prices + journal) in "
        f"{bulk['write_seconds']:.3f} s, one transaction; naive: one commit per row"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--naive-clusters", type=int, default=1_000)
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--latency-concurrency", type=int, default=16)
    parser.add_argument("--latency-naive-clusters", type=int, default=300)
    parser.add_argument("--child", choices=["bulk", "per-cluster", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.sqlite3"
            if args.child == "naive":
                result = asyncio.run(run_naive(args.url, path, args.naive_clusters))
            else:
                result = asyncio.run(run_dbquota(args.url, path, args, bulk=args.child == "bulk"))
        print(json.dumps(result))
        return 0

    # Imported here, not at the top: each mode's child process measures its own peak RSS,
    # which must not include the harness (kopf, cryptography).
    sys.path.insert(0, str(ROOT))  # e2e/ and tests/ are not installed: import them from the repo
    from e2e import harness  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp, harness.Harness(Path(tmp)) as h:
        bulk_url = h.billing(clusters=args.clusters, seed=1, name="bulk").url
        plain_url = h.billing("--no-bulk", clusters=args.clusters, seed=1, name="plain").url
        measure(args, bulk_url=bulk_url, plain_url=plain_url)
    return 0


def measure(args: argparse.Namespace, *, bulk_url: str, plain_url: str) -> None:
    print(
        f"machine: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; "
        f"{args.clusters:,} clusters, page size {args.page_size}, rate limit off"
    )
    scenarios = [
        ("loopback, no added latency", 0, args.max_concurrency, args.naive_clusters),
        (
            f"{args.latency_ms:g} ms provider latency",
            args.latency_ms,
            args.latency_concurrency,
            args.latency_naive_clusters,
        ),
    ]
    for title, latency_ms, concurrency, naive_n in scenarios:
        for url in (bulk_url, plain_url):
            fault = {"mode": "latency", "latency": latency_ms / 1000} if latency_ms else {}
            httpx.post(f"{url}/_faults", json=fault or {"mode": "none"}).raise_for_status()
        results = {
            "bulk": child("bulk", bulk_url, args, concurrency=concurrency, naive=naive_n),
            "per-cluster": child(
                "per-cluster", plain_url, args, concurrency=concurrency, naive=naive_n
            ),
            "naive": child("naive", plain_url, args, concurrency=concurrency, naive=naive_n),
        }
        report(title, results, concurrency=concurrency)


if __name__ == "__main__":
    sys.exit(main())
