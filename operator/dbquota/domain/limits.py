"""The limits every admission request is checked against, and the denial each one gives.

- :func:`hard_caps`: ``hard.claims`` and ``hard.storageGiB``, totals over the namespace.
  They need no price, so they hold in every billing state and under every policy.
- :func:`budget`: observed + reserved + the request's :class:`~dbquota.domain.quotes.Quote`
  must not exceed ``monthlyBudget``; healthy billing and the degradation policies that price
  (:mod:`dbquota.domain.policies`) both check it.

A :class:`Denial` is one failed check: its reason word and its text (worded by
:mod:`dbquota.domain.wording`). :func:`dbquota.domain.verdicts.decide` collects them, hard
caps first, and applies enforcement. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbquota.domain import wording

if TYPE_CHECKING:
    from dbquota.domain import quotas, quotes, verdicts


@dataclass(frozen=True)
class Denial:
    """One check a request failed."""

    reason: verdicts.Reason
    text: str


def hard_caps(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, new_claims: int, storage_gib: int
) -> tuple[Denial, ...]:
    """The hard caps the request would exceed (none, one or both)."""
    denials: list[Denial] = []
    cap = quota.hard.claims
    if cap is not None and new_claims > 0 and usage.claims + new_claims > cap:
        text = wording.over_claims_cap(usage=usage, new_claims=new_claims, cap=cap)
        denials.append(Denial("HardCapExceeded", text))
    cap = quota.hard.storage_gib
    if cap is not None and storage_gib > 0 and usage.storage_gib + storage_gib > cap:
        text = wording.over_storage_cap(
            usage=usage, storage_gib=storage_gib, cap=cap, creating=new_claims > 0
        )
        denials.append(Denial("HardCapExceeded", text))
    return tuple(denials)


def budget(
    *, quota: quotas.QuotaSpec, usage: quotas.Usage, quote: quotes.Quote, label: str
) -> tuple[Denial, ...]:
    """The budget denial if ``quote`` does not fit (``label`` is ``this claim`` or
    ``this update``), else nothing."""
    if usage.spend + quote.cost <= quota.monthly_budget:
        return ()
    text = wording.over_budget(quota=quota, usage=usage, quote=quote, label=label)
    return (Denial("BudgetExceeded", text),)
