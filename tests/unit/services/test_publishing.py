"""Claim statuses written from the reservations their admissions took.

Checks, with informers fed by hand and a fake status writer: a claim whose reservation is
on its quota gets its price, pricing, charge time and the ``Admitted`` condition in one
write, and the namespace's quotas are told; a claim whose reservation is not there yet
waits for the quota's watch to bring it (no polling of the apiserver); a claim in a
namespace with no quota is priced at the catalog; a spec change that reserved nothing
moves only ``observedGeneration``, after a short wait and only while the quota watch is
current; a price below a reservation that came later (a watch behind, another quota's, a
CREATE written late from escrow after the claim's UPDATE) is raised to what the claim
owes, and the leader prices an UPDATE on top of what its own escrow admitted; a claim with
no quota waits for prices rather than show 0; with several quotas the claim carries the
highest price; a standby writes nothing; claims that the writes keep up with
are written ``STEADY_WORKERS`` at a time, so as not to crowd out admissions on the
apiserver; the writes allowed at once double with each ``BACKLOG_AGE`` of backlog; a
backlog is written oldest first with every worker busy and no more; a write that fails
with an unexpected error is tried again, its traceback logged once.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from dbquota.adapters.kube import CLAIMS, QUOTAS, Informer, Resource
from dbquota.domain import billing, reservations
from dbquota.domain.resources import ClaimStatus, Reservation
from dbquota.kits import timestamps
from dbquota.services import publishing, reconciling

STAMP = timestamps.to_rfc3339(time.time())
PRICES = billing.PriceBook(
    instance_hourly={"db.test": 0.0}, storage_gib_month=1.0, observed_at=time.time()
)


class Apiserver:
    """Claim status writes, recorded; also a source for informers (fed by hand)."""

    def __init__(self) -> None:
        self.written: list[tuple[str, ClaimStatus]] = []

    async def patch_claim_status(
        self, *, namespace: str, name: str, uid: str, status: ClaimStatus
    ) -> dict[str, Any]:
        self.written.append((name, status))
        return merged(namespace, name, status)

    async def list(self, resource: Resource, *, namespace: str = "") -> dict[str, Any]:
        raise AssertionError("fed by hand")

    async def watch(
        self, resource: Resource, *, namespace: str = "", version: str, seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        nothing: list[tuple[str, dict[str, Any]]] = []
        for event in nothing:
            yield event
        raise AssertionError("fed by hand")


OBJECTS: dict[tuple[str, str], dict[str, Any]] = {}


def claim(name: str, *, generation: int = 1, **status: object) -> dict[str, Any]:
    obj = {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": str(generation * 10),
            "creationTimestamp": STAMP,
        },
        "spec": {"engine": "postgres", "instanceClass": "db.test", "storageGiB": 40},
        "status": status,
    }
    OBJECTS[("ns", name)] = obj
    return copy.deepcopy(obj)


def merged(namespace: str, name: str, status: ClaimStatus) -> dict[str, Any]:
    obj = copy.deepcopy(OBJECTS[(namespace, name)])
    obj["status"] = {**obj.get("status", {}), **status}
    obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
    OBJECTS[(namespace, name)] = obj
    return copy.deepcopy(obj)


def quota(name: str, *held: dict[str, Any], rv: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"q-{name}",
            "resourceVersion": str(rv),
        },
        "spec": {"monthlyBudget": 1000},
        "status": {"reservations": list(held)},
    }


def hold(
    name: str,
    cost: float,
    *,
    generation: int = 1,
    pricing: str = "Live",
    delta: float | None = None,
) -> dict[str, Any]:
    """A reservation: a CREATE's, or an UPDATE's (``delta``: its growth alone)."""
    held = {
        "claim": name,
        "uid": f"uid-{name}",
        "generation": generation,
        "cost": cost,
        "delta": cost if delta is None else delta,
        "storageGiB": 40,
        "pricing": pricing,
        "reservedAt": STAMP,
    }
    if delta is None:
        held["newClaim"] = True
    return held


class Quotas(Informer[reconciling.QuotaRef]):
    """The quota informer, fed by hand: current (listed, watching) unless told not."""

    up = True

    @property
    def current(self) -> bool:
        return self.up


class World:
    def __init__(self, *, leading: bool = True, quotas_current: bool = True) -> None:
        self.api = Apiserver()
        self.here: dict[str, list[dict[str, Any]]] = {}  # uid -> this replica's unwritten holds
        self.claims: Informer[reservations.ClaimRef] = Informer(
            self.api, CLAIMS, derive=reservations.claim_ref
        )
        self.quotas = Quotas(self.api, QUOTAS, derive=reconciling.quota_ref, keep_objects=True)
        self.quotas.up = quotas_current
        self.published: list[str] = []
        self.publisher = publishing.Publisher(
            kube=self.api,
            claims=self.claims,
            quotas=self.quotas,
            snapshot=lambda: billing.BillingSnapshot(prices=PRICES, highest=PRICES),
            leading=lambda: leading,
            on_published=self.published.append,
            admitted_here=lambda _namespace, uid: cast(list[Reservation], self.here.get(uid, [])),
        )

    async def settle(self, seconds: float = 0.1) -> None:
        task = asyncio.create_task(self.publisher.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publishing, "NO_HOLD_WAIT", 0.1)
    monkeypatch.setattr(publishing, "RECHECK_EVERY", 0.02)
    OBJECTS.clear()


async def test_a_claim_gets_the_price_its_reservation_holds() -> None:
    world = World()
    world.quotas.put(quota("q", hold("a", 40.0)))
    world.claims.put(claim("a"))
    await world.settle()
    ((name, status),) = world.api.written
    assert name == "a"
    assert (status["estimatedMonthlyCost"], status.get("pricing")) == (40.0, "Live")
    assert (status["observedGeneration"], status["reservedAt"]) == (1, STAMP)
    (admitted,) = status["conditions"]
    assert (admitted["type"], admitted["status"], admitted["reason"]) == (
        "Admitted",
        "True",
        "LivePricing",
    )
    assert world.published == ["ns"]
    ref = world.claims.derived(namespace="ns", name="a")
    assert ref is not None
    assert ref.priced


async def test_a_claim_waits_for_its_reservation_to_arrive_by_watch() -> None:
    world = World()
    world.quotas.put(quota("q"))
    world.claims.put(claim("a"))  # admitted from escrow: the reservation comes a moment later
    task = asyncio.create_task(world.publisher.run())
    await asyncio.sleep(0.1)
    assert world.api.written == []
    world.quotas.put(quota("q", hold("a", 40.0), rv=2))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [name for name, _ in world.api.written] == ["a"]


async def test_a_claim_waiting_for_its_reservation_keeps_one_timer_however_often_it_looks() -> None:
    """Every change of a quota makes its namespace's waiting claims look again, and each
    look that finds no reservation comes back later: one timer per claim, not one per look
    (at 200 creates/s that was tens of thousands of timers, each popped to no effect)."""
    world = World()
    world.quotas.put(quota("q"))
    world.claims.put(claim("a"))
    task = asyncio.create_task(world.publisher.run())
    for rv in range(2, 7):
        await asyncio.sleep(0.02)
        world.quotas.put(quota("q", rv=rv))  # some other claim's reservation, say
    await asyncio.sleep(0.02)
    assert len(world.publisher._timers) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert world.api.written == []


async def test_a_claim_this_replica_admitted_from_escrow_is_priced_before_its_write() -> None:
    world = World()
    world.quotas.put(quota("q"))  # the reservation is not written yet
    world.here["uid-a"] = [hold("a", 40.0, pricing="Cached")]
    world.claims.put(claim("a"))
    await world.settle()
    ((name, status),) = world.api.written
    assert (name, status["estimatedMonthlyCost"], status.get("pricing")) == ("a", 40.0, "Cached")
    assert status["reservedAt"] == STAMP


async def test_a_claim_with_no_quota_is_priced_at_the_catalog() -> None:
    world = World()
    world.claims.put(claim("a"))
    await world.settle()
    ((_, status),) = world.api.written
    assert status["estimatedMonthlyCost"] == 40.0
    assert status["conditions"][0]["reason"] == "NoQuota"


async def test_a_spec_change_that_reserved_nothing_moves_only_the_generation() -> None:
    world = World()
    world.quotas.put(quota("q"))
    world.claims.put(claim("a", generation=2, estimatedMonthlyCost=40.0, observedGeneration=1))
    await world.settle(0.3)
    ((_, status),) = world.api.written
    assert status == {"observedGeneration": 2}


async def test_a_spec_change_moves_the_generation_only_while_the_quota_watch_is_current() -> None:
    """While the quota watch is down (the apiserver restarting) the UPDATE's reservation
    may be on the quota unseen: moving the generation at the old price would confirm its
    growth away. It waits, and moves once the watch is current again."""
    world = World(quotas_current=False)
    world.quotas.put(quota("q"))
    world.claims.put(claim("a", generation=2, estimatedMonthlyCost=40.0, observedGeneration=1))
    task = asyncio.create_task(world.publisher.run())
    await asyncio.sleep(0.3)
    assert world.api.written == []
    world.quotas.up = True  # listed again: the reservation would be in by now
    await asyncio.sleep(publishing.RETRY_DELAY + 0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [status for _, status in world.api.written] == [{"observedGeneration": 2}]


async def test_a_reservation_seen_after_the_generation_moved_raises_the_price() -> None:
    """The quota watch was late by more than NO_HOLD_WAIT: the generation moved at the
    old price, then the UPDATE's reservation came (growth 10 on 40). The claim gets the
    price it was admitted at, and that reservation can end."""
    world = World()
    world.quotas.put(quota("q"))
    world.claims.put(claim("a", generation=2, estimatedMonthlyCost=40.0, observedGeneration=1))
    task = asyncio.create_task(world.publisher.run())
    await asyncio.sleep(0.3)
    assert [status for _, status in world.api.written] == [{"observedGeneration": 2}]
    world.quotas.put(quota("q", hold("a", 50.0, generation=2, delta=10.0), rv=2))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [s.get("estimatedMonthlyCost") for _, s in world.api.written] == [None, 50.0]
    ref = world.claims.derived(namespace="ns", name="a")
    assert ref is not None
    assert (ref.cost, ref.priced_generation) == (50.0, 2)
    grown = cast(Reservation, hold("a", 50.0, generation=2, delta=10.0))
    assert reservations.confirmed_by(grown, ref)


async def test_a_create_written_after_the_update_it_did_not_see_adds_to_the_price() -> None:
    """Another replica admitted the claim's UPDATE (growth 10) before the CREATE (40),
    admitted from some replica's escrow, was written, and the claim showed no price then:
    priced from the UPDATE alone at 10, then at 50 once the CREATE's reservation joins."""
    world = World()
    blind = hold("a", 10.0, generation=2, delta=10.0)
    world.quotas.put(quota("q", blind))
    world.claims.put(claim("a", generation=2))
    task = asyncio.create_task(world.publisher.run())
    await asyncio.sleep(0.1)
    joined = {**hold("a", 50.0, generation=2, delta=50.0), "newClaim": True}
    world.quotas.put(quota("q", joined, rv=2))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [s["estimatedMonthlyCost"] for _, s in world.api.written] == [10.0, 50.0]


