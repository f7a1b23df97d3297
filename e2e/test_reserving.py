"""Reservations by compare-and-swap on the real apiserver never over-admit.

Two ledgers on two separate API connections (as two webhook replicas would have) race
200 admissions of 100.00 each at one quota whose budget fits exactly 10: exactly 10 are
admitted, the status holds exactly those 10 in flight, and remaining is 0, with and
without escrow. A lone admission takes no escrow; on a busy quota a replica admits from
escrow with no write and gives idle escrow back; and
dry-run requests reserve nothing. A replica that dies after admitting from escrow leaves
its escrow on the status, so the other replica cannot hand out that budget again. A CREATE
admitted from one replica's escrow and written after another replica wrote the claim's
UPDATE keeps that UPDATE's growth on the quota. An UPDATE that dbquota admits and a second
validating webhook then fails holds its growth only for the grace (``NeverApplied``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, NoReturn

import pytest

from dbquota.adapters.kube import Kube
from dbquota.domain import admission, billing, claims
from dbquota.domain.resources import QuotaObject
from dbquota.services import reserving
from e2e.conftest import FAST
from e2e.harness import Cluster, Kubectl, Operator, free_port
from e2e.test_crds import claim, quota
from e2e.test_enforcement import claim_status, live_quota, status
from e2e.waiting import wait_for

PRICES = billing.PriceBook(
    instance_hourly={"db.test": 0.0}, storage_gib_month=1.0, observed_at=time.time()
)
"""A catalog in which a claim costs exactly its storage in GiB per month."""


def snapshot() -> billing.BillingSnapshot:
    return billing.BillingSnapshot(
        health=billing.BillingHealth(last_success=time.time()), prices=PRICES, highest=PRICES
    )


def request(name: str, cost: int = 100, *, dry_run: bool = False) -> admission.Request:
    return admission.Request(
        name=name,
        uid=f"uid-{name}",
        generation=1,
        claim=claims.ClaimSpec(
            engine="postgres", instance_class="db.test", storage_gib=cost, cluster_id=name
        ),
        old=None,
        dry_run=dry_run,
    )


def ledger(kube: Kube, namespace: str, *, holder: str, share: float) -> reserving.Ledger:
    return reserving.Ledger(
        store=kube,
        namespace=namespace,
        name="budget",
        snapshot=snapshot,
        holder=holder,
        share=share,
    )


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
    replicas = [ledger(k, namespace, holder=f"r{i}", share=share) for i, k in enumerate(kubes)]

    async def review(i: int) -> bool:
        await asyncio.sleep(i / 100)  # spread over 2 s: later ones find escrow held
        return (await replicas[i % 2].reserve(request(f"c{i}"))).allowed

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
    """A lone admission takes the exact path and no escrow; the next within the idle time
    takes escrow, and later ones are admitted from memory; at every instant the
    apiserver's reserved plus escrow stay within the budget."""
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=10_000))
    replica = ledger(kubes[0], namespace, holder="r", share=0.5)
    assert (await replica.reserve(request("first"))).allowed
    assert "escrow" not in kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert (await replica.reserve(request("second"))).allowed
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    (held,) = status["escrow"]
    assert held["holder"] == "r"
    assert held["cost"] == 4900.0  # half of the 9,800 left after the first two claims
    assert status["spend"]["reserved"] + held["cost"] <= 10_000
    for i in range(20):
        assert (await replica.reserve(request(f"c{i}"))).allowed
    assert replica.from_escrow == 20
    await replica.close()
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert len(status["reservations"]) == 22
    assert status["spend"]["reserved"] == 2200.0
    assert status.get("escrow", []) == []


