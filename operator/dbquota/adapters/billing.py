"""The HTTP billing provider: httpx calls to the provider API, validated with msgspec.

One :class:`HttpBillingProvider` per process holds ``max_concurrency`` keep-alive
connections (one small ``httpx.AsyncClient`` each, lent out through a stack, which is also
the concurrency bound; separate connect and read timeouts, the read one per read as
httpx's is: the guarded provider bounds each request as a whole). The stack lends the
client returned last, so calls made one after another (the catalog, then each page of the
listing) reuse one warm connection: lent in turn, each of the 16 would sit idle past
httpx's 5 s keep-alive and open a new connection, and a new TLS handshake, per call.
Each method makes exactly one request; retries, the circuit breaker, the client-side
rate limit and call metrics are the :class:`~dbquota.services.guarding.GuardedProvider`'s
that wraps it, coalescing is the ingestion worker's. Every foreign error leaves as a
:mod:`dbquota.errors` type (``raise … from exc``)::

    timeout, connection error, 5xx  -> BillingUnavailable
    429                             -> RateLimited(retry_after from Retry-After)
    404 on /metrics/{id}            -> UnknownCluster      404 on the listing -> NoBulkListing
    other 4xx (401, 400, …)         -> BillingClientError
    200 that fails validation       -> MalformedPayload (never cached)

Validation checks types strictly (no strings for numbers), finiteness, non-negativity and
plausible ranges (:data:`MAX_MONTHLY_COST` and friends). The catalog's requests prices
(``vcpu_hourly`` and ``memory_gib_hourly``, which come as a pair, ``storage_class_gib_month``
and ``default_storage_class_gib_month``) are optional, so an older provider's catalog
still validates and means "no requests pricing known"; present, they are checked like the
rest, and ``null`` is not "absent". A bulk page is validated entry by
entry: a bad entry is returned as a :class:`~dbquota.domain.billing.Rejection` with its
cluster id, and the good ones are kept. The bearer token comes from the token file
(re-read by :meth:`HttpBillingProvider.refresh_credentials`) or from settings; it is sent
only in the ``Authorization`` header and never logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import urllib.parse
from typing import Annotated, Any

import httpx
import msgspec

from dbquota import errors
from dbquota.domain import billing
from dbquota.kits import clock as clock_
from dbquota.settings import BillingSettings

logger = logging.getLogger(__name__)

MAX_MONTHLY_COST = 10_000_000.0
"""Largest plausible monthly run-rate of one cluster, in the quota's currency."""
MAX_HOURLY_PRICE = 10_000.0
"""Largest plausible hourly price of one instance class."""
MAX_STORAGE_PRICE = 100.0
"""Largest plausible price of one GiB-month of storage."""
MAX_VCPU_HOURLY = 100.0
"""Largest plausible price of one vCPU requested for an hour."""
MAX_MEMORY_GIB_HOURLY = 10.0
"""Largest plausible price of one GiB of memory requested for an hour."""

Cost = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_MONTHLY_COST)]
Hourly = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_HOURLY_PRICE)]
StoragePrice = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_STORAGE_PRICE)]
ClusterId = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
ClassName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
VcpuPrice = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_VCPU_HOURLY)]
MemoryPrice = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_MEMORY_GIB_HOURLY)]
StorageClassName = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
Currency = Annotated[str, msgspec.Meta(max_length=64)]
"""Read leniently (:func:`_currency`): a catalog was never refused for its currency."""


class _Metrics(msgspec.Struct):
    compute_cost: Cost
    storage_cost: Cost


class _Entry(msgspec.Struct):
    cluster_id: ClusterId
    compute_cost: Cost
    storage_cost: Cost


class _Page(msgspec.Struct):
    clusters: list[_Entry]
    next_page_token: str | None = None


class _LoosePage(msgspec.Struct):
    clusters: list[msgspec.Raw]
    next_page_token: str | None = None


