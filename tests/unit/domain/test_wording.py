"""The figures of a message add up as the tenant reads them, to the cent."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import quotas, quotes, wording

money = st.floats(min_value=0, max_value=1_000_000, allow_nan=False).map(lambda v: v / 7)


def _printed(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def _figures(message: str) -> list[Decimal]:
    """The money figures of a message, in order, as printed."""
    return [_printed(m) for m in re.findall(r"-?\d[\d,]*\.\d\d\b", message)]


def _quote(cost: float) -> quotes.Quote:
    return quotes.Quote(cost=cost, mode="Live", basis=wording.LIVE_BASIS)


def test_the_message_that_first_showed_it_adds_up() -> None:
    # 2 x 158.185 is 316.37 exactly, but each part prints as 158.19: the tenant reads 316.38.
    text = wording.over_budget(
        quota=quotas.QuotaSpec(name="team-a", monthly_budget=237.28),
        usage=quotas.Usage(reserved=158.185),
        quote=_quote(158.185),
        label="this claim",
    )
    assert text.startswith("projected 316.38 USD/month exceeds budget 237.28 by 79.10 ")
    assert "reserved 158.19 + this claim 158.19" in text


@pytest.mark.parametrize(
    ("words", "difference"),
    [
        (wording.over_budget, lambda projected, budget: projected - budget),  # "by ..."
        (wording.within_budget, lambda projected, budget: budget - projected),  # "... left"
    ],
)
@given(observed=money, reserved=money, cost=money, budget=money.filter(lambda b: b > 0))
def test_the_figures_add_up_as_printed(
    words: Callable[..., str],
    difference: Callable[[Decimal, Decimal], Decimal],
    observed: float,
    reserved: float,
    cost: float,
    budget: float,
) -> None:
    text = words(
        quota=quotas.QuotaSpec(name="team-a", monthly_budget=budget),
        usage=quotas.Usage(observed=observed, reserved=reserved),
        quote=_quote(cost),
        label="this claim",
    )
    projected, budget_, shown, observed_, reserved_, cost_ = _figures(text)
    assert projected == observed_ + reserved_ + cost_
    assert shown == difference(projected, budget_)
