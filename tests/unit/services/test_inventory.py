"""Every enabled kind's objects by tenant, and the Priced Event of another operator's object.

Checks: the index joins DatabaseClaims and RDS Instances by tenant namespace (an Instance's
label), names another operator's object ``Kind/name`` so that names of different kinds
never clash, moves an Instance whose tenant label changes (its old tenant hears it go),
drops an object that goes, and is current only while every kind's watch is; it knows
which billing ids more than one object names, of any kind and tenant, as objects come,
change their id and go; the announcer
posts one ``Priced`` Event per admitted generation on the object (an Instance's in
namespace default), with the reservation's price and the quota's name, and only on the
leader; a quota's change looks only at the objects still waiting for their Event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbquota.adapters.kube import QUOTAS, Informer, Resource, of_kind
from dbquota.domain import reservations
from dbquota.domain.kinds import registry
from dbquota.domain.resources import Event, EventSeries
from dbquota.services import announcing, inventory, reconciling, recording

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


class Source:
    """Lists nothing, and its watch waits forever: objects arrive through ``put``."""

    async def list(self, resource: Resource, *, namespace: str = "") -> dict[str, Any]:
        return {"items": [], "metadata": {"resourceVersion": "1"}}

    async def watch(
        self, resource: Resource, *, namespace: str = "", version: str, seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        await asyncio.Event().wait()
        yield ("ADDED", {})  # never reached


class Events:
    def __init__(self) -> None:
        self.created: list[tuple[str, Event]] = []

    async def create_event(self, *, namespace: str, event: Event) -> Event:
        self.created.append((namespace, event))
        return event

    async def patch_event_series(
        self, *, namespace: str, name: str, series: EventSeries, note: str
    ) -> None:
        raise AssertionError("no repeats expected")


def informers() -> tuple[Informer[reservations.ClaimRef], Informer[reservations.ClaimRef]]:
    claims_kind, rds_kind = registry.KINDS["databaseclaims"], registry.KINDS["rds"]
    return (
        Informer(Source(), of_kind(claims_kind.resource), derive=reservations.deriver(claims_kind)),
        Informer(
            Source(),
            of_kind(rds_kind.resource),
            derive=reservations.deriver(rds_kind, namespace_label="crossplane.io/claim-namespace"),
        ),
    )


def instance(*, tenant: str, version: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / "rds-instance.yaml").read_text())
    obj["metadata"].update(uid="i1", resourceVersion=version, name="orders")
    obj["metadata"]["labels"]["crossplane.io/claim-namespace"] = tenant
    return obj


def claim() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / "claim-orders.yaml").read_text())
    obj["metadata"].update(uid="c1", resourceVersion="1")
    return obj


def test_objects_of_every_kind_are_joined_by_tenant() -> None:
    claims, instances = informers()
    index = inventory.ClaimIndex([claims, instances])
    heard: list[tuple[str, str, bool, bool]] = []
    index.add_listener(lambda ns, name, b, a: heard.append((ns, name, b is None, a is None)))
    claims.put(claim())
    instances.put(instance(tenant="team-a", version="1"))
    assert sorted(r.name for r in index.in_namespace("team-a")) == ["Instance/orders", "orders"]
    instances.put(instance(tenant="team-b", version="2"))
    assert [r.name for r in index.in_namespace("team-a")] == ["orders"]
    assert [r.name for r in index.in_namespace("team-b")] == ["Instance/orders"]
    assert heard[-2:] == [
        ("team-a", "Instance/orders", False, True),
        ("team-b", "Instance/orders", True, False),
    ]
    assert index.derived(namespace="team-b", name="Instance/orders") is not None


def test_the_objects_of_a_tenant_by_uid_follow_the_watches() -> None:
    claims, instances = informers()
    index = inventory.ClaimIndex([claims, instances])
    assert "c1" not in index.by_uid("team-a")
    claims.put(claim())
    instances.put(instance(tenant="team-a", version="1"))
    assert {uid: r.name for uid, r in index.by_uid("team-a").items()} == {
        "c1": "orders",
        "i1": "Instance/orders",
    }
    instances.put(instance(tenant="team-b", version="2"))  # moved to another tenant
    assert set(index.by_uid("team-a")) == {"c1"}
    assert set(index.by_uid("team-b")) == {"i1"}
    recreated = claim()
    recreated["metadata"].update(uid="c2", resourceVersion="3")  # deleted and made again
    claims.put(recreated)
    assert set(index.by_uid("team-a")) == {"c2"}


def test_the_index_knows_which_billing_ids_more_than_one_object_names() -> None:
    claims, instances = informers()
    index = inventory.ClaimIndex([claims, instances])
    first = claim()
    claims.put(first)
    cluster = index.in_namespace("team-a")[0].cluster_id
    assert not index.shared(cluster)
    alias = claim()
    alias["metadata"].update(uid="c2", name="alias", namespace="team-b", resourceVersion="2")
    alias["spec"]["clusterId"] = cluster  # another tenant names the same cluster
    claims.put(alias)
    assert index.shared(cluster)
    alias["spec"]["clusterId"] = "team-b/alias"
    alias["metadata"]["resourceVersion"] = "3"
    claims.put(alias)
    assert not index.shared(cluster)
    assert not index.shared("team-b/alias")
    aliased = instance(tenant="team-c", version="4")
    aliased["metadata"].setdefault("annotations", {})["dbquota.io/cluster-id"] = cluster
    instances.put(aliased)
    assert index.in_namespace("team-c")[0].cluster_id == cluster  # another kind, too
    assert index.shared(cluster)
    claims._apply("DELETED", first)
    assert not index.shared(cluster)


async def test_the_index_is_current_only_when_every_watch_is() -> None:
    claims, instances = informers()
    index = inventory.ClaimIndex([claims, instances])
    assert not index.current
    tasks = [asyncio.create_task(i.run()) for i in (claims, instances)]
    try:
        async with asyncio.timeout(5):
            await index.synced()
        assert index.current
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def quota_holding(uid: str, *, version: str) -> dict[str, Any]:
    """A DatabaseQuota of team-a whose status holds a reservation for the Instance ``uid``."""
    return {
        "metadata": {
            "name": "budget",
            "namespace": "team-a",
            "uid": "q",
            "resourceVersion": version,
        },
        "status": {
            "reservations": [
                {
                    "claim": "Instance/orders",
                    "uid": uid,
                    "generation": 1,
                    "cost": 812.5,
                    "pricing": "Live",
                    "reservedAt": "2026-11-30T18:00:00Z",
                }
            ]
        },
    }


def announcer_of(
    index: inventory.ClaimIndex, quotas: Informer[Any], events: Events, leading: list[bool]
) -> announcing.Announcer:
    return announcing.Announcer(
        events=recording.Recorder(events, instance="test"),
        claims=index,
        quotas=quotas,
        enabled={k.name: k for k in registry.enabled(["databaseclaims", "rds"])},
        leading=lambda: leading[0],
    )


async def test_an_admitted_instance_gets_one_priced_event() -> None:
    claims, instances = informers()
    index = inventory.ClaimIndex([claims, instances])
    quotas = Informer(Source(), QUOTAS, derive=reconciling.quota_ref, keep_objects=True)
    events = Events()
    leading = [False]
    announcer = announcer_of(index, quotas, events, leading)
    instances.put(instance(tenant="team-a", version="1"))
    quotas.put(quota_holding("i1", version="1"))
    await asyncio.sleep(0)
    assert events.created == []  # not the leader
    leading[0] = True
    announcer.resync()
    quotas.put(quota_holding("i1", version="2"))  # the same reservation seen again: no second Event
    for _ in range(5):
        await asyncio.sleep(0)
    assert announcer.announced == 1
    ((namespace, event),) = events.created
    assert namespace == "default"
    assert event["reason"] == "Priced"
    assert event["regarding"]["kind"] == "Instance"
    assert event["regarding"]["name"] == "orders"
    assert event["note"].startswith(
        "priced at 812.50/month (Live pricing) by DatabaseQuota budget in namespace team-a"
    )


async def test_a_quota_change_looks_only_at_the_objects_waiting_for_their_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claims, instances = informers()
    index = inventory.ClaimIndex([claims, instances])
    quotas = Informer(Source(), QUOTAS, derive=reconciling.quota_ref, keep_objects=True)
    events = Events()
    announcer = announcer_of(index, quotas, events, [True])
    for i in range(3):  # DatabaseClaims show their own price: never waiting for an Event
        owned = claim()
        owned["metadata"].update(name=f"db-{i}", uid=f"c{i}")
        claims.put(owned)
    instances.put(instance(tenant="team-a", version="1"))

    def walk(namespace: str) -> list[reservations.ClaimRef]:
        raise AssertionError(f"walked every object of {namespace}")

    monkeypatch.setattr(index, "in_namespace", walk)
    quotas.put(quota_holding("i1", version="1"))
    quotas.put(quota_holding("i1", version="2"))  # nothing is waiting any more
    for _ in range(5):
        await asyncio.sleep(0)
    assert announcer.announced == 1
