"""The runtime's glue for the quota watch: a quota is known by its uid, not its name.

Checks that a quota deleted and created again under its name while the watch was away
(a relist shows it as a change, not as a delete and an add) stops the old object's
ledger and forgets its settling clocks, as a delete does, and counts as a new quota.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from dbquota.handlers import runtime as runtime_
from dbquota.services import admitting, reconciling
from tests.unit.services.test_reserving import Store, snapshot


def test_a_quota_replaced_while_the_watch_was_away_stops_the_old_ledger() -> None:
    store = Store(budget=10_000)
    ledgers = admitting.Ledgers(store, snapshot=snapshot, share=0.5, holder="me")
    old = ledgers.of(namespace="ns", name="q", quota=copy.deepcopy(store.quota))  # type: ignore[arg-type]
    store.recreate(budget=1000)
    forgotten: list[str] = []
    replayed: list[reconciling.QuotaRef] = []
    glue: Any = SimpleNamespace(  # only what the listener touches
        quota_informer=SimpleNamespace(get=lambda **_: copy.deepcopy(store.quota)),
        ledgers=ledgers,
        reconciler=SimpleNamespace(forget=lambda ns, name, uid="": forgotten.append(uid)),
        _replay_ingest_events=replayed.append,
    )
    before = reconciling.QuotaRef(namespace="ns", name="q", uid="uid-q-1")
    after = reconciling.QuotaRef(namespace="ns", name="q", uid="uid-q-2")
    runtime_.Runtime._quota_changed(glue, "ns", "q", before, after)
    assert old.gone
    assert forgotten == ["uid-q-1"]
    assert replayed == [after]  # a new quota: the ingestion events it missed
    new = ledgers.of(namespace="ns", name="q", quota=copy.deepcopy(store.quota))  # type: ignore[arg-type]
    assert new is not old
    assert new.uid == "uid-q-2"
    runtime_.Runtime._quota_changed(glue, "ns", "q", after, after)  # a status write: no news
    assert not new.gone
    assert forgotten == ["uid-q-1"]
