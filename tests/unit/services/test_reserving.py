"""The ledger against an in-memory quota store that does compare-and-swap like the apiserver.

Checks, one behaviour each: with escrow off every admission waits for its write; a quota
that sees a claim now and then takes no escrow (a grant and its return would be two writes
per claim); once requests come within the idle time of each other a replica holds escrow
and admits from memory with no write on the way, then writes those reservations in one
batch; at every write the store never holds
reserved plus escrow over the budget (the invariant that makes escrow safe), also with two
replicas racing at the edge of the budget, where together they admit exactly what fits;
a request kept out only by a live replica's escrow waits until that replica gives it
back, while a lapsed replica's escrow is not waited for; a spec change stops admissions
from the old escrow (a copy older than the ledger's is no news); a failed write keeps the
reservations admitted from escrow and writes them on retry; lost races are retried, not
denied; close() writes everything and gives the escrow back; denials and UPDATEs that grow
take the exact path; an UPDATE that adds nothing and a dry run never wait for a write; a
replica whose lease it cannot trust admits nothing from escrow; a write drops the
reservations whose claims already show their price, the totals unchanged. Far from the
budget a quota keeps its escrow between claims that come seconds apart, and gives it back
soon once another replica's admissions bring it near; the leader writes escrow
admissions whose claims have appeared (priced, or waiting for their status write)
lazily, one whose claim never appears soon, and everything soon once it stops leading.
An admission from escrow wakes the writer only when it brings the next write forward,
not once per review. A quota holding the most reservations its status can keep refuses
the next at once, without a write. A quota deleted and created again under its name
(``kubectl replace --force``) while escrow is held starts clean, whether the watch tells
of the delete (the old ledger's writer stops at once) or not (its next write finds
another uid under the name and stops): the old ledger never writes again, the new
quota's status never holds the old escrow, reservations or totals, and never more than
its own budget; a 404 stops a ledger with one INFO line, not a warning every retry; the
ledgers go by uid, so a delete told late leaves the new quota's ledger alone. A write stuck
on a dead connection fails its round at the reservation deadline ("try again"), not after
30 s, and the next round writes; the writer outlives a failure of its own (a bug in
planning its next round) and still serves the review waiting on it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import pytest

from dbquota.domain import admission, billing, claims, escrow, reservations, views
from dbquota.domain.reservations import ClaimRef
from dbquota.domain.resources import QuotaObject
from dbquota.errors import Conflict, KubeError, NotFound
from dbquota.services import admitting, reserving
from tests.unit.services.billing_api import until

PRICES = billing.PriceBook(
    instance_hourly={"db.test": 0.0}, storage_gib_month=1.0, observed_at=time.time()
)
"""A catalog in which a claim costs exactly its storage in GiB per month."""


def snapshot() -> billing.BillingSnapshot:
    return billing.BillingSnapshot(
        health=billing.BillingHealth(last_success=time.time()), prices=PRICES, highest=PRICES
    )


def request(
    name: str, cost: int = 100, *, old: int | None = None, dry_run: bool = False
) -> admission.Request:
    def spec(gib: int) -> claims.ClaimSpec:
        return claims.ClaimSpec(
            engine="postgres", instance_class="db.test", storage_gib=gib, cluster_id=name
        )

    return admission.Request(
        name=name,
        uid=f"uid-{name}",
        generation=1 if old is None else 2,
        claim=spec(cost),
        old=None if old is None else spec(old),
        charged=float(old or 0),
        dry_run=dry_run,
    )


class Store:
    """One DatabaseQuota with a resourceVersion; merge patches of status by CAS. It can be
    deleted (every call a 404) and created again under its name, as a new object."""

    def __init__(self, budget: float) -> None:
        self.quota: dict[str, Any] = {}
        self.incarnation = 0
        self.recreate(budget, version=1)
        self.writes: list[dict[str, Any]] = []
        self.fail_next = 0
        self.conflict_next = 0
        self.latency = 0.002
        self.gone = False
        self.calls = 0  # reads and writes asked of it, answered or not
        self.stuck = 0  # writes to come that get no answer (a dead connection) for 30 s

    def recreate(self, budget: float, *, version: int | None = None) -> None:
        """A new quota by the same name (``kubectl replace --force``): a new uid, generation
        1 again, no status, a later resourceVersion (etcd's revision is global)."""
        self.incarnation += 1
        old = self.quota.get("metadata", {}).get("resourceVersion", "0")
        self.quota = {
            "metadata": {
                "name": "q",
                "namespace": "ns",
                "uid": f"uid-q-{self.incarnation}",
                "resourceVersion": str(version or int(old) + 10),
                "generation": 1,
            },
            "spec": {"monthlyBudget": budget},
            "status": {},
        }
        self.gone = False

    def _answer(self) -> None:
        self.calls += 1
        if self.gone:
            raise NotFound('databasequotas.dbquota.io "q" not found')

    @property
    def budget(self) -> float:
        return float(self.quota["spec"]["monthlyBudget"])

    def committed(self) -> float:
        """Reserved plus every escrow, as the apiserver holds them."""
        status = self.quota["status"]
        reserved = float(status.get("spend", {}).get("reserved", 0.0))
        return reserved + sum(float(e["cost"]) for e in status.get("escrow", []))

    def held(self) -> list[str]:
        return [r["claim"] for r in self.quota["status"].get("reservations", [])]

    def change_spec(self, budget: float) -> None:
        self.quota["spec"]["monthlyBudget"] = budget
        self.quota["metadata"]["generation"] += 1
        self._bump()

    def _bump(self) -> None:
        meta = self.quota["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        await asyncio.sleep(self.latency)
        self._answer()
        return copy.deepcopy(self.quota)  # type: ignore[return-value]

    async def patch_quota_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> QuotaObject:
        await asyncio.sleep(self.latency)
        self._answer()
        if self.stuck:
            self.stuck -= 1
            await asyncio.sleep(30)  # then Kube's generic request timeout would fail it
            raise KubeError("patch DatabaseQuota ns/q/status: ServerTimeoutError")
        if self.fail_next:
            self.fail_next -= 1
            raise KubeError("apiserver unavailable")
        if self.conflict_next:
            self.conflict_next -= 1
            self._bump()  # someone else wrote
        if resource_version != self.quota["metadata"]["resourceVersion"]:
            raise Conflict("changed")
        self.quota["status"].update(copy.deepcopy(dict(status)))
        self._bump()
        self.writes.append(copy.deepcopy(dict(status)))
        assert self.committed() <= self.budget + 1e-6, "reserved + escrow over budget"
        return copy.deepcopy(self.quota)  # type: ignore[return-value]


def ledger(
    store: Store,
    holder: str = "me",
    share: float = 0.5,
    *,
    alive: bool = True,
    live: Any = lambda _: True,
    present: Any = lambda _: {},
    leading: Any = lambda: False,
) -> reserving.Ledger:
    """A replica on a busy quota: a request came a moment ago, so its next takes escrow."""
    replica = reserving.Ledger(
        store=store,
        namespace="ns",
        name="q",
        snapshot=snapshot,
        holder=holder,
        share=share,
        alive=lambda: alive,
        live=live,
        present=present,
        leading=leading,
    )
    replica.account.demand(time.monotonic())
    return replica


def priced(name: str) -> ClaimRef:
    """Claim ``name`` as the watch shows it once its price of 100 is written."""
    return ClaimRef(
        name=name,
        uid=f"uid-{name}",
        cluster_id=name,
        storage_gib=100,
        cost=100.0,
        priced_generation=1,
    )


async def admitted(replica: reserving.Ledger, req: admission.Request) -> bool:
    return (await replica.reserve(req)).allowed


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 0.01)
    monkeypatch.setattr(reserving, "IDLE_RETURN", 0.2)
    monkeypatch.setattr(reserving, "QUIET_RETURN", 0.2)  # near or far alike, unless a test says
    monkeypatch.setattr(reserving, "LEADER_FLUSH_INTERVAL", 0.01)
    monkeypatch.setattr(reserving, "CONTENDED_POLL", 0.01)


async def test_without_escrow_every_admission_waits_for_its_write() -> None:
    store = Store(budget=1000)
    exact = ledger(store, share=0.0)
    for i in range(3):
        assert await admitted(exact, request(f"c{i}"))
        assert len(store.held()) == i + 1
    assert exact.from_escrow == 0
    assert "escrow" not in store.quota["status"]
    assert store.quota["status"]["spend"] == {
        "observed": 0.0,
        "reserved": 300.0,
        "remaining": 700.0,
    }
    assert store.quota["status"]["used"]["claims"] == 3


async def test_escrow_admits_from_memory_then_writes_in_one_batch() -> None:
    store = Store(budget=10_000)
    replica = ledger(store)
    assert await admitted(replica, request("first"))
    assert store.quota["status"]["escrow"][0]["cost"] == 4950.0
    writes = len(store.writes)
    for i in range(10):  # no await inside reserve on this path: all before any write
        assert await admitted(replica, request(f"c{i}"))
    assert (replica.from_escrow, len(store.writes)) == (10, writes)
    await until(lambda: len(store.writes) > writes)
    assert len(store.writes) == writes + 1  # one batch
    status = store.quota["status"]
    assert len(status["reservations"]) == 11
    assert status["escrow"][0]["cost"] == 3950.0  # moved from escrow to reservations
    assert status["spend"]["reserved"] == 1100.0


async def test_a_quota_that_sees_a_claim_now_and_then_takes_no_escrow() -> None:
    store = Store(budget=10_000)
    replica = reserving.Ledger(store=store, namespace="ns", name="q", snapshot=snapshot, share=0.5)
    for i in range(2):  # each after the escrow's idle time: one write each, no grant
        assert await admitted(replica, request(f"lone{i}"))
        assert "escrow" not in store.quota["status"]
        await asyncio.sleep(0.25)
    assert len(store.writes) == 2
    assert await admitted(replica, request("first"))  # a burst starts: the second takes it
    assert await admitted(replica, request("second"))
    assert store.quota["status"]["escrow"][0]["holder"] == replica.holder
    assert await admitted(replica, request("third"))
    assert replica.from_escrow == 1


@pytest.mark.parametrize(("budget", "kept"), [(10_000, True), (450, False)])
async def test_far_from_the_budget_a_quota_keeps_its_escrow_between_claims(
    monkeypatch: pytest.MonkeyPatch, budget: float, kept: bool
) -> None:
    monkeypatch.setattr(reserving, "IDLE_RETURN", 0.1)
    monkeypatch.setattr(reserving, "QUIET_RETURN", 5.0)
    store = Store(budget=budget)
    replica = reserving.Ledger(store=store, namespace="ns", name="q", snapshot=snapshot, share=0.5)
    for i in range(3):  # a claim every 0.25 s: longer than IDLE_RETURN, shorter than QUIET_RETURN
        assert await admitted(replica, request(f"c{i}"))
        await asyncio.sleep(0.25)
    # Far from it, the second takes escrow and the third comes from it; with 450 the room
    # left after the first (350) would not fit four more: exact writes, one each, no escrow.
    assert replica.from_escrow == (1 if kept else 0)
    assert bool(store.quota["status"].get("escrow")) is kept
    assert store.held() == ["c0", "c1", "c2"]


async def test_an_escrow_kept_far_from_the_budget_goes_back_soon_once_the_room_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reserving, "IDLE_RETURN", 0.1)
    monkeypatch.setattr(reserving, "QUIET_RETURN", 60.0)
    store = Store(budget=10_000)
    a, b = ledger(store, "a", 0.5), ledger(store, "b", 0.0)
    assert await admitted(a, request("a1"))
    assert store.quota["status"]["escrow"][0]["cost"] == 4950.0
    await asyncio.sleep(0.3)
    assert store.quota["status"]["escrow"]  # far from the budget: kept past IDLE_RETURN
    assert await admitted(b, request("b1", 4600))  # 350 left outside a's escrow
    a.observe(cast(QuotaObject, copy.deepcopy(store.quota)))  # what a's watch delivers
    await until(lambda: store.quota["status"]["escrow"] == [])  # near it now: given back