async def test_idle_escrow_is_given_back(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    replica = ledger(kubes[0], namespace, holder="r", share=0.5)
    assert (await replica.reserve(request("first"))).allowed
    assert (await replica.reserve(request("second"))).allowed
    assert kubectl.get_json("dbq", "budget", "-n", namespace)["status"]["escrow"]
    await asyncio.sleep(reserving.IDLE_RETURN)

    def escrow() -> Any:
        return kubectl.get_json("dbq", "budget", "-n", namespace)["status"].get("escrow", [])

    # The return is a compare-and-swap write made once idle; a loaded machine may take
    # seconds to land it, so poll (the ledger's loop runs between the polls).
    for _ in range(60):
        if not escrow():
            break
        await asyncio.sleep(0.5)
    assert escrow() == []


async def test_dry_run_reserves_nothing(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube]
) -> None:
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    replica = ledger(kubes[0], namespace, holder="r", share=0.0)
    assert (await replica.reserve(request("dry", dry_run=True))).allowed
    assert replica.writes == 0
    status = kubectl.get_json("dbq", "budget", "-n", namespace).get("status", {})
    assert status.get("reservations", []) == []


async def test_a_crashed_replicas_escrow_keeps_covering_what_it_admitted(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica admits from its escrow and dies before writing those reservations: its
    escrow stays on the status, so the other replica cannot hand out that budget again."""
    monkeypatch.setattr(reserving, "CONTENDED_WAIT", 0.5)
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=1000))
    # The crashed replica's Lease has not lapsed yet. Without one, the suite's shared
    # operator (if an earlier module started it) would count this holder as lapsed and its
    # reconciler would let the escrow go mid-test, as it should once the Lease lapses.
    holder = f"crashing-{namespace}"
    kubectl.apply(live_lease(holder))
    crashing = ledger(kubes[0], namespace, holder=holder, share=0.5)
    assert (await crashing.reserve(request("a0"))).allowed  # exact, no escrow yet
    assert (await crashing.reserve(request("a1"))).allowed  # exact, takes escrow
    local = [(await crashing.reserve(request(f"a{i}"))).allowed for i in range(2, 6)]
    assert all(local)
    assert crashing.from_escrow == 4
    crashing.store = Unreachable()  # "dies": a2..a5 never written
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert [r["claim"] for r in status["reservations"]] == ["a0", "a1"]
    assert status["escrow"][0]["cost"] == 400.0  # half of the 800 left after a0 and a1

    survivor = ledger(kubes[1], namespace, holder="survivor", share=0.0)
    admitted = [(await survivor.reserve(request(f"b{i}"))).allowed for i in range(6)]
    assert sum(admitted) == 4  # 1000 - a0 - a1 - the crashed replica's 400 in escrow
    assert 6 + sum(admitted) <= 10  # with a0..a5: never more than the budget fits
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert status["spend"]["reserved"] + sum(e["cost"] for e in status["escrow"]) <= 1000
    assert crashing._writer is not None
    crashing._writer.cancel()
    kubectl("delete", "lease", holder, "-n", "default", check=False)


async def test_a_quota_replaced_under_its_name_gets_nothing_of_the_old_one(
    kubectl: Kubectl, namespace: str, kubes: tuple[Kube, Kube], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kubectl replace --force`` (Argo CD's ``Replace=true``, a Helm reinstall) while a
    replica holds escrow and has admitted from it without writing yet. Nothing tells its
    ledger here (no watch, the worst case): its next write loses its compare-and-swap, the
    read that follows finds a new uid under the name, and it stops, writing none of its
    escrow, reservations or totals into the new quota; a new ledger of the same replica
    admits exactly what the new, smaller budget fits."""
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 5.0)  # the escrow admissions wait
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=10_000))
    # A live Lease for the holder, or the suite's shared operator (if an earlier module
    # started it) lets its escrow go as a lapsed replica's, and the poll below then reads
    # the escrow its next flush takes back, less what it admitted (4,500).
    holder = f"replacing-{namespace}"
    kubectl.apply(live_lease(holder))
    old = ledger(kubes[0], namespace, holder=holder, share=0.5)
    for i in range(6):  # exact, exact taking escrow, then four from it (not written yet)
        assert (await old.reserve(request(f"old{i}"))).allowed
    assert old.from_escrow == 4
    escrow: list[dict[str, Any]] = []
    for _ in range(100):  # the write that took the escrow may land after the answers
        escrow = kubectl.get_json("dbq", "budget", "-n", namespace)["status"].get("escrow", [])
        if escrow:
            break
        await asyncio.sleep(0.1)  # not time.sleep: the ledger's writer runs on this loop
    assert escrow[0]["cost"] == 4900.0
    uid = kubectl.get_json("dbq", "budget", "-n", namespace)["metadata"]["uid"]
    smaller = json.dumps(quota(namespace, name="budget", monthlyBudget=300))
    kubectl("replace", "--force", "-f", "-", input_=smaller)
    fresh = kubectl.get_json("dbq", "budget", "-n", namespace)
    assert fresh["metadata"]["uid"] != uid
    writes = old.writes
    for _ in range(300):  # its flush is due 5 s after its last write
        if old._writer is None or old._writer.done():
            break
        await asyncio.sleep(0.1)
    status = kubectl.get_json("dbq", "budget", "-n", namespace).get("status", {})
    assert status.get("reservations", []) == []
    assert status.get("escrow", []) == []
    assert old.writes == writes
    assert old.gone

    new = ledger(kubes[0], namespace, holder=holder, share=0.5)
    admitted = [(await new.reserve(request(f"new{i}"))).allowed for i in range(5)]
    assert sum(admitted) == 3  # 300 at 100 each
    await new.close()
    status = kubectl.get_json("dbq", "budget", "-n", namespace)["status"]
    assert [r["claim"] for r in status["reservations"]] == ["new0", "new1", "new2"]
    assert status["spend"]["reserved"] == 300.0
    assert status.get("escrow", []) == []
    kubectl("delete", "lease", holder, "-n", "default", check=False)


