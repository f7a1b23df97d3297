"""Every error dbquota raises on purpose, in one tree.

Adapters turn foreign errors (httpx, aiosqlite, kubernetes-asyncio) into these with
``raise ... from exc``, so callers above the adapters never catch a third-party type::

    DbquotaError
    ├── ConfigurationError          bad flags, env vars or files at start-up
    ├── MalformedReview             a webhook request body that is not an AdmissionReview
    ├── BillingError                anything the billing provider did wrong
    │   ├── BillingUnavailable      timeout, connection error, 5xx   (trips the breaker)
    │   │   └── RateLimited         429; carries retry_after seconds (trips it if none)
    │   │       └── Held            not sent: a 429's Retry-After holds calls (does not)
    │   ├── MalformedPayload        body failed schema validation     (trips the breaker)
    │   ├── UnknownCluster          404 for one cluster id            (does not trip it)
    │   ├── BillingClientError      any other 4xx                     (does not trip it)
    │   │   └── NoBulkListing       the provider has no bulk listing: fetch one by one
    │   └── CircuitOpen             refused locally: the breaker is Open or probing
    ├── CacheError                  the SQLite cache could not be read or written
    │   └── CacheCorrupt            the file is not a database we can use (quarantined)
    └── KubeError                   the Kubernetes API refused or failed a call
        ├── Conflict                409: the object changed since we read it (CAS lost)
        └── NotFound                404: the object is gone

``BillingError.trips_breaker`` says which of them the circuit breaker counts as failures.
"""

from __future__ import annotations


class DbquotaError(Exception):
    """Root of every error raised on purpose by dbquota."""


class ConfigurationError(DbquotaError):
    """Settings that cannot work: say which one and why."""


class MalformedReview(DbquotaError):
    """A webhook request body that is not an AdmissionReview we can answer (HTTP 400).

    Its message is short and made of fixed words and field names only: it never echoes
    the input or another exception's text, so it is safe to send back and to log.
    """


class BillingError(DbquotaError):
    """The billing provider failed to give us usable data."""

    trips_breaker: bool = True


class BillingUnavailable(BillingError):
    """Timeout, connection failure or 5xx: the provider is (maybe briefly) down."""


class RateLimited(BillingUnavailable):
    """429 Too Many Requests; ``retry_after`` is the provider's hint in seconds, if any.

    With a hint it does not trip the breaker: the provider answered, and asked for a pause
    that the guarded provider keeps for every call (:class:`Held`); without one it counts
    as a failure, so that a provider limiting without a word still gets the breaker's quiet.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.trips_breaker = not retry_after


class Held(RateLimited):
    """Not sent: a 429's ``Retry-After`` holds every billing call until it ends;
    ``retry_after`` is the seconds left, always some, so that it does not trip the circuit
    breaker, as a :class:`RateLimited` with a hint does not: no request reached the
    provider, and this is no news about it."""


class MalformedPayload(BillingError):
    """A response body that failed schema validation; it is never cached.

    ``cluster_id`` names the cluster whose data was rejected, when there is one.
    """

    def __init__(self, message: str, *, cluster_id: str | None = None) -> None:
        super().__init__(message)
        self.cluster_id = cluster_id


class UnknownCluster(BillingError):
    """404 for one cluster: the provider is healthy, it just has no such cluster."""

    trips_breaker = False


class BillingClientError(BillingError):
    """Any other 4xx: our request was wrong, the provider is not at fault."""

    trips_breaker = False


class NoBulkListing(BillingClientError):
    """The provider answered 404 to the bulk listing: it only serves per-cluster metrics."""


class CircuitOpen(BillingError):
    """The breaker refused the call locally; no request was sent."""

    trips_breaker = False


class CacheError(DbquotaError):
    """The SQLite cache failed."""


class CacheCorrupt(CacheError):
    """The cache file is unusable; it was moved aside and a new one started."""


class KubeError(DbquotaError):
    """The Kubernetes API refused or failed a call."""


class Conflict(KubeError):
    """409 Conflict: a compare-and-swap lost to a concurrent writer; re-read and retry."""


class NotFound(KubeError):
    """404 Not Found."""
