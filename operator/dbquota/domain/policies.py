"""The degradation policies: one small rule per policy, found by name in :data:`RULES`.

While billing is degraded (:func:`dbquota.domain.degradation.assess`), a request that adds
cost is decided by the quota's ``spec.degradation.policy``.
:func:`dbquota.domain.verdicts.decide` prices it conservatively
(:func:`dbquota.domain.quotes.conservative`, None when no price is known at all), checks
the hard caps itself, and asks the policy's rule for a :class:`Ruling`: the cost to
reserve, the pricing mode, the reason and message if nothing denies, the denials and the
warnings. Enforcement (Enforce, Warn, DryRun) is applied afterwards, to every policy alike.

Each rule states what it needs and what it allows:

- ``name``: as ``spec.degradation.policy`` spells it, and the key in :data:`RULES`;
- ``mode``: the pricing mode its admissions carry (``status.pricing``), None if it prices
  nothing;
- ``escrow``: whether a replica may admit a CREATE under it from its escrow, without a
  write first (:mod:`dbquota.domain.escrow`); StrictCap may not, because its allowance is
  counted from written reservations only;
- ``needs``: the fields of ``spec.degradation`` a quota naming it must set (the CRD refuses
  the quota otherwise, with a CEL rule).

:data:`dbquota.domain.quotas.POLICIES` is the registry's names, in order. Adding a policy:
a rule here (and its words in :mod:`dbquota.domain.wording`), then its name in the CRD's
enum; ``docs/architecture.md`` lists the steps. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from dbquota.domain import limits, wording

if TYPE_CHECKING:
    from dbquota.domain import claims, pricing, quotas, quotes, verdicts


@dataclass(frozen=True, kw_only=True)
class Degraded:
    """One request that adds cost, under degraded billing: what every rule reads."""

    quota: quotas.QuotaSpec
    claim: claims.ClaimSpec
    old_claim: claims.ClaimSpec | None
    """The object before an UPDATE; None for a CREATE."""
    usage: quotas.Usage
    why: str
    """``billing degraded (...)``, the cause in words."""
    quote: quotes.Quote | None
    """The conservative price; None when no price is known at all."""

    @property
    def creating(self) -> bool:
        """Whether this is a CREATE."""
        return self.old_claim is None

    @property
    def kind(self) -> str:
        """``claim`` or ``update``."""
        return wording.subject(creating=self.creating)

    @property
    def label(self) -> str:
        """``this claim`` or ``this update``, as the budget breakdown names it."""
        return f"this {self.kind}"

    @property
    def how(self) -> str:
        """How it was priced, for the policy's warning."""
        return wording.how_priced(quote=self.quote, margin=self.quota.safety_margin)


@dataclass(frozen=True, kw_only=True)
class Ruling:
    """What a rule says about one request, before enforcement."""

    cost: float
    """The monthly cost to reserve if admitted (>= 0; 0 when nothing could be priced)."""
    mode: pricing.PricingMode | None
    """How ``cost`` was priced (``status.pricing``); None when nothing was priced."""
    reason: verdicts.Reason
    """The outcome if nothing denies."""
    admitted: str
    """The message if nothing denies."""
    denials: tuple[limits.Denial, ...] = ()
    warnings: tuple[str, ...] = ()


class Rule(Protocol):
    """One degradation policy (module docstring)."""

    @property
    def name(self) -> str:
        """The policy's name, as ``spec.degradation.policy`` spells it."""
        ...

    @property
    def mode(self) -> pricing.PricingMode | None:
        """The pricing mode its admissions carry."""
        ...

    @property
    def escrow(self) -> bool:
        """Whether its admissions may be served from a replica's escrow."""
        ...

    @property
    def needs(self) -> tuple[str, ...]:
        """Fields of ``spec.degradation`` a quota naming this policy must set."""
        ...

    def decide(self, request: Degraded) -> Ruling:
        """The policy's ruling on ``request``."""
        ...


def _within_budget(request: Degraded, quote: quotes.Quote) -> str:
    return wording.within_budget(
        quota=request.quota, usage=request.usage, quote=quote, label=request.label
    )


def _over_budget(request: Degraded, quote: quotes.Quote) -> tuple[limits.Denial, ...]:
    return limits.budget(quota=request.quota, usage=request.usage, quote=quote, label=request.label)


class Conservative:
    """Highest known prices x safetyMargin, then the budget; nothing to price with denies."""

    name: Final = "Conservative"
    mode: Final[pricing.PricingMode | None] = "Conservative"
    escrow: Final = True
    needs: Final[tuple[str, ...]] = ()

    def decide(self, request: Degraded) -> Ruling:
        """Priced conservatively and checked against the budget (module docstring)."""
        warnings = (wording.conservative_warning(why=request.why, how=request.how),)
        quote = request.quote
        if quote is None:
            text = wording.cannot_price(why=request.why, policy=self.name, kind=request.kind)
            return Ruling(
                cost=0.0,
                mode=None,
                reason="BillingUnavailable",
                admitted="",
                denials=(limits.Denial("BillingUnavailable", text),),
                warnings=warnings,
            )
        return Ruling(
            cost=quote.cost,
            mode=self.mode,
            reason="WithinBudget",
            admitted=_within_budget(request, quote),
            denials=_over_budget(request, quote),
            warnings=warnings,
        )