async def test_the_leader_prices_an_update_on_top_of_what_its_escrow_admitted() -> None:
    """The CREATE is in this replica's escrow, not written; another replica's UPDATE
    reservation on the quota was decided without it (growth 10): the claim shows both."""
    world = World()
    world.here["uid-a"] = [hold("a", 40.0)]
    world.quotas.put(quota("q", hold("a", 10.0, generation=2, delta=10.0)))
    world.claims.put(claim("a", generation=2))
    await world.settle()
    assert [s["estimatedMonthlyCost"] for _, s in world.api.written] == [50.0]


async def test_a_claim_with_no_quota_waits_for_prices_rather_than_show_zero() -> None:
    world = World()
    world.publisher._snapshot = billing.BillingSnapshot
    world.claims.put(claim("a"))
    await world.settle()
    assert world.api.written == []


async def test_with_several_quotas_the_claim_carries_the_highest_price() -> None:
    world = World()
    world.quotas.put(quota("a-quota", hold("a", 40.0)))
    world.quotas.put(quota("b-quota", hold("a", 48.0, pricing="Conservative")))
    world.claims.put(claim("a"))
    await world.settle()
    ((_, status),) = world.api.written
    assert (status["estimatedMonthlyCost"], status.get("pricing")) == (48.0, "Conservative")


