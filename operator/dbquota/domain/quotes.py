"""The price of one admission request for one quota: healthy, or conservative.

A :class:`Quote` is what a request adds to the monthly bill (an UPDATE: only its growth,
:func:`dbquota.domain.pricing.growth_cost`), how it was priced (``status.pricing``) and the
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

from dbquota.domain import pricing, wording

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


def _credit(
    old_claim: claims.ClaimSpec | None, prices: billing.PriceBook | None
) -> pricing.UnitPrices:
    """The unit prices an UPDATE's old version is credited at: current, or nothing."""
    if old_claim is None or prices is None:
        return pricing.ZERO
    unit = pricing.live_unit_prices(instance_class=old_claim.instance_class, prices=prices)
    return unit or pricing.ZERO


def healthy(
    *,
    quota: quotas.QuotaSpec,
    claim: claims.ClaimSpec,
    old_claim: claims.ClaimSpec | None,
    snapshot: billing.BillingSnapshot,
    state: degradation.Degradation,
) -> Quote:
    """The request at the current catalog (module docstring)."""
    latest = snapshot.prices
    highest = pricing.ceiling(snapshot)
    if latest is None or highest is None:  # assess() calls this degraded; keep mypy honest
        raise ValueError("healthy billing needs a price catalog")
    live = pricing.live_unit_prices(instance_class=claim.instance_class, prices=latest)
    high = live or pricing.conservative_unit_prices(
        instance_class=claim.instance_class, highest=highest, margin=quota.safety_margin
    )
    cost = pricing.growth_cost(
        claim=claim, old_claim=old_claim, high=high, low=_credit(old_claim, latest)
    )
    if live is None:
        basis = wording.missing_class_basis(
            instance_class=claim.instance_class, margin=quota.safety_margin
        )
        return Quote(cost=cost, mode="Conservative", basis=basis, missing_class=True)
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
    highest = pricing.ceiling(snapshot)
    if highest is None:
        return None
    high = pricing.conservative_unit_prices(
        instance_class=claim.instance_class, highest=highest, margin=quota.safety_margin
    )
    cost = pricing.growth_cost(
        claim=claim, old_claim=old_claim, high=high, low=_credit(old_claim, snapshot.prices)
    )
    return Quote(
        cost=cost, mode="Conservative", basis=wording.conservative_basis(quota.safety_margin)
    )
