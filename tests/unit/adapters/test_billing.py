"""The HTTP billing provider, driven through httpx's MockTransport.

Checks: the happy paths of the three calls; that every foreign failure leaves as a
dbquota error (timeouts, connection errors and 5xx -> BillingUnavailable, 429 ->
RateLimited with Retry-After in seconds or as a date, 404 -> UnknownCluster or
NoBulkListing, other 4xx -> BillingClientError); that a 200 with a non-JSON body becomes
MalformedPayload (never a JSONDecodeError); that strings, NaN, negative, absurd and
missing values are rejected (never cached as "NaN-ish" or negative costs); that the
catalog's optional requests prices are read (the default storage class under None), may
be absent (an older provider) and are rejected like the rest when bad; that a bulk
page keeps its good entries and rejects bad ones by cluster id; that cluster ids are
URL-encoded; and that the bearer token is read from the file, re-read on refresh, sent
only in the header and never appears in errors or logs. Over a real socket: calls made one
after another reuse one connection, and calls at once open no more than
``max_concurrency``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from dbquota import errors
from dbquota.adapters.billing import HttpBillingProvider, parse_retry_after
from dbquota.kits.clock import FakeClock
from dbquota.settings import BillingSettings

Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler, **kw: object) -> HttpBillingProvider:
    cfg = BillingSettings(url="http://billing.test", rate_limit=0, **kw)  # type: ignore[arg-type]
    return HttpBillingProvider(
        cfg, clock=FakeClock(start=1000.0), transport=httpx.MockTransport(handler)
    )


def body(
    status: int,
    payload: object = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Handler:
    content = raw if raw is not None else json.dumps(payload).encode()
    return lambda _: httpx.Response(status, content=content, headers=headers)


async def test_fetch_cost_returns_a_validated_cost_stamped_now() -> None:
    p = provider(body(200, {"compute_cost": 300.5, "storage_cost": 20}))
    cost = await p.fetch_cost("orders-db")
    assert (cost.cluster_id, cost.compute, cost.storage, cost.observed_at) == (
        "orders-db",
        300.5,
        20.0,
        1000.0,
    )
    await p.aclose()


async def test_cluster_ids_are_url_encoded() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"compute_cost": 1, "storage_cost": 1})

    p = provider(handler)
    await p.fetch_cost("team-a/orders db")
    assert seen == ["/metrics/team-a%2Forders%20db"]
    await p.aclose()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (body(503, {"error": "down"}), errors.BillingUnavailable),
        (body(500, {}), errors.BillingUnavailable),
        (body(404, {"error": "unknown"}), errors.UnknownCluster),
        (body(400, {}), errors.BillingClientError),
        (body(401, {}), errors.BillingClientError),
        (body(429, {}, headers={"Retry-After": "7"}), errors.RateLimited),
    ],
)
async def test_statuses_become_dbquota_errors(handler: Handler, error: type[Exception]) -> None:
    p = provider(handler)
    with pytest.raises(error):
        await p.fetch_cost("c1")
    await p.aclose()


async def test_429_carries_retry_after_seconds() -> None:
    p = provider(body(429, {}, headers={"Retry-After": "7"}))
    with pytest.raises(errors.RateLimited) as caught:
        await p.fetch_prices()
    assert caught.value.retry_after == 7.0
    assert not caught.value.trips_breaker  # an answer, and a pause the guard keeps
    await p.aclose()


async def test_429_without_retry_after_trips_the_breaker() -> None:
    p = provider(body(429, {}))
    with pytest.raises(errors.RateLimited) as caught:
        await p.fetch_prices()
    assert (caught.value.retry_after, caught.value.trips_breaker) == (None, True)
    await p.aclose()


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == pytest.approx(10)
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None
    assert parse_retry_after("-3", now=0) == 0.0


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset")],
)
async def test_transport_failures_become_billing_unavailable(exc: Exception) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        raise exc

    p = provider(handler)
    with pytest.raises(errors.BillingUnavailable) as caught:
        await p.fetch_cost("c1")
    assert caught.value.trips_breaker
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    await p.aclose()


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>502 Bad Gateway</html>",
        b'{"compute_cost": "NaN-ish", "storage_cost": 1}',
        b'{"compute_cost": NaN, "storage_cost": 1}',
        b'{"compute_cost": -5, "storage_cost": 1}',
        b'{"compute_cost": 1e300, "storage_cost": 1}',
        b'{"compute_cost": 1e999, "storage_cost": 1}',
        b'{"compute_cost": 5}',
        b'{"compute_cost": true, "storage_cost": 1}',
        b"[]",
        b"",
    ],
)
async def test_malformed_cluster_bodies_are_rejected(raw: bytes) -> None:
    p = provider(body(200, raw=raw))
    with pytest.raises(errors.MalformedPayload) as caught:
        await p.fetch_cost("c1")
    assert caught.value.cluster_id == "c1"
    assert caught.value.trips_breaker
    await p.aclose()


async def test_bulk_page_keeps_good_entries_and_rejects_bad_ones_by_id() -> None:
    page = {
        "clusters": [
            {"cluster_id": "good", "compute_cost": 10.0, "storage_cost": 1.0},
            {"cluster_id": "neg", "compute_cost": -1.0, "storage_cost": 1.0},
            {"cluster_id": "str", "compute_cost": "12", "storage_cost": 1.0},
            {"cluster_id": "nul", "compute_cost": None, "storage_cost": 1.0},
            {"compute_cost": 1.0, "storage_cost": 1.0},
        ],
        "next_page_token": "abc",
    }
    p = provider(body(200, page))
    result = await p.list_costs(None)
    assert [c.cluster_id for c in result.costs] == ["good"]
    assert [r.cluster_id for r in result.rejected] == ["neg", "str", "nul", None]
    assert result.next_page_token == "abc"
    await p.aclose()


async def test_bulk_listing_sends_page_size_and_token() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json={"clusters": [], "next_page_token": None})

    p = provider(handler, page_size=250)
    page = await p.list_costs("500")
    assert seen == [{"page_size": "250", "page_token": "500"}]
    assert page.next_page_token is None
    await p.aclose()


async def test_bulk_listing_404_means_no_bulk_listing() -> None:
    p = provider(body(404, {}))
    with pytest.raises(errors.NoBulkListing) as caught:
        await p.list_costs(None)
    assert not caught.value.trips_breaker
    await p.aclose()


async def test_a_page_that_is_not_json_is_malformed() -> None:
    p = provider(body(200, raw=b"oops"))
    with pytest.raises(errors.MalformedPayload):
        await p.list_costs(None)
    await p.aclose()


async def test_prices_are_validated() -> None:
    p = provider(body(200, {"instance_hourly": {"db.r6g.large": 0.2}, "storage_gib_month": 0.1}))
    book = await p.fetch_prices()
    assert book.instance_hourly == {"db.r6g.large": 0.2}
    assert book.storage_gib_month == 0.1
    await p.aclose()
    p = provider(body(200, {"instance_hourly": {"db.r6g.large": 1e9}, "storage_gib_month": 0.1}))
    with pytest.raises(errors.MalformedPayload):
        await p.fetch_prices()
    await p.aclose()


CATALOG: dict[str, object] = {
    "instance_hourly": {"db.r6g.large": 0.2},
    "storage_gib_month": 0.1,
    "vcpu_hourly": 0.034,
    "memory_gib_hourly": 0.0045,
    "storage_class_gib_month": {"standard": 0.04, "premium-rwo": 0.17},
    "default_storage_class_gib_month": 0.1,
}


async def test_requests_prices_are_read_with_the_default_class_under_none() -> None:
    p = provider(body(200, CATALOG))
    book = await p.fetch_prices()
    assert (book.vcpu_hourly, book.memory_gib_hourly) == (0.034, 0.0045)
    assert book.storage_class_gib_month == {"standard": 0.04, "premium-rwo": 0.17, None: 0.1}
    assert book.prices_requests()
    await p.aclose()


async def test_an_older_provider_without_requests_prices_still_validates() -> None:
    p = provider(body(200, {"instance_hourly": {"db.r6g.large": 0.2}, "storage_gib_month": 0.1}))
    book = await p.fetch_prices()
    assert (book.vcpu_hourly, book.memory_gib_hourly) == (None, None)
    assert book.storage_class_gib_month == {}
    assert not book.prices_requests()
    await p.aclose()


@pytest.mark.parametrize(
    ("currency", "read"),
    [
        ("USD", "USD"),
        ("eur", "EUR"),
        (" chf ", "CHF"),
        ("US Dollar", None),
        ("", None),
        ("€", None),
    ],
)
async def test_the_catalogs_currency_is_read_leniently(currency: str, read: str | None) -> None:
    """An ISO 4217 code in any case; anything else is unknown (not checked), never a reason
    to refuse a catalog that was taken before the currency was read."""
    p = provider(body(200, {**CATALOG, "currency": currency}))
    assert (await p.fetch_prices()).currency == read
    await p.aclose()


async def test_a_catalog_without_a_currency_leaves_it_unknown() -> None:
    p = provider(body(200, {k: v for k, v in CATALOG.items() if k != "currency"}))
    assert (await p.fetch_prices()).currency is None
    await p.aclose()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"vcpu_hourly": "cheap"}, "Expected `float`, got `str` - at `$.vcpu_hourly`"),
        ({"vcpu_hourly": None}, "got `null` - at `$.vcpu_hourly`"),
        ({"memory_gib_hourly": -0.1}, "Expected `float` >= 0.0 - at `$.memory_gib_hourly`"),
        ({"memory_gib_hourly": 1e300}, "<= 10.0 - at `$.memory_gib_hourly`"),
        ({"vcpu_hourly": 101.0}, "<= 100.0 - at `$.vcpu_hourly`"),
        ({"memory_gib_hourly": "drop"}, "Expected `float`"),
        ({"storage_class_gib_month": {"gp3": -1}}, "at `$.storage_class_gib_month[...]`"),
        ({"storage_class_gib_month": {"gp3": None}}, "got `null`"),
        ({"storage_class_gib_month": {"": 0.1}}, "length >= 1"),
        ({"storage_class_gib_month": [0.1]}, "Expected `object`, got `array`"),
        ({"default_storage_class_gib_month": 1e9}, "<= 100.0"),
    ],
)
async def test_bad_requests_prices_reject_the_whole_catalog(
    change: dict[str, object], reason: str
) -> None:
    p = provider(body(200, {**CATALOG, **change}))
    with pytest.raises(errors.MalformedPayload, match="price catalog") as caught:
        await p.fetch_prices()
    assert reason in str(caught.value)
    await p.aclose()


@pytest.mark.parametrize("missing", ["vcpu_hourly", "memory_gib_hourly"])
async def test_vcpu_and_memory_prices_come_as_a_pair(missing: str) -> None:
    catalog = {k: v for k, v in CATALOG.items() if k != missing}
    p = provider(body(200, catalog))
    with pytest.raises(errors.MalformedPayload, match="come together"):
        await p.fetch_prices()
    await p.aclose()


async def test_nan_in_a_requests_price_is_not_json() -> None:
    raw = json.dumps(CATALOG).replace("0.034", "NaN").encode()
    p = provider(body(200, raw=raw))
    with pytest.raises(errors.MalformedPayload):
        await p.fetch_prices()
    await p.aclose()


async def test_token_is_read_from_the_file_re_read_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-one\n")
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(503, json={})

    caplog.set_level(logging.DEBUG)
    p = provider(handler, token_file=token_file)
    with pytest.raises(errors.BillingUnavailable) as first:
        await p.fetch_cost("c1")
    token_file.write_text("s3cret-two")
    p.refresh_credentials()
    with pytest.raises(errors.BillingUnavailable):
        await p.fetch_cost("c1")
    assert seen == ["Bearer s3cret-one", "Bearer s3cret-two"]
    assert "s3cret" not in str(first.value)
    assert "s3cret" not in caplog.text
    await p.aclose()


async def test_token_from_settings_is_not_in_the_settings_repr() -> None:
    cfg = BillingSettings(token="s3cret")
    assert "s3cret" not in repr(cfg)
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"compute_cost": 1, "storage_cost": 1})

    p = HttpBillingProvider(cfg, transport=httpx.MockTransport(handler))
    await p.fetch_cost("c1")
    assert seen == ["Bearer s3cret"]
    await p.aclose()


def test_a_missing_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError, match="token file"):
        provider(body(200, {}), token_file=tmp_path / "absent")


class Billing:
    """A billing API on a real socket that counts the connections its requests came on."""

    def __init__(self) -> None:
        self.connections: set[object] = set()
        self.in_flight = self.most_in_flight = 0
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(request.transport)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return web.json_response({"compute_cost": 1, "storage_cost": 1})


@pytest.fixture
async def served() -> AsyncIterator[tuple[Billing, str]]:
    billing = Billing()
    app = web.Application()
    app.router.add_get("/metrics/{cluster}", billing.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield billing, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_calls_one_after_another_reuse_one_connection(
    served: tuple[Billing, str],
) -> None:
    billing, url = served
    p = HttpBillingProvider(BillingSettings(url=url, rate_limit=0, max_concurrency=16))
    for n in range(20):
        await p.fetch_cost(f"c{n}")
    assert len(billing.connections) == 1
    await p.aclose()


async def test_calls_at_once_open_at_most_max_concurrency_connections(
    served: tuple[Billing, str],
) -> None:
    billing, url = served
    billing.delay = 0.05
    p = HttpBillingProvider(BillingSettings(url=url, rate_limit=0, max_concurrency=4))
    await asyncio.gather(*(p.fetch_cost(f"c{n}") for n in range(12)))
    await asyncio.gather(*(p.fetch_cost(f"c{n}") for n in range(12)))
    assert (len(billing.connections), billing.most_in_flight) == (4, 4)
    await p.aclose()