async def test_another_quotas_dearer_reservation_seen_late_raises_the_price() -> None:
    world = World()
    world.quotas.put(quota("a-quota", hold("a", 40.0)))
    world.claims.put(claim("a"))
    task = asyncio.create_task(world.publisher.run())
    await asyncio.sleep(0.1)
    world.quotas.put(quota("b-quota", hold("a", 48.0, pricing="Conservative")))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [s["estimatedMonthlyCost"] for _, s in world.api.written] == [40.0, 48.0]


async def test_a_standby_writes_nothing() -> None:
    world = World(leading=False)
    world.quotas.put(quota("q", hold("a", 40.0)))
    world.claims.put(claim("a"))
    await world.settle()
    assert world.api.written == []


async def test_a_standby_forgets_each_claim_once_it_shows_its_price() -> None:
    """A standby sees every claim appear unpriced; it must not hold them all until it
    leads (nor count their age as a backlog then)."""
    world = World(leading=False)
    world.claims.put(claim("a"))
    world.claims.put(claim("b"))
    assert set(world.publisher._ready) == {("ns", "a"), ("ns", "b")}
    priced = claim("a", estimatedMonthlyCost=40.0, observedGeneration=1, reservedAt=STAMP)
    priced["metadata"]["resourceVersion"] = "11"  # the leader's write
    world.claims.put(priced)
    assert set(world.publisher._ready) == {("ns", "b")}


