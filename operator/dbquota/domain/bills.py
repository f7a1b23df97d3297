"""A claim of any kind as a bill of quantities, and the one way dbquota prices it.

Every kind is priced from what it asks for, as quantities of billable units::

    instance-hours     of an instance class    730 x instances      (DatabaseClaim, RDS)
    storage-months     GiB of provider storage storageGiB           (DatabaseClaim)
    class-months       GiB of a storage class  instances x GiB      (pods' volumes, RDS)
    vcpu-hours         vCPU requested          730 x instances x vCPU  (CNPG, Zalando, poolers)
    memory-hours       GiB of memory requested 730 x instances x GiB

A bill is ``{Unit: quantity}``; its monthly cost is the sum of quantity x unit price.
Unit prices come from one :class:`~dbquota.domain.billing.PriceBook` (:func:`live_prices`,
None when the book lacks any unit: an instance class or storage class it does not know,
or no requests prices) or conservatively (:func:`conservative_prices`: the highest known
price x margin, an unknown class at the dearest known one; None only when no price at all
is known for a unit).

An UPDATE's growth (:func:`growth`) is the sum over units of Δquantity x (the high price
when Δ >= 0, else the low one), never below 0: with a DatabaseClaim's two units this is
exactly :func:`dbquota.domain.pricing.growth_cost` (units are summed compute first, the new
version's before the old's, so the floating-point sums are the same too).

A price is always a finite number, at most :data:`MOST`: the readers bound what an object
may ask for (:mod:`dbquota.domain.kinds`), so with any plausible catalog no bill comes near
it; a larger total, infinity (an overflow) or NaN (infinity minus infinity, or infinity x
0) counts as ``MOST``. So no cost is ever free that cannot be counted, every budget denies
it, and whatever sums, holds or writes prices (a quota's totals, a reservation, the
status) gets a number that JSON carries.

Called by :mod:`dbquota.domain.quotes` and :mod:`dbquota.domain.claims`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal, NamedTuple

from dbquota.domain import billing

What = Literal["instance-hours", "vcpu-hours", "memory-hours", "storage-months", "class-months"]

_ORDER: tuple[What, ...] = (
    "instance-hours",
    "vcpu-hours",
    "memory-hours",
    "storage-months",
    "class-months",
)


class Unit(NamedTuple):
    """One billable unit: what, and of which instance or storage class (None: the
    cluster's default storage class, or no class for the other units)."""

    what: What
    name: str | None = None

    def describe(self) -> str:
        """The unit for messages: ``instance class db.r6g.large``, ``storage class gp3``."""
        if self.what == "instance-hours":
            return f"instance class {self.name}"
        if self.what == "class-months":
            return f"storage class {self.name or '(default)'}"
        return {"vcpu-hours": "vCPU", "memory-hours": "memory", "storage-months": "storage"}[
            self.what
        ]


MOST = 1e100
"""The most one bill costs or adds per month, in any currency (module docstring): above
any budget (the CRD's ``monthlyBudget`` is at most 10^12) and any bill the readers let
through at a plausible catalog (below 10^40), yet so far below the largest float that any
number of such prices sums to a finite total."""


Bill = Mapping[Unit, float]
"""Quantities per unit (what one object asks for per month)."""
Prices = Mapping[Unit, float]
"""A price per unit of a bill."""


def add(bill: dict[Unit, float], unit: Unit, quantity: float) -> None:
    """Add ``quantity`` of ``unit`` to ``bill`` (a zero quantity adds no unit)."""
    if quantity:
        bill[unit] = bill.get(unit, 0.0) + quantity


def live_price(unit: Unit, book: billing.PriceBook) -> float | None:
    """``unit``'s price in ``book``; None when the book does not know it."""
    if unit.what == "instance-hours":
        return book.instance_hourly.get(unit.name or "")
    if unit.what == "storage-months":
        return book.storage_gib_month
    if unit.what == "class-months":
        return book.storage_class_gib_month.get(unit.name)
    return book.vcpu_hourly if unit.what == "vcpu-hours" else book.memory_gib_hourly


def conservative_price(unit: Unit, highest: billing.PriceBook, margin: float) -> float | None:
    """``unit``'s highest known price x ``margin``; a class never seen costs as the dearest
    known one. None when nothing is known to price it with."""
    price: float | None
    if unit.what == "instance-hours":
        known = highest.instance_hourly
        price = known.get(unit.name or "", max(known.values())) if known else None
    elif unit.what == "class-months":
        known_classes = highest.storage_class_gib_month
        price = known_classes.get(unit.name, max(known_classes.values())) if known_classes else None
    else:
        price = live_price(unit, highest)
    return None if price is None else price * margin


def prices_for(
    units: Iterable[Unit], price: Callable[[Unit], float | None]
) -> dict[Unit, float] | None:
    """``price`` of each unit; None when one of them has none."""
    found: dict[Unit, float] = {}
    for unit in units:
        value = price(unit)
        if value is None:
            return None
        found[unit] = value
    return found


def live_prices(bill: Bill, book: billing.PriceBook) -> dict[Unit, float] | None:
    """The book's price of every unit of ``bill``; None when it lacks one."""
    return prices_for(bill, lambda unit: live_price(unit, book))


def conservative_prices(
    bill: Bill, highest: billing.PriceBook, margin: float
) -> dict[Unit, float] | None:
    """Every unit of ``bill`` at its highest known price x ``margin``; None when one has no
    price at all."""
    return prices_for(bill, lambda unit: conservative_price(unit, highest, margin))


def missing(bill: Bill, book: billing.PriceBook) -> Unit | None:
    """The first unit of ``bill`` the book does not price (for messages), or None."""
    return next((u for u in ordered(bill) if live_price(u, book) is None), None)


def ordered(new: Bill, old: Bill | None = None) -> list[Unit]:
    """The units of ``new`` then those only in ``old``, compute before storage."""
    units = list(new) + [u for u in old or () if u not in new]
    return sorted(units, key=lambda u: _ORDER.index(u.what))  # stable: new before old


def cost(bill: Bill, prices: Prices) -> float:
    """The monthly cost of ``bill`` at ``prices`` (which price every unit of it), at most
    :data:`MOST`."""
    total = 0.0
    for unit in ordered(bill):
        total += bill[unit] * prices[unit]
    return _counted(total)


def growth(*, new: Bill, old: Bill | None, high: Prices, low: Prices) -> float:
    """What ``new`` adds to the monthly bill over ``old`` (None: all of it), never below 0
    nor above :data:`MOST`.

    ``high`` prices ``new``'s units, ``low`` those of ``old`` (a unit missing from ``low``
    is credited at nothing): each unit's increase at its high price, each decrease at its
    low one.
    """
    if old is None:
        return cost(new, high)
    total = 0.0
    for unit in ordered(new, old):
        delta = new.get(unit, 0.0) - old.get(unit, 0.0)
        total += delta * (high[unit] if delta >= 0 else low.get(unit, 0.0))
    return 0.0 if total <= 0.0 else _counted(total)  # NaN is no saving: not max(0.0, NaN)


def _counted(total: float) -> float:
    """``total``, or :data:`MOST` when it is more, infinite or NaN (module docstring)."""
    return total if total <= MOST else MOST  # noqa: FURB136  (min(NaN, MOST) is NaN)


def grows(*, new: Bill, old: Bill | None) -> bool:
    """Whether ``new`` asks for more of some unit than ``old`` (None: a new object)."""
    return old is None or any(q > old.get(u, 0.0) for u, q in new.items())
