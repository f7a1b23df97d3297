"""The runtime's memory of deleted claims: the reconciler's window, and no more.

Checks that every replica, leader or standby, keeps the uids of deleted claims only for
``DELETED_MEMORY`` seconds even when no one asks for them (a standby's reconciler never
does, nor the leader's for a namespace without a quota), and that the reconciler is
still told each deletion of its namespace within that window.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from dbquota.domain.reservations import ClaimRef
from dbquota.handlers import runtime as runtime_


class Clock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def replica(clock: Clock) -> runtime_.Runtime:
    """A runtime with only what the claim listener touches."""
    stub = SimpleNamespace(
        track=lambda ids: None, untrack=lambda ids: None, mark_namespace=lambda ns: None
    )
    parts = dict.fromkeys(
        ("settings", "kube", "quota_informer", "claim_informer", "ledgers", "admission"), stub
    )
    runtime = runtime_.Runtime(
        **cast(Any, parts),
        ingestor=cast(Any, stub),
        reconciler=cast(Any, stub),
        publisher=None,
        liveness=cast(Any, stub),
        leases=cast(Any, stub),
        election=None,
    )
    runtime.clock = clock
    return runtime


def delete(runtime: runtime_.Runtime, namespace: str, name: str) -> None:
    gone = ClaimRef(name=name, uid=f"uid-{namespace}-{name}", cluster_id=name, storage_gib=1)
    runtime._claim_changed(namespace, name, gone, None)


def test_a_replica_no_one_asks_forgets_deleted_claims_after_the_window() -> None:
    clock = Clock()
    runtime = replica(clock)
    for i in range(1000):
        delete(runtime, f"ci-{i % 100}", f"c{i}")
    assert sum(len(uids) for uids in runtime.deleted.values()) == 1000
    clock.now += runtime_.DELETED_MEMORY + 1
    delete(runtime, "late", "c")
    assert runtime.deleted == {"late": {"uid-late-c": clock.now}}


def test_the_reconciler_is_told_the_deletions_of_the_window() -> None:
    clock = Clock()
    runtime = replica(clock)
    delete(runtime, "ns", "old")
    clock.now += 200
    delete(runtime, "ns", "new")
    delete(runtime, "other", "x")
    clock.now += 50
    assert runtime.recently_deleted("ns") == {"uid-ns-old", "uid-ns-new"}
    clock.now += 100  # "old" is 350 s ago, past the window
    assert runtime.recently_deleted("ns") == {"uid-ns-new"}
    assert runtime.recently_deleted("nowhere") == set()
    clock.now += 200
    assert runtime.recently_deleted("ns") == set()
    assert runtime.deleted == {}
