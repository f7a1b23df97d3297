"""Pricing a claim: live, conservative, and the growth an UPDATE adds.

A claim costs, per month::

    instance hourly price x 730 hours x replicas  +  storageGiB x price per GiB-month

:func:`project_cost` prices it exactly at one :class:`~dbquota.domain.billing.PriceBook`
(None when the book does not know its instance class). Conservative pricing
(:func:`conservative_cost`) uses the highest unit price seen in the price history
(:func:`highest_known`) times the quota's safety margin; a class never seen is priced as the
most expensive class known, so an unknown or mistyped class can never be cheap. "Highest"
compares prices of one currency only, the latest catalog's (history in another, from
before the provider switched, is left out).

An UPDATE reserves only what it adds (:func:`growth_cost`): increases are priced at the
high rates, decreases at the low ones, and the result is never below zero, so pricing at
higher rates can never make an update look cheaper.

Databases that run as pods (CloudNativePG, Zalando) are priced by what they request::

    instances x (vCPU x price per vCPU-hour + memory GiB x price per GiB-hour) x 730
      + instances x sum of (volume GiB x its storage class's price per GiB-month)

:func:`requests_cost` prices that at one book: None when the book has no requests prices
or a volume's storage class is not in it (the caller then prices conservatively, as for an
unknown instance class). :func:`conservative_requests_cost` prices it at the highest known
prices (:func:`highest_known_requests`) x margin, a storage class never seen (or the
default class, unpriced) at the dearest known class; None when no requests prices are
known at all, which the caller treats like "no prices".

:data:`PricingMode` is what ``status.pricing`` of a claim shows. Called by
:mod:`dbquota.domain.quotes` (the price of one admission request) and by the status
writers (:func:`estimate`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dbquota.domain import billing, bills, claims

PricingMode = Literal["Live", "Cached", "Conservative", "StrictCap", "FailOpen"]
"""How an admitted claim was priced (``status.pricing`` of a DatabaseClaim):

- ``Live``: billing healthy and fresh, last sync succeeded, the class is in the catalog;
- ``Cached``: not degraded, but the latest syncs failed and the cached prices served;
- ``Conservative``: highest known prices x safetyMargin (degraded, or a class missing
  from the catalog);
- ``StrictCap``: admitted under StrictCap's allowance while degraded;
- ``FailOpen``: admitted without a budget check while degraded.
"""

PRICING_MODES: tuple[PricingMode, ...] = ("Live", "Cached", "Conservative", "StrictCap", "FailOpen")


@dataclass(frozen=True, kw_only=True)
class UnitPrices:
    """The two unit prices one claim's cost depends on."""

    instance_hourly: float
    """Price of one instance of the claim's class per hour."""
    storage_gib_month: float
    """Price of one GiB of storage per month."""


ZERO = UnitPrices(instance_hourly=0.0, storage_gib_month=0.0)
"""Free: the low side of an update when nothing lower is known."""


def monthly_cost(*, claim: claims.ClaimSpec, unit: UnitPrices) -> float:
    """The claim's monthly cost at ``unit`` prices."""
    compute = billing.HOURS_PER_MONTH * claim.replicas * unit.instance_hourly
    return compute + claim.storage_gib * unit.storage_gib_month


def live_unit_prices(*, instance_class: str, prices: billing.PriceBook) -> UnitPrices | None:
    """The book's unit prices for ``instance_class``; None when the class is not in it."""
    hourly = prices.instance_hourly.get(instance_class)
    if hourly is None:
        return None
    return UnitPrices(instance_hourly=hourly, storage_gib_month=prices.storage_gib_month)


def project_cost(*, claim: claims.ClaimSpec, prices: billing.PriceBook) -> float | None:
    """The claim's monthly cost at ``prices``; None when its instance class is unknown there."""
    unit = live_unit_prices(instance_class=claim.instance_class, prices=prices)
    return None if unit is None else monthly_cost(claim=claim, unit=unit)


def highest_known(*books: billing.PriceBook | None) -> billing.PriceBook | None:
    """Per class and for storage, the highest unit price in any of ``books``.

    Conservative pricing reads ``highest_known(snapshot.highest, snapshot.prices)``, so the
    latest catalog counts even before it reaches the history window. None when no book has
    an instance class (claims are priced by class). The requests prices (vCPU, memory, per
    storage class) are merged the same way; :func:`highest_known_requests` is the variant
    for pricing requests, None only when no book prices requests.

    Only books in one currency are compared (:func:`_in_one_currency`): the history kept
    from before a cache read failed may be in the currency the provider priced in before.
    """
    merged = _merged(books)
    return merged if merged is not None and merged.instance_hourly else None