def slow_writes(world: World, seconds: float) -> list[int]:
    """Make ``world``'s status writes take ``seconds``; the list's one item: the most in flight."""
    in_flight, peak = 0, [0]
    write = world.api.patch_claim_status

    async def slow(**kwargs: Any) -> dict[str, Any]:
        nonlocal in_flight
        in_flight += 1
        peak[0] = max(peak[0], in_flight)
        await asyncio.sleep(seconds)
        in_flight -= 1
        return await write(**kwargs)

    world.api.patch_claim_status = slow  # type: ignore[method-assign]
    return peak


async def test_writes_that_keep_up_are_few_at_once() -> None:
    world = World()
    peak = slow_writes(world, 0.005)
    names = [f"c{i:03}" for i in range(20)]  # as a flush of escrow reservations brings them
    world.quotas.put(quota("q", *(hold(name, 40.0) for name in names)))
    for name in names:
        world.claims.put(claim(name))
    await world.settle(0.3)  # 20 writes two at a time: about 50 ms, within BACKLOG_AGE
    assert sorted(name for name, _ in world.api.written) == names
    assert peak == [publishing.STEADY_WORKERS]


def test_writes_at_once_double_with_each_backlog_age_up_to_workers() -> None:
    age = publishing.BACKLOG_AGE
    assert [publishing.in_flight(w * age) for w in (0, 0.99, 1, 2, 3, 4, 100)] == [
        publishing.STEADY_WORKERS,
        publishing.STEADY_WORKERS,
        2 * publishing.STEADY_WORKERS,
        4 * publishing.STEADY_WORKERS,
        publishing.WORKERS,
        publishing.WORKERS,
        publishing.WORKERS,
    ]
    assert publishing.in_flight(-1.0) == publishing.STEADY_WORKERS  # a clock that went back


async def test_a_backlog_is_written_oldest_first_and_never_more_than_workers_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publishing, "BACKLOG_AGE", 0.02)
    world = World()
    peak = slow_writes(world, 0.01)
    names = [f"c{i:03}" for i in range(10 * publishing.WORKERS)]
    world.quotas.put(quota("q", *(hold(name, 40.0) for name in names)))
    for name in names:
        world.claims.put(claim(name))
    await world.settle(1.0)
    written = [name for name, _ in world.api.written]
    assert sorted(written) == names
    assert peak == [publishing.WORKERS]
    assert written[: publishing.WORKERS] == names[: publishing.WORKERS]


async def test_a_write_that_fails_unexpectedly_is_tried_again_with_one_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error that is not the apiserver's answer (an ``OSError`` the Kubernetes client
    let through, a bug) used to drop the claim: out of the ready claims, never tried again,
    its price never shown and its reservation never confirmed. It is tried again after
    ``RETRY_DELAY``, as a failed write is, with its traceback logged once for the claim,
    not at every attempt."""
    monkeypatch.setattr(publishing, "RETRY_DELAY", 0.01)
    world = World()
    write = world.api.patch_claim_status
    attempts = [0]

    async def flaky(*, namespace: str, name: str, uid: str, status: ClaimStatus) -> dict[str, Any]:
        attempts[0] += 1
        if attempts[0] <= 3:
            raise OSError("the token file is being replaced")
        return await write(namespace=namespace, name=name, uid=uid, status=status)

    world.api.patch_claim_status = flaky  # type: ignore[method-assign]
    world.quotas.put(quota("q", hold("a", 40.0)))
    world.claims.put(claim("a"))
    task = asyncio.create_task(world.publisher.run())
    try:
        async with asyncio.timeout(10):
            while not world.api.written:  # noqa: ASYNC110 - polling a plain attribute
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert attempts[0] == 4
    assert [name for name, _ in world.api.written] == ["a"]
    failures = [r for r in caplog.records if r.name == publishing.logger.name]
    assert len(failures) == 3
    assert [r.exc_info is not None for r in failures] == [True, False, False]
    assert "DatabaseClaim ns/a" in failures[0].getMessage()