class StrictCap:
    """At most ``strictCap.claims`` new claims and ``strictCap.storageGiB`` GiB while
    degraded, counted by ``Usage.degraded_claims`` / ``Usage.degraded_storage_gib``.

    When any prices are known the request is also priced conservatively, must fit the
    budget and reserves that cost, so StrictCap is never looser than Conservative. With no
    prices at all it is admitted within the allowance at cost 0 (the reconciler sees the
    real cost once billing recovers), and growth the allowance cannot count (another class,
    more replicas) is denied.
    """

    name: Final = "StrictCap"
    mode: Final[pricing.PricingMode | None] = "StrictCap"
    escrow: Final = False
    needs: Final[tuple[str, ...]] = ("strictCap",)

    def decide(self, request: Degraded) -> Ruling:
        """The allowance, plus the conservative budget check when any prices are known."""
        warnings = (
            wording.strict_cap_warning(
                why=request.why, quota=request.quota, usage=request.usage, how=request.how
            ),
        )
        denials = self._allowance(request)
        quote = request.quote
        if quote is not None:
            return Ruling(
                cost=quote.cost,
                mode=self.mode,
                reason="WithinStrictCap",
                admitted=_within_budget(request, quote),
                denials=denials + _over_budget(request, quote),
                warnings=warnings,
            )
        old, claim = request.old_claim, request.claim
        if old is not None and (
            claim.instance_class != old.instance_class or claim.replicas > old.replicas
        ):
            text = wording.strict_cap_cannot_count(request.why)
            denials += (limits.Denial("BillingUnavailable", text),)
        return Ruling(
            cost=0.0,
            mode=self.mode,
            reason="WithinStrictCap",
            admitted=wording.within_strict_cap_unpriced(request.quota),
            denials=denials,
            warnings=warnings,
        )

    @staticmethod
    def _allowance(request: Degraded) -> tuple[limits.Denial, ...]:
        cap, usage, why = request.quota.strict_cap, request.usage, request.why
        storage_gib = request.claim.storage_growth(request.old_claim)
        denials: list[limits.Denial] = []
        if cap.claims is not None and request.creating and usage.degraded_claims + 1 > cap.claims:
            text = wording.over_strict_claims(why=why, cap=cap.claims, usage=usage)
            denials.append(limits.Denial("StrictCapExceeded", text))
        if (
            cap.storage_gib is not None
            and storage_gib > 0
            and usage.degraded_storage_gib + storage_gib > cap.storage_gib
        ):
            text = wording.over_strict_storage(
                why=why,
                cap=cap.storage_gib,
                usage=usage,
                storage_gib=storage_gib,
                creating=request.creating,
            )
            denials.append(limits.Denial("StrictCapExceeded", text))
        return tuple(denials)


class FailClosed:
    """Denies new claims and growth; the conservative cost is still what Warn and DryRun
    reserve for what they admit anyway (0 with no prices)."""

    name: Final = "FailClosed"
    mode: Final[pricing.PricingMode | None] = None
    escrow: Final = True
    needs: Final[tuple[str, ...]] = ()

    def decide(self, request: Degraded) -> Ruling:
        """A denial, whatever the request."""
        text = wording.fail_closed_denial(request.why)
        return Ruling(
            cost=0.0 if request.quote is None else request.quote.cost,
            mode=self.mode,
            reason="BillingUnavailable",
            admitted="",
            denials=(limits.Denial("BillingUnavailable", text),),
            warnings=(wording.fail_closed_warning(request.why),),
        )


class FailOpen:
    """Admits without a budget check, saying what the request would cost at highest known
    prices and whether that fits; reserves that cost (0 with no prices)."""

    name: Final = "FailOpen"
    mode: Final[pricing.PricingMode | None] = "FailOpen"
    escrow: Final = True
    needs: Final[tuple[str, ...]] = ()

    def decide(self, request: Degraded) -> Ruling:
        """An admission, with the estimate in its message and warning."""
        estimate = wording.fail_open_estimate(
            quota=request.quota, usage=request.usage, quote=request.quote, label=request.label
        )
        return Ruling(
            cost=0.0 if request.quote is None else request.quote.cost,
            mode=self.mode,
            reason="FailOpen",
            admitted=wording.fail_open_admitted(quota=request.quota, estimate=estimate),
            warnings=(wording.fail_open_warning(why=request.why, estimate=estimate),),
        )


RULES: Mapping[str, Rule] = {
    rule.name: rule for rule in (Conservative(), StrictCap(), FailClosed(), FailOpen())
}
"""Every degradation policy by name, in the order the CRD's enum lists them."""
