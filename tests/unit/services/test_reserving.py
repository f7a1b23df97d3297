"""The ledger against an in-memory quota store that does compare-and-swap like the apiserver.

Checks, one behaviour each: with escrow off every admission waits for its write; after
one exact admission a replica holds escrow and admits from memory with no write on the
way, then writes those reservations in one batch; at every write the store never holds
reservations plus escrow over the budget (the invariant that makes escrow safe), also
with two replicas racing at the edge of the budget, where together they admit exactly what
fits; a request kept out only by another replica's escrow waits until that replica gives
it back; a spec change stops admissions from the old escrow (an informer that has not
seen the change yet does not); a failed write keeps the
reservations admitted from escrow and writes them on retry; close() writes them and gives
the escrow back; denials and UPDATE-like outcomes always take the exact path.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from dbquota.domain import escrow
from dbquota.domain.resources import QuotaObject
from dbquota.errors import Conflict, KubeError
from dbquota.services import reserving
from tests.deciding import admit_if_it_fits


class Store:
    """One DatabaseQuota with a resourceVersion; merge patches of status by CAS."""

    def __init__(self, budget: float) -> None:
        self.quota: dict[str, Any] = {
            "metadata": {"name": "q", "namespace": "ns", "resourceVersion": "1", "generation": 1},
            "spec": {"monthlyBudget": budget},
            "status": {},
        }
        self.writes: list[dict[str, Any]] = []
        self.fail_next = 0
        self.latency = 0.002

    @property
    def budget(self) -> float:
        return float(self.quota["spec"]["monthlyBudget"])

    def committed(self) -> float:
        """Reservations plus every escrow, as the apiserver holds them."""
        status = self.quota["status"]
        reserved = sum(float(r["cost"]) for r in status.get("reservations", []))
        return reserved + sum(float(e["cost"]) for e in status.get("escrow", []))

    def change_spec(self, budget: float) -> None:
        self.quota["spec"]["monthlyBudget"] = budget
        self.quota["metadata"]["generation"] += 1
        self._bump()

    def _bump(self) -> None:
        meta = self.quota["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        await asyncio.sleep(self.latency)
        return copy.deepcopy(self.quota)  # type: ignore[return-value]

    async def patch_quota_status(
        self, *, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> QuotaObject:
        await asyncio.sleep(self.latency)
        if self.fail_next:
            self.fail_next -= 1
            raise KubeError("apiserver unavailable")
        if resource_version != self.quota["metadata"]["resourceVersion"]:
            raise Conflict("changed")
        self.quota["status"].update(copy.deepcopy(status))
        self._bump()
        self.writes.append(copy.deepcopy(status))
        assert self.committed() <= self.budget + 1e-6, "reservations + escrow over budget"
        return copy.deepcopy(self.quota)  # type: ignore[return-value]


def ledger(store: Store, holder: str = "me", share: float = 0.5) -> reserving.Ledger:
    return reserving.Ledger(
        kube=store,  # type: ignore[arg-type]
        namespace="ns",
        name="q",
        holder=holder,
        share=share,
    )


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reserving, "FLUSH_INTERVAL", 0.01)
    monkeypatch.setattr(reserving, "IDLE_RETURN", 0.2)
    monkeypatch.setattr(reserving, "CONTENDED_POLL", 0.01)


async def test_without_escrow_every_admission_waits_for_its_write() -> None:
    store = Store(budget=1000)
    exact = ledger(store, share=0.0)
    for i in range(3):
        assert await exact.reserve(admit_if_it_fits(f"c{i}", 100.0), dry_run=False)
        assert len(store.quota["status"]["reservations"]) == i + 1
    assert exact.from_escrow == 0
    assert "escrow" not in store.quota["status"]


async def test_escrow_admits_from_memory_then_writes_in_one_batch() -> None:
    store = Store(budget=10_000)
    replica = ledger(store)
    assert await replica.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    assert store.quota["status"]["escrow"][0]["cost"] == 4950.0
    writes = len(store.writes)
    for i in range(10):  # no await inside reserve on this path: all before any write
        assert await replica.reserve(admit_if_it_fits(f"c{i}", 100.0), dry_run=False)
    assert (replica.from_escrow, len(store.writes)) == (10, writes)
    await asyncio.sleep(0.1)
    assert len(store.writes) == writes + 1  # one batch
    status = store.quota["status"]
    assert len(status["reservations"]) == 11
    assert status["escrow"][0]["cost"] == 3950.0  # moved from escrow to reservations
    assert status["spend"]["reserved"] == 1100.0


async def test_idle_escrow_is_given_back_and_close_writes_everything() -> None:
    store = Store(budget=1000)
    replica = ledger(store)
    await replica.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    assert store.quota["status"]["escrow"]
    await asyncio.sleep(0.5)
    assert store.quota["status"]["escrow"] == []
    await replica.reserve(admit_if_it_fits("second", 100.0), dry_run=False)
    await replica.reserve(admit_if_it_fits("third", 100.0), dry_run=False)
    await replica.close()
    status = store.quota["status"]
    assert [r["claim"] for r in status["reservations"]] == ["first", "second", "third"]
    assert status["escrow"] == []


@pytest.mark.parametrize("share", [0.0, 0.25, 0.9])
async def test_two_replicas_at_the_edge_admit_exactly_what_fits(share: float) -> None:
    store = Store(budget=1000)
    replicas = [ledger(store, "a", share), ledger(store, "b", share)]

    async def review(i: int) -> bool:
        await asyncio.sleep(i * 0.003)
        return await replicas[i % 2].reserve(admit_if_it_fits(f"c{i}", 100.0), dry_run=False)

    results = await asyncio.gather(*(review(i) for i in range(60)))
    assert sum(results) == 10
    for replica in replicas:
        await replica.close()
    assert len(store.quota["status"]["reservations"]) == 10
    assert store.quota["status"].get("escrow", []) == []


async def test_a_request_kept_out_by_other_escrow_waits_for_its_return() -> None:
    store = Store(budget=1000)
    a, b = ledger(store, "a", 0.9), ledger(store, "b", 0.9)
    assert await a.reserve(admit_if_it_fits("a1", 100.0), dry_run=False)
    assert store.quota["status"]["escrow"][0]["cost"] == 810.0  # 0.9 x 900
    started = time.monotonic()
    assert await b.reserve(admit_if_it_fits("b1", 500.0), dry_run=False)  # fits without it
    assert time.monotonic() - started >= 0.15  # waited for a's idle return
    assert [r["claim"] for r in store.quota["status"]["reservations"]] == ["a1", "b1"]


async def test_waiting_is_bounded_then_the_escrow_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reserving, "CONTENDED_WAIT", 0.05)
    store = Store(budget=1000)
    store.quota["status"]["escrow"] = [
        escrow.entry(
            holder="gone",
            allowance=escrow.Allowance(cost=800.0),
            generation=1,
            expires=time.time() + 60,
        )
    ]
    assert not await ledger(store).reserve(admit_if_it_fits("big", 500.0), dry_run=False)


async def test_a_spec_change_stops_admissions_from_the_old_escrow() -> None:
    store = Store(budget=10_000)
    replica = ledger(store)
    await replica.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    store.change_spec(budget=150)
    replica.expect_generation(2)
    assert not await replica.reserve(admit_if_it_fits("second", 100.0), dry_run=False)
    assert replica.from_escrow == 0


async def test_a_failed_write_keeps_escrow_admissions_and_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reserving, "RETRY_DELAY", 0.01)
    store = Store(budget=10_000)
    replica = ledger(store)
    await replica.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    store.fail_next = 2
    assert await replica.reserve(admit_if_it_fits("second", 100.0), dry_run=False)
    await asyncio.sleep(0.2)
    assert [r["claim"] for r in store.quota["status"]["reservations"]] == ["first", "second"]


async def test_denials_and_non_escrow_outcomes_take_the_exact_path() -> None:
    store = Store(budget=10_000)
    replica = ledger(store)
    await replica.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    writes = len(store.writes)
    assert await replica.reserve(admit_if_it_fits("update", 100.0, escrow_ok=False), dry_run=False)
    assert len(store.writes) == writes + 1
    assert not await replica.reserve(admit_if_it_fits("huge", 9_850.0), dry_run=False)
    assert replica.from_escrow == 0
    # What this replica's own escrow keeps out is admitted: the round gives it back.
    assert await replica.reserve(admit_if_it_fits("big", 9_800.0), dry_run=False)
    assert store.quota["status"]["spend"]["reserved"] == 10_000.0


async def test_dry_run_reserves_nothing() -> None:
    store = Store(budget=1000)
    replica = ledger(store)
    assert await replica.reserve(admit_if_it_fits("dry", 100.0), dry_run=True)
    await replica.reserve(admit_if_it_fits("real", 100.0), dry_run=False)
    assert await replica.reserve(admit_if_it_fits("dry", 100.0), dry_run=True)
    await replica.close()
    assert [r["claim"] for r in store.quota["status"]["reservations"]] == ["real"]


async def test_an_informer_lagging_behind_the_ledger_does_not_drop_the_escrow() -> None:
    store = Store(budget=10_000)
    store.change_spec(budget=10_000)  # generation 2
    replica = ledger(store)
    await replica.reserve(admit_if_it_fits("first", 100.0), dry_run=False)
    replica.expect_generation(1)  # the informer has not seen generation 2 yet
    assert await replica.reserve(admit_if_it_fits("second", 100.0), dry_run=False)
    assert replica.from_escrow == 1
