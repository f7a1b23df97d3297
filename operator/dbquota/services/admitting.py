"""Admission of one claim, of any enabled kind: orchestration only.

Called by the webhook (:mod:`dbquota.handlers.webhook`) for every AdmissionReview of a
claim. It parses the object with its kind's reader (:mod:`dbquota.domain.kinds`; a
malformed one is denied in our words: field and reason; an UPDATE of one stored unreadable
is priced as a CREATE, or admitted unpriced when only its metadata changes, and one that
re-points another kind's billing id is denied: :mod:`dbquota.domain.kinds.updates`), finds
the tenant namespace (the object's own, or a cluster-scoped object's tenant label; an
object that names none is admitted unchecked with a warning, or denied under
``--no-quota-policy=Deny``), finds that namespace's quotas in the quota informer (no
apiserver call; where it shows none, a live LIST: :mod:`dbquota.services.lookups`), and
asks each quota's reservation ledger (:mod:`dbquota.services.reserving`) for a decision,
which the ledger takes with the pure :func:`dbquota.domain.admission.admit`. It never
calls the billing API and never counts claims: usage comes from the quota's status totals.
An UPDATE that changes a cluster-scoped object's tenant label is a CREATE under its new
tenant, and one that takes it out of every quota is refused
(:mod:`dbquota.domain.kinds.tenancy`).

A dry run (``kubectl apply --dry-run=server``, ``kubectl dbquota explain``) reserves
nothing and gets one more warning per quota that says how it decided (:func:`explain`).

With several quotas in a namespace every one must admit; they are visited in name order
and a denial stops the visit. A reservation already taken on an earlier quota for a claim
that a later quota denies is released by the reconciler once its grace period shows the
claim never appeared (``NeverCreated``), or, for an UPDATE, that the claim stayed at its
older generation (``NeverApplied``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from dbquota.adapters.kube import Informer
from dbquota.domain import admission, billing, kinds, verdicts, views
from dbquota.domain.kinds import databaseclaims, tenancy, updates
from dbquota.domain.reservations import ClaimRef
from dbquota.domain.resources import QuotaObject, Reservation
from dbquota.errors import KubeError
from dbquota.services import lookups, reserving, stores
from dbquota.settings import NoQuotaPolicy

logger = logging.getLogger(__name__)

SYNC_PATIENCE = 5.0
"""Seconds a review waits for the quota watch's first list at start-up (a replica is not
Ready before it has listed, so the apiserver rarely calls it that early)."""


@dataclass(frozen=True, kw_only=True)
class Review:
    """One AdmissionReview of a claim, reduced to what admission needs."""

    namespace: str
    name: str
    spec: object
    """The claim's ``spec``: any JSON value; parsing denies a bad one in its own words."""
    old_spec: object | None
    """The previous ``spec`` of an UPDATE (any JSON value but null), None for a CREATE."""
    dry_run: bool
    uid: str = ""
    """The object's uid (set before admission; without one, the name holds its reservation)."""
    generation: int = 1
    """The object's ``metadata.generation`` (bumped on spec changes before admission)."""
    old_status: Mapping[str, object] | None = None
    """The object's status before an UPDATE (its price so far)."""
    kind: kinds.Kind = databaseclaims.KIND
    """The object's kind, whose module reads it."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """The object's labels (a cluster-scoped object's tenant may be in one)."""
    old_labels: Mapping[str, str] | None = None
    """The labels before an UPDATE (None: ``labels``): its tenant then (``kinds.tenancy``)."""
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """The object's annotations (another kind's billing id may be in one)."""
    old_annotations: Mapping[str, str] | None = None
    """The annotations before an UPDATE (None: ``annotations``): its billing id then."""

    def read(self, *, namespace_label: str) -> updates.Read | verdicts.Verdict:
        """Its objects as its kind reads them, or the verdict due before any quota decides
        (:func:`dbquota.domain.kinds.updates.read`)."""
        return updates.read(
            kind=self.kind,
            new=self._whole(self.spec, self.labels, self.annotations),
            old=self._old(),
            namespace_label=namespace_label,
            namespace=self.namespace,
            name=self.name,
        )

    def _old(self) -> dict[str, object] | None:
        """The object before an UPDATE, as its kind's reader takes it; None for a CREATE."""
        if self.old_spec is None:
            return None
        labels = self.labels if self.old_labels is None else self.old_labels
        annotations = self.annotations if self.old_annotations is None else self.old_annotations
        return self._whole(self.old_spec, labels, annotations)

    def _whole(
        self, spec: object, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> dict[str, object]:
        metadata: dict[str, object] = {"name": self.name, "labels": labels}
        if self.namespace:
            metadata["namespace"] = self.namespace
        metadata["annotations"] = annotations
        return {"metadata": metadata, "spec": spec}


UNSYNCED = verdicts.Verdict(
    allowed=False,
    message="not decided: dbquota has not listed the DatabaseQuotas yet (starting up); "
    "nothing was reserved, try again",
)
"""The answer while the quota watch has not listed (:data:`SYNC_PATIENCE`)."""


def _charged(status: Mapping[str, object] | None) -> float:
    cost = (status or {}).get("estimatedMonthlyCost")
    if isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0:
        return 0.0
    return float(cost)


class Admission:
    """Decides and reserves; see the module docstring."""

    def __init__(
        self,
        *,
        ledgers: Ledgers,
        quotas: Informer[Any],
        no_quota: NoQuotaPolicy,
        namespace_label: str = "",
        live: lookups.LiveQuotas | None = None,
    ) -> None:
        self._ledgers = ledgers
        self._quotas = quotas
        self._no_quota = no_quota
        self._label = namespace_label
        self._live = live

    async def _synced(self) -> bool:
        """Whether the quota watch has listed (waiting a little at start-up)."""
        if self._quotas.synced.is_set():
            return True
        try:
            async with asyncio.timeout(SYNC_PATIENCE):
                await self._quotas.synced.wait()
        except TimeoutError:
            return False
        return True

    def quota_names(self, namespace: str) -> list[str]:
        """The namespace's quotas, as the watch holds them."""
        return sorted(str(getattr(q, "name", "")) for q in self._quotas.in_namespace(namespace))

    async def review(self, review: Review) -> verdicts.Verdict:
        """The verdict on ``review``; admitted (non-dry-run) claims hold budget on each quota."""
        kind = review.kind
        read = review.read(namespace_label=self._label)
        if isinstance(read, verdicts.Verdict):
            return read
        tenant, old, before = read.tenant, read.old, read.before
        if (tenant is not None or before is not None) and not await self._synced():
            return UNSYNCED
        found, live = await lookups.named(self._live, tenant, self.quota_names)  # KubeError: 503
        names = self._counting(review, tenant, before, found)
        if isinstance(names, verdicts.Verdict):
            return names
        if read.rebilled is not None:  # a quota counts it, at the bill its id names
            return read.rebilled
        assert tenant is not None  # no tenant: no quota counts it
        if before != tenant:  # a cluster-scoped object's tenant label changed: it moves
            old = None  # a CREATE where it goes; its old tenant's quotas stop counting it
        request = admission.Request(
            name=kind.ref(review.name),
            uid=review.uid or f"name:{tenant}/{kind.ref(review.name)}",
            generation=review.generation,
            claim=read.claim,
            old=old,
            # what its quotas count it at; nothing when it is priced as new
            charged=_charged(review.old_status) if kind.owned and old is not None else 0.0,
            dry_run=review.dry_run,
        )
        decisions: list[verdicts.Decision] = []
        for name in names:
            seen = cast(QuotaObject | None, self._quotas.get(namespace=tenant, name=name))
            ledger = self._ledgers.of(namespace=tenant, name=name, quota=seen or live.get(name))
            try:
                decision = await ledger.reserve(request)
            except KubeError as exc:
                logger.warning(
                    "could not reserve for claim %s/%s on DatabaseQuota %s: %s",
                    tenant,
                    request.name,
                    name,
                    exc,
                )
                return verdicts.Verdict(
                    allowed=False,
                    message=(
                        f"not decided: DatabaseQuota {tenant}/{name} could not be "
                        f"updated in time ({exc}); nothing was reserved, try again"
                    ),
                    decisions=tuple(decisions),
                )
            decisions.append(decision)
            if not decision.allowed:
                break
        return _with_warnings(verdicts.combine(decisions), review, read, decisions)

    def _counting(
        self, review: Review, tenant: str | None, before: str | None, names: list[str]
    ) -> list[str] | verdicts.Verdict:
        """``names``, the quotas of ``tenant``, which decide on ``review``; when there are
        none, the verdict instead (:func:`dbquota.domain.kinds.tenancy.unchecked`)."""
        if names:
            return names
        deny = self._no_quota == "Deny"
        left: dict[str, str] = {}  # the quotas it leaves, if an UPDATE moves it
        if before is not None and before != tenant and not deny:
            for name in self.quota_names(before):
                seen = cast(QuotaObject | None, self._quotas.get(namespace=before, name=name))
                left[name] = tenancy.enforcement(seen)
        return tenancy.unchecked(
            kind=review.kind.resource.kind,
            name=review.name,
            label=self._label or "(none configured)",
            tenant=tenant,
            before=before,
            left=left,
            deny=deny,
        )


unrequested = kinds.unrequested
"""Re-exported from the domain: the warning for pods that request no CPU or memory."""


EXPLAIN = "dbquota explain:"
"""The start of the warning a dry run gets for each quota's decision (at most 256
characters, as the apiserver keeps them): ``key=value`` fields, read by ``kubectl dbquota
explain``."""


def explain(decision: verdicts.Decision) -> str:
    """One quota's decision as a dry run's warning (see :data:`EXPLAIN`)."""
    verdict = "denied" if not decision.allowed else "warned" if decision.would_deny else "admitted"
    return (
        f"{EXPLAIN} quota={decision.quota} verdict={verdict} reason={decision.reason} "
        f"cost={decision.cost:.2f} pricing={decision.pricing or 'None'} "
        f"degraded={str(decision.degraded).lower()} policy={decision.policy or '-'}"
    )[:256]


class Ledgers:
    """One :class:`~dbquota.services.reserving.Ledger` per quota object, created on first
    use; all share one escrow holder (this replica). A quota deleted, or replaced by a new
    object of its name, has its ledger stopped; the new object gets a new one."""

    def __init__(
        self,
        store: stores.QuotaStore,
        *,
        snapshot: Callable[[], billing.BillingSnapshot],
        share: float = 0.0,
        holder: str | None = None,
        alive: Callable[[], bool] = lambda: True,
        live: Callable[[str], bool] = lambda _: True,
        in_flight_limit: int | None = None,
        present: Callable[[str], Mapping[str, ClaimRef]] = lambda _: {},
        leading: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.share = share
        self.holder = holder or stores.holder_id()
        self._snapshot = snapshot
        self._alive = alive
        self._live = live
        self._limit = in_flight_limit
        self._present = present
        self._leading = leading
        self._ledgers: dict[str, dict[str, reserving.Ledger]] = {}  # namespace -> name ->
        self._stopping: set[asyncio.Task[None]] = set()  # writers of stopped ledgers

    def of(
        self, *, namespace: str, name: str, quota: QuotaObject | None = None
    ) -> reserving.Ledger:
        """The ledger of quota ``namespace/name``: of the object ``quota`` (the watch's
        copy), if given; one of an older object by that name, or one stopped, is replaced."""
        in_namespace = self._ledgers.get(namespace)
        ledger = None if in_namespace is None else in_namespace.get(name)
        if ledger is not None and quota is not None:
            ledger.observe(quota)  # stops it if ``quota`` is a newer object of the name
        if ledger is not None and ledger.gone:
            self.drop(namespace=namespace, name=name)
            ledger = None
        if ledger is None:
            ledger = self._ledgers.setdefault(namespace, {})[name] = reserving.Ledger(
                store=self.store,
                namespace=namespace,
                name=name,
                uid=None if quota is None else views.uid_of(quota),
                snapshot=self._snapshot,
                holder=self.holder,
                share=self.share,
                alive=self._alive,
                live=self._live,
                in_flight_limit=self._limit,
                present=self._present,
                leading=self._leading,
            )
            if quota is not None:
                ledger.observe(quota)
        return ledger

    def wake(self) -> None:
        """Every ledger plans its next write again: this replica stopped leading, so what
        its escrow admitted must reach the quota soon, for the new leader to price it."""
        for ledger in self._every():
            ledger.wake()

    def _every(self) -> list[reserving.Ledger]:
        every = [ledger for by_name in self._ledgers.values() for ledger in by_name.values()]
        return [ledger for ledger in every if not ledger.gone]

    def admitted_here(self, namespace: str, uid: str) -> list[Reservation]:
        """The reservations for claim ``uid`` that this replica admitted from escrow and has
        not written yet (one per quota of ``namespace``): the leader prices its own
        admissions from these at once, without waiting for the write and its watch event."""
        ledgers = [
            ledger for ledger in self._ledgers.get(namespace, {}).values() if not ledger.gone
        ]
        return [r for ledger in ledgers if (r := ledger.account.unwritten.get(uid)) is not None]

    async def unwritten(
        self, namespace: str, name: str, patience: float, uid: str = ""
    ) -> frozenset[str] | None:
        """:meth:`~dbquota.services.reserving.Ledger.unwritten` of the quota's ledger (none
        yet, or the ledger of another object by that name than ``uid``: nothing)."""
        ledger = self._ledgers.get(namespace, {}).get(name)
        if ledger is None or (uid and ledger.uid is not None and ledger.uid != uid):
            return frozenset()
        return await ledger.unwritten(patience)

    def observe(self, quota: QuotaObject) -> None:
        """A quota as the watch delivered it (only ledgers already in use care): a newer
        object by a ledger's name stops that ledger (the next review gets a new one)."""
        meta = quota.get("metadata", {})
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        ledger = self._ledgers.get(namespace, {}).get(name)
        if ledger is not None:
            ledger.observe(quota)
            if ledger.gone:
                self.drop(namespace=namespace, name=name)

    def drop(self, *, namespace: str, name: str, uid: str = "") -> None:
        """Forget a deleted quota (the object ``uid``, if given: not a newer one of its
        name) and stop its ledger for good."""
        in_namespace = self._ledgers.get(namespace, {})
        ledger = in_namespace.get(name)
        if ledger is None or (uid and ledger.uid is not None and ledger.uid != uid):
            return
        del in_namespace[name]
        if not in_namespace:
            self._ledgers.pop(namespace, None)
        writer = ledger.stop()
        if writer is not None:
            self._stopping.add(writer)
            writer.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Write every pending reservation and give every escrow back (shutdown); wait for
        the writers of stopped ledgers to end."""
        await asyncio.gather(*(ledger.close() for ledger in self._every()))
        await asyncio.gather(*self._stopping, return_exceptions=True)


def _with_warnings(
    verdict: verdicts.Verdict,
    review: Review,
    read: updates.Read,
    decisions: Sequence[verdicts.Decision],
) -> verdicts.Verdict:
    """``verdict`` with the warnings it carries beyond the decisions' own: how its objects
    were read (an old one unreadable), what the object did not request (so was not
    priced), and on a dry run why each quota decided so (for ``kubectl dbquota explain``
    and ``--dry-run=server``)."""
    name = f"{review.kind.resource.kind} {read.tenant}/{review.name}"
    unpriced = unrequested(read.claim, name=name)
    if read.warnings:
        verdict = replace(verdict, warnings=(*read.warnings, *verdict.warnings))
    if unpriced:
        verdict = replace(verdict, warnings=(*verdict.warnings, unpriced))
    if review.dry_run:
        verdict = replace(verdict, warnings=(*verdict.warnings, *(explain(d) for d in decisions)))
    return verdict