async def test_the_room_outside_escrow_is_looked_at_once_per_copy_not_per_admission(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks = 0
    free = views.View.free

    def counted(view: views.View, own: escrow.Allowance) -> escrow.Allowance:
        nonlocal looks
        looks += 1
        return free(view, own)

    monkeypatch.setattr(views.View, "free", counted)
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 5.0)  # no write, so no new copy
    replica = ledger(Store(budget=10_000))
    assert await admitted(replica, request("first"))  # takes escrow
    looks = 0
    for i in range(20):
        assert await admitted(replica, request(f"c{i}"))
        await asyncio.sleep(0)  # the writer plans its next write after each
    assert replica.from_escrow == 20
    assert looks <= 1  # the copy its write answered with, once


async def test_admissions_from_escrow_wake_the_writer_only_to_bring_its_write_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plans = 0
    next_delay = reserving.Ledger._next_delay

    def counted(ledger: reserving.Ledger) -> float | None:
        nonlocal plans
        plans += 1
        return next_delay(ledger)

    monkeypatch.setattr(reserving.Ledger, "_next_delay", counted)
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 0.3)  # past the admissions below
    monkeypatch.setattr(reserving, "IDLE_RETURN", 5.0)
    store = Store(budget=10_000)
    replica = ledger(store)
    assert await admitted(replica, request("first"))  # takes escrow; the writer then sleeps
    await asyncio.sleep(0.01)
    writes, plans = len(store.writes), 0
    assert await admitted(replica, request("c0"))  # the first unwritten: a flush is now due
    await asyncio.sleep(0.01)
    assert plans == 1
    for i in range(1, 20):
        assert await admitted(replica, request(f"c{i}"))
        await asyncio.sleep(0)  # room for a writer that was woken
    assert plans == 1  # the flush the first one scheduled takes them all
    await until(lambda: not replica.account.unwritten)
    assert len(store.writes) == writes + 1
    assert len(store.quota["status"]["reservations"]) == 21


