"""The operator's settings: one tree of frozen dataclasses, read once at start-up.

Every leaf field carries its command-line flag, its environment variable, its unit, its
default and, for a number, its range (:class:`Bounds`) in ``field(metadata=...)``;
:func:`add_arguments` turns the tree into the flags of ``dbquota run`` and
:func:`from_namespace` turns parsed flags back into the tree. A flag given on the command
line wins over its ``DBQUOTA_*`` variable, which wins over the default. A value out of its
range is refused as it is parsed, and durations that must be ordered are checked when
the tree is built (:class:`LeaseSettings`), each with one line naming the flag, the range
and the value. Nothing else in the package reads ``os.environ`` for settings; the HTTP
clients honour the standard ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY`` (billing
through httpx, the apiserver through :func:`dbquota.adapters.kube._env_proxy`).

Called by :mod:`dbquota.cli` only; everything else receives a ``Settings`` (or one branch
of it) as an argument.

Size: one tree of every knob in one module, because ``dbquota settings``, the README's
table and the chart's arguments are all generated from or checked against this one list.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dbquota.domain import kinds
from dbquota.domain.kinds import registry
from dbquota.kits.logs import LogFormat

NoQuotaPolicy = Literal["Admit", "Deny"]
EventLoop = Literal["uvloop", "asyncio"]


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """The numbers a knob takes: at least ``minimum`` or above ``above``, at most ``maximum``
    or below ``below`` (each optional), and never infinite or NaN."""

    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None

    def __contains__(self, value: float) -> bool:
        return (
            math.isfinite(value)
            and (self.minimum is None or value >= self.minimum)
            and (self.above is None or value > self.above)
            and (self.maximum is None or value <= self.maximum)
            and (self.below is None or value < self.below)
        )

    def __str__(self) -> str:
        """The range as the error and ``--help`` say it: "at least 1", "above 0 and at
        most 1", "from 1 to 30", "from 0 to below 1"."""
        if self.minimum is not None and (self.maximum, self.below) != (None, None):
            top = f"{self.maximum:g}" if self.maximum is not None else f"below {self.below:g}"
            return f"from {self.minimum:g} to {top}"
        limits = (
            ("at least", self.minimum),
            ("above", self.above),
            ("at most", self.maximum),
            ("below", self.below),
        )
        return " and ".join(f"{word} {limit:g}" for word, limit in limits if limit is not None)


def _number(kind: type[int] | type[float], bounds: Bounds, unit: str) -> Callable[[str], Any]:
    """A parser of a ``kind`` (int or float) within ``bounds``; refused: one line with
    the range and the text given."""
    whole = "whole " if kind is int else ""
    expected = f"expected {f'{whole}seconds' if unit == 's' else f'a {whole}number'} {bounds}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if value not in bounds:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value

    return parse


def _knob(
    default: Any,
    *,
    flag: str,
    help: str,
    unit: str = "",
    parse: Callable[[str], Any] | None = None,
    secret: bool = False,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
) -> Any:
    """A leaf setting; a number's range is ``minimum``/``above`` and ``maximum``/``below``
    (inclusive/exclusive), checked when its flag or variable is parsed."""
    env = "DBQUOTA_" + flag.removeprefix("--").replace("-", "_").upper()
    bounds = None
    if (minimum, above, maximum, below) != (None, None, None, None):
        bounds = Bounds(minimum=minimum, above=above, maximum=maximum, below=below)
        parse = parse or _number(type(default), bounds, unit)
    return field(
        default=default,
        repr=not secret,
        metadata={
            "flag": flag,
            "env": env,
            "help": help,
            "unit": unit,
            "parse": parse,
            "bounds": bounds,
        },
    )