_CEILING: list[
    tuple[billing.PriceBook | None, billing.PriceBook | None, billing.PriceBook | None]
] = []


def ceiling(snapshot: billing.BillingSnapshot) -> billing.PriceBook | None:
    """``highest_known(snapshot.highest, snapshot.prices)``, merged once per pair of books.

    Every admission prices against the same two books until the next sync; merging them
    per review was most of an admission's CPU with a catalog of 60 classes. One entry,
    keyed by the books' identity (the snapshot's books are immutable and held here, so an
    identity is never reused while it is cached).
    """
    merged = ceiling_any(snapshot)
    return merged if merged is not None and merged.instance_hourly else None


def ceiling_any(snapshot: billing.BillingSnapshot) -> billing.PriceBook | None:
    """Like :func:`ceiling`, but None only when the snapshot has no book at all: the
    highest known prices of every unit (instance classes, storage classes, requests), as
    :func:`dbquota.domain.bills.conservative_prices` reads them for any kind."""
    if _CEILING and _CEILING[0][0] is snapshot.highest and _CEILING[0][1] is snapshot.prices:
        return _CEILING[0][2]
    merged = _merged((snapshot.highest, snapshot.prices))
    _CEILING[:] = [(snapshot.highest, snapshot.prices, merged)]
    return merged


def highest_known_requests(*books: billing.PriceBook | None) -> billing.PriceBook | None:
    """Like :func:`highest_known`, but None only when no book prices requests (vCPU and
    memory), whether or not any has an instance class."""
    merged = _merged(books)
    return merged if merged is not None and merged.prices_requests() else None


def _highest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _in_one_currency(
    books: Iterable[billing.PriceBook | None],
) -> tuple[list[billing.PriceBook], str | None]:
    """The books whose prices compare, and their currency: those in the currency of the
    newest book that names one, and those naming none (unknown, as a catalog cached before
    currencies were: not known to be in another). That is the latest catalog's unit, which
    every live price is in; 9 EUR is not a higher price than 1.5 USD, and dbquota converts
    nothing (a quota in another currency is told: ``CurrencyMismatch``)."""
    present = [book for book in books if book is not None]
    named = [book for book in present if book.currency]
    unit = max(named, key=lambda book: book.observed_at).currency if named else None
    return [book for book in present if not book.currency or book.currency == unit], unit


def _merged(books: Iterable[billing.PriceBook | None]) -> billing.PriceBook | None:
    present, unit = _in_one_currency(books)
    if not present:
        return None
    hourly: dict[str, float] = {}
    classes: dict[str | None, float] = {}
    vcpu: float | None = None
    memory: float | None = None
    for book in present:
        for instance_class, price in book.instance_hourly.items():
            hourly[instance_class] = max(price, hourly.get(instance_class, price))
        for storage_class, price in book.storage_class_gib_month.items():
            classes[storage_class] = max(price, classes.get(storage_class, price))
        vcpu = _highest(vcpu, book.vcpu_hourly)
        memory = _highest(memory, book.memory_gib_hourly)
    return billing.PriceBook(
        instance_hourly=hourly,
        storage_gib_month=max(book.storage_gib_month for book in present),
        observed_at=max(book.observed_at for book in present),
        vcpu_hourly=vcpu,
        memory_gib_hourly=memory,
        storage_class_gib_month=classes,
        currency=unit,
    )


def conservative_unit_prices(
    *, instance_class: str, highest: billing.PriceBook, margin: float
) -> UnitPrices:
    """Highest known unit prices x ``margin``; a class never seen costs as the dearest known."""
    hourly = highest.instance_hourly.get(instance_class, highest.highest_instance_hourly())
    return UnitPrices(
        instance_hourly=hourly * margin, storage_gib_month=highest.storage_gib_month * margin
    )


def conservative_cost(
    *, claim: claims.ClaimSpec, highest: billing.PriceBook, margin: float
) -> float:
    """The claim's monthly cost at highest known unit prices x ``margin``."""
    unit = conservative_unit_prices(
        instance_class=claim.instance_class, highest=highest, margin=margin
    )
    return monthly_cost(claim=claim, unit=unit)


def _priced_change(amount: float, *, high: float, low: float) -> float:
    return amount * (high if amount >= 0 else low)