async def test_the_leader_writes_escrow_admissions_lazily_once_their_claims_appear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reserving, "IDLE_RETURN", 60.0)  # both past what until() waits
    monkeypatch.setattr(reserving, "LEADER_FLUSH_INTERVAL", 60.0)
    store = Store(budget=10_000)
    leads = True
    seen: dict[str, ClaimRef] = {}
    replica = ledger(store, leading=lambda: leads, present=lambda namespace: seen)
    assert await admitted(replica, request("first"))
    writes = len(store.writes)
    assert await admitted(replica, request("second"))
    seen["uid-second"] = priced("second")  # the leader's publisher priced it from memory
    assert await admitted(replica, request("waiting"))
    # It exists, its status write not made yet (they fall behind in a burst): the
    # publisher prices it from memory, so its reservation need not be on the quota.
    seen["uid-waiting"] = ClaimRef(
        name="waiting", uid="uid-waiting", cluster_id="waiting", storage_gib=100
    )
    await asyncio.sleep(2 * reserving.FLUSH_INTERVAL)
    assert len(store.writes) == writes  # no write for either yet
    assert await admitted(replica, request("ghost"))  # a claim that never shows up
    await until(lambda: "ghost" in store.held())  # within FLUSH_INTERVAL, for the reconciler
    assert "uid-second" not in replica.account.unwritten  # written along with it
    assert "waiting" in store.held()  # not priced when written: held on the quota
    assert len(store.writes) == writes + 1
    assert await admitted(replica, request("third"))
    seen["uid-third"] = priced("third")
    await asyncio.sleep(0.1)
    assert len(store.writes) == writes + 1
    leads = False
    replica.wake()  # what Ledgers.wake does when the lead is lost
    await until(lambda: not replica.account.unwritten)
    assert len(store.writes) == writes + 2


