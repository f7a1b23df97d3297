"""The words of admission: every message and warning a tenant reads about a decision.

A decision (:mod:`dbquota.domain.verdicts`) and the degradation policies
(:mod:`dbquota.domain.policies`) choose *what* to say; this module says it, so the wording
of every outcome is in one place and reads alike. The shapes, as ``kubectl`` prints them::

    denied by DatabaseQuota team-a: projected 5,210.40 USD/month exceeds budget 5,000.00
    by 210.40 (observed 4,500.00 + reserved 300.00 + this claim 410.40; prices live)

    billing degraded (circuit Open): policy Conservative, priced conservatively at highest
    known prices x 1.2

Money has two decimals and thousands separators (no currency symbol: the quota's currency
code follows where it matters), and the figures of one message add up as printed: each
part is rounded to the cent first and totals and differences are taken of the rounded
parts, so a tenant never reads "316.38 exceeds 237.28 by 79.09". Factors print as given
(``x 1.2``); counts have thousands separators. How billing degraded (``billing degraded
(...)``) and ages (``12 minutes``) are worded by :mod:`dbquota.domain.degradation`, which
status conditions share.

Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbquota.domain import degradation

if TYPE_CHECKING:
    from collections.abc import Iterable

    from dbquota.domain import quotas, quotes

NOT_PRICED = "not priced: no prices known"
"""How a degraded request is priced when no price is known at all."""
LIVE_BASIS = "prices live"
"""The pricing basis of a request priced at the current catalog."""
ADDS_NOTHING = "this update adds nothing to pay for"


def money(value: float) -> str:
    """``1,234.50``."""
    return f"{value:,.2f}"


def cents(value: float) -> float:
    """``value`` rounded to the cent, as :func:`money` prints it."""
    return round(value, 2)


def _projected(usage: quotas.Usage, quote: quotes.Quote) -> float:
    """Observed + reserved + the request, each as printed, so the breakdown adds up."""
    return cents(cents(usage.observed) + cents(usage.reserved) + cents(quote.cost))


def factor(value: float) -> str:
    """A multiplier as given: ``1.2``, ``2``."""
    return f"{value:g}"


def subject(*, creating: bool) -> str:
    """``claim`` for a CREATE, ``update`` for an UPDATE."""
    return "claim" if creating else "update"


# -- pricing bases ------------------------------------------------------------------------


def cached_basis(staleness: float) -> str:
    """``cached prices, 12 minutes old``."""
    return f"cached prices, {degradation.describe_age(staleness)} old"


def conservative_basis(margin: float) -> str:
    """``conservative: highest known prices x 1.2``."""
    return f"conservative: highest known prices x {factor(margin)}"


def missing_class_basis(*, instance_class: str, margin: float, what: str = "") -> str:
    """The basis of a healthy price for a class missing from the catalog (``what``: the
    unit missing, for kinds priced by more than an instance class)."""
    if what:
        return (
            f"conservative: {what} not in the price catalog, priced at the highest known "
            f"prices x {factor(margin)}"
        )
    return (
        f"conservative: class {instance_class} not in the price catalog, "
        f"priced as the dearest known class x {factor(margin)}"
    )


def missing_class_warning(*, quota: quotas.QuotaSpec, instance_class: str, what: str = "") -> str:
    """The warning that a class missing from the catalog was priced conservatively
    (``what``: the unit missing, for kinds priced by more than an instance class)."""
    if what:
        return (
            f"DatabaseQuota {quota.name}: {what} is not in the price catalog; priced at the "
            f"highest known prices x {factor(quota.safety_margin)}"
        )
    return (
        f"DatabaseQuota {quota.name}: instance class {instance_class} is not in the price "
        f"catalog; priced as the dearest known class x {factor(quota.safety_margin)}"
    )


def how_priced(*, quote: quotes.Quote | None, margin: float) -> str:
    """How a degraded request was priced, for the policy's warning."""
    if quote is None:
        return NOT_PRICED
    return f"priced conservatively at highest known prices x {factor(margin)}"


