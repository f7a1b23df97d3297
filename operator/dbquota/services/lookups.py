"""The DatabaseQuotas of a namespace the quota watch has not shown yet, read live.

Admission finds a namespace's quotas in the quota informer, with no apiserver call
(:mod:`dbquota.services.admitting`). An informer lags its writes: a quota and its claims
applied together (``kubectl apply -f team/``, one Argo CD sync wave) reach the webhook
as fast as the apiserver stores them, and a claim reviewed before the quota's watch event
arrived was decided as in a namespace with no quota: admitted unchecked under
``--no-quota-policy=Admit`` (however far over the new budget), denied under ``Deny``.
Kubernetes' own ResourceQuota and LimitRange admission meet the same lag the same way: an
informer that shows none for the namespace is checked by a *live lookup*, a LIST of the
namespace's objects, whose answer is kept for a while (:data:`LIVE_TTL`) so that a
namespace with none costs one LIST per period, not one per review.

:class:`LiveQuotas` does that: a LIST of the namespace's DatabaseQuotas when the informer
has none, reviews of one namespace at the same moment sharing one LIST, its answer kept
:data:`LIVE_TTL`. The informer stays the truth once it shows a quota: the lookup answers
only for namespaces where it shows none, and nothing found live is put into it (a watch
event that deleted the quota may already have passed; put back, it would stay for good).

Written here rather than taken from a library: a dict with a deadline per key and one
shared task per key in flight is the whole of it, and it must keep kopf's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

from dbquota.domain.resources import QuotaObject

LIVE_TTL = 30.0
"""Seconds an answer of a live lookup is kept (ResourceQuota's ``liveTTL``)."""


async def named(
    live: LiveQuotas | None, namespace: str | None, shown: Callable[[str], list[str]]
) -> tuple[list[str], Mapping[str, QuotaObject]]:
    """The names of the quotas that decide on a review in ``namespace`` (None: none), and
    those of them read live: those the informer shows (``shown``), if any; else those
    ``live`` lists now (none without it). A failed LIST raises its ``KubeError``: the
    webhook answers 503, and the apiserver's retry or the user's asks again."""
    if namespace is None:
        return [], {}
    names = shown(namespace)
    if names or live is None:
        return names, {}
    found = await live.of(namespace)
    return sorted(found), found


class QuotaLister(Protocol):
    """Where a namespace's DatabaseQuotas are listed (:class:`dbquota.adapters.kube.Kube`)."""

    async def list_quotas(self, *, namespace: str) -> Sequence[dict[str, Any]]:
        """Every DatabaseQuota of ``namespace``, as the apiserver has it now."""
        ...


class LiveQuotas:
    """See the module docstring. ``scope``: the one namespace the operator serves ("" for
    all); another namespace has no quota of ours, and is never listed."""

    def __init__(
        self,
        lister: QuotaLister,
        *,
        scope: str = "",
        ttl: float = LIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._scope = scope
        self._ttl = ttl
        self._clock = clock
        self._known: dict[str, tuple[float, dict[str, QuotaObject]]] = {}
        self._listing: dict[str, asyncio.Task[dict[str, QuotaObject]]] = {}
        self.lookups = 0
        """LISTs sent (tests and the benchmark read it)."""

    async def of(self, namespace: str) -> dict[str, QuotaObject]:
        """The DatabaseQuotas of ``namespace`` by name, as a LIST answered at most
        :data:`LIVE_TTL` ago; a failed LIST raises its ``KubeError`` (nothing kept)."""
        if self._scope and namespace != self._scope:
            return {}
        now = self._clock()
        kept = self._known.get(namespace)
        if kept is not None and kept[0] > now:
            return kept[1]
        task = self._listing.get(namespace)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._list(namespace))
            self._listing[namespace] = task
            task.add_done_callback(lambda done: self._done(namespace, done))
        # shielded: one review's cancellation (its client gone) must not end the others' LIST
        return await asyncio.shield(task)

    async def _list(self, namespace: str) -> dict[str, QuotaObject]:
        self.lookups += 1
        items = await self._lister.list_quotas(namespace=namespace)
        found = {
            str((item.get("metadata") or {}).get("name", "")): cast(QuotaObject, item)
            for item in items
        }
        self._prune(self._clock())
        self._known[namespace] = (self._clock() + self._ttl, found)
        return found

    def _done(self, namespace: str, task: asyncio.Task[dict[str, QuotaObject]]) -> None:
        self._listing.pop(namespace, None)
        if not task.cancelled():
            task.exception()  # retrieved: every review that waited for it got it

    def _prune(self, now: float) -> None:
        """Answers past their time forgotten (a namespace looked up once is not kept)."""
        for namespace in [ns for ns, (until, _) in self._known.items() if until <= now]:
            del self._known[namespace]