def _one_of(choices: Any) -> Callable[[str], str]:
    """A parser of one of the strings of the ``Literal`` type ``choices``."""
    allowed: tuple[str, ...] = typing.get_args(choices)

    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(allowed)}, got {text!r}")
        return text

    return parse


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _connection_age(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value == 0 or 1 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or at least 1, got {text!r}")
    return value


def _claim_kinds(text: str) -> tuple[str, ...]:
    try:
        return registry.names(_names(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class BillingSettings:
    """Where billing data comes from and how hard we may lean on the provider."""

    url: str = _knob(
        "http://127.0.0.1:8089", flag="--billing-url", help="Base URL of the billing provider API."
    )
    token_file: Path | None = _knob(
        None,
        flag="--billing-token-file",
        help="File holding the provider's bearer token (re-read on every sync; never logged).",
        parse=_optional_path,
    )
    token: str = _knob(
        "",
        flag="--billing-token",
        help="The provider's bearer token, when there is no token file; prefer the "
        "environment variable (flags show in ps). Never logged.",
        secret=True,
    )
    request_timeout: float = _knob(
        5.0,
        flag="--request-timeout",
        unit="s",
        above=0,
        help="Read timeout of one billing request (per read); with --connect-timeout, also the "
        "most one request may take in all.",
    )
    connect_timeout: float = _knob(
        2.0,
        flag="--connect-timeout",
        unit="s",
        above=0,
        help="Connect timeout of one billing request.",
    )
    rate_limit: float = _knob(
        50.0,
        flag="--rate-limit",
        unit="req/s",
        minimum=0,
        help="Client-side cap on billing requests, per replica: each replica syncs on its "
        "own, so the provider sees up to replicas times this. Set it to the provider's "
        "quota divided by the replica count (0 = no cap).",
    )
    max_concurrency: int = _knob(
        16, flag="--max-concurrency", minimum=1, help="Most billing requests in flight at once."
    )
    sync_interval: float = _knob(
        60.0, flag="--sync-interval", unit="s", above=0, help="Time between two billing syncs."
    )
    retry_attempts: int = _knob(
        4,
        flag="--retry-attempts",
        minimum=1,
        help="Most attempts of one billing call (1 = no retry).",
    )
    retry_timeout: float = _knob(
        20.0,
        flag="--retry-timeout",
        unit="s",
        minimum=0,
        help="Most total time spent retrying one call.",
    )
    page_size: int = _knob(
        1000,
        flag="--page-size",
        minimum=1,
        help="Clusters asked for per page of the bulk listing.",
    )


@dataclass(frozen=True, kw_only=True)
class BreakerSettings:
    """The circuit breaker around the billing provider (Resilience4j's model)."""

    failure_threshold: int = _knob(
        5,
        flag="--breaker-failure-threshold",
        minimum=1,
        help="Consecutive failures that open the breaker.",
    )
    recovery_timeout: float = _knob(
        30.0,
        flag="--breaker-recovery-timeout",
        unit="s",
        above=0,
        help="Time the breaker stays Open before one half-open probe.",
    )
    window_size: int = _knob(
        20,
        flag="--breaker-window-size",
        minimum=1,
        help="Calls in the sliding window for failure rate.",
    )
    minimum_calls: int = _knob(
        10,
        flag="--breaker-minimum-calls",
        minimum=1,
        help="Calls needed before the failure rate counts.",
    )
    failure_rate_threshold: float = _knob(
        0.5,
        flag="--breaker-failure-rate",
        unit="0..1",
        above=0,
        maximum=1,
        help="Failure share of the window that opens the breaker.",
    )
    slow_call_duration: float = _knob(
        3.0,
        flag="--breaker-slow-call-duration",
        unit="s",
        above=0,
        help="A call slower than this is slow.",
    )
    slow_call_rate_threshold: float = _knob(
        1.0,
        flag="--breaker-slow-call-rate",
        unit="0..1",
        above=0,
        maximum=1,
        help="Slow share of the window that opens the breaker (1.0 = off).",
    )


@dataclass(frozen=True, kw_only=True)
class CacheSettings:
    """The local SQLite cache of billing data."""

    path: Path = _knob(
        Path("dbquota-cache.sqlite3"),
        flag="--cache-path",
        help="SQLite file of the billing cache (WAL mode; created if missing).",
        parse=Path,
    )
    retention: float = _knob(
        30 * 86400.0,
        flag="--cache-retention",
        unit="s",
        above=0,
        help="History older than this is compacted away.",
    )
    price_window: float = _knob(
        30 * 86400.0,
        flag="--price-window",
        unit="s",
        above=0,
        help="Window of price history that 'highest known price' looks at.",
    )


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    """The validating admission webhook's server (:mod:`dbquota.handlers.webhook`)."""

    dev: bool = _knob(
        False,
        flag="--dev-webhook",
        help="Serve on --webhook-host with a generated certificate and register the "
        "ValidatingWebhookConfiguration ourselves (for local clusters).",
        parse=_bool,
    )
    listen: str = _knob(
        "0.0.0.0",  # noqa: S104 - the apiserver calls from off the pod
        flag="--webhook-listen",
        help="Address to listen on (dev mode listens on --webhook-host).",
    )
    host: str = _knob(
        "127.0.0.1", flag="--webhook-host", help="Host the apiserver uses to reach us (dev mode)."
    )
    port: int = _knob(
        9443,
        flag="--webhook-port",
        minimum=0,
        maximum=65535,
        help="TLS port of the webhook (0 = any free).",
    )
    cert_dir: Path = _knob(
        Path("webhook-certs"),
        flag="--webhook-cert-dir",
        help="Folder with tls.crt and tls.key (generated there in dev mode); reloaded within "
        "seconds when they change.",
        parse=Path,
    )
    client_ca: Path | None = _knob(
        None,
        flag="--webhook-client-ca",
        help="PEM bundle of the CA(s) that sign the apiserver's webhook client certificate: "
        "every caller must then present a certificate it signed (mutual TLS); reloaded "
        "when it changes ('' = no client certificate asked for).",
        parse=_optional_path,
    )
    client_names: tuple[str, ...] = _knob(
        (),
        flag="--webhook-client-names",
        help="Comma-separated names (CN or DNS SAN) a client certificate must carry, with "
        "--webhook-client-ca ('' = any certificate that CA signed).",
        parse=_names,
    )
    configuration_name: str = _knob(
        kinds.GROUP,
        flag="--webhook-configuration",
        help="Name of the ValidatingWebhookConfiguration registered in dev mode ('' = "
        "register none: someone else does).",
    )
    http2: bool = _knob(
        True,
        flag="--webhook-http2",
        help="Offer HTTP/2: the apiserver then sends every review on one connection instead "
        "of a TLS handshake per review in flight beyond 25; that connection reaches one "
        "replica behind a Service, until --webhook-max-connection-age (off: HTTP/1.1 "
        "only, balanced per connection).",
        parse=_bool,
    )
    max_connection_age: float = _knob(
        60.0,
        flag="--webhook-max-connection-age",
        unit="s",
        help="How long one connection of the apiserver's is used for new reviews (less up to "
        "a tenth, at random): then HTTP/2 says GOAWAY and HTTP/1.1 answers with 'Connection: "
        "close', the reviews under way are answered, and the apiserver reconnects, behind a "
        "Service maybe to another replica (0 = never; else at least 1).",
        parse=_connection_age,
    )
    timeout: int = _knob(
        10,
        flag="--webhook-timeout",
        unit="s",
        minimum=1,
        maximum=30,
        help="timeoutSeconds of the webhook registered in dev mode (1 to 30).",
    )


@dataclass(frozen=True, kw_only=True)
class EnforcementSettings:
    """Choices of admission that are the operator's, not a quota's: namespaces without a
    quota, how long a reservation waits for its claim, how many may be in flight, how
    often statuses are refreshed, and the escrow share."""

    claim_kinds: tuple[str, ...] = _knob(
        registry.DEFAULT,
        flag="--claim-kinds",
        help="Comma-separated kinds whose objects count against DatabaseQuotas: "
        + ", ".join(registry.KINDS)
        + " (DatabaseClaim, CloudNativePG Cluster, Zalando postgresql, Crossplane RDS "
        "Instance). The webhook, the watches and the recount cover these kinds only.",
        parse=_claim_kinds,
    )
    claim_namespace_label: str = _knob(
        "crossplane.io/claim-namespace",
        flag="--claim-namespace-label",
        help="Label naming the tenant namespace of a cluster-scoped object (Crossplane RDS "
        "Instance). One without it counts against no quota: admitted unchecked, with a "
        "warning, unless --no-quota-policy=Deny.",
    )
    no_quota: NoQuotaPolicy = _knob(
        "Admit",
        flag="--no-quota-policy",
        help="Admit or Deny claims in a namespace that has no DatabaseQuota (and "
        "cluster-scoped objects that name no tenant namespace).",
        parse=_one_of(NoQuotaPolicy),
    )
    reservation_grace: float = _knob(
        60.0,
        flag="--reservation-grace",
        unit="s",
        above=0,
        help="A reservation whose object has not appeared this long after its admission is "
        "released (the request failed later, or the review was forged). At least the "
        "apiserver's --request-timeout (60 s by default): an admitted create can still "
        "land in etcd that late, and releasing its budget earlier could admit it twice.",
    )
    max_reservations: int = _knob(
        500,
        flag="--max-reservations",
        minimum=0,
        help="Most admissions in flight (objects not shown up yet) one quota holds; further "
        "CREATEs are refused until some are confirmed or released (0 = no limit).",
    )
    resync_interval: float = _knob(
        30.0,
        flag="--resync-interval",
        unit="s",
        above=0,
        help="Time between quota status refreshes.",
    )
    escrow_share: float = _knob(
        0.25,
        flag="--escrow-share",
        minimum=0,
        below=1,
        help="Share of a quota's free room each webhook replica holds in escrow to admit "
        "claims without waiting for their reservation write (0 = every admission waits).",
    )


@dataclass(frozen=True, kw_only=True)
class LeaseSettings:
    """Leases (coordination.k8s.io): each replica's liveness, and the reconciler's leader.

    client-go's leader election durations: retry period < renew deadline < lease duration
    (checked once all three are set: :meth:`__post_init__`), and the difference between the
    last two bounds how far apart replicas' clocks may run during one lease.
    """

    namespace: str = _knob(
        "default",
        flag="--lease-namespace",
        help="Namespace of the replicas' Leases (the chart sets the release's namespace).",
    )
    leader_election: bool = _knob(
        True,
        flag="--leader-election",
        help="Elect one replica to reconcile through a Lease; off: this replica always "
        "reconciles (run only one replica then). Every replica serves the webhook.",
        parse=_bool,
    )
    leader_lease: str = _knob(
        "dbquota-leader", flag="--leader-lease", help="Name of the leader election Lease."
    )
    duration: float = _knob(
        15.0,
        flag="--lease-duration",
        unit="s",
        above=0,
        help="Time without renewal after which other replicas count a lease lapsed.",
    )
    renew_deadline: float = _knob(
        10.0,
        flag="--lease-renew-deadline",
        unit="s",
        above=0,
        help="Time after its last renewal during which a replica trusts its own lease.",
    )
    retry_period: float = _knob(
        2.0, flag="--lease-retry-period", unit="s", above=0, help="Time between two renewals."
    )

    def __post_init__(self) -> None:
        """Refuse durations out of order, in the words of a bad flag (:func:`dbquota.cli.main`
        reports it as a usage error); ``leasing.Timing`` checks the same for its callers."""
        flags = {f.name: f.metadata["flag"] for f in dataclasses.fields(self)}
        for shorter, longer in (("renew_deadline", "duration"), ("retry_period", "renew_deadline")):
            value, limit = getattr(self, shorter), getattr(self, longer)
            if not value < limit:
                raise ValueError(
                    f"argument {flags[shorter]}: expected seconds below {flags[longer]} "
                    f"({limit:g}), got {value:g}"
                )


@dataclass(frozen=True, kw_only=True)
class Settings:
    """All settings of ``dbquota run``."""

    billing: BillingSettings = field(default_factory=BillingSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    enforcement: EnforcementSettings = field(default_factory=EnforcementSettings)
    leases: LeaseSettings = field(default_factory=LeaseSettings)
    metrics_port: int = _knob(
        8080,
        flag="--metrics-port",
        minimum=0,
        maximum=65535,
        help="Port of /metrics, /healthz and /readyz (0 = off).",
    )
    namespace: str = _knob(
        "", flag="--namespace", help="Watch only this namespace ('' = all namespaces)."
    )
    event_loop: EventLoop = _knob(
        "uvloop",
        flag="--event-loop",
        help="uvloop (compiled, less CPU per admission) or asyncio (the standard library's).",
        parse=_one_of(EventLoop),
    )
    log_format: LogFormat = _knob(
        "text",
        flag="--log-format",
        help="text (time, level, logger: message) or json (one JSON object per line: time "
        "in RFC 3339 UTC, level, logger, message, and exception, object and extra fields "
        "when present). Every line logged follows it, kopf's and aiohttp's too.",
        parse=_one_of(LogFormat),
    )
    shutdown_delay: float = _knob(
        0.0,
        flag="--shutdown-delay",
        unit="s",
        minimum=0,
        help="On SIGTERM or SIGINT, report not ready and go on serving the webhook this long "
        "before stopping, while the Service stops sending the apiserver here; a second signal "
        "skips the rest (0 = stop at once).",
    )


@dataclass(frozen=True)
class Knob:
    """One leaf setting as documented: where it lives and how to set it."""

    path: tuple[str, ...]
    flag: str
    env: str
    default: Any
    unit: str
    help: str
    parse: Callable[[str], Any]
    bounds: Bounds | None
    """The range of a number (None: any value ``parse`` takes)."""

    @property
    def default_text(self) -> str:
        """The default as it would be typed: ``a,b`` for names, empty for None, ``true`` or
        ``false`` for a switch (as its variable takes it)."""
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        return "" if self.default is None else str(self.default)


def knobs(cls: type[Any] = Settings, prefix: tuple[str, ...] = ()) -> Iterator[Knob]:
    """Walk the settings tree depth-first, yielding every leaf with its metadata."""
    for f in dataclasses.fields(cls):
        if "flag" not in f.metadata:
            assert f.default_factory is not dataclasses.MISSING
            yield from knobs(f.default_factory, (*prefix, f.name))  # type: ignore[arg-type]
            continue
        default = f.default
        parse = f.metadata["parse"] or type(default)
        yield Knob(
            path=(*prefix, f.name),
            flag=f.metadata["flag"],
            env=f.metadata["env"],
            default=default,
            unit=f.metadata["unit"],
            help=f.metadata["help"],
            parse=parse,
            bounds=f.metadata["bounds"],
        )


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Add one flag per knob; a ``DBQUOTA_*`` variable in ``environ`` sets its default."""
    for knob in knobs():
        default = knob.default
        if knob.env in environ:
            try:
                default = knob.parse(environ[knob.env])
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise type(exc)(f"{knob.env}: {exc}") from None
        unit = f" [{knob.unit}]" if knob.unit else ""
        bounds = f"{knob.bounds}; " if knob.bounds else ""
        shown = knob.default_text or "''"
        help_ = f"{knob.help}{unit} ({bounds}env {knob.env}, default {shown})"
        dest = "_".join(knob.path)
        if isinstance(knob.default, bool):
            parser.add_argument(
                knob.flag,
                dest=dest,
                default=default,
                help=help_,
                action=argparse.BooleanOptionalAction,
            )
        else:
            parser.add_argument(knob.flag, dest=dest, type=knob.parse, default=default, help=help_)


def from_namespace(ns: argparse.Namespace) -> Settings:
    """Rebuild the frozen tree from flags parsed by a parser made with :func:`add_arguments`."""
    values: dict[str, Any] = vars(ns)

    def build(cls: type[Any], prefix: tuple[str, ...]) -> Any:
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            path = (*prefix, f.name)
            if "flag" in f.metadata:
                kwargs[f.name] = values["_".join(path)]
            else:
                kwargs[f.name] = build(f.default_factory, path)  # type: ignore[arg-type]
        return cls(**kwargs)

    settings: Settings = build(Settings, ())
    return settings
