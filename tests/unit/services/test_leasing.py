"""Leader election against an in-memory Lease store.

Checks: the leader renews the record it wrote last without reading it first (client-go's
fast path), keeping its acquire time and count of transitions; when someone else wrote
the Lease since, the renewal's conflict makes it read the Lease and defer to a live other
holder; and a replica taking over from a lapsed holder counts one more transition. The
``dbquota_leader`` gauge is 1 while the replica leads and 0 once it has stepped down. A
replica's own lease carries its billing health, which the others read back from their watch
for every live replica but themselves (not from a lease without it, or with junk in it,
nor once the lease lapsed).

The lease watch declares a lapse only while it is working: a watch that stalls (shows
nothing while the holders renew) lets no holder lapse, however old its lease looks, nor
does it when the stall ends with a backlog in which other renewals come first; a watch
that fails lets none lapse until it has listed again; a lease lapses after the duration its
record states when that is longer than ours, and after ours when it states none.

The renewal and election loops outlive failures that are no ``KubeError`` (renewing on; the
leader stepping down while they last, gauge and listener told, and taking the lease again
after, with one traceback logged, not one per attempt); a call stuck on a dead connection
gives up in time for the next to renew before the lease lapses; stopping gives the lease up
even if its loop had died, raises a cancellation of the caller that comes while it waits
for the loop, and still gives the lease up when called as its task unwinds a cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dbquota.adapters.kube import LEASES, Resource
from dbquota.domain.billing import BillingHealth
from dbquota.errors import Conflict, KubeError, NotFound
from dbquota.services import leasing
from tests.unit.services.billing_api import sample, until


class Leases:
    """One Lease by resourceVersion; counts the calls by verb. ``faults`` are raised by the
    next calls, one each; a ``stuck`` call hangs until its timeout (``seconds``: the generic
    30 s unless the caller passes its own), then fails as ``Kube`` fails it: a dead pooled
    connection. ``written_at``: when each write landed (monotonic)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.calls: dict[str, int] = {"get": 0, "create": 0, "replace": 0}
        self.faults: list[Exception] = []
        self.stuck = 0
        self.written_at: list[float] = []

    def _stored(self, body: dict[str, Any], version: int) -> dict[str, Any]:
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(version)
        self.written_at.append(time.monotonic())
        return copy.deepcopy(self.lease)

    def _version(self) -> int:
        return int(self.lease["metadata"]["resourceVersion"]) if self.lease else 0

    async def _answer(self, verb: str, seconds: float) -> None:
        self.calls[verb] += 1
        if self.faults:
            raise self.faults.pop(0)
        if self.stuck:
            self.stuck -= 1
            await asyncio.sleep(seconds)
            raise KubeError(f"{verb} Lease: ServerTimeoutError: Timeout on reading data")

    async def get(
        self, resource: Resource, *, namespace: str, name: str, seconds: float = 30.0
    ) -> dict[str, Any]:
        assert resource is LEASES
        await self._answer("get", seconds)
        if self.lease is None:
            raise NotFound("no lease")
        return copy.deepcopy(self.lease)

    async def create(
        self, resource: Resource, *, namespace: str, body: dict[str, Any], seconds: float = 30.0
    ) -> dict[str, Any]:
        await self._answer("create", seconds)
        if self.lease is not None:
            raise Conflict("exists")
        return self._stored(body, 1)

    async def replace(
        self,
        resource: Resource,
        *,
        namespace: str,
        name: str,
        body: dict[str, Any],
        seconds: float = 30.0,
    ) -> dict[str, Any]:
        await self._answer("replace", seconds)
        if self.lease is None:
            raise NotFound("no lease")
        if body["metadata"].get("resourceVersion") != str(self._version()):
            raise Conflict("changed")
        return self._stored(body, self._version() + 1)

    async def delete(
        self, resource: Resource, *, namespace: str, name: str, seconds: float = 30.0
    ) -> None:
        self.lease = None

    def written_by(self, holder: str, **spec: object) -> None:
        """Another replica's write (or anybody's)."""
        body = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": holder, **spec}}
        self._stored(body, self._version() + 1)


def election(
    api: Leases,
    holder: str = "a",
    *,
    timing: leasing.Timing | None = None,
    on_change: Callable[[bool], None] = lambda _: None,
) -> leasing.LeaderElection:
    return leasing.LeaderElection(
        api,  # type: ignore[arg-type]
        namespace="ns",
        name="leader",
        holder=holder,
        timing=leasing.Timing() if timing is None else timing,
        on_change=on_change,
    )