@pytest.mark.parametrize("shown", [100.0, 0.0], ids=["priced", "unpriced"])
async def test_a_create_written_after_its_claims_update_keeps_the_growth(
    kubectl: Kubectl,
    namespace: str,
    kubes: tuple[Kube, Kube],
    monkeypatch: pytest.MonkeyPatch,
    shown: float,
) -> None:
    """Replica ``a`` admits the claim's CREATE (100) from its escrow and writes it up to
    5 s later (the leader's lazy flush); meanwhile ``b`` admits the claim's UPDATE (+50)
    and writes it, knowing only the claim's status price: 100 (the leader priced it from
    memory) or none yet. ``a``'s write used to replace ``b``'s reservation: reserved
    fell by the growth and no reservation was left for generation 2, so the claim was
    then confirmed at its old price."""
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 5.0)  # the escrow admission waits
    kubectl.apply(quota(namespace, name="budget", monthlyBudget=10_000))
    a = ledger(kubes[0], namespace, holder="a", share=0.5)
    b = ledger(kubes[1], namespace, holder="b", share=0.0)
    for name in ("c0", "c1", "x"):  # exact, exact taking escrow, then x from it
        assert (await a.reserve(request(name))).allowed
    assert a.from_escrow == 1
    grown = admission.Request(
        name="x",
        uid="uid-x",
        generation=2,
        claim=request("x", cost=150).claim,
        old=request("x").claim,
        charged=shown,
    )
    assert (await b.reserve(grown)).allowed
    await a.close()  # writes what its escrow admitted
    await b.close()
    # As ``a``'s last write left it: the suite's shared operator may recount the quota
    # after, and with ``shown`` 100 it finds no claim x showing that price (this test
    # creates no claims), so its recount leaves out x's 100 (250): not the ledgers' doing.
    assert a.known.latest is not None
    status = a.known.latest["status"]
    assert status["spend"]["reserved"] == 350.0  # c0, c1, x at 100 and its growth of 50
    x = {r["generation"]: r["cost"] for r in status["reservations"] if r["claim"] == "x"}
    assert x == {2: 150.0}  # what the claim's status must show for generation 2
    assert status.get("escrow", []) == []


