"""Benchmark: what one reservation write costs the apiserver, by reservation count.

    python bench/status_writes.py [--sizes 1,10,100,300] [--writes 60]

The admission bench (``bench/admission.py``) shows the webhook's latency following the
time of one compare-and-swap merge patch of the DatabaseQuota's status. This isolates
that write: on a real etcd + kube-apiserver of its own (:class:`e2e.harness.Harness`) with
``crds/`` applied, and with a copy of the DatabaseQuota CRD in another group whose
``status.reservations`` is ``x-kubernetes-list-type: atomic`` instead of a ``map`` keyed
by claim, it writes ``--writes`` reservation lists of each size, one after another, each
carrying the resourceVersion the previous answer returned (as the ledger does), and
reports the object's size, its ``managedFields`` size, the client's latency and the CPU
the apiserver and etcd spent per write (from /proc). Nothing else runs: no operator, no
watchers, so this is the floor of the admission path's write.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # e2e/ is not installed: import it from the repo

from bench import measuring  # noqa: E402
from bench.measuring import cpu_seconds  # noqa: E402
from e2e import controlplane, harness  # noqa: E402

NAMESPACE = "bench"
GROUPS = {"map": "dbquota.io", "atomic": "atomic.bench.dbquota.io"}
"""The list type of ``status.reservations`` -> the API group serving that variant."""


def atomic_variant(crd_text: str) -> str:
    """The DatabaseQuota CRD in its own group, with an atomic reservation list."""
    keyed = "x-kubernetes-list-type: map\n                  x-kubernetes-list-map-keys: [claim]"
    assert keyed in crd_text, "the reservations list is no longer a map keyed by claim"
    text = crd_text.replace(keyed, "x-kubernetes-list-type: atomic")
    return text.replace("dbquota.io", GROUPS["atomic"])


def reservations(n: int, round_: int) -> list[dict[str, Any]]:
    return [
        {
            "claim": f"claim-{i:03d}",
            "cost": 412.3 + round_,
            "storageGiB": 10,
            "pricing": "Live",
            "degraded": False,
            "newClaim": True,
            "reservedAt": "2026-01-01T00:00:00Z",
        }
        for i in range(n)
    ]


def measure(
    client: httpx.Client, state: controlplane.State, *, kind: str, n: int, writes: int
) -> dict[str, float]:
    path = f"/apis/{GROUPS[kind]}/v1alpha1/namespaces/{NAMESPACE}/databasequotas"
    name = f"{kind}-{n}"
    quota = {
        "apiVersion": f"{GROUPS[kind]}/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"monthlyBudget": 1e9},
    }
    obj = client.post(path, json=quota).raise_for_status().json()
    headers = {"Content-Type": "application/merge-patch+json"}
    latencies = []
    api0, etcd0 = cpu_seconds(state.apiserver_pid), cpu_seconds(state.etcd_pid)
    for round_ in range(writes):
        body = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": {
                "reservations": reservations(n, round_),
                "spend": {"observed": 0.0, "reserved": float(round_), "remaining": 1e9},
            },
        }
        started = time.perf_counter()
        response = client.patch(f"{path}/{name}/status", content=json.dumps(body), headers=headers)
        latencies.append(time.perf_counter() - started)
        obj = response.raise_for_status().json()
    api, etcd = cpu_seconds(state.apiserver_pid) - api0, cpu_seconds(state.etcd_pid) - etcd0
    latencies.sort()
    return {
        "object_kib": len(json.dumps(obj)) / 1024,
        "managed_kib": len(json.dumps(obj["metadata"].get("managedFields", []))) / 1024,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "mean_ms": sum(latencies) / len(latencies) * 1000,
        "apiserver_ms": api / writes * 1000,
        "etcd_ms": etcd / writes * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,300", help="reservations per write")
    parser.add_argument("--writes", type=int, default=60, help="writes per size and list type")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="dbquota-bench-writes-"))
    print(measuring.machine(), flush=True)
    try:
        with harness.Harness(workdir) as h:  # torn down on exit, Ctrl-C and SIGTERM
            cluster = h.cluster(reuse=False)  # its own: the apiserver's CPU is measured
            assert cluster.state is not None
            crd = (ROOT / "crds" / "databasequotas.yaml").read_text()
            h.kubectl.apply(crd)
            h.kubectl.apply(atomic_variant(crd))
            h.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/databasequotas.dbquota.io",
                f"crd/databasequotas.{GROUPS['atomic']}",
            )
            h.kubectl("create", "namespace", NAMESPACE)
            time.sleep(5)  # let the apiserver publish the new CRDs' OpenAPI before measuring
            measuring.table(
                "| reservations list | reservations | object KiB | managedFields KiB "
                "| p50 ms | mean ms | apiserver CPU ms per write | etcd CPU ms per write |",
                [],
            )
            with httpx.Client(
                base_url=cluster.server, verify=cluster.ssl_context(), timeout=30
            ) as client:
                for n in sizes:
                    for kind in GROUPS:
                        r = measure(client, cluster.state, kind=kind, n=n, writes=args.writes)
                        print(
                            f"| {kind} | {n} | {r['object_kib']:.1f} | {r['managed_kib']:.1f} "
                            f"| {r['p50_ms']:.1f} | {r['mean_ms']:.1f} | {r['apiserver_ms']:.1f} "
                            f"| {r['etcd_ms']:.1f} |",
                            flush=True,
                        )
            print(f"\nload average at the end {measuring.load()}")
    except KeyboardInterrupt:
        print("\ninterrupted: torn down", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