# -- hard caps and the budget -------------------------------------------------------------


def over_claims_cap(*, usage: quotas.Usage, new_claims: int, cap: int) -> str:
    """``21 claims would exceed the hard cap of 20 claims (...)``."""
    return (
        f"{usage.claims + new_claims:,} claims would exceed the hard cap of {cap:,} "
        f"claims ({usage.claims:,} in the namespace + this claim)"
    )


def over_storage_cap(*, usage: quotas.Usage, storage_gib: int, cap: int, creating: bool) -> str:
    """``storage would total 2,100 GiB, exceeding the hard cap of 2,000 GiB by 100 (...)``."""
    total = usage.storage_gib + storage_gib
    return (
        f"storage would total {total:,} GiB, exceeding the hard cap of {cap:,} GiB "
        f"by {total - cap:,} ({usage.storage_gib:,} GiB in the namespace + "
        f"{storage_gib:,} GiB for this {subject(creating=creating)})"
    )


def _breakdown(*, usage: quotas.Usage, quote: quotes.Quote, label: str) -> str:
    escrowed = (
        f" (of which {money(usage.escrowed)} held by other webhook replicas for claims they "
        "may admit)"
        if usage.escrowed > 0
        else ""
    )
    return (
        f"observed {money(usage.observed)} + reserved {money(usage.reserved)}{escrowed} + "
        f"{label} {money(quote.cost)}; {quote.basis}"
    )


def over_budget(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, quote: quotes.Quote, label: str
) -> str:
    """``projected ... exceeds budget ... by ... (observed + reserved + this claim; basis)``."""
    projected = _projected(usage, quote)
    return (
        f"projected {money(projected)} {quota.currency}/month exceeds budget "
        f"{money(quota.monthly_budget)} by {money(projected - cents(quota.monthly_budget))} "
        f"({_breakdown(usage=usage, quote=quote, label=label)})"
    )


def within_budget(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, quote: quotes.Quote, label: str
) -> str:
    """``admitted by DatabaseQuota ...: projected ... within budget ..., ... left (...)``."""
    projected = _projected(usage, quote)
    return (
        f"admitted by DatabaseQuota {quota.name}: projected {money(projected)} "
        f"{quota.currency}/month within budget {money(quota.monthly_budget)}, "
        f"{money(cents(quota.monthly_budget) - projected)} left "
        f"({_breakdown(usage=usage, quote=quote, label=label)})"
    )


# -- outcomes and enforcement -------------------------------------------------------------


def admitted(quota: quotas.QuotaSpec, why: str) -> str:
    """``admitted by DatabaseQuota team-a: <why>``."""
    return f"admitted by DatabaseQuota {quota.name}: {why}"


def other_currency(quota: quotas.QuotaSpec, currency: str) -> str:
    """Billing prices in ``currency``, not the quota's: said on its Ready condition and as
    a warning on each of its admissions."""
    return (
        f"billing prices are in {currency}, DatabaseQuota {quota.name}'s budget in "
        f"{quota.currency}: dbquota does not convert currencies, so claims are priced in "
        f"{currency} against it (set spec.currency to {currency}, or use a provider that "
        f"prices in {quota.currency})"
    )


def adds_nothing_warning(*, why: str, policy: str) -> str:
    """The warning for an UPDATE that adds nothing while billing is degraded."""
    return f"{why}: policy {policy} applies, but this update adds nothing, so it needs no price"


def denied(quota: quotas.QuotaSpec, texts: Iterable[str]) -> str:
    """``denied by DatabaseQuota team-a: <text>; <text>``."""
    return f"denied by DatabaseQuota {quota.name}: " + "; ".join(texts)


def warn_mode(denial: str) -> str:
    """What enforcement Warn says (as the message and as a warning)."""
    return f"enforcement Warn: would be {denial}"


