"""The Event recorder against a fake writer and a fake clock (no apiserver, no sleeping).

Checks: an Event carries what ``events.k8s.io/v1`` asks for (eventTime in microseconds,
action, reason, note, type, regarding with its uid, reporting controller and instance)
under a name that sorts by time; 1,000 repeats of one Event are one create and a few
PATCHes, with the right count and the latest note; a repeat after a quiet interval is
written at once; repeats arriving while the first is being created join it; shutdown
writes the final count; Events that differ in object, reason,
type or action stay apart; a series ends after a long quiet; pending repeats on an object
are written before a new Event on it; an Event that vanished is created again with its
count; a failed write is tried again later; nothing is recorded after shutdown.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from dbquota.domain.resources import Event, EventSeries, ObjectReference
from dbquota.errors import KubeError, NotFound
from dbquota.kits import clock, timestamps
from dbquota.services import recording

QUOTA = recording.reference(
    api_version="dbquota.io/v1alpha1", kind="DatabaseQuota", namespace="ns", name="q", uid="u1"
)


class Writer:
    """The apiserver's Event endpoints as a list of what was written, in order."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, dict[str, Any]]] = []  # (verb, name, body)
        self.names: set[str] = set()
        self.fail_next = 0
        self.gone: set[str] = set()
        self.slow: asyncio.Event | None = None  # creates wait for it while set

    async def create_event(self, *, namespace: str, event: Event) -> Event:
        if self.fail_next:
            self.fail_next -= 1
            raise KubeError("create events: HTTP 503 apiserver busy")
        if self.slow is not None:
            await self.slow.wait()
        name = event["metadata"]["name"]
        self.names.add(name)
        self.gone.discard(name)
        self.writes.append(("create", name, dict(event)))
        return event

    async def patch_event_series(
        self, *, namespace: str, name: str, series: EventSeries, note: str
    ) -> None:
        if name in self.gone:
            raise NotFound(f"events {name} not found")
        assert name in self.names, "a PATCH of an Event never created"
        self.writes.append(("patch", name, {"series": dict(series), "note": note}))

    def verbs(self) -> list[str]:
        return [verb for verb, _, _ in self.writes]

    def last_count(self) -> int:
        _, _, body = self.writes[-1]
        return int(body["series"]["count"]) if "series" in body else 1


def recorder(writer: Writer, fake: clock.FakeClock) -> recording.Recorder:
    return recording.Recorder(writer, instance="replica-1", clock=fake, interval=5.0)


async def settle() -> None:
    """Let woken timers run their write."""
    for _ in range(10):
        await asyncio.sleep(0)


async def would_deny(rec: recording.Recorder, claim: str, on: ObjectReference = QUOTA) -> None:
    await rec.record(
        on, type_="Warning", reason="WouldDeny", action="Admit", note=f"claim {claim} over budget"
    )


async def test_an_event_carries_what_the_events_api_asks_for() -> None:
    writer, fake = Writer(), clock.FakeClock(start=1_800_000_000.25)
    rec = recorder(writer, fake)
    await would_deny(rec, "a")
    fake.advance(0.000_002)
    await rec.record(QUOTA, type_="Normal", reason="WithinBudget", action="Reconcile", note="ok")
    (_, first, body), (_, second, _) = writer.writes
    assert body["apiVersion"] == "events.k8s.io/v1"
    assert body["eventTime"] == timestamps.to_micro(1_800_000_000.25)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["eventTime"])
    assert (body["type"], body["reason"], body["action"]) == ("Warning", "WouldDeny", "Admit")
    assert body["note"] == "claim a over budget"
    assert body["regarding"] == QUOTA
    assert body["reportingController"] == "dbquota.io/operator"
    assert body["reportingInstance"] == "replica-1"
    assert "series" not in body
    assert re.fullmatch(r"q\.[0-9a-f]+", first)
    assert sorted([second, first]) == [first, second]  # listed in the order they happened


async def test_a_thousand_repeats_are_one_event_with_their_count() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    for i in range(1000):
        await would_deny(rec, f"c{i}")
        fake.advance(0.01)  # 100 a second, for 10 s
        await settle()
    await rec.close()
    verbs = writer.verbs()
    assert verbs[0] == "create"
    assert verbs.count("create") == 1
    assert 1 <= verbs.count("patch") <= 3  # one per 5 s, not one per repeat
    _, _, final = writer.writes[-1]
    assert final["series"]["count"] == 1000
    assert final["note"] == "claim c999 over budget"
    assert final["series"]["lastObservedTime"] == timestamps.to_micro(fake.time() - 0.01)
    assert (rec.creates, rec.patches) == (1, verbs.count("patch"))


