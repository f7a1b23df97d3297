"""Start kopf with dbquota's handlers and settings: the body of ``dbquota run``.

Configures kopf (progress kept in annotations, not in our schema-checked status), builds
the :class:`~dbquota.handlers.runtime.Runtime` (Kubernetes connection, billing ingestion,
admission, reconciliation, the probe and metrics server) at start-up, then serves the
admission webhook (:mod:`dbquota.handlers.webhook`, with :func:`admit_claims` as its
``admit``) and, in dev mode, registers it (:func:`register_dev_webhook`); at clean-up it
stops the webhook first, then closes the rest in reverse order. kopf runs the quota and
claim handlers and the operator's lifecycle; it serves no webhook. Called by
:mod:`dbquota.cli`.

With ``--peering NAME`` the replicas elect one reconciler through kopf peering. kopf pauses
every operator that sees a live peer of higher *or equal* priority, so replicas that all
ran with kopf's default priority would all pause and nothing would reconcile. Each replica
therefore takes a priority from its start time (:func:`peering_priority`): the oldest live
replica reconciles, a new pod of a rolling update does not take over from a healthy
leader, and a random tie-breaker separates replicas started in the same millisecond.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import kopf
import uvloop

from dbquota import settings as settings_
from dbquota.adapters import metrics
from dbquota.adapters.kube import Informer, Kube
from dbquota.domain import reservations, reviews
from dbquota.errors import ConfigurationError, DbquotaError
from dbquota.handlers import claims, quotas, webhook
from dbquota.handlers import runtime as runtime_
from dbquota.services import admitting, ingesting, reconciling, reserving

logger = logging.getLogger(__name__)

__all__ = ["claims", "quotas", "run"]  # importing claims and quotas registers their handlers


def configure(kopf_settings: kopf.OperatorSettings) -> None:
    """Apply dbquota's choices to kopf's settings (kopf serves no webhook: we do)."""
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="dbquota.io"
    )
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="dbquota.io", key="last-handled-configuration"
    )
    kopf_settings.posting.level = logging.WARNING  # Events only for what people should see


CLAIM_KINDS = frozenset({(claims.GROUP, "DatabaseClaim")})
"""The (group, kind) pairs the webhook admits through :func:`admit_claims`."""


def admit_claims(runtime: runtime_.Runtime) -> webhook.Admit:
    """The webhook's ``admit``: one DatabaseClaim review through admission, then metrics.

    The one place that turns a decoded review into the admission service's call, and its
    verdict into the webhook's answer. It reads only the runtime's informers (quotas and
    claims, kept by a watch on every replica, so a standby replica of kopf peering decides
    as well as the leader) and the billing snapshot, and reserves through the quota's
    ledger. An error of ours (e.g. the informers have not listed yet) denies the review
    with its message and code 503; the apiserver's retry or the user's asks again.
    """

    async def admit(review: reviews.Review) -> reviews.Answer:
        started = time.perf_counter()
        request = review.request
        namespace, name = request.namespace, request.object_name
        dry_run = bool(request.dry_run)
        old = request.old_object if request.operation == "UPDATE" else None
        claim = admitting.Review(
            namespace=namespace,
            name=name,
            spec=None if request.object is None else request.object.spec,
            # An UPDATE's old object always has a spec; a null one reads as empty.
            old_spec=None if old is None else ({} if old.spec is None else old.spec),
            dry_run=dry_run,
        )
        try:
            quota_entries = await runtime.quota_entries(namespace)
            verdict = await runtime.admission.review(
                claim,
                quota_names=[q.name for q in quota_entries],
                claim_refs=runtime.claim_refs(namespace),
            )
        except DbquotaError as exc:
            logger.warning("could not decide on DatabaseClaim %s/%s: %s", namespace, name, exc)
            return reviews.Answer(
                allowed=False, message=f"dbquota could not decide now: {exc}", code=503
            )
        runtime.observe_admission(
            verdict,
            namespace=namespace,
            claim=name,
            seconds=time.perf_counter() - started,
            dry_run=dry_run,
        )
        if verdict.allowed:
            return reviews.Answer(allowed=True, warnings=verdict.warnings)
        return reviews.Answer(
            allowed=False, message=verdict.message, warnings=verdict.warnings, code=403
        )

    return admit


async def register_dev_webhook(kube: Kube, cfg: settings_.WebhookSettings, *, port: int) -> None:
    """Create or update the ValidatingWebhookConfiguration ``--webhook-configuration`` that
    sends DatabaseClaim CREATEs and UPDATEs to this process (``--dev-webhook``)."""
    name = cfg.configuration_name
    if name.count(".") < 1:
        raise ConfigurationError(
            f"--webhook-configuration {name!r} must be a domain name (e.g. dbquota.io): "
            "the apiserver wants webhook names of 3 segments"
        )
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    ca_bundle = (cfg.cert_dir / "ca.crt").read_bytes()
    await kube.apply_validating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"validate-claims.{name}",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "NoneOnDryRun",  # admission reserves, never for a dry run
                    "failurePolicy": "Fail",
                    "timeoutSeconds": cfg.timeout,
                    "matchPolicy": "Equivalent",
                    "rules": [
                        {
                            "apiGroups": [claims.GROUP],
                            "apiVersions": [claims.VERSION],
                            "resources": ["databaseclaims"],
                            "operations": ["CREATE", "UPDATE"],
                            "scope": "Namespaced",
                        }
                    ],
                    "clientConfig": {
                        "url": f"https://{host}:{port}{webhook.PATH}",
                        "caBundle": base64.b64encode(ca_bundle).decode(),
                    },
                }
            ],
        }
    )
    logger.info("registered ValidatingWebhookConfiguration %s for port %d", name, port)


_TIEBREAKS = 1000


def peering_priority(*, started_ms: int, tiebreak: int) -> int:
    """kopf peering priority of a replica started at ``started_ms`` (Unix ms): older is higher.

    ``tiebreak`` (0 <= tiebreak < 1000) orders replicas started in the same millisecond,
    which kopf would otherwise both pause. The result is negative and fits an int64, as the
    apiserver stores it.
    """
    if not 0 <= tiebreak < _TIEBREAKS:
        raise ValueError(f"tiebreak must be in [0, {_TIEBREAKS}), got {tiebreak}")
    return -started_ms * _TIEBREAKS + tiebreak


async def _serve(cfg: settings_.Settings, memo: kopf.Memo, stop: asyncio.Event) -> None:
    """Own every long-lived part for the operator's lifetime; close them in order on stop."""
    async with contextlib.AsyncExitStack() as stack:
        kube = await Kube.connect()
        stack.push_async_callback(kube.close)
        ingestor = await stack.enter_async_context(ingesting.running(cfg))
        if cfg.metrics_port:
            port = await stack.enter_async_context(
                metrics.serve_probes(cfg.metrics_port, ready=lambda: ingestor.ready)
            )
            logger.info("serving /metrics, /healthz and /readyz on port %d", port)
        ledgers = reserving.Ledgers(kube, share=cfg.enforcement.escrow_share)
        stack.push_async_callback(ledgers.close)  # before the connection closes
        quota_informer = Informer(
            kube, plural="databasequotas", derive=runtime_.quota_entry, namespace=cfg.namespace
        )
        claim_informer = Informer(
            kube, plural="databaseclaims", derive=reservations.claim_ref, namespace=cfg.namespace
        )
        for run_informer in (quota_informer.run, claim_informer.run):
            task = asyncio.create_task(run_informer(), name="informer")
            stack.callback(task.cancel)
        runtime = runtime_.Runtime(
            settings=cfg,
            kube=kube,
            ledgers=ledgers,
            ingestor=ingestor,
            admission=admitting.Admission(
                ledgers=ledgers,
                snapshot=ingestor.snapshot,
                clock=time.time,
                no_quota=cfg.enforcement.no_quota,
            ),
            quota_informer=quota_informer,
            claim_informer=claim_informer,
            reconciler=reconciling.Reconciler(
                kube=kube,
                ledgers=ledgers,
                snapshot=ingestor.snapshot,
                clock=time.time,
                grace=cfg.enforcement.reservation_grace,
            ),
        )
        ingestor.add_transition_listener(runtime.on_transition)
        ingestor.add_event_listener(runtime.on_ingest_event)
        # Entered last, left first: no review is in flight when the ledgers flush and close.
        port = await stack.enter_async_context(
            webhook.serving(cfg.webhook, admit=admit_claims(runtime), kinds=CLAIM_KINDS)
        )
        if cfg.webhook.dev and cfg.webhook.configuration_name:
            await register_dev_webhook(kube, cfg.webhook, port=port)
        memo["runtime"] = runtime
        _freeze_heap()
        await stop.wait()


