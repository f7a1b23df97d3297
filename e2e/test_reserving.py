"""Reservations by compare-and-swap on the real apiserver never over-admit.

Two ledgers on two separate API connections (as two webhook replicas would have) race
200 reservations of 100.00 each at one quota whose budget fits exactly 10: exactly 10 are
admitted, the status holds exactly those 10, and remaining is 0. Dry-run requests are
decided but reserve nothing. A reconciler-style update through the same ledger is applied
in queue order without losing reservations, while the session operator reconciles too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NoReturn

import pytest

from dbquota.adapters.kube import Kube
from dbquota.domain.resources import QuotaObject, QuotaStatus
from dbquota.services import reserving
from e2e.harness import Cluster, Kubectl
from e2e.test_crds import claim, quota
from tests.deciding import admit_if_it_fits


@pytest.fixture
async def kubes(cluster: Cluster) -> AsyncIterator[tuple[Kube, Kube]]:
    first = await Kube.connect(kubeconfig=str(cluster.kubeconfig))
    second = await Kube.connect(kubeconfig=str(cluster.kubeconfig))
    yield first, second
    await first.close()
    await second.close()


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
async def test_two_replicas_never_over_admit(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube], share: float
) -> None:
    """With escrow (share > 0) too: the replicas' escrow never lets them promise the same
    budget twice, and what one holds is given back or used, so together they admit all
    that fits."""
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    replicas = [
        reserving.Ledger(kube=k, namespace=namespace, name="budget", holder=f"r{i}", share=share)
        for i, k in enumerate(kubes)
    ]

    async def review(i: int) -> bool:
        await asyncio.sleep(i / 100)  # spread over 2 s: later ones find escrow held
        return await replicas[i % 2].reserve(admit_if_it_fits(f"c{i}", 100.0), dry_run=False)

    results = await asyncio.gather(*(review(i) for i in range(200)))
    assert sum(results) == 10
    if share:
        assert sum(r.from_escrow for r in replicas) > 0
    for replica in replicas:
        await replica.close()  # writes what escrow admitted, gives the escrow back
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert len(status["reservations"]) == 10
    assert status["spend"] == {"observed": 0.0, "reserved": 1000.0, "remaining": 0.0}
    assert status.get("escrow", []) == []
    if share == 0.0:  # batching: far fewer writes than admissions would need one by one
        assert sum(r.writes for r in replicas) <= 10
        assert sum(r.from_escrow for r in replicas) == 0


async def test_escrow_admits_from_memory_and_never_overcommits(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    """After one exact admission a replica holds escrow and admits from memory; at every
    instant the apiserver's reservations plus escrow stay within the budget."""
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=10_000))
    ledger = reserving.Ledger(kube=kubes[0], namespace=namespace, name="budget", share=0.5)
    assert await ledger.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    (held,) = status["escrow"]
    assert held["holder"] == ledger.holder
    assert held["cost"] == 4950.0  # half of the 9,900 left after the first claim
    assert status["spend"]["reserved"] + held["cost"] <= 10_000
    for i in range(20):
        assert await ledger.reserve(admit_if_it_fits(f"c{i}", 100.0), dry_run=False)
    assert ledger.from_escrow == 20
    await ledger.close()
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert len(status["reservations"]) == 21
    assert status["spend"]["reserved"] == 2100.0
    assert status.get("escrow", []) == []


async def test_idle_escrow_is_given_back(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    ledger = reserving.Ledger(kube=kubes[0], namespace=namespace, name="budget", share=0.5)
    assert await ledger.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    assert kubectl.get_json("dbq", "budget", "-n", namespace)["status"]["escrow"]
    await asyncio.sleep(reserving.IDLE_RETURN + 1.0)
    assert kubectl.get_json("dbq", "budget", "-n", namespace)["status"].get("escrow") == []


async def test_dry_run_reserves_nothing(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    ledger = reserving.Ledger(kube=kubes[0], namespace=namespace, name="budget")
    assert await ledger.reserve(admit_if_it_fits("dry", 100.0), dry_run=True) is True
    assert ledger.writes == 0
    status = kubectl.get_json("dbq", "budget", "-n", namespace).get("status", {})
    assert status.get("reservations", []) == []


async def test_update_through_the_ledger_keeps_reservations(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    ledger = reserving.Ledger(kube=kubes[0], namespace=namespace, name="budget")

    def observe(q: QuotaObject) -> QuotaStatus:
        spend = dict(q.get("status", {}).get("spend", {}))
        return QuotaStatus(spend={**spend, "observed": 250.0})  # type: ignore[typeddict-item]

    await asyncio.gather(
        ledger.reserve(admit_if_it_fits("a", 100.0), dry_run=False),
        ledger.update(observe),
        ledger.reserve(admit_if_it_fits("b", 100.0), dry_run=False),
    )
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert {r["claim"] for r in status["reservations"]} == {"a", "b"}
    # The operator's own reconciler may have written since; whoever wrote last, the
    # spend adds up and no reservation was lost.
    spend = status["spend"]
    assert spend["reserved"] == 200.0
    assert spend["observed"] in (0.0, 250.0)
    assert spend["remaining"] == 1000.0 - spend["observed"] - spend["reserved"]


async def test_a_crashed_replicas_escrow_keeps_covering_what_it_admitted(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica admits from its escrow and dies before writing those reservations: its
    escrow stays on the status, so the other replica cannot hand out that budget again."""
    monkeypatch.setattr(reserving, "CONTENDED_WAIT", 0.5)
    # The claims exist (created before the quota, so nothing reserved them), so that the
    # session operator's reconciler keeps their reservations (no NeverCreated release).
    names = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(6)]
    items = [claim(namespace, name=name) for name in names]
    kubectl.apply(items)
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    crashing = reserving.Ledger(
        kube=kubes[0], namespace=namespace, name="budget", holder="crashing", share=0.5
    )
    assert await crashing.reserve(admit_if_it_fits("a0", 100.0), dry_run=False)  # exact
    local = [
        await crashing.reserve(admit_if_it_fits(f"a{i}", 100.0), dry_run=False) for i in range(1, 5)
    ]
    assert all(local)
    assert crashing.from_escrow == 4
    crashing.kube = Unreachable()  # type: ignore[assignment]  # "dies": a1..a4 never written
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert [r["claim"] for r in status["reservations"]] == ["a0"]
    assert status["escrow"][0]["cost"] == 450.0  # half of the 900 left after a0

    survivor = reserving.Ledger(kube=kubes[1], namespace=namespace, name="budget", share=0.0)
    admitted = [
        await survivor.reserve(admit_if_it_fits(f"b{i}", 100.0), dry_run=False) for i in range(6)
    ]
    assert sum(admitted) == 4  # 1000 - a0 - the crashed replica's 450 in escrow
    assert 5 + sum(admitted) <= 10  # with a0..a4: never more than the budget fits
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    reserved = sum(r["cost"] for r in status["reservations"])
    assert reserved + sum(e["cost"] for e in status["escrow"]) <= 1000
    assert crashing._writer is not None
    crashing._writer.cancel()


class Unreachable:
    """A Kubernetes connection that never answers: a replica that has died, as seen by it."""

    async def get_quota(self, **_: object) -> NoReturn:
        await asyncio.Event().wait()
        raise AssertionError

    patch_quota_status = get_quota