def growth_cost(
    *,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    high: UnitPrices,
    low: UnitPrices,
) -> float:
    """What the request adds to the monthly bill, never below zero.

    ``high`` are the unit prices of ``claim``'s class, ``low`` those of ``old_claim``'s. A
    CREATE (``old_claim`` None) adds its whole cost at ``high``. An UPDATE adds ``new - old``:
    in the same class, more replicas or storage are priced at ``high`` and fewer at ``low``;
    across classes, the new instances at ``high`` minus the old ones at ``low``. With
    ``high == low`` this is exactly ``max(0, new - old)``.
    """
    if old_claim is None:
        return monthly_cost(claim=claim, unit=high)
    if claim.instance_class == old_claim.instance_class:
        compute = _priced_change(
            billing.HOURS_PER_MONTH * (claim.replicas - old_claim.replicas),
            high=high.instance_hourly,
            low=low.instance_hourly,
        )
    else:
        compute = (
            billing.HOURS_PER_MONTH * claim.replicas * high.instance_hourly
            - billing.HOURS_PER_MONTH * old_claim.replicas * low.instance_hourly
        )
    storage = _priced_change(
        claim.storage_gib - old_claim.storage_gib,
        high=high.storage_gib_month,
        low=low.storage_gib_month,
    )
    return max(0.0, compute + storage)


def estimate(
    *,
    claim: claims.ClaimSpec,
    snapshot: billing.BillingSnapshot,
    margin: float,
    degraded: bool = False,
) -> tuple[float, PricingMode | None]:
    """A claim's monthly cost when no admission priced it (a claim adopted by the
    reconciler, another operator's object counted from its spec), of any kind: at the
    current catalog when it prices every unit of the claim's bill and billing is not
    ``degraded``, else at highest known prices x ``margin``; ``(0.0, None)`` with no
    prices at all."""
    bill = claim.bill
    if snapshot.prices is not None and not degraded:
        live = bills.live_prices(bill, snapshot.prices)
        if live is not None:
            return bills.cost(bill, live), "Live"
    highest = ceiling_any(snapshot)
    high = None if highest is None else bills.conservative_prices(bill, highest, margin)
    if high is None:
        return 0.0, None
    return bills.cost(bill, high), "Conservative"


# -- pricing by requests ------------------------------------------------------------------


def requests_cost(
    *,
    instances: int,
    cpu: float,
    memory_gib: float,
    volumes: Iterable[tuple[str | None, float]],
    prices: billing.PriceBook,
) -> float | None:
    """Monthly cost of ``instances`` pods of ``cpu`` vCPU and ``memory_gib`` GiB requested,
    each with ``volumes`` (storage class or None for the default class, GiB), at ``prices``.

    None when the book does not price requests, or does not know a volume's storage class:
    the caller then prices conservatively, as for an instance class missing from the book.
    """
    if prices.vcpu_hourly is None or prices.memory_gib_hourly is None:
        return None
    storage = 0.0
    for storage_class, gib in volumes:
        price = prices.storage_class_gib_month.get(storage_class)
        if price is None:
            return None
        storage += gib * price
    return _requests_monthly(
        instances=instances,
        cpu=cpu * prices.vcpu_hourly,
        memory=memory_gib * prices.memory_gib_hourly,
        storage=storage,
    )


def conservative_requests_cost(
    *,
    instances: int,
    cpu: float,
    memory_gib: float,
    volumes: Iterable[tuple[str | None, float]],
    highest: billing.PriceBook,
    margin: float,
) -> float | None:
    """The same demand at ``highest`` unit prices x ``margin``.

    ``highest`` is :func:`highest_known_requests` of the history and the latest book. A
    storage class it does not know (the default class included) costs as the dearest class
    it knows. None when it does not price requests, or when volumes are asked for and no
    storage class price is known at all: the caller treats that like "no prices".
    """
    if highest.vcpu_hourly is None or highest.memory_gib_hourly is None:
        return None
    dearest = max(highest.storage_class_gib_month.values(), default=None)
    storage = 0.0
    for storage_class, gib in volumes:
        price = highest.storage_class_gib_month.get(storage_class, dearest)
        if price is None:
            return None
        storage += gib * price
    return margin * _requests_monthly(
        instances=instances,
        cpu=cpu * highest.vcpu_hourly,
        memory=memory_gib * highest.memory_gib_hourly,
        storage=storage,
    )


def _requests_monthly(*, instances: int, cpu: float, memory: float, storage: float) -> float:
    """``cpu`` and ``memory`` are one instance's prices per hour, ``storage`` per month."""
    return instances * ((cpu + memory) * billing.HOURS_PER_MONTH + storage)