async def test_shutdown_writes_the_final_count() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    for claim in "abc":
        await would_deny(rec, claim)
    assert writer.verbs() == ["create"]  # the repeats wait for the interval
    await rec.close()
    assert writer.verbs() == ["create", "patch"]
    assert writer.last_count() == 3
    assert writer.writes[-1][2]["note"] == "claim c over budget"


async def test_concurrent_repeats_while_the_first_is_being_created_are_one_event() -> None:
    writer, fake = Writer(), clock.FakeClock()
    writer.slow = asyncio.Event()
    rec = recorder(writer, fake)
    tasks = [asyncio.create_task(would_deny(rec, f"c{i}")) for i in range(100)]
    await settle()
    writer.slow.set()
    await asyncio.gather(*tasks)
    await rec.close()
    assert writer.verbs() == ["create", "patch"]
    assert writer.last_count() == 100


async def test_a_repeat_after_a_quiet_interval_is_written_at_once() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    await would_deny(rec, "a")
    fake.advance(6.0)
    await would_deny(rec, "b")
    assert writer.verbs() == ["create", "patch"]
    assert writer.last_count() == 2


async def test_only_the_note_may_differ_within_a_series() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    other = recording.reference(
        api_version="dbquota.io/v1alpha1", kind="DatabaseQuota", namespace="ns", name="q", uid="u2"
    )
    await would_deny(rec, "a")
    await would_deny(rec, "b")  # same key, another note: a repeat
    await would_deny(rec, "a", on=other)  # a new quota of the same name
    await rec.record(QUOTA, type_="Normal", reason="WouldDeny", action="Admit", note="x")
    await rec.record(QUOTA, type_="Warning", reason="Other", action="Admit", note="x")
    await rec.record(QUOTA, type_="Warning", reason="WouldDeny", action="Sync", note="x")
    await rec.close()
    assert writer.verbs().count("create") == 5
    assert writer.verbs().count("patch") == 1


async def test_a_series_ends_after_a_long_quiet() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    await would_deny(rec, "a")
    fake.advance(recording.FINISH_AFTER + 1)
    await would_deny(rec, "b")
    assert writer.verbs() == ["create", "create"]
    assert writer.writes[0][1] != writer.writes[1][1]


async def test_repeats_on_an_object_are_written_before_a_new_event_on_it() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    await rec.record(QUOTA, type_="Warning", reason="CircuitOpen", action="Sync", note="1")
    await rec.record(QUOTA, type_="Warning", reason="CircuitOpen", action="Sync", note="probe")
    await rec.record(QUOTA, type_="Normal", reason="CircuitClosed", action="Sync", note="ok")
    assert [(verb, body.get("reason")) for verb, _, body in writer.writes] == [
        ("create", "CircuitOpen"),
        ("patch", None),
        ("create", "CircuitClosed"),
    ]
    assert writer.writes[1][2]["note"] == "probe"


async def test_an_event_that_vanished_is_created_again_with_its_count() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    await would_deny(rec, "a")
    writer.gone.add(writer.writes[0][1])  # the apiserver's --event-ttl passed
    fake.advance(6.0)
    await would_deny(rec, "b")
    assert writer.verbs() == ["create", "create"]
    again = writer.writes[1][2]
    assert again["series"]["count"] == 2
    assert again["note"] == "claim b over budget"
    assert again["eventTime"] == writer.writes[0][2]["eventTime"]  # first seen stays


async def test_a_failed_write_is_tried_again_later() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    writer.fail_next = 1
    await would_deny(rec, "a")
    assert writer.writes == []
    fake.advance(5.0)
    await settle()
    assert writer.verbs() == ["create"]
    assert writer.writes[0][2]["note"] == "claim a over budget"


async def test_nothing_is_recorded_after_shutdown() -> None:
    writer, fake = Writer(), clock.FakeClock()
    rec = recorder(writer, fake)
    await rec.close()
    await would_deny(rec, "a")
    assert writer.writes == []
