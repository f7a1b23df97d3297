"""Benchmark: what one status write costs the apiserver: a quota's, and a claim's.

    python bench/status_writes.py [--sizes 1,10,100,300] [--writes 60] [--claims 300]

The admission bench (``bench/admission.py``) shows the webhook's latency following the
time of one compare-and-swap merge patch of the DatabaseQuota's status. This isolates that
write: on a real etcd + kube-apiserver of its own (:class:`e2e.harness.Harness`) with
``crds/`` applied (``status.reservations`` an atomic list), and with a copy of the
DatabaseQuota CRD in another group whose ``status.reservations`` is the ``map`` keyed by
claim that it was before (for comparison), it writes ``--writes`` reservation lists of
each size, one after another, each carrying the resourceVersion the previous answer
returned (as the ledger does), and reports the object's size, its ``managedFields`` size,
the client's latency and the CPU the apiserver and etcd spent per write (from /proc).
Nothing else runs: no operator, no watchers, so this is the floor of the admission path's
write.

Then, with ``--claims`` (0: skip), it puts a claim's status write next to the create it
follows, as each created claim costs on the path users take (``bench/create.py``): it
creates that many DatabaseClaims and writes each one's status once, for each of three
bodies, twice over: the body the operator sends (``publishing``'s price, pricing mode,
time, degraded flag and ``Admitted`` condition, with the uid precondition), the same
without the condition, and only the price and the pricing mode. It reports the
apiserver's CPU per create and per status write of each.
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
from dbquota.domain.billing import BillingSnapshot  # noqa: E402
from dbquota.domain.reservations import ClaimRef  # noqa: E402
from dbquota.domain.resources import Reservation  # noqa: E402
from dbquota.services import publishing  # noqa: E402
from e2e import controlplane, harness  # noqa: E402

NAMESPACE = "bench"
GROUPS = {"map": "map.bench.dbquota.io", "atomic": "dbquota.io"}
"""The list type of ``status.reservations`` -> the API group serving that variant."""


def map_variant(crd_text: str) -> str:
    """The DatabaseQuota CRD in its own group, with a reservation list keyed by claim."""
    atomic = "see bench/README.md).\n                  x-kubernetes-list-type: atomic\n"
    assert crd_text.count(atomic) == 1, "the reservations list is no longer atomic"
    keyed = "x-kubernetes-list-type: map\n                  x-kubernetes-list-map-keys: [claim]"
    text = crd_text.replace(atomic, f"see bench/README.md).\n                  {keyed}\n")
    return text.replace("dbquota.io", GROUPS["map"])


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


RESERVED_AT = "2026-12-01T09:00:00Z"
CLAIM_BODIES = ("as sent", "no condition", "price only")
"""The claim status bodies :func:`claim_status_body` makes, by name."""


def claim_status_body(variant: str, uid: str) -> dict[str, Any]:
    """A claim's status merge patch: as the operator builds it
    (:func:`dbquota.services.publishing.claim_status` from a Live reservation, wrapped as
    ``Kube.patch_claim_status`` sends it, uid precondition included), or trimmed."""
    ref = ClaimRef(name="c", uid=uid, cluster_id="ns/c", storage_gib=20)
    held = Reservation(
        claim="c", uid=uid, generation=1, cost=412.35, pricing="Live", reservedAt=RESERVED_AT
    )
    status = publishing.claim_status(
        ref=ref, held=[held], quotas=["q"], snapshot=BillingSnapshot(), now=time.time()
    )
    assert status is not None, "a claim with its reservation is priced at once"
    if variant == "price only":
        return {"status": {k: status[k] for k in ("estimatedMonthlyCost", "pricing")}}
    if variant == "no condition":
        return {
            "metadata": {"uid": uid},
            "status": {k: v for k, v in status.items() if k != "conditions"},
        }
    return {"metadata": {"uid": uid}, "status": dict(status)}


def measure_claims(
    client: httpx.Client, state: controlplane.State, *, variant: str, n: int, round_: int
) -> tuple[float, float]:
    """Apiserver CPU ms per create, and per status write, of ``n`` claims."""
    path = f"/apis/dbquota.io/v1alpha1/namespaces/{NAMESPACE}/databaseclaims"
    names = [f"{variant.replace(' ', '-')}-{round_}-{i}" for i in range(n)]
    spec = {"engine": "postgres", "instanceClass": "db.r6g.large", "storageGiB": 20}
    before = cpu_seconds(state.apiserver_pid)
    uids = []
    for name in names:
        claim = {
            "apiVersion": "dbquota.io/v1alpha1",
            "kind": "DatabaseClaim",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }
        uids.append(client.post(path, json=claim).raise_for_status().json()["metadata"]["uid"])
    created = cpu_seconds(state.apiserver_pid)
    headers = {"Content-Type": "application/merge-patch+json"}
    for name, uid in zip(names, uids, strict=True):
        body = json.dumps(claim_status_body(variant, uid))
        client.patch(f"{path}/{name}/status", content=body, headers=headers).raise_for_status()
    written = cpu_seconds(state.apiserver_pid)
    return (created - before) / n * 1000, (written - created) / n * 1000


def quota_table(
    client: httpx.Client, state: controlplane.State, *, sizes: list[int], writes: int
) -> None:
    """The quota's reservation write, by list type and reservation count."""
    measuring.table(
        "| reservations list | reservations | object KiB | managedFields KiB "
        "| p50 ms | mean ms | apiserver CPU ms per write | etcd CPU ms per write |",
        [],
    )
    for n in sizes:
        for kind in GROUPS:
            r = measure(client, state, kind=kind, n=n, writes=writes)
            print(
                f"| {kind} | {n} | {r['object_kib']:.1f} | {r['managed_kib']:.1f} "
                f"| {r['p50_ms']:.1f} | {r['mean_ms']:.1f} | {r['apiserver_ms']:.1f} "
                f"| {r['etcd_ms']:.1f} |",
                flush=True,
            )


