"""The reconciler against an in-memory quota store and informers fed by hand.

Checks: a burst of marks on one quota costs one refresh per interval, not one per mark; a
refresh ends the reservations whose claims now show their price and writes totals recounted
from the claims; a refresh that would only age the figures writes nothing unless forced (the
periodic resync), and one that only drops confirmed reservations waits up to
``SETTLE_DELAY`` for a write made anyway (each from when it was first found confirmed, so a
quota seeing a claim every few seconds needs no such write); a lost compare-and-swap race is
retried on a fresh read; a standby (not leading) writes nothing; a written status is
published as the quota's ``dbquota_quota_*`` metrics (a quota that is gone publishes
nothing); breaker transitions are announced as Events in the order they happened, even when
the first POST is slow; and budget thresholds crossed are announced once each, not again by
a restarted reconciler; and the recount of a large namespace lets other tasks (admission
reviews) run between its slices. Reservations are aged on the reconciler's own clock from
when it first saw them, so a leader whose wall clock is an hour ahead of the admitting
replica's keeps them for the grace and one an hour behind releases them after it; an
UPDATE that never reached its claim (another webhook denied it) gives its growth back after
the grace, with an Event; and what the reconciler remembers of reservations goes with them.
A quota whose reservations stay in flight is visited twice as late after each visit with
nothing to write, never later than an eighth of the grace, and at once on a mark.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from dbquota.adapters import metrics
from dbquota.adapters.kube import CLAIMS, QUOTAS, Informer, Resource
from dbquota.domain import billing, reservations
from dbquota.domain.resources import Event, EventSeries, QuotaObject
from dbquota.errors import Conflict, NotFound
from dbquota.kits import steps, timestamps
from dbquota.services import reconciling, recording
from tests.unit import turns

NOW = time.time()


class Apiserver:
    """One quota by resourceVersion, Events in a list; also a source for informers."""

    def __init__(self) -> None:
        self.quota: dict[str, Any] = {
            "metadata": {
                "name": "q",
                "namespace": "ns",
                "uid": "uq",
                "resourceVersion": "1",
                "generation": 1,
            },
            "spec": {"monthlyBudget": 1000},
            "status": {},
        }
        self.writes = 0
        self.conflict_next = 0
        self.events: list[str] = []
        self.notes: list[str] = []
        self.counts: dict[str, int] = {}  # Event name -> occurrences it shows
        self.slow_first: str | None = None
        self.recorders: list[recording.Recorder] = []

    async def get_quota(self, *, namespace: str, name: str) -> QuotaObject:
        if self.quota["metadata"]["name"] != name:
            raise NotFound(f"DatabaseQuota {namespace}/{name} not found")
        return copy.deepcopy(self.quota)  # type: ignore[return-value]

    async def patch_quota_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> QuotaObject:
        meta = self.quota["metadata"]
        if self.conflict_next:
            self.conflict_next -= 1
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        if resource_version != meta["resourceVersion"]:
            raise Conflict("changed")
        self.quota["status"].update(copy.deepcopy(dict(status)))
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.writes += 1
        return copy.deepcopy(self.quota)  # type: ignore[return-value]

    async def create_event(self, *, namespace: str, event: Event) -> Event:
        reason = event["reason"]
        if reason == self.slow_first and not self.events:
            await asyncio.sleep(0.05)
        self.events.append(reason)
        self.notes.append(event.get("note", ""))
        self.counts[event["metadata"]["name"]] = event.get("series", {"count": 1})["count"]
        return event

    async def patch_event_series(
        self, *, namespace: str, name: str, series: EventSeries, note: str
    ) -> None:
        self.counts[name] = series["count"]

    async def list(self, resource: Resource, *, namespace: str = "") -> dict[str, Any]:
        raise AssertionError("informers are fed by hand here")

    async def watch(
        self, resource: Resource, *, namespace: str = "", version: str, seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        nothing: list[tuple[str, dict[str, Any]]] = []
        for event in nothing:
            yield event
        raise AssertionError("informers are fed by hand here")


def claim(name: str, **status: object) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": timestamps.to_rfc3339(NOW),
        },
        "spec": {"engine": "postgres", "instanceClass": "db.test", "storageGiB": 10},
        "status": status,
    }


def hold(name: str, cost: float) -> dict[str, Any]:
    return {
        "claim": name,
        "uid": f"uid-{name}",
        "generation": 1,
        "cost": cost,
        "delta": cost,
        "storageGiB": 10,
        "newClaim": True,
        "reservedAt": timestamps.to_rfc3339(time.time()),
    }


def setup(
    api: Apiserver,
    *,
    leading: bool = True,
    clock: Callable[[], float] = time.time,
    grace: float = 10.0,
) -> tuple[reconciling.Reconciler, Informer[reservations.ClaimRef]]:
    quotas = Informer(api, QUOTAS, derive=reconciling.quota_ref, keep_objects=True)
    quotas.put(copy.deepcopy(api.quota))
    claims = Informer(api, CLAIMS, derive=reservations.claim_ref)
    recorder = recording.Recorder(api, instance="test")
    api.recorders.append(recorder)
    reconciler = reconciling.Reconciler(
        kube=api,
        events=recorder,
        quotas=quotas,
        claims=claims,
        snapshot=billing.BillingSnapshot,
        clock=clock,
        grace=grace,
        leading=lambda: leading,
    )
    return reconciler, claims


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciling, "MIN_INTERVAL", 0.05)


async def run_for(reconciler: reconciling.Reconciler, seconds: float) -> None:
    task = asyncio.create_task(reconciler.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_burst_of_marks_costs_one_refresh_per_interval() -> None:
    api = Apiserver()
    reconciler, _ = setup(api)
    task = asyncio.create_task(reconciler.run())
    for _ in range(100):
        reconciler.mark("ns", "q", force=True)
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert reconciler.refreshes == 1
    assert api.writes == 1


async def test_a_mark_during_a_refresh_brings_one_more_after_it_never_two_at_once() -> None:
    api = Apiserver()
    reconciler, _ = setup(api)
    gate, write = asyncio.Event(), api.patch_quota_status

    async def slow(**kwargs: Any) -> QuotaObject:
        await gate.wait()
        return await write(**kwargs)

    api.patch_quota_status = slow  # type: ignore[method-assign]
    task = asyncio.create_task(reconciler.run())
    reconciler.mark("ns", "q", force=True)
    await asyncio.sleep(0.02)
    for _ in range(10):  # marked again and again while that refresh waits on its write
        reconciler.mark("ns", "q", force=True)
    await asyncio.sleep(0.2)  # four MIN_INTERVALs: still the one refresh in flight
    assert reconciler.refreshes == 1
    gate.set()
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (reconciler.refreshes, api.writes) == (2, 2)


async def test_a_mark_due_later_waits_and_one_due_sooner_overtakes_it() -> None:
    api = Apiserver()
    reconciler, _ = setup(api)
    task = asyncio.create_task(reconciler.run())
    reconciler.mark("ns", "q", force=True, after=0.3)
    await asyncio.sleep(0.15)
    assert reconciler.refreshes == 0
    reconciler.mark("ns", "q", force=True)  # due now: does not wait for the later one
    await asyncio.sleep(0.05)
    assert reconciler.refreshes == 1
    await asyncio.sleep(0.4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert reconciler.refreshes == 1  # the later mark was met by the refresh made sooner


async def test_a_refresh_confirms_reservations_and_recounts_totals() -> None:
    api = Apiserver()
    api.quota["status"] = {"reservations": [hold("a", 100.0), hold("b", 50.0)]}
    reconciler, claims = setup(api)
    claims.put(claim("a", estimatedMonthlyCost=100.0, observedGeneration=1))
    claims.put(claim("b"))  # not priced yet: its reservation stays
    await reconciler.refresh("ns", "q")
    status = api.quota["status"]
    assert [r["claim"] for r in status["reservations"]] == ["b"]
    assert status["spend"] == {"observed": 0.0, "reserved": 150.0, "remaining": 850.0}
    assert status["used"]["claims"] == 2


async def test_a_refresh_of_a_large_namespace_lets_other_tasks_run_meanwhile() -> None:
    """Admission reviews are served by the same event loop: recounting thousands of claims
    in one piece would hold each of them up for as long (``bench/README.md``)."""
    api = Apiserver()
    reconciler, claims = setup(api)
    n = steps.SLICE * 4
    for i in range(n):
        claims.put(claim(f"c{i}", estimatedMonthlyCost=0.1, observedGeneration=1))
    async with turns.counting() as seen:
        await reconciler.refresh("ns", "q")
    assert seen.count >= 4  # at least once per slice
    assert api.quota["status"]["used"]["claims"] == n
    assert api.quota["status"]["spend"]["reserved"] == round(n * 0.1, 2)


async def test_dropping_confirmed_reservations_waits_for_a_write_made_anyway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciling, "SETTLE_DELAY", 0.5)
    api = Apiserver()
    api.quota["status"] = {"reservations": [hold("a", 100.0), hold("b", 50.0)]}
    reconciler, claims = setup(api)
    claims.put(claim("a"))
    claims.put(claim("b"))
    await reconciler.refresh("ns", "q")
    reconciler, claims = setup(api)  # sees the written status
    claims.put(claim("a", estimatedMonthlyCost=100.0, observedGeneration=1))
    claims.put(claim("b"))
    await reconciler.refresh("ns", "q", force=False)
    assert api.writes == 1  # the same totals: not worth a write of its own yet
    assert [r["claim"] for r in api.quota["status"]["reservations"]] == ["a", "b"]
    await run_for(reconciler, 0.1)
    assert api.writes == 1
    await run_for(reconciler, 0.8)
    assert api.writes == 2  # nothing else wrote it: written after SETTLE_DELAY
    assert [r["claim"] for r in api.quota["status"]["reservations"]] == ["b"]
    assert api.quota["status"]["spend"]["reserved"] == 150.0


async def test_each_reservation_waits_from_its_own_confirmation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quota seeing a claim every 0.3 s: each admission's write drops the reservation
    confirmed before it, so the reconciler never needs a write of its own for them."""
    monkeypatch.setattr(reconciling, "SETTLE_DELAY", 0.5)
    api = Apiserver()
    api.quota["status"] = {"reservations": [hold("a", 100.0)]}
    admissions, theirs = setup(api)  # stands in for the ledgers' writes made anyway
    theirs.put(claim("a"))
    await admissions.refresh("ns", "q")
    reconciler, claims = setup(api)

    def priced(name: str) -> dict[str, Any]:
        obj = claim(name, estimatedMonthlyCost=100.0, observedGeneration=1)
        obj["metadata"]["resourceVersion"] = "2"
        return obj

    for before, name in zip("abcd", "bcde", strict=True):
        claims.put(priced(before))
        await reconciler.refresh("ns", "q", force=False)
        assert reconciler.writes == 0
        await asyncio.sleep(0.3)
        api.quota["status"]["reservations"].append(hold(name, 100.0))  # admitted
        meta = api.quota["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        theirs.put(priced(before))
        theirs.put(claim(name))
        admissions._quotas.put(copy.deepcopy(api.quota))
        await admissions.refresh("ns", "q")
        assert [r["claim"] for r in api.quota["status"]["reservations"]] == [name]
        reconciler._quotas.put(copy.deepcopy(api.quota))
    claims.put(priced("e"))
    await run_for(reconciler, 0.2)
    assert reconciler.writes == 0
    await run_for(reconciler, 0.6)
    assert reconciler.writes == 1  # no write came: the last one waited SETTLE_DELAY, no more
    assert api.quota["status"]["reservations"] == []


async def test_an_unforced_refresh_that_only_ages_the_figures_writes_nothing() -> None:
    api = Apiserver()
    reconciler, _ = setup(api)
    await reconciler.refresh("ns", "q")
    assert api.writes == 1
    reconciler, _ = setup(api)  # sees the written status
    await reconciler.refresh("ns", "q", force=False)
    assert api.writes == 1
    await reconciler.refresh("ns", "q", force=True)
    assert api.writes == 2


async def test_a_claim_this_replicas_escrow_holds_unwritten_is_not_counted_twice() -> None:
    """The leader's publisher prices what its escrow admitted before the reservation is
    written; until it is, the escrow entry holds it, and the refresh counts it there only.
    While that write is in flight the refresh waits for its answer, then tries later."""
    api = Apiserver()
    api.quota["status"] = {"escrow": [{"holder": "me", "cost": 500.0}]}
    reconciler, claims = setup(api)
    claims.put(claim("a", estimatedMonthlyCost=100.0, observedGeneration=1))
    told: list[frozenset[str] | None] = [None]
    asked: list[float] = []

    async def unwritten(
        namespace: str, name: str, patience: float, uid: str
    ) -> frozenset[str] | None:
        asked.append(patience)
        return told[0]

    reconciler._unwritten = unwritten  # as the operator wires its ledgers in
    assert await reconciler.refresh("ns", "q") is None  # a write in flight stayed unanswered
    assert api.writes == 0
    assert asked == [reconciling.WRITE_PATIENCE]
    assert ("ns", "q") in reconciler._dirty  # marked again
    told[0] = frozenset({"uid-a"})
    await reconciler.refresh("ns", "q")
    assert api.quota["status"]["spend"]["reserved"] == 0.0  # in the escrow's 500 only
    assert api.quota["status"]["used"]["claims"] == 0
    told[0] = frozenset()  # written: the claim counts at its price
    await reconciler.refresh("ns", "q")
    assert api.quota["status"]["spend"]["reserved"] == 100.0


async def test_a_lost_race_is_retried_on_a_fresh_read() -> None:
    api = Apiserver()
    api.conflict_next = 2
    reconciler, _ = setup(api)
    assert await reconciler.refresh("ns", "q") is not None
    assert api.writes == 1


async def test_a_standby_writes_nothing() -> None:
    api = Apiserver()
    reconciler, _ = setup(api, leading=False)
    reconciler.mark("ns", "q", force=True)
    await run_for(reconciler, 0.1)
    assert api.writes == 0


def gauge(name: str, quota: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"namespace": "ns", "quota": quota, **labels})