async def test_the_leaders_lazy_write_comes_early_once_a_quarter_of_the_most_held_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst faster than 400 a second would otherwise gather more admissions in the
    leader's memory between two lazy writes than a quota may hold, and the bound would
    refuse creates whose claims all show their price (the write drops them)."""
    monkeypatch.setattr(reservations, "MOST_HELD", 40)
    monkeypatch.setattr(reserving, "IDLE_RETURN", 60.0)
    monkeypatch.setattr(reserving, "QUIET_RETURN", 60.0)
    monkeypatch.setattr(reserving, "LEADER_FLUSH_INTERVAL", 60.0)
    store = Store(budget=1_000_000)
    seen: dict[str, ClaimRef] = {}
    replica = ledger(store, leading=lambda: True, present=lambda namespace: seen)
    refused = []
    for i in range(200):
        decision = await replica.reserve(request(f"c{i}", 1))
        if not decision.allowed:
            refused.append(decision.reason)
        seen[f"uid-c{i}"] = priced(f"c{i}")  # the leader's publisher priced it from memory
        await asyncio.sleep(0.002)
    assert refused == []
    assert replica.from_escrow > 150
    assert len(replica.account.unwritten) < 40


async def test_a_write_drops_the_reservations_whose_claims_show_their_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The escrow stays for the whole test: its return after IDLE_RETURN would be a write of
    # its own, inside the window where no write is expected (it was, on a slow CI run).
    monkeypatch.setattr(reserving, "IDLE_RETURN", 5.0)
    store = Store(budget=10_000)
    seen: dict[str, ClaimRef] = {}
    replica = ledger(store, present=lambda namespace: seen if namespace == "ns" else {})
    assert await admitted(replica, request("first"))
    assert await admitted(replica, request("second"))
    await until(lambda: store.held() == ["first", "second"])
    # The leader wrote first's price to its status; second exists, not priced yet.
    seen["uid-first"] = priced("first")
    seen["uid-second"] = ClaimRef(
        name="second", uid="uid-second", cluster_id="second", storage_gib=100
    )
    writes = len(store.writes)
    await asyncio.sleep(0.1)
    assert len(store.writes) == writes  # nothing to write: no write only to drop one
    assert await admitted(replica, request("third"))
    await until(lambda: store.held() == ["second", "third"])
    assert store.quota["status"]["spend"]["reserved"] == 300.0  # first counts at its price
    assert store.quota["status"]["used"]["claims"] == 3


async def test_idle_escrow_is_given_back_and_close_writes_everything() -> None:
    store = Store(budget=1000)
    replica = ledger(store)
    await replica.reserve(request("first"))
    assert store.quota["status"]["escrow"]
    await until(lambda: store.quota["status"]["escrow"] == [])  # after IDLE_RETURN
    await replica.reserve(request("second"))
    await replica.reserve(request("third"))
    await replica.close()
    assert store.held() == ["first", "second", "third"]
    assert store.quota["status"]["escrow"] == []


@pytest.mark.parametrize("share", [0.0, 0.25, 0.9])
async def test_two_replicas_at_the_edge_admit_exactly_what_fits(share: float) -> None:
    store = Store(budget=1000)
    replicas = [ledger(store, "a", share), ledger(store, "b", share)]

    async def review(i: int) -> bool:
        await asyncio.sleep(i * 0.003)
        return await admitted(replicas[i % 2], request(f"c{i}"))

    results = await asyncio.gather(*(review(i) for i in range(60)))
    assert sum(results) == 10
    for replica in replicas:
        await replica.close()
    assert len(store.held()) == 10
    assert store.quota["status"]["spend"]["remaining"] == 0.0
    assert store.quota["status"].get("escrow", []) == []


async def test_a_request_kept_out_by_live_escrow_waits_for_its_return() -> None:
    store = Store(budget=1000)
    a, b = ledger(store, "a", 0.9), ledger(store, "b", 0.9)
    assert await admitted(a, request("a1"))
    assert store.quota["status"]["escrow"][0]["cost"] == 810.0  # 0.9 x 900
    started = time.monotonic()
    assert await admitted(b, request("b1", 500))  # fits without it
    assert time.monotonic() - started >= 0.15  # waited for a's idle return
    assert store.held() == ["a1", "b1"]


def lapsed_escrow(store: Store) -> None:
    store.quota["status"]["escrow"] = [
        escrow.entry(holder="gone", allowance=escrow.Allowance(cost=800.0), generation=1)
    ]


async def test_waiting_is_bounded_then_the_escrow_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reserving, "CONTENDED_WAIT", 0.05)
    store = Store(budget=1000)
    lapsed_escrow(store)
    assert not await admitted(ledger(store), request("big", 500))


async def test_a_lapsed_holders_escrow_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reserving, "CONTENDED_WAIT", 5.0)
    store = Store(budget=1000)
    lapsed_escrow(store)
    started = time.monotonic()
    assert not await admitted(
        ledger(store, live=lambda holder: holder != "gone"), request("big", 500)
    )
    assert time.monotonic() - started < 1.0


async def test_a_spec_change_stops_admissions_from_the_old_escrow() -> None:
    store = Store(budget=10_000)
    replica = ledger(store)
    await replica.reserve(request("first"))
    store.change_spec(budget=150)
    replica.observe(copy.deepcopy(store.quota))  # type: ignore[arg-type]
    assert not await admitted(replica, request("second"))
    assert replica.from_escrow == 0


async def test_an_older_copy_than_the_ledgers_is_no_news() -> None:
    store = Store(budget=10_000)
    stale = copy.deepcopy(store.quota)
    store.change_spec(budget=10_000)  # generation 2
    replica = ledger(store)
    await replica.reserve(request("first"))
    replica.observe(stale)  # type: ignore[arg-type]  # a watch event from before
    assert await admitted(replica, request("second"))
    assert replica.from_escrow == 1


async def test_a_failed_write_keeps_escrow_admissions_and_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reserving, "RETRY_DELAY", 0.01)
    store = Store(budget=10_000)
    replica = ledger(store)
    await replica.reserve(request("first"))
    store.fail_next = 2
    assert await admitted(replica, request("second"))
    await until(lambda: store.held() == ["first", "second"])


async def test_what_is_unwritten_is_told_once_the_write_in_flight_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The leader's reconciler asks which escrow admissions are not written yet; while a
    write is in flight (or failed: it may have landed) the answer would be ambiguous."""
    monkeypatch.setattr(reserving, "RETRY_DELAY", 0.3)
    monkeypatch.setattr(reserving, "IDLE_RETURN", 5.0)  # the escrow stays through the waits
    store = Store(budget=10_000)
    replica = ledger(store)
    await replica.reserve(request("first"))  # takes the escrow, written
    assert await replica.unwritten(0.01) == frozenset()
    store.latency = 0.2
    assert await admitted(replica, request("second"))
    assert await replica.unwritten(0.0) == frozenset({"uid-second"})  # its flush is not sent yet
    await asyncio.sleep(0.05)  # now it is
    assert await replica.unwritten(0.01) is None
    assert await replica.unwritten(1.0) == frozenset()
    assert store.held() == ["first", "second"]
    store.latency, store.fail_next = 0.002, 1
    assert await admitted(replica, request("third"))
    await asyncio.sleep(0.1)  # its flush failed; the retry comes later
    assert await replica.unwritten(0.01) is None
    assert await replica.unwritten(1.0) == frozenset()
    assert store.held() == ["first", "second", "third"]