class _Pricing(msgspec.Struct):
    instance_hourly: dict[ClassName, Hourly]
    storage_gib_month: StoragePrice
    # Requests pricing: optional (UNSET when absent; null is refused, not taken as absent).
    vcpu_hourly: VcpuPrice | msgspec.UnsetType = msgspec.UNSET
    memory_gib_hourly: MemoryPrice | msgspec.UnsetType = msgspec.UNSET
    storage_class_gib_month: dict[StorageClassName, StoragePrice] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    default_storage_class_gib_month: StoragePrice | msgspec.UnsetType = msgspec.UNSET
    currency: Currency | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if (self.vcpu_hourly is msgspec.UNSET) != (self.memory_gib_hourly is msgspec.UNSET):
            raise ValueError("vcpu_hourly and memory_gib_hourly come together, or neither")


_metrics_decoder = msgspec.json.Decoder(_Metrics)
_page_decoder = msgspec.json.Decoder(_Page)
_loose_page_decoder = msgspec.json.Decoder(_LoosePage)
_entry_decoder = msgspec.json.Decoder(_Entry)
_pricing_decoder = msgspec.json.Decoder(_Pricing)
_any_decoder = msgspec.json.Decoder()


def _currency(text: str) -> str | None:
    """An ISO 4217 code, upper case; None for anything else (then unknown, not checked)."""
    code = text.strip().upper()
    return code if len(code) == 3 and code.isascii() and code.isalpha() else None


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