async def test_the_leader_renews_without_reading_first() -> None:
    api = Leases()
    a = election(api)
    await a._attempt()
    assert a.leading()
    assert api.calls == {"get": 1, "create": 1, "replace": 0}
    acquired = api.lease["spec"]["acquireTime"]  # type: ignore[index]
    for _ in range(5):
        await a._attempt()
    assert api.calls == {"get": 1, "create": 1, "replace": 5}
    assert api.lease["spec"]["acquireTime"] == acquired  # type: ignore[index]
    assert api.lease["spec"]["holderIdentity"] == "a"  # type: ignore[index]


async def test_a_renewal_that_conflicts_reads_and_defers_to_a_live_holder() -> None:
    api = Leases()
    a = election(api)
    await a._attempt()
    api.written_by("b", leaseDurationSeconds=15, renewTime="t1", leaseTransitions=3)
    await a._attempt()
    assert api.calls == {"get": 2, "create": 1, "replace": 1}  # the fast path, refused
    assert api.lease["spec"]["holderIdentity"] == "b"  # type: ignore[index]


@pytest.mark.parametrize("mine", [True, False])
async def test_transitions_are_kept_on_renewal_and_counted_on_takeover(mine: bool) -> None:
    api = Leases()
    api.written_by(
        "a" if mine else "b",
        leaseDurationSeconds=15,
        renewTime="t1",
        acquireTime="t0",
        leaseTransitions=3,
    )
    a = election(api)
    if not mine:  # b's record has not changed for a whole lease duration: lapsed
        a._observed, a._observed_at = ("b", "t1"), time.monotonic() - 100
    await a._attempt()
    assert a.leading()
    spec = api.lease["spec"]  # type: ignore[index]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseTransitions"] == (3 if mine else 4)
    assert (spec["acquireTime"] == "t0") is mine
    await a._attempt()
    assert api.lease["spec"]["leaseTransitions"] == (3 if mine else 4)  # type: ignore[index]


async def test_the_leader_gauge_says_whether_this_replica_leads() -> None:
    api = Leases()
    a, b = election(api), election(api, holder="b")
    a.start()
    await until(lambda: sample("dbquota_leader") == 1.0)
    assert a.leading()
    b.start()  # a live holder: b defers, and its own steps leave the gauge alone
    await until(lambda: api.calls["get"] >= 2)
    assert not b.leading()
    await b.stop()
    assert sample("dbquota_leader") == 1.0
    await a.stop()  # releases the Lease
    assert sample("dbquota_leader") == 0.0


def replica_lease(
    holder: str, annotations: dict[str, str] | None = None, *, duration: float = 1
) -> dict[str, Any]:
    body = leasing._body(
        name=leasing.lease_name("dbquota-replica", holder),
        namespace="ns",
        holder=holder,
        duration=duration,
        role="replica",
        annotations=annotations,
    )
    body["metadata"]["resourceVersion"] = "1"
    return body