async def test_a_failed_write_that_flushed_nothing_leaves_nothing_unsure() -> None:
    """Only a flush of escrow admissions can make the quota as read ambiguous: a failed
    exact write must not keep the leader's reconciler waiting on this quota for ever
    (nothing is owed after it, so no later write would come to settle it)."""
    store = Store(budget=10_000)
    exact = ledger(store, share=0.0)
    store.fail_next = 1
    with pytest.raises(KubeError):
        await exact.reserve(request("c"))
    assert await exact.unwritten(0.01) == frozenset()


async def test_the_ledgers_tell_the_leader_what_this_replica_admitted_and_has_not_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 5.0)  # no flush during the test
    store = Store(budget=10_000)
    ledgers = admitting.Ledgers(store, snapshot=snapshot, share=0.5, holder="me")
    replica = ledgers.of(namespace="ns", name="q")
    replica.account.demand(time.monotonic())
    await replica.reserve(request("first"))  # exact, takes the escrow
    assert await admitted(replica, request("second"))  # from escrow, not written
    (held,) = ledgers.admitted_here("ns", "uid-second")
    assert (held["claim"], held["cost"]) == ("second", 100.0)
    assert ledgers.admitted_here("ns", "uid-first") == []  # written with its round
    assert ledgers.admitted_here("other", "uid-second") == []
    assert await ledgers.unwritten("ns", "q", 0.1) == frozenset({"uid-second"})
    assert await ledgers.unwritten("ns", "none-yet", 0.1) == frozenset()
    ledgers.drop(namespace="ns", name="q")
    assert ledgers.admitted_here("ns", "uid-second") == []