async def test_a_written_status_is_published_as_metrics() -> None:
    api = Apiserver()
    api.quota["spec"] = {"monthlyBudget": 400, "degradation": {"maxStaleness": "5m"}}
    api.quota["status"] = {"reservations": [hold("db", 100.0)]}
    reconciler, _ = setup(api)
    assert await reconciler.refresh("ns", "q") is not None
    assert gauge("dbquota_quota_budget", "q") == 400
    assert gauge("dbquota_quota_spend", "q", kind="reserved") == 100
    assert gauge("dbquota_quota_spend", "q", kind="observed") == 0
    assert gauge("dbquota_quota_remaining", "q") == 300
    assert gauge("dbquota_quota_used_ratio", "q") == 0.25
    assert gauge("dbquota_quota_max_staleness_seconds", "q") == 300


async def test_a_quota_that_is_gone_publishes_nothing() -> None:
    api = Apiserver()
    reconciler, _ = setup(api)
    assert await reconciler.refresh("ns", "gone") is None
    assert gauge("dbquota_quota_budget", "gone") is None


async def test_transitions_are_posted_in_order() -> None:
    api = Apiserver()
    api.slow_first = "CircuitHalfOpen"
    reconciler, _ = setup(api)
    quota = reconciling.QuotaRef(namespace="ns", name="q", uid="u")
    first = asyncio.create_task(
        reconciler.announce_transition([quota], old="Open", new="HalfOpen", reason="timeout")
    )
    second = asyncio.create_task(
        reconciler.announce_transition([quota], old="HalfOpen", new="Closed", reason="probe")
    )
    await asyncio.gather(first, second)
    assert api.events == ["CircuitHalfOpen", "CircuitClosed"]