def claim_table(client: httpx.Client, state: controlplane.State, *, n: int) -> None:
    """A claim's create and its one status write, by status body, twice over."""
    measuring.table(
        "| round | claim status body | claims | apiserver CPU ms per create "
        "| apiserver CPU ms per status write | write / create |",
        [],
    )
    for round_ in (1, 2):
        for variant in CLAIM_BODIES:
            create, write = measure_claims(client, state, variant=variant, n=n, round_=round_)
            ratio = f"{write / create:.2f}" if create else "-"  # too few for /proc's ticks
            print(
                f"| {round_} | {variant} | {n} | {create:.2f} | {write:.2f} | {ratio} |",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,300", help="reservations per write")
    parser.add_argument("--writes", type=int, default=60, help="writes per size and list type")
    parser.add_argument("--claims", type=int, default=300, help="claims per body (0: skip)")
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
            h.kubectl.apply(map_variant(crd))
            h.kubectl.apply((ROOT / "crds" / "databaseclaims.yaml").read_text())
            h.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/databasequotas.dbquota.io",
                f"crd/databasequotas.{GROUPS['map']}",
                "crd/databaseclaims.dbquota.io",
            )
            h.kubectl("create", "namespace", NAMESPACE)
            time.sleep(5)  # let the apiserver publish the new CRDs' OpenAPI before measuring
            with httpx.Client(
                base_url=cluster.server, verify=cluster.ssl_context(), timeout=30
            ) as client:
                if sizes:
                    quota_table(client, cluster.state, sizes=sizes, writes=args.writes)
                if args.claims:
                    claim_table(client, cluster.state, n=args.claims)
            print(f"\nload average at the end {measuring.load()}")
    except KeyboardInterrupt:
        print("\ninterrupted: torn down", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