def live_lease(holder: str) -> dict[str, Any]:
    """A replica Lease for ``holder``, renewed now for a minute, where the shared operator
    (``--lease-namespace`` default) watches replicas' Leases."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": holder, "namespace": "default"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 60,
            "acquireTime": now,
            "renewTime": now,
        },
    }


class Unreachable:
    """A quota store that never answers: a replica that has died, as seen by it."""

    async def get_quota(self, *, namespace: str, name: str) -> NoReturn:
        await asyncio.Event().wait()
        raise AssertionError

    async def patch_quota_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> QuotaObject:
        await asyncio.Event().wait()
        raise AssertionError


@contextlib.contextmanager
def growth_refused_after_dbquota(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A second validating webhook that fails every UPDATE growing a claim of ``namespace``:
    nothing listens at its address and it fails closed, so the apiserver refuses the
    request after calling dbquota's webhook beside it (webhooks are called side by side).
    A ValidatingAdmissionPolicy would not do: the apiserver runs policies before webhooks,
    and a request a policy denies never reaches dbquota. Yields the webhook's name."""
    name = f"refuse-growth-{namespace}"
    webhook = "refuse-growth.e2e.dbquota.io"
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": webhook,
                    "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/refuse"},
                    "rules": [
                        {
                            "apiGroups": ["dbquota.io"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["databaseclaims"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "matchConditions": [
                        {
                            "name": "grows",
                            "expression": "object.spec.storageGiB > oldObject.spec.storageGiB",
                        }
                    ],
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 2,
                }
            ],
        }
    )
    try:
        yield webhook
    finally:
        kubectl("delete", "validatingwebhookconfiguration", name, "--wait=false", check=False)


def test_an_update_refused_after_admission_holds_its_growth_only_for_the_grace(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """dbquota admits an UPDATE's growth and reserves it for generation 2; the other
    webhook then fails the request, so the claim stays at generation 1. The reservation
    held that growth until the claim was deleted; now it is released once the reconciler
    has seen it for the grace, with an Event, and the quota counts the claim at the price
    it shows."""
    live_quota(kubectl, namespace, "q", monthlyBudget=5000)
    kubectl.apply(claim(namespace, name="grow", storageGiB=100))
    price = claim_status(kubectl, namespace, "grow")["estimatedMonthlyCost"]
    grown = claim(namespace, name="grow", storageGiB=300)
    with growth_refused_after_dbquota(kubectl, namespace) as webhook:
        wait_for(  # the apiserver calls it once its configuration watch has it
            lambda: (
                webhook in kubectl.apply(grown, check=False, extra=("--dry-run=server",)).stderr
            ),
            what="the refusing webhook to be called",
        )
        refused = kubectl.apply(grown, check=False)
        assert refused.returncode != 0
        assert webhook in refused.stderr
        wait_for(
            lambda: [
                r for r in status(kubectl, namespace, "q")["reservations"] if r["generation"] == 2
            ],
            what="dbquota's reservation of the growth",
        )
        grace = float(next(a for a in FAST if a.startswith("--reservation-grace=")).split("=")[1])
        settled = wait_for(
            lambda: (got := status(kubectl, namespace, "q")) and not got["reservations"] and got,
            timeout=grace + 15,
            what="the growth to be released",
        )
    assert kubectl.get_json("dbc", "grow", "-n", namespace)["metadata"]["generation"] == 1
    assert settled["spend"]["reserved"] == pytest.approx(price, abs=0.01)
    assert settled["used"]["storageGiB"] == 100
    events = kubectl.get_json("events", "-n", namespace)["items"]
    assert any(
        e["reason"] == "ReservationReleased" and "never applied" in e["message"] for e in events
    )