async def test_threshold_crossings_are_announced_once_even_across_a_restart() -> None:
    api = Apiserver()
    api.quota["spec"] = {"monthlyBudget": 1000, "alerts": {"thresholds": [50, 80, 90]}}
    priced = claim("a", estimatedMonthlyCost=820.0, observedGeneration=1)
    reconciler, claims = setup(api)
    claims.put(priced)
    await reconciler.refresh("ns", "q")
    await reconciler.refresh("ns", "q")  # nothing crossed since
    assert api.quota["status"]["alerts"] == {"reached": 80}
    restarted, claims = setup(api)  # a new leader, reading what the first one wrote
    claims.put(priced)
    await restarted.refresh("ns", "q")
    for recorder in api.recorders:
        await recorder.close()
    assert set(api.events) == {"BudgetThresholdCrossed"}
    assert sum(api.counts.values()) == 2  # 50% and 80%, each once


async def test_a_delete_told_late_leaves_the_new_quota_of_its_name_alone() -> None:
    """kopf tells of a delete on a watch of its own, possibly once the quota has been
    created again under its name (``kubectl replace --force``) and marked: that mark is
    the new quota's and stays. A refresh asks this replica's ledgers about the object it
    read (its uid), never about whatever bears the name."""
    api = Apiserver()
    reconciler, _ = setup(api)
    api.quota["metadata"].update(uid="uq-2", resourceVersion="10")  # created again
    reconciler._quotas.put(copy.deepcopy(api.quota))
    reconciler.mark("ns", "q", force=True)
    reconciler.forget("ns", "q", uid="uq")
    assert ("ns", "q") in reconciler._dirty
    asked: list[str] = []

    async def unwritten(
        namespace: str, name: str, patience: float, uid: str
    ) -> frozenset[str] | None:
        asked.append(uid)
        return frozenset()

    reconciler._unwritten = unwritten
    await reconciler.refresh("ns", "q")
    assert asked == ["uq-2"]
    reconciler.forget("ns", "q", uid="uq-2")
    assert ("ns", "q") not in reconciler._dirty


