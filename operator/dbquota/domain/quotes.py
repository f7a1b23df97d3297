"""The price of one admission request for one quota: healthy, or conservative.

A :class:`Quote` is what a request adds to the monthly bill (an UPDATE: only its growth,
:func:`dbquota.domain.bills.growth`, which for a DatabaseClaim is
:func:`dbquota.domain.pricing.growth_cost`), priced from the claim's bill of quantities
whatever its kind, how it was priced (``status.pricing``) and the
basis that messages show. Two paths, chosen by :func:`dbquota.domain.verdicts.decide`:

- :func:`healthy` while billing is healthy: the current catalog (``Live``, or ``Cached``
  after failed syncs); a class missing from the catalog is priced as the dearest known
  class x safetyMargin (``Conservative``, and ``missing_class`` says so);
- :func:`conservative` while billing is degraded: highest known prices x safetyMargin for
  what grows; None when no price is known at all. Every degradation policy reads it
  (:mod:`dbquota.domain.policies`).

What an UPDATE gives up is credited at current prices, or at nothing when its class is
not in the catalog: what we cannot price cannot pay for growth. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbquota.domain import bills, pricing, wording

if TYPE_CHECKING:
    from dbquota.domain import billing, claims, degradation, quotas


@dataclass(frozen=True, kw_only=True)
class Quote:
    """What a request costs per month, priced one way."""

    cost: float
    """The request's monthly cost, or an UPDATE's growth (>= 0)."""
    mode: pricing.PricingMode
    """How it was priced."""
    basis: str
    """The pricing basis for messages, e.g. ``prices live``."""
    missing_class: bool = False
    """Healthy billing, but the class is not in the catalog (priced conservatively)."""
    missing_what: str = ""
    """For another kind than DatabaseClaim, the unit the catalog lacks (``storage class
    fast``, ``vCPU``); empty for a DatabaseClaim, whose instance class it is."""


def _credit(old_claim: claims.ClaimSpec | None, prices: billing.PriceBook | None) -> bills.Prices:
    """The unit prices an UPDATE's old version is credited at: current, or nothing."""
    if old_claim is None or prices is None:
        return {}
    return bills.live_prices(old_claim.bill, prices) or {}


def _old_bill(old_claim: claims.ClaimSpec | None) -> bills.Bill | None:
    return None if old_claim is None else old_claim.bill


def healthy(
    *,
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    snapshot: billing.BillingSnapshot,
    state: degradation.Degradation,
) -> Quote | None:
    """The request at the current catalog (module docstring); None when a unit it needs
    has no price even conservatively (e.g. a pod's vCPU with no requests prices ever
    served): the caller then decides as while degraded."""
    latest = snapshot.prices
    if latest is None:  # assess() calls this degraded; keep mypy honest
        raise ValueError("healthy billing needs a price catalog")
    bill = claim.bill
    live = bills.live_prices(bill, latest)
    high = live
    if high is None:
        highest = pricing.ceiling_any(snapshot)
        high = (
            None
            if highest is None
            else bills.conservative_prices(bill, highest, quota.safety_margin)
        )
    if high is None:
        return None
    cost = bills.growth(
        new=bill, old=_old_bill(old_claim), high=high, low=_credit(old_claim, latest)
    )
    if live is None:
        unit = bills.missing(bill, latest)
        what = "" if claim.demand is None or unit is None else unit.describe()
        basis = wording.missing_class_basis(
            instance_class=claim.instance_class, margin=quota.safety_margin, what=what
        )
        return Quote(
            cost=cost, mode="Conservative", basis=basis, missing_class=True, missing_what=what
        )
    if state.healthy_mode == "Cached":
        return Quote(cost=cost, mode="Cached", basis=wording.cached_basis(state.staleness))
    return Quote(cost=cost, mode="Live", basis=wording.LIVE_BASIS)


def conservative(
    *,
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    snapshot: billing.BillingSnapshot,
) -> Quote | None:
    """Highest known prices x margin for what grows; None when no price is known at all."""
    highest = pricing.ceiling_any(snapshot)
    if highest is None:
        return None
    bill = claim.bill
    high = bills.conservative_prices(bill, highest, quota.safety_margin)
    if high is None:
        return None
    cost = bills.growth(
        new=bill, old=_old_bill(old_claim), high=high, low=_credit(old_claim, snapshot.prices)
    )
    return Quote(
        cost=cost, mode="Conservative", basis=wording.conservative_basis(quota.safety_margin)
    )