async def test_lost_races_are_retried_not_denied() -> None:
    store = Store(budget=10_000)
    store.conflict_next = 12  # more than any fixed number of attempts would allow
    replica = ledger(store, share=0.0)
    assert await admitted(replica, request("patient"))
    assert replica.conflicts == 12
    assert store.held() == ["patient"]


async def test_denials_and_updates_that_grow_take_the_exact_path() -> None:
    store = Store(budget=10_000)
    replica = ledger(store)
    await replica.reserve(request("first"))
    writes = len(store.writes)
    assert await admitted(replica, request("first", 200, old=100))  # grows by 100
    assert len(store.writes) == writes + 1
    assert not await admitted(replica, request("huge", 9_850))
    assert replica.from_escrow == 0
    # What this replica's own escrow keeps out is admitted: the round gives it back.
    assert await admitted(replica, request("big", 9_800))
    assert store.quota["status"]["spend"]["reserved"] == 10_000.0


async def test_a_quota_holding_the_most_reservations_refuses_at_once_without_a_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refusal is backpressure: it is not queued behind a write of the quota, which is
    at its fullest (the write would also flush what escrow admitted), and does not wait
    for an apiserver that is slow."""
    monkeypatch.setattr(reservations, "MOST_HELD", 3)
    store = Store(budget=10_000)
    replica = ledger(store)
    for name in ("a", "b", "c"):
        assert await admitted(replica, request(name))
    assert replica.from_escrow == 2  # "b" and "c" are not written yet
    writes = len(store.writes)
    store.latency = 3600.0  # the apiserver hangs
    decision = await asyncio.wait_for(replica.reserve(request("d")), 1.0)
    assert decision.reason == "TooManyInFlight"
    assert not decision.allowed
    assert len(store.writes) == writes


async def test_a_request_abandoned_while_queued_reserves_nothing() -> None:
    """The apiserver gave up on the review (its timeout; the webhook cancels the review)
    while it waited behind a slow write: its create failed, so no round may hold budget
    for it. The request queued beside it is decided and written as usual."""
    store = Store(budget=10_000)
    exact = ledger(store, share=0.0)
    assert await admitted(exact, request("before"))
    store.latency = 0.2  # a slow apiserver: the next write is in flight a while
    first = asyncio.create_task(exact.reserve(request("first")))
    await asyncio.sleep(0.05)
    abandoned = asyncio.create_task(exact.reserve(request("abandoned")))
    kept = asyncio.create_task(exact.reserve(request("kept")))
    await asyncio.sleep(0.05)
    abandoned.cancel()
    assert (await first).allowed
    assert (await kept).allowed
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert store.held() == ["before", "first", "kept"]
    assert all("abandoned" not in str(write) for write in store.writes)


async def test_an_update_that_adds_nothing_never_waits_for_a_write() -> None:
    store = Store(budget=1000)
    replica = ledger(store)
    await replica.reserve(request("first"))
    store.latency = 3600.0  # the apiserver hangs
    decision = await asyncio.wait_for(replica.reserve(request("first", 100, old=100)), 1.0)
    assert decision.allowed
    assert decision.reason == "NoIncrease"


async def test_dry_run_reserves_nothing_and_never_waits() -> None:
    store = Store(budget=1000)
    replica = ledger(store)
    assert await admitted(replica, request("dry", dry_run=True))
    await replica.reserve(request("real"))
    store.latency = 3600.0
    assert await asyncio.wait_for(admitted(replica, request("dry", dry_run=True)), 1.0)
    store.latency = 0.002
    await replica.close()
    assert store.held() == ["real"]


async def test_no_escrow_admission_without_a_trusted_lease() -> None:
    store = Store(budget=10_000)
    replica = ledger(store, alive=False)
    for i in range(3):
        assert await admitted(replica, request(f"c{i}"))
    assert replica.from_escrow == 0
    assert store.quota["status"].get("escrow", []) == []


# -- a quota deleted and created again under its name ----------------------------------


def reviewed(ledgers: admitting.Ledgers, store: Store) -> reserving.Ledger:
    """The ledger a review of a claim gets for quota ns/q, as ``Admission.review`` asks for
    it: with the watch's copy of the quota."""
    return ledgers.of(namespace="ns", name="q", quota=cast(QuotaObject, copy.deepcopy(store.quota)))