class Stream:
    """The apiserver as a lease watch sees it: lists ``leases``; its watch streams what the
    test sends and hangs while there is nothing (a stalled watch, when the test sends
    nothing); ``"FAIL"`` makes it fail (an apiserver answering the watch 500 or 429); lists
    wait while ``listing`` is clear."""

    def __init__(self, *leases: dict[str, Any]) -> None:
        self.leases = {lease["metadata"]["name"]: lease for lease in leases}
        self.version = 1
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.listing = asyncio.Event()
        self.listing.set()

    async def list(self, resource: Resource, *, namespace: str = "") -> dict[str, Any]:
        await self.listing.wait()
        items = [copy.deepcopy(lease) for lease in self.leases.values()]
        return {"items": items, "metadata": {"resourceVersion": str(self.version)}}

    async def watch(
        self, resource: Resource, *, namespace: str = "", version: str, seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while True:
            kind, obj = await self.events.get()
            if kind == "FAIL":
                raise KubeError("watch leases: HTTP 500 etcdserver: request timed out")
            yield kind, obj

    def renew(self, holder: str, *, shown: bool = True) -> None:
        """``holder`` renews its lease; the watch shows it unless not ``shown``."""
        self.version += 1
        lease = copy.deepcopy(self.leases[leasing.lease_name("dbquota-replica", holder)])
        lease["metadata"]["resourceVersion"] = str(self.version)
        self.leases[lease["metadata"]["name"]] = lease
        if shown:
            self.events.put_nowait(("MODIFIED", copy.deepcopy(lease)))


TIMING = leasing.Timing(lease_duration=1.0, renew_deadline=0.5, retry_period=0.05)
"""Short leases (a Lease states whole seconds): a pause of 0.5 s, the watch gap, freezes the
watch clock."""


@contextlib.asynccontextmanager
async def watching(
    stream: Stream, *, own: str = "a", timing: leasing.Timing = TIMING
) -> AsyncIterator[tuple[leasing.LeaseWatch, list[str], list[bool]]]:
    """A lease watch over ``stream`` on replica ``own``, which renews every retry period
    while the list it yields holds True: the watch, the holders told lapsed, the switch."""
    watch = leasing.LeaseWatch(stream, namespace="ns", timing=timing)  # type: ignore[arg-type]
    lapsed: list[str] = []
    watch.add_lapse_listener(lapsed.append)
    renewing = [True]

    async def renew() -> None:
        while True:
            await asyncio.sleep(timing.retry_period)
            if renewing[0]:
                stream.renew(own)

    tasks = [asyncio.create_task(watch.informer.run()), asyncio.create_task(renew())]
    try:
        await until(watch.informer.synced.is_set)
        yield watch, lapsed, renewing
    finally:
        watch.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_replicas_lease_carries_its_billing_health_for_the_others() -> None:
    api = Leases()
    health = BillingHealth(
        circuit_state="Open", last_success=1000.0, consecutive_failures=5, last_error="x" * 900
    )
    liveness = leasing.Liveness(
        api,  # type: ignore[arg-type]
        namespace="ns",
        holder="b",
        timing=TIMING,
        health=lambda: health,
    )
    await liveness._renew()
    assert api.lease is not None
    shared = json.loads(api.lease["metadata"]["annotations"][leasing.BILLING_ANNOTATION])
    assert shared["circuitState"] == "Open"
    stream = Stream(
        api.lease,
        replica_lease("a", {leasing.BILLING_ANNOTATION: json.dumps(shared)}),  # this replica
        replica_lease("c"),  # an older replica: no health on its lease
        replica_lease("d", {leasing.BILLING_ANNOTATION: "{not json"}),
    )
    async with watching(stream) as (watch, lapsed, _):
        assert watch.healths(exclude="a") == {
            "b": BillingHealth(
                circuit_state="Open",
                last_success=1000.0,
                consecutive_failures=5,
                last_error="x" * 256,
            )
        }
        await asyncio.sleep(1.1)  # past the lease duration with no renewal: b has lapsed
        assert watch.healths(exclude="a") == {}
        # Each lapse is told, though no lease was deleted (a crashed holder deletes nothing).
        await asyncio.sleep(0.15)
        assert sorted(lapsed) == ["b", "c", "d"]


async def test_a_stalled_lease_watch_lets_no_live_holder_lapse() -> None:
    stream = Stream(replica_lease("a"), replica_lease("b"))
    async with watching(stream) as (watch, lapsed, renewing):
        for _ in range(4):
            await asyncio.sleep(TIMING.retry_period)
            stream.renew("b")
        renewing[0] = False  # the watch stalls: a and b renew, the watch shows nothing
        for _ in range(30):  # 1.5 s: one and a half lease durations
            await asyncio.sleep(TIMING.retry_period)
            stream.renew("a", shown=False)
            stream.renew("b", shown=False)
        assert watch.informer.current  # not silent for long enough to be caught there
        assert watch.live("b")
        assert watch.next_lapse(["b"]) is None  # cannot tell: the lapse listeners will
        assert lapsed == []
        # The watch delivers its backlog in order, b's renewal after a's: b never lapses.
        stream.renew("a")
        stream.renew("b")
        renewing[0] = True
        await asyncio.sleep(0.5)
        assert watch.live("b")
        assert lapsed == []


async def test_no_lease_lapses_while_the_watch_is_not_current() -> None:
    stream = Stream(replica_lease("a"), replica_lease("b"))
    async with watching(stream) as (watch, lapsed, _):
        stream.listing.clear()  # the watch fails, and lists too until set again
        stream.events.put_nowait(("FAIL", {}))
        await asyncio.sleep(1.2)  # b's lease looks older than its duration
        assert not watch.informer.current
        assert watch.live("b")
        assert watch.healths(exclude="a") == {}  # (no billing health on these leases)
        assert lapsed == []
        stream.listing.set()
        await until(lambda: watch.informer.current)  # relisted: b, really gone, lapses
        await until(lambda: "b" in lapsed)
        assert not watch.live("b")
        assert watch.live("a")


async def test_a_records_longer_lease_duration_is_honoured() -> None:
    longer = replica_lease("b", duration=2)  # written by a replica with longer leases
    unstated = replica_lease("c")
    del unstated["spec"]["leaseDurationSeconds"]
    stream = Stream(replica_lease("a"), longer, unstated)
    async with watching(stream) as (watch, lapsed, _):
        await asyncio.sleep(1.3)  # past our lease duration (1 s), short of b's (2 s)
        assert lapsed == ["c"]
        assert watch.live("b")
        due = watch.next_lapse(["b"])
        assert due is not None
        assert 0.3 < due < 0.8
        await until(lambda: "b" in lapsed)
        assert not watch.live("b")


# -- the loops outlive failures; calls are bounded by the lease's own deadlines --------------


def liveness(api: Leases, timing: leasing.Timing = TIMING) -> leasing.Liveness:
    return leasing.Liveness(api, namespace="ns", holder="a", timing=timing)  # type: ignore[arg-type]


async def test_renewal_goes_on_after_a_failure_that_is_no_kube_error() -> None:
    api = Leases()
    live = liveness(api)
    await live.start()
    api.faults.append(OSError(2, "No such file or directory: .../serviceaccount/token"))
    await until(lambda: not api.faults)
    renewals = live.renewals
    await until(lambda: live.renewals >= renewals + 2)  # renewed since, as before
    assert live.alive()
    await live.stop()
    assert api.lease is None  # deleted: the others see at once that it is gone


async def test_the_election_goes_on_after_failures_and_steps_down_while_they_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = Leases()
    changes: list[bool] = []
    a = election(api, timing=TIMING, on_change=changes.append)
    a.start()
    await until(lambda: changes == [True])
    api.faults.extend(RuntimeError("token refresh failed") for _ in range(10_000))
    await until(lambda: changes == [True, False])  # past its renew deadline: it steps down
    assert not a.leading()
    assert sample("dbquota_leader") == 0.0
    api.faults.clear()
    await until(lambda: changes == [True, False, True])  # and takes the lease again
    assert sample("dbquota_leader") == 1.0
    failures = [r for r in caplog.records if r.getMessage().startswith("leader election")]
    assert len(failures) > 2
    assert len([r for r in failures if r.exc_info]) == 1  # one traceback, not one per attempt
    await a.stop()


@pytest.mark.parametrize("role", ["replica", "leader"])
async def test_a_call_stuck_on_a_dead_connection_leaves_time_to_renew(role: str) -> None:
    timing = leasing.Timing(lease_duration=1.5, renew_deadline=1.0, retry_period=0.1)
    api = Leases()
    holder: leasing.Liveness | leasing.LeaderElection
    if role == "replica":
        holder = liveness(api, timing)
        await holder.start()
    else:
        holder = election(api, timing=timing)
        holder.start()
    await until(lambda: len(api.written_at) >= 2)
    api.stuck = 1  # the next call waits for an answer that never comes, until its timeout
    since = len(api.written_at)
    await until(lambda: len(api.written_at) >= since + 2)  # renewing again
    gaps = [b - a for a, b in zip(api.written_at, api.written_at[1:], strict=False)]
    assert max(gaps) < timing.lease_duration  # no other replica saw the lease lapse
    await holder.stop()


@pytest.mark.parametrize("role", ["replica", "leader"])
async def test_stopping_gives_up_the_lease_even_if_the_loop_had_died(role: str) -> None:
    api = Leases()
    holder: leasing.Liveness | leasing.LeaderElection
    if role == "replica":
        holder = liveness(api)
        await holder.start()
    else:
        holder = election(api)
        holder.start()
        await until(holder.leading)

    async def died() -> None:
        raise RuntimeError("a bug")

    assert holder._task is not None
    holder._task.cancel()
    holder._task = asyncio.create_task(died())
    await asyncio.sleep(0)
    await holder.stop()  # logged, not raised: the lease is given up all the same
    if role == "replica":
        assert api.lease is None
    else:
        assert api.lease is not None
        assert api.lease["spec"]["holderIdentity"] == ""
        assert sample("dbquota_leader") == 0.0


def winding_down(live: leasing.Liveness) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the next renewal hang, and take a while to end once cancelled (until the second
    event is set); the first event is set once it runs."""
    running, release = asyncio.Event(), asyncio.Event()

    async def renew() -> None:
        running.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()

    live._renew = renew  # type: ignore[method-assign]
    return running, release


async def test_a_stop_cut_short_by_its_callers_cancellation_is_cancelled() -> None:
    api = Leases()
    live = liveness(api)
    await live.start()
    running, release = winding_down(live)
    await running.wait()
    stopping = asyncio.create_task(live.stop())
    await asyncio.sleep(0.05)  # stop() waits for the renewal loop to end
    stopping.cancel()  # the shutdown is cut short
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait({stopping})
    assert stopping.cancelled()  # not swallowed as if it were the loop's own end


async def test_a_clean_up_that_runs_as_its_task_is_cancelled_still_deletes_the_lease() -> None:
    api = Leases()
    live = liveness(api)
    await live.start()

    async def serve() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await live.stop()

    serving = asyncio.create_task(serve())
    await asyncio.sleep(0)
    serving.cancel()  # a shutdown cut short: its clean-up runs as the cancellation unwinds
    await asyncio.wait({serving})
    assert api.lease is None
