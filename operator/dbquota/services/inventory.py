"""Every enabled kind's objects, by the tenant namespace whose quotas they count against.

One :class:`~dbquota.adapters.kube.Informer` per kind of ``--claim-kinds`` watches its
objects (a cluster-scoped kind cluster-wide); :class:`ClaimIndex` joins what they derive
(:class:`~dbquota.domain.reservations.ClaimRef`) by *tenant* namespace: a namespaced
object's own namespace, a Crossplane managed resource's claim-namespace label. Objects of
different kinds never clash: another operator's object is named ``Kind/name``.

Read by the reconciler (the recount and the hard cap on ``claims`` count every enabled
kind; a billing id that more than one object names, :meth:`ClaimIndex.shared`, counts
none of them at its billed cost), by the runtime (billing tracking, deletions) and by
:class:`~dbquota.services.announcing.Announcer`. Listeners hear ``(tenant, name, before,
after)`` as an informer's do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from dbquota.adapters.kube import Informer, Listener
from dbquota.domain.reservations import ClaimRef

logger = logging.getLogger(__name__)

_NONE: Mapping[str, ClaimRef] = {}


class Claims(Protocol):
    """What the reconciler reads of the claims (an informer, or a :class:`ClaimIndex`)."""

    def in_namespace(self, namespace: str) -> list[ClaimRef]:
        """The objects counting against ``namespace``'s quotas."""
        ...


class ClaimIndex:
    """See the module docstring."""

    def __init__(self, informers: Sequence[Informer[ClaimRef]]) -> None:
        self.informers = tuple(informers)
        self._store: dict[str, dict[str, ClaimRef]] = {}
        self._by_uid: dict[str, dict[str, ClaimRef]] = {}  # tenant -> uid -> object
        self._naming: dict[str, int] = {}  # cluster id -> objects that name it
        self._listeners: list[Listener[ClaimRef]] = []
        for informer in self.informers:
            informer.add_listener(self._changed)

    def add_listener(self, listener: Listener[ClaimRef]) -> None:
        """Call ``listener(tenant, name, before, after)`` on every change from now on."""
        self._listeners.append(listener)

    def in_namespace(self, namespace: str) -> list[ClaimRef]:
        """Every object of every enabled kind counting against ``namespace``."""
        return list(self._store.get(namespace, {}).values())

    def by_uid(self, namespace: str) -> Mapping[str, ClaimRef]:
        """Every object counting against ``namespace``, by uid: the index's own mapping,
        kept current by the watches, so a lookup costs O(1) and nothing is copied (the
        webhook asks on every review once many admissions are in flight, and the ledger on
        every write). Read it at once; do not keep or change it."""
        return self._by_uid.get(namespace, _NONE)

    def shared(self, cluster_id: str) -> bool:
        """Whether more than one object, in any namespace, names ``cluster_id`` (the
        recount then counts none of them at its billed cost:
        :func:`dbquota.domain.usage.recount`)."""
        return self._naming.get(cluster_id, 0) > 1

    def namespaces(self) -> list[str]:
        """Tenant namespaces with at least one object."""
        return [ns for ns, refs in self._store.items() if refs]

    def derived(self, *, namespace: str, name: str) -> ClaimRef | None:
        """One object by tenant and name (``Kind/name`` for another operator's)."""
        return self._store.get(namespace, {}).get(name)

    @property
    def current(self) -> bool:
        """Whether every kind's watch is up to date (see ``Informer.current``)."""
        return all(informer.current for informer in self.informers)

    async def synced(self) -> None:
        """Wait until every kind's watch has listed once."""
        await asyncio.gather(*(informer.synced.wait() for informer in self.informers))

    def _changed(
        self, namespace: str, name: str, before: ClaimRef | None, after: ClaimRef | None
    ) -> None:
        del namespace, name  # keyed by tenant and by the ref's own (kind-qualified) name
        if before is not None:
            self._by_uid.get(before.namespace, {}).pop(before.uid, None)
            left = self._naming.get(before.cluster_id, 0) - 1
            if left > 0:
                self._naming[before.cluster_id] = left
            else:
                self._naming.pop(before.cluster_id, None)
        if after is not None:
            self._by_uid.setdefault(after.namespace, {})[after.uid] = after
            self._naming[after.cluster_id] = self._naming.get(after.cluster_id, 0) + 1
        if before is not None and (after is None or after.namespace != before.namespace):
            self._store.get(before.namespace, {}).pop(before.name, None)
            self._tell(before.namespace, before.name, before, None)
            before = None
        if after is not None:
            self._store.setdefault(after.namespace, {})[after.name] = after
            self._tell(after.namespace, after.name, before, after)

    def _tell(
        self, namespace: str, name: str, before: ClaimRef | None, after: ClaimRef | None
    ) -> None:
        for listener in self._listeners:
            try:
                listener(namespace, name, before, after)
            except Exception:
                logger.exception("a claim index listener failed")
