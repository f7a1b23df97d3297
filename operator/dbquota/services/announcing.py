"""The admission's price of an object dbquota does not own, published as an Event on it.

dbquota cannot write the status of another operator's object (CloudNativePG ``Cluster``,
Zalando ``postgresql``, Crossplane RDS ``Instance``), so where a DatabaseClaim's status
shows its price (:mod:`dbquota.services.publishing`), such an object gets one Event,
``Priced``: ``priced at 1,234.56/month (Live pricing) by DatabaseQuota team-a``, once per
generation that an admission reserved for, on the leader. The quota counts the object
from its spec once it exists (:mod:`dbquota.domain.reservations`); the Event is the record
of what its admission charged.

Driven by events: an object appearing or changing (from :class:`~dbquota.services.
inventory.ClaimIndex`) and a quota changing (its reservations, from the quota informer).
A quota's change looks only at the namespace's objects still waiting for their Event,
kept apart as they come and go: not at every claim of the namespace, which in a busy
one means thousands of DatabaseClaims on each of several quota writes a second.
Called by the operator's start-up code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from dbquota.adapters.kube import Informer
from dbquota.domain import kinds
from dbquota.domain.reservations import ClaimRef
from dbquota.services import inventory, recording

REASON = "Priced"
"""The Event's reason."""


class Announcer:
    """See the module docstring."""

    def __init__(
        self,
        *,
        events: recording.Recorder,
        claims: inventory.ClaimIndex,
        quotas: Informer[Any],
        enabled: Mapping[str, kinds.Kind],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._events = events
        self._quotas = quotas
        self._kinds = {kind.resource.kind: kind for kind in enabled.values()}
        self._leading = leading
        self._done: set[tuple[str, int]] = set()
        # namespace -> name -> object not owned by dbquota, not announced at its generation
        self._waiting: dict[str, dict[str, ClaimRef]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.announced = 0
        claims.add_listener(self._claim_changed)
        quotas.add_listener(self._quota_changed)

    def _claim_changed(
        self, namespace: str, name: str, before: ClaimRef | None, after: ClaimRef | None
    ) -> None:
        if after is None or after.owned:
            self._unwait(namespace, name)
            if after is None and before is not None:
                self._done = {key for key in self._done if key[0] != before.uid}
        elif (after.uid, after.generation) in self._done:
            self._unwait(namespace, name)
        else:
            self._waiting.setdefault(namespace, {})[name] = after
            self._check(namespace, [after])

    def _quota_changed(self, namespace: str, name: str, before: object, after: object) -> None:
        del name, before, after
        waiting = self._waiting.get(namespace)
        if waiting:
            self._check(namespace, list(waiting.values()))

    def resync(self) -> None:
        """Look at every object waiting again (this replica just became the leader)."""
        for namespace in list(self._waiting):
            self._quota_changed(namespace, "", None, None)

    def _unwait(self, namespace: str, name: str) -> None:
        waiting = self._waiting.get(namespace)
        if waiting is not None and waiting.pop(name, None) is not None and not waiting:
            del self._waiting[namespace]

    def _check(self, namespace: str, refs: list[ClaimRef]) -> None:
        if not self._leading():
            return
        held: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
        for quota in self._quotas.in_namespace(namespace):
            quota_name = str(getattr(quota, "name", ""))
            obj = self._quotas.get(namespace=namespace, name=quota_name) or {}
            for res in (obj.get("status") or {}).get("reservations") or []:
                held.setdefault(str(res.get("uid", "")), []).append((quota_name, res))
        for ref in refs:
            mine = [
                (quota_name, res)
                for quota_name, res in held.get(ref.uid, [])
                if int(res.get("generation", 1)) >= ref.generation
            ]
            if mine:
                self._done.add((ref.uid, ref.generation))
                self._unwait(namespace, ref.name)
                self._background(self._announce(namespace, ref, mine))

    async def _announce(
        self, namespace: str, ref: ClaimRef, held: list[tuple[str, Mapping[str, Any]]]
    ) -> None:
        kind_name, _, name = ref.name.partition("/")
        kind = self._kinds.get(kind_name)
        if kind is None:
            return
        cost = max(float(res.get("cost", 0.0)) for _, res in held)
        mode = str(max(held, key=lambda h: float(h[1].get("cost", 0.0)))[1].get("pricing"))
        quotas = ", ".join(sorted({q for q, _ in held}))
        regarding = recording.reference(
            api_version=kind.resource.api_version,
            kind=kind.resource.kind,
            namespace=namespace if kind.resource.namespaced else "",
            name=name,
            uid=ref.uid,
        )
        await self._events.record(
            regarding,
            type_="Normal",
            reason=REASON,
            action="Admit",
            note=f"priced at {cost:,.2f}/month ({mode} pricing) by DatabaseQuota "
            f"{quotas} in namespace {namespace}; counted from its spec until billing shows "
            f"cluster {ref.cluster_id}",
        )
        self.announced += 1

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
