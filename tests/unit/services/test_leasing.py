"""Leader election against an in-memory Lease store.

Checks: the leader renews the record it wrote last without reading it first (client-go's
fast path), keeping its acquire time and count of transitions; when someone else wrote
the Lease since, the renewal's conflict makes it read the Lease and defer to a live other
holder; and a replica taking over from a lapsed holder counts one more transition. The
``dbquota_leader`` gauge is 1 while the replica leads and 0 once it has stepped down. A
replica's own lease carries its billing health, which the others read back from their watch
for every live replica but themselves (not from a lease without it, or with junk in it,
nor once the lease lapsed).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

import pytest

from dbquota.adapters.kube import LEASES, Resource
from dbquota.domain.billing import BillingHealth
from dbquota.errors import Conflict, NotFound
from dbquota.services import leasing
from tests.unit.services.billing_api import sample, until


class Leases:
    """One Lease by resourceVersion; counts the calls by verb."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.calls: dict[str, int] = {"get": 0, "create": 0, "replace": 0}

    def _stored(self, body: dict[str, Any], version: int) -> dict[str, Any]:
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(version)
        return copy.deepcopy(self.lease)

    def _version(self) -> int:
        return int(self.lease["metadata"]["resourceVersion"]) if self.lease else 0

    async def get(self, resource: Resource, *, namespace: str, name: str) -> dict[str, Any]:
        assert resource is LEASES
        self.calls["get"] += 1
        if self.lease is None:
            raise NotFound("no lease")
        return copy.deepcopy(self.lease)

    async def create(
        self, resource: Resource, *, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls["create"] += 1
        if self.lease is not None:
            raise Conflict("exists")
        return self._stored(body, 1)

    async def replace(
        self, resource: Resource, *, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls["replace"] += 1
        if self.lease is None:
            raise NotFound("no lease")
        if body["metadata"].get("resourceVersion") != str(self._version()):
            raise Conflict("changed")
        return self._stored(body, self._version() + 1)

    def written_by(self, holder: str, **spec: object) -> None:
        """Another replica's write (or anybody's)."""
        body = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": holder, **spec}}
        self._stored(body, self._version() + 1)


def election(api: Leases, holder: str = "a") -> leasing.LeaderElection:
    return leasing.LeaderElection(
        api,  # type: ignore[arg-type]
        namespace="ns",
        name="leader",
        holder=holder,
        timing=leasing.Timing(),
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


def replica_lease(holder: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body = leasing._body(
        name=leasing.lease_name("dbquota-replica", holder),
        namespace="ns",
        holder=holder,
        duration=15,
        role="replica",
        annotations=annotations,
    )
    body["metadata"]["resourceVersion"] = "1"
    return body


async def test_a_replicas_lease_carries_its_billing_health_for_the_others() -> None:
    api = Leases()
    health = BillingHealth(
        circuit_state="Open", last_success=1000.0, consecutive_failures=5, last_error="x" * 900
    )
    liveness = leasing.Liveness(
        api,  # type: ignore[arg-type]
        namespace="ns",
        holder="b",
        timing=leasing.Timing(),
        health=lambda: health,
    )
    await liveness._renew()
    assert api.lease is not None
    shared = json.loads(api.lease["metadata"]["annotations"][leasing.BILLING_ANNOTATION])
    assert shared["circuitState"] == "Open"
    timing = leasing.Timing(lease_duration=0.3, renew_deadline=0.2, retry_period=0.1)
    watch = leasing.LeaseWatch(api, namespace="ns", timing=timing)  # type: ignore[arg-type]
    lapsed: list[str] = []
    watch.add_lapse_listener(lapsed.append)
    watch.informer.put(api.lease)
    watch.informer.put(replica_lease("a", {leasing.BILLING_ANNOTATION: json.dumps(shared)}))
    watch.informer.put(replica_lease("c"))  # an older replica: no health on its lease
    watch.informer.put(replica_lease("d", {leasing.BILLING_ANNOTATION: "{not json"}))
    assert watch.healths(exclude="a") == {
        "b": BillingHealth(
            circuit_state="Open", last_success=1000.0, consecutive_failures=5, last_error="x" * 256
        )
    }
    await asyncio.sleep(0.35)  # past the lease duration with no renewal: b has lapsed
    assert watch.healths(exclude="a") == {}
    # Each lapse is told, though no lease was deleted (a crashed holder deletes nothing).
    await asyncio.sleep(0.15)
    assert sorted(lapsed) == ["a", "b", "c", "d"]
    watch.close()
