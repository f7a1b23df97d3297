"""Start kopf with dbquota's handlers and settings: the body of ``dbquota run``.

Configures kopf (progress kept in annotations, not in our schema-checked status), the
webhook server (in dev mode: a generated CA and serving certificate and a
ValidatingWebhookConfiguration that kopf registers and keeps patched; otherwise the
certificate files the Helm chart mounts, reloaded by kopf when they change), builds the
:class:`~dbquota.handlers.runtime.Runtime` (Kubernetes connection, billing ingestion,
admission, reconciliation, the probe and metrics server) at start-up and closes it at
clean-up. Called by :mod:`dbquota.cli`.

Leadership for reconciliation comes from a coordination.k8s.io Lease
(:mod:`dbquota.services.leasing`), not from kopf peering: kopf runs standalone on every
replica, its quota handlers only mark quotas dirty, and the reconciler acts on the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from pathlib import Path
from typing import Any

import kopf

from dbquota import settings as settings_
from dbquota.adapters import metrics
from dbquota.adapters.kube import CLAIMS, QUOTAS, Informer, Kube
from dbquota.domain import reservations
from dbquota.errors import ConfigurationError
from dbquota.handlers import claims, quotas
from dbquota.handlers import runtime as runtime_
from dbquota.kits import certs
from dbquota.services import (
    admitting,
    ingesting,
    leasing,
    publishing,
    reconciling,
    recording,
    stores,
)

logger = logging.getLogger(__name__)

__all__ = ["claims", "quotas", "run"]  # importing claims and quotas registers their handlers


def ensure_dev_certificates(*, cert_dir: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for ``host`` in ``cert_dir``, made once, then reused."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = cert_dir / "ca.crt", cert_dir / "tls.crt", cert_dir / "tls.key"
    if not (ca_path.exists() and cert_path.exists() and key_path.exists()):
        ca = certs.new_ca(common_name="dbquota-webhook-ca")
        hosts = tuple(dict.fromkeys((host, "127.0.0.1", "localhost")))
        leaf = certs.issue(ca=ca, common_name=host, hosts=hosts, server=True)
        ca_path.write_bytes(ca.cert_pem)
        leaf.write(cert_path=cert_path, key_path=key_path)
        logger.info("generated a webhook CA and serving certificate in %s", cert_dir)
    return ca_path, cert_path, key_path


class _WebhookSuccesses(logging.Filter):
    """Drops kopf's ``Webhook '...' succeeded.`` line, which it logs at INFO per review."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not (
            record.levelno == logging.INFO
            and isinstance(message, str)
            and message.startswith("Webhook ")
            and message.endswith(" succeeded.")
        )


_WEBHOOK_SUCCESSES = _WebhookSuccesses()