def _freeze_heap() -> None:
    """Move everything built at start-up out of the garbage collector's sight.

    kopf, the Kubernetes client and their modules are a large heap that lives as long as
    the process; without this every full collection walks it again, which paused the
    event loop (and every admission waiting on it) for 30-60 ms in ``bench/admission.py``.
    ``gc.freeze`` is CPython's tool for exactly that (it was made for pre-fork servers).
    """
    gc.collect()
    gc.freeze()


def run(cfg: settings_.Settings) -> None:
    """Run the operator until SIGINT/SIGTERM."""
    quotas.register_timer(cfg.enforcement.resync_interval)
    stop = asyncio.Event()
    serving: list[asyncio.Task[None]] = []

    @kopf.on.startup()
    async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        serving.append(asyncio.create_task(_serve(cfg, memo, stop), name="dbquota runtime"))
        while "runtime" not in memo:  # fail start-up if building the runtime fails
            if serving[0].done():
                serving[0].result()
            await asyncio.sleep(0.05)

    @kopf.on.cleanup()
    async def _cleanup(**_: Any) -> None:
        stop.set()
        if serving:
            await serving[0]

    namespaces = [cfg.namespace] if cfg.namespace else []
    priority = None
    if cfg.peering:
        priority = peering_priority(
            started_ms=time.time_ns() // 1_000_000, tiebreak=secrets.randbelow(_TIEBREAKS)
        )
        logger.info("peering %r with priority %d (older replicas win)", cfg.peering, priority)
    with asyncio.Runner(loop_factory=_loop_factory(cfg.event_loop)) as runner:
        runner.run(
            kopf.operator(
                standalone=not cfg.peering,
                peering_name=cfg.peering or None,
                priority=priority,
                clusterwide=not namespaces,
                namespaces=namespaces,
                memo=kopf.Memo(),
            )
        )


def _loop_factory(kind: settings_.EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop (what ``kopf run`` picks when uvloop is installed), or asyncio's.

    uvloop's TLS and socket handling are compiled: it took the webhook server's own CPU
    per review from 0.31 to 0.25 ms, a few per cent of the whole operator's
    (``bench/README.md``).
    """
    if kind == "uvloop":
        return uvloop.new_event_loop
    return asyncio.new_event_loop