class HttpBillingProvider:
    """The billing provider's HTTP API (``docs/simulator.md`` documents it), as a
    :class:`~dbquota.services.providers.BillingProvider`."""

    def __init__(
        self,
        cfg: BillingSettings,
        *,
        clock: clock_.Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._cfg = cfg
        self._token: str | None = cfg.token or None
        self.refresh_credentials()  # before any connection exists: a bad file fails fast
        self._clock: clock_.Clock = clock if clock is not None else clock_.SystemClock()
        timeout = httpx.Timeout(
            connect=cfg.connect_timeout,
            read=cfg.request_timeout,
            write=cfg.request_timeout,
            pool=cfg.connect_timeout + cfg.request_timeout,
        )
        # One single-connection client per slot, lent out through a stack: it bounds the
        # concurrency, the last one returned (its connection warm) goes out first, and each
        # pool stays tiny. httpcore's pool scans all of its
        # connections for every request; at 16 connections in one pool that halved the
        # per-cluster throughput measured by bench/ingest.py.
        self._clients: list[httpx.AsyncClient] = [
            httpx.AsyncClient(
                base_url=cfg.url.rstrip("/"),
                timeout=timeout,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                transport=transport,
                headers={"Accept": "application/json"},
                follow_redirects=False,
            )
            for _ in range(max(1, cfg.max_concurrency))
        ]
        self._idle: asyncio.LifoQueue[httpx.AsyncClient] = asyncio.LifoQueue()
        for client in self._clients:
            self._idle.put_nowait(client)

    def refresh_credentials(self) -> None:
        """Re-read the token file (called before every sync, so rotation needs no restart)."""
        path = self._cfg.token_file
        if path is None:
            return
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise errors.ConfigurationError(
                f"cannot read the billing token file {path}: {exc.strerror}"
            ) from exc
        if not token:
            raise errors.ConfigurationError(f"the billing token file {path} is empty")
        self._token = token

    async def aclose(self) -> None:
        """Close every connection."""
        for client in self._clients:
            await client.aclose()

    # -- the three calls ----------------------------------------------------------------

    async def fetch_cost(self, cluster_id: str) -> billing.ClusterCost:
        """``GET /metrics/{cluster_id}``: one cluster's monthly run-rate."""
        path = "/metrics/" + urllib.parse.quote(cluster_id, safe="")
        response = await self._get(path, params=None, what=f"cluster {cluster_id}")
        if response.status_code == 404:
            raise errors.UnknownCluster(f"the provider knows no cluster {cluster_id!r}")
        self._raise_for_status(response, what=f"cluster {cluster_id}")
        try:
            body = _metrics_decoder.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.MalformedPayload(
                f"metrics of {cluster_id}: {exc}", cluster_id=cluster_id
            ) from exc
        return billing.ClusterCost(
            cluster_id=cluster_id,
            compute=body.compute_cost,
            storage=body.storage_cost,
            observed_at=self._clock.time(),
        )

    async def list_costs(self, page_token: str | None) -> billing.CostPage:
        """``GET /metrics?page_token=…``: one page of the bulk listing."""
        params: dict[str, str | int] = {"page_size": self._cfg.page_size}
        if page_token:
            params["page_token"] = page_token
        response = await self._get("/metrics", params=params, what="the bulk listing")
        if response.status_code in (404, 405, 501):
            raise errors.NoBulkListing("the provider has no bulk listing")
        self._raise_for_status(response, what="the bulk listing")
        now = self._clock.time()
        try:
            page = _page_decoder.decode(response.content)
        except msgspec.ValidationError:
            return self._page_entry_by_entry(response.content, now=now)
        except msgspec.DecodeError as exc:
            raise errors.MalformedPayload(f"bulk page: {exc}") from exc
        costs = tuple(
            billing.ClusterCost(
                cluster_id=e.cluster_id,
                compute=e.compute_cost,
                storage=e.storage_cost,
                observed_at=now,
            )
            for e in page.clusters
        )
        return billing.CostPage(costs=costs, next_page_token=page.next_page_token or None)

    async def fetch_prices(self) -> billing.PriceBook:
        """``GET /pricing``: the current price catalog."""
        response = await self._get("/pricing", params=None, what="the price catalog")
        self._raise_for_status(response, what="the price catalog")
        try:
            body = _pricing_decoder.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.MalformedPayload(f"price catalog: {exc}") from exc
        classes: dict[str | None, float] = {}
        if body.storage_class_gib_month is not msgspec.UNSET:
            classes.update(body.storage_class_gib_month)
        if body.default_storage_class_gib_month is not msgspec.UNSET:
            classes[billing.DEFAULT_STORAGE_CLASS] = body.default_storage_class_gib_month
        return billing.PriceBook(
            instance_hourly=dict(body.instance_hourly),
            storage_gib_month=body.storage_gib_month,
            observed_at=self._clock.time(),
            vcpu_hourly=None if body.vcpu_hourly is msgspec.UNSET else body.vcpu_hourly,
            memory_gib_hourly=(
                None if body.memory_gib_hourly is msgspec.UNSET else body.memory_gib_hourly
            ),
            storage_class_gib_month=classes,
            currency=None if body.currency is msgspec.UNSET else _currency(body.currency),
        )

    # -- plumbing -----------------------------------------------------------------------

    def _page_entry_by_entry(self, content: bytes, *, now: float) -> billing.CostPage:
        try:
            loose = _loose_page_decoder.decode(content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.MalformedPayload(f"bulk page: {exc}") from exc
        costs: list[billing.ClusterCost] = []
        rejected: list[billing.Rejection] = []
        for raw in loose.clusters:
            try:
                e = _entry_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                rejected.append(billing.Rejection(cluster_id=_cluster_id_of(raw), reason=str(exc)))
                continue
            costs.append(
                billing.ClusterCost(
                    cluster_id=e.cluster_id,
                    compute=e.compute_cost,
                    storage=e.storage_cost,
                    observed_at=now,
                )
            )
        return billing.CostPage(
            costs=tuple(costs),
            rejected=tuple(rejected),
            next_page_token=loose.next_page_token or None,
        )

    async def _get(
        self, path: str, *, params: dict[str, str | int] | None, what: str
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        client = await self._idle.get()
        try:
            return await client.get(path, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise errors.BillingUnavailable(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise errors.BillingUnavailable(
                f"{what}: {type(exc).__name__}: {exc or 'connection failed'}"
            ) from exc
        finally:
            self._idle.put_nowait(client)

    def _raise_for_status(self, response: httpx.Response, *, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 429:
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), now=self._clock.time()
            )
            raise errors.RateLimited(
                f"{what}: 429 rate limited (Retry-After {retry_after})", retry_after=retry_after
            )
        if status >= 500:
            raise errors.BillingUnavailable(f"{what}: HTTP {status}")
        if status in (401, 403):
            raise errors.BillingClientError(f"{what}: HTTP {status}; check the billing token")
        raise errors.BillingClientError(f"{what}: HTTP {status}")


def _cluster_id_of(raw: msgspec.Raw) -> str | None:
    try:
        value: Any = _any_decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(value, dict):
        cid = value.get("cluster_id")
        return cid if isinstance(cid, str) else None
    return None


__all__ = ["HttpBillingProvider", "parse_retry_after"]