def quiet_admission_logs() -> None:
    """No log line per admission request at INFO; with debug logging on, nothing changes.

    aiohttp's access log and kopf's ``Webhook 'validate-claims' succeeded.`` are two INFO
    lines for every review: 400 lines/s at 200 reviews/s (``bench/admission.py``), and
    about 30 µs of CPU per review spent formatting them. Decisions are counted in
    ``/metrics`` instead
    (``dbquota_admission_decisions_total``); denials are still logged (at INFO, see
    :class:`DenialsAreNotErrors`), as are warnings and errors of the webhook and of the
    probe server.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        return
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_WEBHOOK_SUCCESSES)  # once: same object


def configure(kopf_settings: kopf.OperatorSettings, cfg: settings_.Settings) -> None:
    """Apply dbquota's choices to kopf's settings (and to the logs of its webhook server)."""
    quiet_admission_logs()
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="dbquota.io"
    )
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="dbquota.io", key="last-handled-configuration"
    )
    kopf_settings.posting.level = logging.WARNING  # Events only for what people should see
    webhook = cfg.webhook
    if webhook.dev:
        if webhook.configuration_name.count(".") < 1:
            raise ConfigurationError(
                f"--webhook-configuration {webhook.configuration_name!r} must be a domain "
                "name (e.g. dbquota.io): the apiserver wants webhook names of 3 segments"
            )
        ca, cert, key = ensure_dev_certificates(cert_dir=webhook.cert_dir, host=webhook.host)
        kopf_settings.admission.server = kopf.WebhookServer(
            addr=webhook.host,
            port=webhook.port,
            host=webhook.host,
            certfile=str(cert),
            pkeyfile=str(key),
            cafile=str(ca),
        )
        kopf_settings.admission.managed = webhook.configuration_name
    else:
        cert, key = webhook.cert_dir / "tls.crt", webhook.cert_dir / "tls.key"
        if not (cert.exists() and key.exists()):
            raise ConfigurationError(
                f"no webhook certificate: {cert} and {key} must exist (mount the chart's "
                "Secret there, or use --dev-webhook for a local cluster)"
            )
        kopf_settings.admission.server = kopf.WebhookServer(
            addr=webhook.listen,
            port=webhook.port,
            certfile=str(cert),
            pkeyfile=str(key),
        )


async def _serve(cfg: settings_.Settings, memo: kopf.Memo, stop: asyncio.Event) -> None:
    """Own every long-lived part for the operator's lifetime; close them in order on stop.

    Closing runs in reverse: the background workers stop, the ledgers write what they
    admitted and give their escrow back, the leases are released (a standby takes over at
    once), the watches stop, the ingestion loop stops (its breaker no longer announcing),
    the Event recorder writes its final series counts, and the connections close last.
    """
    async with contextlib.AsyncExitStack() as stack:
        kube = await Kube.connect()
        stack.push_async_callback(kube.close)
        holder = stores.holder_id()
        events = recording.Recorder(kube, instance=holder)
        stack.push_async_callback(events.close)  # final series counts, before kube closes
        ingestor = await stack.enter_async_context(ingesting.running(cfg))
        # The leader republishes each quota every resync; three missed turns mean it no
        # longer leads (or cannot write), and its per-quota figures would only mislead.
        metrics.quota_series.expire_after(3 * cfg.enforcement.resync_interval)
        timing = leasing.Timing(
            lease_duration=cfg.leases.duration,
            renew_deadline=cfg.leases.renew_deadline,
            retry_period=cfg.leases.retry_period,
        )
        quota_informer = Informer(
            kube, QUOTAS, derive=reconciling.quota_ref, namespace=cfg.namespace, keep_objects=True
        )
        claim_informer = Informer(
            kube, CLAIMS, derive=reservations.claim_ref, namespace=cfg.namespace
        )
        leases = leasing.LeaseWatch(kube, namespace=cfg.leases.namespace, timing=timing)
        liveness = leasing.Liveness(
            kube, namespace=cfg.leases.namespace, holder=holder, timing=timing
        )
        ledgers = admitting.Ledgers(
            kube,
            snapshot=ingestor.snapshot,
            share=cfg.enforcement.escrow_share,
            holder=holder,
            alive=liveness.alive,
            live=leases.live,
            in_flight_limit=cfg.enforcement.max_reservations or None,
        )
        runtime: runtime_.Runtime | None = None

        def leading() -> bool:
            return runtime is not None and runtime.leading()

        election = (
            leasing.LeaderElection(
                kube,
                namespace=cfg.leases.namespace,
                name=cfg.leases.leader_lease,
                holder=holder,
                timing=timing,
                on_change=lambda now_leading: (
                    runtime.on_leadership(now_leading) if runtime is not None else None
                ),
            )
            if cfg.leases.leader_election
            else None
        )
        runtime = runtime_.Runtime(
            settings=cfg,
            kube=kube,
            ingestor=ingestor,
            quota_informer=quota_informer,
            claim_informer=claim_informer,
            ledgers=ledgers,
            admission=admitting.Admission(
                ledgers=ledgers, quotas=quota_informer, no_quota=cfg.enforcement.no_quota
            ),
            reconciler=reconciling.Reconciler(
                kube=kube,
                events=events,
                quotas=quota_informer,
                claims=claim_informer,
                snapshot=lambda: runtime.billing_snapshot() if runtime else ingestor.snapshot(),
                clock=time.time,
                grace=cfg.enforcement.reservation_grace,
                leading=leading,
                live=leases.live,
                next_lapse=leases.next_lapse,
                deleted=lambda namespace: runtime.recently_deleted(namespace) if runtime else set(),
            ),
            publisher=publishing.Publisher(
                kube=kube,
                claims=claim_informer,
                quotas=quota_informer,
                snapshot=ingestor.snapshot,
                leading=leading,
                on_published=lambda namespace: (
                    runtime.reconciler.mark_namespace(namespace) if runtime else None
                ),
            ),
            liveness=liveness,
            leases=leases,
            election=election,
        )
        runtime.wire()
        tasks = [
            asyncio.create_task(quota_informer.run(), name="quota watch"),
            asyncio.create_task(claim_informer.run(), name="claim watch"),
            asyncio.create_task(leases.informer.run(), name="lease watch"),
        ]
        stack.push_async_callback(_cancel, tasks)
        await liveness.start()
        stack.push_async_callback(liveness.stop)
        if election is not None:
            election.start()
            stack.push_async_callback(election.stop)
        else:
            runtime.on_leadership(True)
        stack.push_async_callback(ledgers.close)
        workers = [
            asyncio.create_task(runtime.reconciler.run(), name="reconciler"),
            asyncio.create_task(runtime.publisher.run(), name="claim status publisher"),
        ]
        stack.push_async_callback(_cancel, workers)
        if cfg.metrics_port:
            port = await stack.enter_async_context(
                metrics.serve_probes(
                    cfg.metrics_port,
                    ready=lambda: ingestor.ready and quota_informer.synced.is_set(),
                )
            )
            logger.info("serving /metrics, /healthz and /readyz on port %d", port)
        memo["runtime"] = runtime
        _freeze_heap()
        await stop.wait()
        del memo["runtime"]


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _freeze_heap() -> None:
    """Move everything built at start-up out of the garbage collector's sight.

    kopf, the Kubernetes client and their modules are a large heap that lives as long as
    the process; without this every full collection walks it again, which paused the
    event loop (and every admission waiting on it) for 30-60 ms in ``bench/admission.py``.
    ``gc.freeze`` is CPython's tool for exactly that (it was made for pre-fork servers).
    """
    gc.collect()
    gc.freeze()


class DenialsAreNotErrors(logging.Filter):
    """kopf logs every denial of the webhook as "Webhook ... failed permanently" at ERROR.
    A denied claim is the operator working, so such records are logged at INFO instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno == logging.ERROR and message.startswith("Webhook 'validate-claims'"):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = message.replace("failed permanently", "denied", 1), ()
        return True


def run(cfg: settings_.Settings) -> None:
    """Run the operator until SIGINT/SIGTERM."""
    logging.getLogger("kopf.objects").addFilter(DenialsAreNotErrors())
    quotas.register_timer(cfg.enforcement.resync_interval)
    stop = asyncio.Event()
    serving: list[asyncio.Task[None]] = []  # at most one: the current attempt

    @kopf.on.startup()
    async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, cfg)
        if not serving or serving[0].done():  # a retry after a failed attempt starts anew
            serving[:] = [asyncio.create_task(_serve(cfg, memo, stop), name="dbquota runtime")]
        task = serving[0]
        while "runtime" not in memo:  # fail start-up if building the runtime fails
            if task.done():
                task.result()
            await asyncio.sleep(0.05)

    @kopf.on.cleanup()
    async def _cleanup(**_: Any) -> None:
        stop.set()
        if serving and not serving[0].done():
            with contextlib.suppress(Exception):
                await serving[0]

    namespaces = [cfg.namespace] if cfg.namespace else []
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            memo=kopf.Memo(),
        )
    )