def in_flight(name: str, *, generation: int = 1, cost: float = 100.0, delta: float = 100.0) -> Any:
    """A reservation written just now by a replica whose wall clock is this process's."""
    held = hold(name, cost)
    held.update(generation=generation, delta=delta, newClaim=generation == 1)
    return held


async def test_a_leader_whose_clock_is_ahead_keeps_reservations_for_the_grace() -> None:
    """The leader's wall clock an hour ahead of the admitting replica's: a reservation just
    written looked an hour old, and was released at once as never created while its claim
    was still on its way (then adopted again: a window where it counted nowhere)."""
    api = Apiserver()
    api.quota["status"] = {"reservations": [in_flight("a")]}
    reconciler, _ = setup(api, clock=lambda: time.time() + 3600)
    await reconciler.refresh("ns", "q")
    assert [r["claim"] for r in api.quota["status"]["reservations"]] == ["a"]
    assert api.quota["status"]["spend"]["reserved"] == 100.0
    assert "ReservationReleased" not in api.events


async def test_a_leader_whose_clock_is_behind_releases_after_the_grace_all_the_same() -> None:
    """An hour behind, a never-created reservation was held an hour, not the grace: it is
    released once the reconciler has seen it for the grace (a new leader counts from its
    first sight)."""
    api = Apiserver()
    api.quota["status"] = {"reservations": [in_flight("a")]}
    reconciler, _ = setup(api, clock=lambda: time.time() - 3600, grace=0.05)
    await reconciler.refresh("ns", "q")
    assert [r["claim"] for r in api.quota["status"]["reservations"]] == ["a"]
    await asyncio.sleep(0.1)
    await reconciler.refresh("ns", "q")
    assert api.quota["status"]["reservations"] == []
    assert api.quota["status"]["spend"]["reserved"] == 0.0
    assert api.events == ["ReservationReleased"]
    assert "no claim appeared" in api.notes[0]