def deleted(ledgers: admitting.Ledgers, uid: str | None) -> None:
    """The watch tells of the delete of quota ns/q, the object ``uid`` (as the runtime does)."""
    ledgers.drop(namespace="ns", name="q", uid=uid or "")


def assert_fresh(writes: list[dict[str, Any]], *, budget: float) -> None:
    """Each write holds nothing of the old quota: no old claim's reservation, no escrow or
    reservations over the new budget (the old escrow was 4,950 and 4,850)."""
    for write in writes:
        held = write.get("reservations", [])
        assert all(r["claim"].startswith("new") for r in held), held
        escrowed = sum(float(e["cost"]) for e in write.get("escrow", []))
        reserved = float(write.get("spend", {}).get("reserved", 0.0))
        assert reserved + escrowed <= budget, write


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_quota_deleted_and_created_again_starts_clean(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``kubectl replace --force`` (Argo CD's ``Replace=true``, a Helm reinstall) while this
    replica holds escrow and has admitted from it without writing yet: the watch's delete
    stops the old ledger for good (no write, no retries); the new quota of the same name, a
    smaller budget and generation 1 again, gets a ledger that starts from nothing."""
    caplog.set_level(logging.INFO, logger=reserving.__name__)
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 0.05)
    monkeypatch.setattr(reserving, "RETRY_DELAY", 0.01)
    store = Store(budget=10_000)
    ledgers = admitting.Ledgers(store, snapshot=snapshot, share=0.5, holder="me")
    old = reviewed(ledgers, store)
    old.account.demand(time.monotonic())
    assert await admitted(old, request("old0"))  # exact: takes escrow
    assert await admitted(old, request("old1"))  # from that escrow, not written yet
    assert store.quota["status"]["escrow"][0]["cost"] == 4950.0
    old_writes, old_uid = old.writes, store.quota["metadata"]["uid"]
    store.gone = True
    deleted(ledgers, old_uid)
    await asyncio.sleep(0.1)  # the old flush was due meanwhile
    store.recreate(budget=1000)
    start = len(store.writes)
    await asyncio.sleep(0.3)  # past the old escrow's idle return, and many retry delays
    assert store.writes[start:] == []
    assert store.quota["status"] == {}
    new = reviewed(ledgers, store)
    assert new is not old
    new.account.demand(time.monotonic())
    results = [await admitted(new, request(f"new{i}")) for i in range(12)]
    assert sum(results) == 10  # what the new budget fits, at 100 each
    await new.close()
    assert_fresh(store.writes[start:], budget=1000)
    assert old.writes == old_writes
    assert new.writes == len(store.writes) - start  # every write since is the new ledger's
    assert store.held() == [f"new{i}" for i in range(10)]
    assert store.quota["status"]["spend"]["reserved"] == 1000.0
    assert store.quota["status"]["escrow"] == []
    assert old._writer is not None
    assert old._writer.done()
    assert warnings_of(caplog) == []


async def escrow_taken(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> tuple[Store, admitting.Ledgers, reserving.Ledger]:
    """A ledger of a quota of 10,000 that took escrow with ``old0`` and admitted ``old1``
    from it (its flush comes next, in 0.05 s), the reservation module's INFO captured."""
    caplog.set_level(logging.INFO, logger=reserving.__name__)
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 0.05)
    monkeypatch.setattr(reserving, "RETRY_DELAY", 0.01)
    store = Store(budget=10_000)
    ledgers = admitting.Ledgers(store, snapshot=snapshot, share=0.5, holder="me")
    old = reviewed(ledgers, store)
    old.account.demand(time.monotonic())
    assert await admitted(old, request("old0"))
    assert await admitted(old, request("old1"))
    return store, ledgers, old


async def test_a_ledger_whose_quota_was_replaced_unseen_writes_nothing_into_the_new_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch has not told of the delete (a relist shows the new object as a change; or
    the ledger's write simply comes first): its write loses the compare-and-swap, the read
    that follows finds another uid under the name, and the ledger stops there, instead of
    writing its escrow, totals and spec into the new quota."""
    store, ledgers, old = await escrow_taken(monkeypatch, caplog)  # old1 from it, unwritten
    store.recreate(budget=1000)
    start = len(store.writes)
    await until(lambda: old._writer is not None and old._writer.done())
    assert store.writes[start:] == []
    assert store.quota["status"] == {}
    new = reviewed(ledgers, store)
    assert new is not old
    new.account.demand(time.monotonic())
    results = [await admitted(new, request(f"new{i}")) for i in range(12)]
    assert sum(results) == 10
    await new.close()
    assert_fresh(store.writes[start:], budget=1000)
    assert store.held() == [f"new{i}" for i in range(10)]
    assert warnings_of(caplog) == []
    said = [r for r in caplog.records if r.name == reserving.__name__]
    assert len(said) == 1
    assert "replaced" in said[0].getMessage()


async def test_a_ledger_that_finds_its_quota_deleted_stops_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 404 on a ledger's write: the quota is gone, and its reservations with it. The
    ledger says so once (INFO) and asks nothing more of the apiserver, where it used to
    retry every RETRY_DELAY with a warning, for ever. A review that still reaches it is
    told to try again (the next one gets a new ledger)."""
    store, ledgers, old = await escrow_taken(monkeypatch, caplog)
    store.gone = True
    await until(lambda: old._writer is not None and old._writer.done())
    calls = store.calls
    await asyncio.sleep(0.2)
    assert store.calls == calls
    assert warnings_of(caplog) == []
    said = [r for r in caplog.records if r.name == reserving.__name__]
    assert [r.levelno for r in said] == [logging.INFO]
    with pytest.raises(KubeError, match="deleted"):
        await old.reserve(request("late"))
    store.recreate(budget=1000)
    assert reviewed(ledgers, store) is not old


async def test_the_ledgers_know_a_quota_by_its_uid_not_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch's copy of a newer object under a ledger's name replaces that ledger (its
    writer cancelled, awaited on close); a delete told late, once the new quota has its
    ledger (kopf's handler, on a watch of its own), leaves that ledger alone; and the
    reconciler's question about one object is not answered with another's admissions."""
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 5.0)  # no flush during the test
    store = Store(budget=10_000)
    ledgers = admitting.Ledgers(store, snapshot=snapshot, share=0.5, holder="me")
    old = reviewed(ledgers, store)
    old.account.demand(time.monotonic())
    assert await admitted(old, request("old0"))
    assert await admitted(old, request("old1"))  # from escrow, not written
    assert await ledgers.unwritten("ns", "q", 0.1, "uid-q-1") == frozenset({"uid-old1"})
    store.recreate(budget=1000)
    ledgers.observe(cast(QuotaObject, copy.deepcopy(store.quota)))  # the watch's news
    new = reviewed(ledgers, store)
    assert new is not old
    assert old.gone.startswith("replaced")
    assert new.uid == "uid-q-2"
    assert await ledgers.unwritten("ns", "q", 0.1, "uid-q-1") == frozenset()
    assert ledgers.admitted_here("ns", "uid-old1") == []
    deleted(ledgers, "uid-q-1")  # kopf's word of the old delete, late
    assert ledgers.of(namespace="ns", name="q") is new
    assert await admitted(new, request("new0"))
    await ledgers.close()
    assert old._writer is not None
    assert old._writer.done()
    assert store.held() == ["new0"]


async def test_a_write_stuck_on_a_dead_connection_fails_its_round_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reserving, "RESERVE_DEADLINE", 0.2)
    store = Store(budget=1000)
    exact = ledger(store, share=0.0)
    store.stuck = 1
    async with asyncio.timeout(5):  # not the 30 s of the generic request timeout
        with pytest.raises(KubeError, match="reservation deadline"):  # "try again"
            await exact.reserve(request("c0"))
        assert await admitted(exact, request("c1"))  # the next round writes at once
    assert store.held() == ["c1"]


@pytest.mark.parametrize("helper", ["_next_delay", "_served_at_once"])
async def test_the_writer_outlives_a_failure_of_its_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, helper: str
) -> None:
    monkeypatch.setattr(reserving, "RETRY_DELAY", 0.01)
    store = Store(budget=1000)
    exact = ledger(store, share=0.0)
    works = getattr(exact, helper)
    failed: list[str] = []

    def once(*args: Any) -> Any:
        if not failed:
            failed.append(helper)
            raise RuntimeError("a bug")
        return works(*args)

    monkeypatch.setattr(exact, helper, once)
    async with asyncio.timeout(5):  # the review waits for a writer that went on
        assert await admitted(exact, request("c0"))
    assert failed == [helper]
    assert store.held() == ["c0"]
    assert any(r.exc_info for r in caplog.records)  # said, with its traceback
