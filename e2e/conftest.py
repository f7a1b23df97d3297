"""Fixtures of the end-to-end suite: a real control plane, real kubectl, the real operator.

All of them come from :mod:`e2e.harness` (shared with the demo and the benchmarks):

- ``cluster`` (session): a local etcd + kube-apiserver started by :mod:`e2e.controlplane`,
  or, with ``DBQUOTA_E2E_USE_EXISTING=1`` and ``KUBECONFIG`` set, the cluster that names
  (then ``DBQUOTA_E2E_WEBHOOK_HOST`` must be an address of this machine that the cluster's
  apiserver can reach, e.g. the Docker bridge IP for kind).
- ``kubectl``: runs the real kubectl against it; ``crds`` applies ``crds/`` once.
- ``namespace``: a fresh namespace per test.
- ``billing`` (session): the real billing simulator process (``dbquota billing-sim``).
- ``operator`` (session): ``dbquota run --dev-webhook`` as a child process, syncing from
  ``billing`` every second (``FAST`` flags), so outages show within seconds. On the local
  control plane it requires the apiserver's webhook client certificate
  (``--webhook-client-ca``); a test that calls it directly presents
  ``Cluster.webhook_client`` as the apiserver does (:func:`e2e.harness.as_apiserver`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import harness
from e2e.harness import Cluster, Kubectl, Operator
from tests.simulating import FAST_SYNC, Simulator
from tests.simulating import stop as stop_process

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under e2e/ is marked ``e2e``."""
    for item in items:
        if Path(str(item.fspath)).is_relative_to(REPO / "e2e"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = harness.start_cluster(tmp_path_factory.mktemp("controlplane"))
    try:
        yield started
    finally:
        harness.stop_cluster(started)


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    harness.apply_crds(kubectl)


@pytest.fixture
def namespace(kubectl: Kubectl, crds: None) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    # A bare apiserver has no namespace controller: the namespace stays Terminating, which
    # is harmless; its objects are deleted here so that the operator lets go of them.
    kubectl(
        "delete", "databaseclaims,databasequotas", "--all", "-n", name, "--wait=false", check=False
    )
    kubectl("delete", "namespace", name, "--wait=false", check=False)


FAST = (*FAST_SYNC, "--reservation-grace=5")
"""Settings that make an e2e run see outages, recoveries and released holds within seconds."""

CLAIM_CLUSTERS = ("team-a/orders-db", "team-a/billed-db")
"""Extra cluster ids the simulator bills, for claims whose cost should show in billing."""


@pytest.fixture(scope="session")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """The session's billing simulator. Its prices never move (``--price-period=0``): tests
    compare what a claim was charged with the catalog read a moment later, and a price
    change between the two (on the hour, with ``3600``) would fail them."""
    log_path = tmp_path_factory.mktemp("billing") / "simulator.log"
    flags = [f"--cluster-id={c}" for c in CLAIM_CLUSTERS]
    sim = harness.start_billing(log_path, *flags, "--price-period=0", clusters=50, seed=11)
    yield sim
    stop_process(sim.process)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster,
    kubectl: Kubectl,
    crds: None,
    billing: Simulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    op = harness.start_operator(
        cluster,
        kubectl,
        tmp_path_factory.mktemp("operator"),
        extra=(f"--billing-url={billing.url}", *FAST),
        configuration="e2e.dbquota.io",
    )
    yield op
    harness.stop_operator(op, kubectl=kubectl)