def dry_run(denial: str) -> str:
    """What enforcement DryRun records in the message."""
    return f"enforcement DryRun: would have been {denial}"


# -- the degradation policies -------------------------------------------------------------


def conservative_warning(*, why: str, how: str) -> str:
    """Conservative's warning: the cause and how the request was priced."""
    return f"{why}: policy Conservative, {how}"


def cannot_price(*, why: str, policy: str, kind: str) -> str:
    """A policy that needs a price, with no price known at all."""
    return f"{why}: policy {policy} cannot price this {kind} without any known prices"


def strict_cap_warning(*, why: str, quota: quotas.QuotaSpec, usage: quotas.Usage, how: str) -> str:
    """StrictCap's warning: how much of its allowance is used, and how it priced."""
    cap = quota.strict_cap
    of_claims = "unlimited" if cap.claims is None else f"{cap.claims:,}"
    of_storage = "unlimited" if cap.storage_gib is None else f"{cap.storage_gib:,}"
    return (
        f"{why}: policy StrictCap, {usage.degraded_claims:,} of {of_claims} new claims "
        f"and {usage.degraded_storage_gib:,} of {of_storage} GiB already admitted "
        f"while degraded; {how}"
    )


def over_strict_claims(*, why: str, cap: int, usage: quotas.Usage) -> str:
    """StrictCap's allowance of new claims is used up."""
    return (
        f"{why}: policy StrictCap admits at most {cap:,} new claims while degraded and "
        f"{usage.degraded_claims:,} already were"
    )


def over_strict_storage(
    *, why: str, cap: int, usage: quotas.Usage, storage_gib: int, creating: bool
) -> str:
    """StrictCap's allowance of storage would be exceeded."""
    return (
        f"{why}: policy StrictCap admits at most {cap:,} GiB of new storage while degraded; "
        f"{usage.degraded_storage_gib:,} GiB already were and this "
        f"{subject(creating=creating)} adds {storage_gib:,} GiB"
    )


def strict_cap_cannot_count(why: str) -> str:
    """StrictCap, no prices: growth its allowance does not count."""
    return (
        f"{why}: policy StrictCap cannot admit another instance class or more replicas "
        "without any known prices"
    )


def within_strict_cap_unpriced(quota: quotas.QuotaSpec) -> str:
    """StrictCap admitted a request it could not price."""
    return (
        f"admitted by DatabaseQuota {quota.name} within StrictCap's allowance while billing "
        f"is degraded; {NOT_PRICED}"
    )


def fail_closed_warning(why: str) -> str:
    """FailClosed's warning."""
    return f"{why}: policy FailClosed, new claims and growth are denied"


def fail_closed_denial(why: str) -> str:
    """FailClosed's denial."""
    return f"{why}: policy FailClosed denies new claims and growth until billing recovers"


def fail_open_estimate(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, quote: quotes.Quote | None, label: str
) -> str:
    """What a FailOpen admission would cost at conservative prices, and whether it fits."""
    if quote is None:
        return NOT_PRICED
    projected = _projected(usage, quote)
    excess = projected - cents(quota.monthly_budget)
    fits = (
        f"over budget {money(quota.monthly_budget)} by {money(excess)}"
        if cents(excess) > 0
        else f"within budget {money(quota.monthly_budget)}"
    )
    return (
        f"at highest known prices x {factor(quota.safety_margin)} {label} costs "
        f"{money(quote.cost)} {quota.currency}/month, projected {money(projected)}, {fits}"
    )


def fail_open_warning(*, why: str, estimate: str) -> str:
    """FailOpen's warning."""
    return f"{why}: policy FailOpen, admitted without a budget check; {estimate}"


def fail_open_admitted(*, quota: quotas.QuotaSpec, estimate: str) -> str:
    """FailOpen's message."""
    return (
        f"admitted by DatabaseQuota {quota.name} without a budget check (policy FailOpen, "
        f"billing degraded); {estimate}"
    )
