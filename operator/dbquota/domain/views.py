"""What one webhook replica knows of one quota, and the view admissions are decided against.

A replica learns of a quota three ways: its own reads, its own writes (the apiserver
answers a patch with the object), and the watch. :class:`QuotaView` keeps the newest of
those copies (:func:`newer`), parses its spec once per object and generation, and builds
the :class:`View` an admission decides against: the copy's totals and reservations *plus*
what this replica has admitted from its escrow since and not written yet. Each such
admission moves the view along in O(1) (:meth:`QuotaView.admitted`) instead of
rebuilding it, so a busy replica's decisions cost the same however many admissions are
in flight.

A quota is one object, named by its ``metadata.uid``, not by its name: one deleted and
created again under the same name (``kubectl replace --force``, Argo CD's
``Replace=true``, a Helm reinstall) is a new quota, whose generation starts at 1 again.
So the parsed spec is kept per uid and generation, never per generation alone, and the
ledger takes no copy of another uid than its own (:func:`uid_of`).

Pure; the reservation ledger (:mod:`dbquota.services.reserving`) owns one per quota.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from dbquota.domain import escrow, quotas, reservations, usage
from dbquota.domain.resources import QuotaObject, Reservation


def newer(candidate: QuotaObject, than: QuotaObject | None) -> bool:
    """Whether ``candidate`` is a later version of the quota than ``than``.

    resourceVersions are opaque by contract; etcd's are increasing integers, which is what
    every apiserver serves today. Anything else counts as newer (the safe reading: a copy
    that is not newer is re-read at the next conflict anyway).
    """
    if than is None:
        return True
    a = str(candidate.get("metadata", {}).get("resourceVersion", ""))
    b = str(than.get("metadata", {}).get("resourceVersion", ""))
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


def uid_of(quota: QuotaObject) -> str:
    """The quota's ``metadata.uid``: which object it is ("" if the copy carries none)."""
    return str(quota.get("metadata", {}).get("uid", ""))


def generation_of(quota: QuotaObject) -> int:
    """The quota's ``metadata.generation`` (moves with spec changes, not status writes)."""
    return int(quota.get("metadata", {}).get("generation", 0))


@dataclass(frozen=True)
class View:
    """The quota as this replica last saw it, with what it admitted from escrow since."""

    quota: QuotaObject
    spec: quotas.QuotaSpec
    usage: quotas.Usage
    held: dict[str, Reservation]
    """Reservations in flight by uid (this replica's unwritten ones included)."""
    others: escrow.Allowance
    """Other replicas' escrow, counted as used."""

    def free(self, own: escrow.Allowance) -> escrow.Allowance:
        """What is free outside every escrow, this replica's ``own`` (what is left of it)
        included."""
        taken = escrow.with_held(self.usage, self.others.plus(own))
        return escrow.free(quota=self.spec, usage=taken)


class QuotaView:
    """The newest copy of one quota this replica has, and the view built from it."""

    def __init__(self, *, name: str, holder: str) -> None:
        self.name = name
        self.holder = holder
        self.latest: QuotaObject | None = None
        self.stale = True
        """Whether to read afresh before the next compare-and-swap round."""
        self._specs: tuple[tuple[str, int], quotas.QuotaSpec | ValueError] | None = None
        self._view: View | None = None

    def observe(self, quota: QuotaObject) -> bool:
        """A copy from the watch or another writer: taken if newer (then True)."""
        if not newer(quota, self.latest):
            return False
        self.set(quota)
        return True

    def set(self, quota: QuotaObject) -> None:
        """A copy this replica read or wrote: the newest it knows."""
        self.latest = quota
        self.stale = False
        self._view = None

    def forget_view(self) -> None:
        """What was admitted from escrow changed other than by :meth:`admitted`."""
        self._view = None

    def spec(self, quota: QuotaObject | None = None) -> quotas.QuotaSpec | ValueError:
        """The parsed spec of ``quota`` (default the latest copy), parsed once per object
        and generation (a quota created again under its name starts at generation 1)."""
        quota = self.latest if quota is None else quota
        assert quota is not None
        key = (uid_of(quota), generation_of(quota))
        if self._specs is None or self._specs[0] != key:
            try:
                spec: quotas.QuotaSpec | ValueError = quotas.parse_quota(
                    name=self.name, spec=quota.get("spec") or {}
                )
            except ValueError as exc:
                spec = exc
            self._specs = (key, spec)
        return self._specs[1]

    def current(self, unwritten: Mapping[str, Reservation]) -> View | ValueError:
        """The view admissions decide against (module docstring); the spec's error if the
        spec cannot be read."""
        if self._view is not None:
            return self._view
        assert self.latest is not None
        spec = self.spec()
        if isinstance(spec, ValueError):
            return spec
        status = self.latest.get("status") or {}
        held = reservations.by_uid(status.get("reservations") or [])
        self._view = View(
            quota=self.latest,
            spec=spec,
            usage=usage.joined(usage.of_status(status), unwritten.values(), held),
            held=held,
            others=escrow.held_by_others(escrow.entries_of(status), holder=self.holder),
        )
        return self._view

    def admitted(self, hold: Reservation) -> None:
        """Move the view along for one admission from escrow (O(1))."""
        view = self._view
        if view is None:
            return
        uid = str(hold.get("uid", ""))
        replacing = view.held.get(uid)
        view.held[uid] = hold
        self._view = replace(view, usage=usage.with_hold(view.usage, hold, replacing=replacing))