async def test_an_update_another_webhook_denied_gives_its_growth_back_after_the_grace() -> None:
    """dbquota admitted growth of 50 for generation 2; a later webhook denied the UPDATE, so
    the claim stays at generation 1, priced 100. The reservation held the 50 until the
    claim was deleted; now it goes after the grace, with an Event, and the claim's own
    price still counts."""
    api = Apiserver()
    api.quota["status"] = {"reservations": [in_flight("a", generation=2, cost=150.0, delta=50.0)]}
    reconciler, claims = setup(api, grace=0.05)
    claims.put(claim("a", estimatedMonthlyCost=100.0, observedGeneration=1))
    await reconciler.refresh("ns", "q")
    assert api.quota["status"]["spend"]["reserved"] == 150.0  # within the grace: held
    await asyncio.sleep(0.1)
    await reconciler.refresh("ns", "q")
    status = api.quota["status"]
    assert status["reservations"] == []
    assert status["spend"]["reserved"] == 100.0
    assert status["used"] == {
        "claims": 1,
        "storageGiB": 10,
        "degradedClaims": 0,
        "degradedStorageGiB": 0,
    }
    assert api.events == ["ReservationReleased"]
    assert "generation 2" in api.notes[0]
    assert "never applied" in api.notes[0]


async def test_what_the_reconciler_remembers_of_reservations_goes_with_them() -> None:
    api = Apiserver()
    api.quota["status"] = {"reservations": [in_flight("a"), in_flight("b")]}
    reconciler, claims = setup(api)
    await reconciler.refresh("ns", "q")
    assert len(reconciler._sightings) == 2
    claims.put(claim("a", estimatedMonthlyCost=100.0, observedGeneration=1))
    await reconciler.refresh("ns", "q")  # confirms a's reservation, drops it
    await reconciler.refresh("ns", "q")
    assert len(reconciler._sightings) == 1
    reconciler.forget("ns", "q", uid="uq")
    assert len(reconciler._sightings) == 0


