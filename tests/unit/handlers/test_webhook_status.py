"""The webhook's step 5: writes of a DatabaseClaim's status by anyone but dbquota.

Over a real TLS socket, as the apiserver sends them (``subResource: status``): a write
that changes the status (a tenant lowering its claim's price) is denied with 403, the
user's name and why, counted and logged, and never reaches admission; one that changes
nothing there is admitted; a status write of a kind dbquota does not own is admitted
without a look; and one by dbquota's own user, should a configuration made by hand send
it, is admitted. The configuration that sends these
(``matchConditions`` leaving dbquota's own writes out) is checked by the dev registration's
tests and by ``e2e/test_webhook_hardening.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbquota.adapters import metrics
from dbquota.domain import reviews
from dbquota.handlers import webhook
from tests.unit.handlers.test_webhook import (
    KINDS,
    Admitter,
    Served,
    client_context,
    review,
    settings,
)

PRICED = {"estimatedMonthlyCost": 410.4, "observedGeneration": 1, "pricing": "Live"}


def status_write(new: dict[str, Any], *, kind: str = "DatabaseClaim", **request: Any) -> bytes:
    return review(
        operation="UPDATE",
        kind=kind,
        subResource="status",
        userInfo={"username": "mallory"},
        object={"metadata": {"name": "orders"}, "spec": {}, "status": new},
        oldObject={"metadata": {"name": "orders"}, "spec": {}, "status": PRICED},
        **request,
    )


@pytest.fixture
async def served(tmp_path: Path, admitter: Admitter) -> AsyncIterator[Served]:
    async with (
        webhook.serving(settings(tmp_path), admit=admitter, kinds=KINDS, owned=KINDS) as port,
        httpx.AsyncClient(verify=client_context(tmp_path), timeout=10) as client,
    ):
        yield Served(port, client)


@pytest.fixture
def admitter() -> Admitter:
    return Admitter(answer=reviews.Answer(allowed=True))


def denied() -> float:
    value = metrics.REGISTRY.get_sample_value("dbquota_webhook_status_writes_denied_total")
    return value or 0.0


async def test_a_status_write_that_changes_the_price_is_denied(
    served: Served, admitter: Admitter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dbquota")
    before = denied()
    answer = await served.post(status_write({**PRICED, "estimatedMonthlyCost": 0}))
    response = answer.json()["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == (
        "the status of DatabaseClaim team-a/orders is written by dbquota only: it holds the "
        "price every DatabaseQuota of the namespace counts the claim at; mallory may not "
        "change it"
    )
    assert denied() - before == 1
    assert "mallory may not change the status of DatabaseClaim team-a/orders" in caplog.text
    assert admitter.seen is None


@pytest.mark.parametrize("new", [PRICED, {}], ids=["unchanged", "emptied"])
async def test_only_a_status_left_as_it_was_is_admitted(
    served: Served, admitter: Admitter, new: dict[str, Any]
) -> None:
    response = (await served.post(status_write(new))).json()["response"]
    assert response["allowed"] is (new == PRICED)
    assert admitter.seen is None


async def test_the_status_of_a_kind_dbquota_does_not_own_is_not_looked_at(
    served: Served, admitter: Admitter
) -> None:
    response = (await served.post(status_write({}, kind="Cluster"))).json()["response"]
    assert response == {"uid": "uid-1", "allowed": True}
    assert admitter.seen is None


async def test_dbquotas_own_write_is_admitted_should_one_arrive(
    tmp_path: Path, admitter: Admitter
) -> None:
    async with (
        webhook.serving(
            settings(tmp_path), admit=admitter, kinds=KINDS, owned=KINDS, own_user="mallory"
        ) as port,
        httpx.AsyncClient(verify=client_context(tmp_path), timeout=10) as client,
    ):
        body = status_write({**PRICED, "estimatedMonthlyCost": 0})
        answer = await Served(port, client).post(body)
    assert answer.json()["response"] == {"uid": "uid-1", "allowed": True}
