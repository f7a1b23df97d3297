"""Operating the real operator process: probes, metrics, and a corrupt cache file.

Checks that ``dbquota run`` serves ``/healthz``, ``/readyz`` and ``/metrics`` (breaker
state, admission decisions by outcome and pricing, ``dbquota_leader`` 1 on the one replica,
which leads) on its metrics port; and that a cache file that is not SQLite is moved aside
(kept, not deleted), rebuilt, and announced as a ``CacheQuarantined`` Warning Event on the
quotas the operator reconciles.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from e2e import harness
from e2e.conftest import FAST
from e2e.harness import Cluster, Kubectl, Operator
from e2e.test_crds import claim, quota
from e2e.waiting import wait_for
from tests.simulating import Simulator


def test_probes_and_metrics_of_the_running_operator(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    base = f"http://127.0.0.1:{operator.metrics_port}"
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # alive from the start
    # Ready once the billing cache is warm and the quota watch has listed: the first sync
    # after start (this module alone may run right after the operator started).
    wait_for(operator.ready, what="/readyz answering 200")
    kubectl.apply(quota(namespace, name="q", monthlyBudget=5000))
    wait_for(lambda: kubectl.get_json("dbq", "q", "-n", namespace).get("status"), what="status")
    kubectl.apply(claim(namespace, name="metered"))
    text = httpx.get(f"{base}/metrics", timeout=5).text
    assert 'dbquota_billing_circuit_state{state="Closed"} 1.0' in text
    assert "dbquota_admission_duration_seconds_count" in text
    assert 'outcome="admitted",pricing="Live"' in text
    # The only replica leads (it wrote the quota's status above); the gauge says so.
    assert "\ndbquota_leader 1.0\n" in text


def test_a_corrupt_cache_is_quarantined_rebuilt_and_announced(
    cluster: Cluster,
    kubectl: Kubectl,
    crds: None,
    billing: Simulator,
    namespace: str,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache.sqlite3"
    cache.write_bytes(b"this is not a database, and it must not be deleted\n" * 100)
    harness.serving_certificate(tmp_path / "certs")
    op = harness.spawn_operator(
        cluster, tmp_path, "--webhook-listen=127.0.0.1", f"--billing-url={billing.url}", *FAST
    )
    try:
        kubectl.apply(quota(namespace, name="q", monthlyBudget=5000))

        def quarantined() -> list[str]:
            events = kubectl.get_json("events", "-n", namespace)["items"]
            return [e["message"] for e in events if e["reason"] == "CacheQuarantined"]

        messages = wait_for(quarantined, timeout=60, what="a CacheQuarantined Event")
        assert str(cache) in messages[0] or "corrupt" in messages[0]
        kept = list(tmp_path.glob("cache.sqlite3.corrupt-*"))
        assert kept, list(tmp_path.iterdir())
        assert kept[0].read_bytes().startswith(b"this is not a database")
        assert cache.read_bytes().startswith(b"SQLite format 3")
    finally:
        harness.stop_operator(op)