async def test_a_reservation_in_flight_with_nothing_to_write_is_visited_less_and_less() -> None:
    """Each visit recounts the namespace. One reservation waiting for its claim was visited
    every MIN_INTERVAL for the whole grace; now each visit with nothing to write comes twice
    as late as the last (0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s here), and an event about the
    quota's claims still brings one at once."""
    api = Apiserver()
    api.quota["status"] = {"reservations": [in_flight("a")]}
    reconciler, claims = setup(api, grace=60.0)
    task = asyncio.create_task(reconciler.run())
    reconciler.mark("ns", "q")
    await asyncio.sleep(2.0)
    visits = reconciler.refreshes
    assert 5 <= visits <= 8  # 0, 0.05, 0.15, 0.35, 0.75, 1.55 s; the next at 3.15 s
    claims.put(claim("a", estimatedMonthlyCost=100.0, observedGeneration=1))
    reconciler.mark("ns", "q")  # as the claim informer does on the claim's event
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert reconciler.refreshes == visits + 1


async def test_a_follow_up_comes_no_later_than_an_eighth_of_the_grace() -> None:
    api = Apiserver()
    api.quota["status"] = {"reservations": [in_flight("a")]}
    reconciler, _ = setup(api, grace=0.8)
    await run_for(reconciler, 0.0)
    reconciler.mark("ns", "q")
    await run_for(reconciler, 1.2)  # seen at 0 s, released at the first visit after 0.8 s
    assert api.quota["status"]["reservations"] == []
    assert api.events == ["ReservationReleased"]
