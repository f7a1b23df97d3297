"""The live lookup of a namespace's DatabaseQuotas when the quota watch shows none.

A quota and its claims applied together reach the webhook faster than the quota's watch
event reaches the informer: a claim over the new budget was admitted unchecked, as in a
namespace with no quota (:mod:`dbquota.services.lookups`). Checks that such a claim is
decided by the quota a LIST finds, that the LIST is made once per namespace per
:data:`~dbquota.services.lookups.LIVE_TTL` (shared by reviews at the same moment, kept
when it finds nothing), never where the informer shows a quota or outside the operator's
namespace, and that a failed one is not kept and reaches the webhook as a ``KubeError``.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest

from dbquota.adapters.kube import Informer
from dbquota.errors import KubeError
from dbquota.services import admitting, lookups
from tests.unit.services.test_admitting import _Quotas, _snapshot
from tests.unit.services.test_reserving import Store


class Lister:
    """The apiserver's LIST of a namespace's DatabaseQuotas: ``store``'s quota in ``ns``."""

    def __init__(self, store: Store | None, *, fail: bool = False) -> None:
        self.store = store
        self.fail = fail
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def list_quotas(self, *, namespace: str) -> list[dict[str, Any]]:
        self.calls.append(namespace)
        await self.gate.wait()
        if self.fail:
            raise KubeError("list databasequotas: HTTP 500 etcdserver: request timed out")
        found = self.store is not None and namespace == "ns"
        return [copy.deepcopy(self.store.quota)] if found and self.store else []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def claim(name: str, gib: int) -> admitting.Review:
    """A CREATE of DatabaseClaim ``name`` in namespace ``ns``, costing ``gib`` a month."""
    return admitting.Review(
        namespace="ns",
        name=name,
        spec={"engine": "postgres", "instanceClass": "db.test", "storageGiB": gib},
        old_spec=None,
        dry_run=False,
        uid=f"uid-{name}",
    )


def lagging(store: Store, lister: Lister | None) -> admitting.Admission:
    """Admission whose quota watch has listed but not yet shown ``store``'s new quota,
    looking it up with ``lister`` (None: no lookup, as before)."""
    return admitting.Admission(
        ledgers=admitting.Ledgers(store, snapshot=_snapshot, holder="me"),
        quotas=cast(Informer[Any], _Quotas(None)),
        no_quota="Admit",
        live=None if lister is None else lookups.LiveQuotas(lister),
    )


async def test_a_claim_reviewed_before_its_quotas_watch_event_is_decided_by_that_quota() -> None:
    store = Store(budget=150.0)
    lister = Lister(store)
    admission = lagging(store, lister)
    over = await admission.review(claim("big", 200))
    assert not over.allowed
    assert "DatabaseQuota q" in over.message
    within = await admission.review(claim("small", 100))
    assert within.allowed
    assert [r["claim"] for r in store.quota["status"]["reservations"]] == ["small"]
    assert lister.calls == ["ns"]  # the second review used the first one's answer


async def test_without_the_lookup_such_a_claim_was_admitted_unchecked() -> None:
    """What happened before: the informer alone, no quota seen, nothing reserved."""
    store = Store(budget=150.0)
    verdict = await lagging(store, None).review(claim("big", 200))
    assert (verdict.allowed, verdict.decisions) == (True, ())
    assert "reservations" not in store.quota["status"]


async def test_reviews_at_the_same_moment_share_one_list_and_a_namespace_with_none_is_kept() -> (
    None
):
    lister, clock = Lister(None), Clock()
    live = lookups.LiveQuotas(lister, clock=clock)
    lister.gate.clear()
    waiting = [asyncio.ensure_future(live.of("empty")) for _ in range(20)]
    await asyncio.sleep(0)
    lister.gate.set()
    assert await asyncio.gather(*waiting) == [{}] * 20
    assert lister.calls == ["empty"]
    clock.now = lookups.LIVE_TTL - 1
    assert await live.of("empty") == {}
    assert lister.calls == ["empty"]
    clock.now = lookups.LIVE_TTL + 1  # its time is up: listed again
    assert await live.of("empty") == {}
    assert lister.calls == ["empty", "empty"]


async def test_a_namespace_the_informer_shows_quotas_for_is_never_listed() -> None:
    lister = Lister(Store(budget=1.0))
    live = lookups.LiveQuotas(lister)
    shown = await lookups.named(live, "ns", lambda _: ["q"])
    assert (shown, lister.calls) == ((["q"], {}), [])
    assert await lookups.named(live, None, lambda _: []) == ([], {})
    assert await lookups.named(None, "ns", lambda _: []) == ([], {})
    assert lister.calls == []


async def test_outside_the_operators_namespace_nothing_is_listed() -> None:
    lister = Lister(Store(budget=1.0))
    live = lookups.LiveQuotas(lister, scope="team-a")
    assert await live.of("ns") == {}
    assert lister.calls == []


async def test_a_failed_list_is_not_kept_and_reaches_the_webhook() -> None:
    store = Store(budget=150.0)
    lister = Lister(store, fail=True)
    admission = lagging(store, lister)
    with pytest.raises(KubeError, match="list databasequotas"):
        await admission.review(claim("big", 200))
    lister.fail = False
    assert not (await admission.review(claim("big", 200))).allowed
    assert lister.calls == ["ns", "ns"]


async def test_a_review_given_up_does_not_end_the_others_list() -> None:
    lister = Lister(None)
    live = lookups.LiveQuotas(lister)
    lister.gate.clear()
    first = asyncio.ensure_future(live.of("empty"))
    second = asyncio.ensure_future(live.of("empty"))
    await asyncio.sleep(0)
    first.cancel()
    lister.gate.set()
    assert await second == {}
    assert first.cancelled()
