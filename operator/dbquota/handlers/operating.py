"""Start kopf with dbquota's handlers and settings: the body of ``dbquota run``.

Configures kopf (progress kept in annotations, not in our schema-checked status), builds
the :class:`~dbquota.handlers.runtime.Runtime` (Kubernetes connection, billing ingestion,
admission, reconciliation, the probe and metrics server) at start-up, then serves the
admission webhook (:mod:`dbquota.handlers.webhook`, with :func:`admit_claims` as its
``admit``) and, in dev mode, registers it (:func:`register_dev_webhook`); at clean-up it
stops the webhook first, then closes the rest in reverse order. kopf runs the quota
handlers and the operator's lifecycle; it serves no webhook. Called by :mod:`dbquota.cli`.

The watches, the reconciler and the claim status publisher are loops kept running by one
:class:`~dbquota.kits.supervising.Supervisor`: one that dies of a bug is logged with its
traceback and started again with a backoff, and one that keeps dying makes ``/healthz``
fail (:class:`Probes`), so that the kubelet restarts the container.

SIGTERM and SIGINT are handled here (:class:`Shutdown`), in place of kopf's own handlers:
the replica reports not ready at once, goes on serving for ``--shutdown-delay`` seconds
while the webhook Service stops sending the apiserver here, and only then stops kopf, whose
clean-up runs the shutdown above.

Leadership for reconciliation comes from a coordination.k8s.io Lease
(:mod:`dbquota.services.leasing`), not from kopf peering: kopf runs standalone on every
replica, its quota handlers only mark quotas dirty, and the reconciler acts on the leader.

Size: ``_serve`` builds every long-lived part and registers its clean-up on one exit
stack, so that the order of start-up and of shutdown (the reverse) reads top to bottom in
one place; split, the shutdown order would be spread over several functions.
``admit_claims`` is the adapter from a review to admission with its metrics, one closure.
``Shutdown`` and ``_operate`` are here because they decide when kopf's clean-up, and so
``_serve``'s shutdown, begins: the order of stopping stays readable in one module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import kopf
import uvloop

from dbquota import settings as settings_
from dbquota.adapters import metrics
from dbquota.adapters.kube import QUOTAS, Informer, Kube, of_kind
from dbquota.domain import kinds, reservations, reviews
from dbquota.domain.kinds import registry
from dbquota.errors import ConfigurationError, DbquotaError, NotFound
from dbquota.handlers import quotas, webhook
from dbquota.handlers import runtime as runtime_
from dbquota.kits import supervising
from dbquota.services import (
    admitting,
    announcing,
    ingesting,
    inventory,
    leasing,
    lookups,
    publishing,
    reconciling,
    recording,
    stores,
)

logger = logging.getLogger(__name__)

__all__ = ["quotas", "run"]  # importing quotas registers its handlers


class DiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base (what its ``on.update`` handlers compare), built without copying
    what it leaves out.

    kopf deep-copies the whole object on every watch event, then drops ``status`` and all
    of ``metadata`` but the labels and annotations. A busy DatabaseQuota's status holds
    hundreds of reservations and its ``managedFields`` grow with every writer, and it
    changes several times a second: that copy was about 6 % of the operator's CPU under
    ``bench/admission.py``. This hands kopf the object without them (keeping what kopf
    reads of the metadata), so its essence is the same. Only a handler that watches a field
    of the status or the metadata (dbquota has none) gets those stanzas whole, as before.
    """

    KEPT_METADATA = ("labels", "annotations", "ownerReferences")
    """What kopf reads of ``metadata`` to build the essence and name its annotation."""

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[kopf.FieldSpec] | None = None,
    ) -> kopf.BodyEssence:
        # kopf passes the field of every field handler, ("spec",) for DatabaseQuota's
        # on.update: only a field in the status or the metadata needs those copied.
        reached = {_stanza(field) for field in extra_fields or ()}
        metadata = body.get("metadata") or {}
        stripped = {k: v for k, v in body.items() if k != "status" or k in reached}
        if "metadata" not in reached:
            stripped["metadata"] = {k: metadata[k] for k in self.KEPT_METADATA if k in metadata}
        return super().build(
            body=kopf.Body(cast(kopf.RawBody, stripped)), extra_fields=extra_fields
        )


def _stanza(field: kopf.FieldSpec) -> str:
    """The top-level key a kopf field names: ``"spec.x"``, ``("spec", "x")`` -> ``spec``
    (kopf's own ``parse_field`` is in its private ``_cogs``)."""
    if isinstance(field, str):
        return field.split(".", 1)[0]
    return str(field[0]) if field else ""


def configure(kopf_settings: kopf.OperatorSettings) -> None:
    """Apply dbquota's choices to kopf's settings (kopf serves no webhook: we do)."""
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=kinds.GROUP)
    kopf_settings.persistence.diffbase_storage = DiffBase(
        prefix=kinds.GROUP, key="last-handled-configuration"
    )
    kopf_settings.posting.level = logging.WARNING  # Events only for what people should see


def admit_claims(
    runtime: runtime_.Runtime, enabled: tuple[kinds.Kind, ...] = registry.enabled(registry.DEFAULT)
) -> webhook.Admit:
    """The webhook's ``admit``: one review of an enabled kind through admission, then metrics.

    One path serves every kind: the review's ``request.kind`` (group and kind) picks the
    kind's module (:mod:`dbquota.domain.kinds.registry`), which reads the object; the
    webhook answers reviews of any other kind at once, unchecked.

    The one place that turns a decoded review into the admission service's call, and its
    verdict into the webhook's answer. Admission reads only the runtime's watches (quotas,
    kept on every replica, so a standby decides as well as the leader) and the billing
    snapshot, and reserves through the quota's ledger. An error of ours (a reservation
    write that failed) denies the review with its message and code 503; the apiserver's
    retry or the user's asks again.
    """

    dispatch = registry.by_group_kind(enabled)

    async def admit(review: reviews.Review) -> reviews.Answer:
        started = time.perf_counter()
        request = review.request
        namespace, name = request.namespace, request.object_name
        kind = dispatch.get((request.kind.group, request.kind.kind))
        if kind is None:  # the webhook passes enabled kinds only
            return reviews.Answer(allowed=True)
        dry_run = bool(request.dry_run)
        new = request.object
        old = request.old_object if request.operation == "UPDATE" else None
        claim = admitting.Review(
            namespace=namespace,
            name=name,
            spec=None if new is None else new.spec,
            # An UPDATE's old object always has a spec; a null one reads as empty.
            old_spec=None if old is None else ({} if old.spec is None else old.spec),
            old_status=(
                None if old is None else old.status if isinstance(old.status, dict) else {}
            ),
            dry_run=dry_run,
            uid="" if new is None else new.metadata.uid,
            generation=1 if new is None else new.metadata.generation or 1,
            kind=kind,
            labels={} if new is None else new.metadata.labels,
            old_labels=None if old is None else old.metadata.labels,
            annotations={} if new is None else new.metadata.annotations,
            old_annotations=None if old is None else old.metadata.annotations,
        )
        try:
            verdict = await runtime.admission.review(claim)
        except DbquotaError as exc:
            logger.warning(
                "could not decide on %s %s/%s: %s", kind.resource.kind, namespace, name, exc
            )
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


async def register_dev_webhook(
    kube: Kube,
    cfg: settings_.WebhookSettings,
    *,
    port: int,
    enabled: tuple[kinds.Kind, ...] = registry.enabled(registry.DEFAULT),
    own_user: str,
) -> None:
    """Create or update the ValidatingWebhookConfiguration ``--webhook-configuration`` that
    sends CREATEs and UPDATEs of the enabled kinds to this process (``--dev-webhook``),
    and the status writes of the kinds dbquota owns by any user but ``own_user``, this
    process's (:func:`status_webhook`), as the chart's does. Without ``own_user`` (the
    apiserver would not say) the status is left unguarded, with a warning: guarded, this
    process's own writes would be denied."""
    name = cfg.configuration_name
    if name.count(".") < 1:
        raise ConfigurationError(
            f"--webhook-configuration {name!r} must be a domain name (e.g. dbquota.io): "
            "the apiserver wants webhook names of 3 segments"
        )
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    client = {
        "url": f"https://{host}:{port}{webhook.PATH}",
        "caBundle": base64.b64encode((cfg.cert_dir / "ca.crt").read_bytes()).decode(),
    }
    owned = [kind for kind in enabled if kind.owned]
    if owned and not own_user:
        logger.warning("claims' status left unguarded: this process's user is not known")
    guarded = owned and own_user
    statuses = [status_webhook(name, owned, user=own_user, client=client)] if guarded else []
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
                            "apiGroups": [kind.resource.group],
                            "apiVersions": [kind.resource.version],
                            "resources": [kind.resource.plural],
                            "operations": ["CREATE", "UPDATE"],
                            "scope": "Namespaced" if kind.resource.namespaced else "Cluster",
                        }
                        for kind in enabled
                    ],
                    "clientConfig": client,
                },
                *statuses,
            ],
        }
    )
    logger.info("registered ValidatingWebhookConfiguration %s for port %d", name, port)


async def _own_user(kube: Kube) -> str:
    """The user this process writes as, for the webhook's status check (step 5 of
    :mod:`dbquota.handlers.webhook`); empty, with a warning, if the apiserver will not
    say (the configuration's ``matchConditions`` keep our writes away from it anyway)."""
    try:
        return await kube.whoami()
    except DbquotaError as exc:
        logger.warning("could not learn which user this process writes as: %s", exc)
        return ""


def status_webhook(
    name: str, owned: Iterable[kinds.Kind], *, user: str, client: dict[str, str]
) -> dict[str, Any]:
    """The webhook that sees the status writes of the ``owned`` kinds by anyone but
    ``user`` (dbquota's own), which :mod:`dbquota.handlers.webhook` admits only if they
    change nothing there: a DatabaseClaim's status holds the price its quotas count it
    at. dbquota's own writes never reach it (``matchConditions``, evaluated by the
    apiserver), so claim pricing costs no webhook call."""
    return {
        "name": f"claim-status.{name}",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": 5,
        "matchPolicy": "Equivalent",
        "rules": [
            {
                "apiGroups": [kind.resource.group],
                "apiVersions": [kind.resource.version],
                "resources": [f"{kind.resource.plural}/status"],
                "operations": ["UPDATE"],
                "scope": "Namespaced" if kind.resource.namespaced else "Cluster",
            }
            for kind in owned
        ],
        "matchConditions": [
            {
                "name": "not-dbquota",
                "expression": f"request.userInfo.username != {json.dumps(user)}",
            }
        ],
        "clientConfig": client,
    }


async def _serve(
    cfg: settings_.Settings, memo: kopf.Memo, stop: asyncio.Event, probes: Probes
) -> None:
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
        enabled = registry.enabled(cfg.enforcement.claim_kinds)
        await served(kube, enabled, namespace=cfg.namespace)
        label = cfg.enforcement.claim_namespace_label
        informers = {
            kind.name: Informer(
                kube,
                of_kind(kind.resource),
                derive=reservations.deriver(kind, namespace_label=label),
                namespace=cfg.namespace if kind.resource.namespaced else "",
            )
            for kind in enabled
        }
        claim_index = inventory.ClaimIndex(list(informers.values()))
        claim_informer = informers.get(registry.CLAIMS_NAME)
        leases = leasing.LeaseWatch(kube, namespace=cfg.leases.namespace, timing=timing)
        runtime: runtime_.Runtime | None = None
        liveness = leasing.Liveness(
            kube,
            namespace=cfg.leases.namespace,
            holder=holder,
            timing=timing,
            health=lambda: (runtime.own_billing() if runtime else ingestor.snapshot()).health,
        )

        def leading() -> bool:
            return runtime is not None and runtime.leading()

        ledgers = admitting.Ledgers(
            kube,
            snapshot=ingestor.snapshot,
            share=cfg.enforcement.escrow_share,
            holder=holder,
            alive=liveness.alive,
            live=leases.live,
            in_flight_limit=cfg.enforcement.max_reservations or None,
            present=claim_index.by_uid,
            leading=leading,
        )
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
            claim_informer=claim_index,
            ledgers=ledgers,
            admission=admitting.Admission(
                ledgers=ledgers,
                quotas=quota_informer,
                no_quota=cfg.enforcement.no_quota,
                namespace_label=label,
                live=lookups.LiveQuotas(kube, scope=cfg.namespace),
            ),
            reconciler=reconciling.Reconciler(
                kube=kube,
                events=events,
                quotas=quota_informer,
                claims=claim_index,
                shared=claim_index.shared,
                snapshot=lambda: runtime.billing_snapshot() if runtime else ingestor.snapshot(),
                clock=time.time,
                grace=cfg.enforcement.reservation_grace,
                leading=leading,
                live=leases.live,
                next_lapse=leases.next_lapse,
                claims_current=lambda: claim_index.current,
                deleted=lambda namespace: runtime.recently_deleted(namespace) if runtime else set(),
                unwritten=ledgers.unwritten,
            ),
            publisher=None
            if claim_informer is None
            else publishing.Publisher(
                kube=kube,
                claims=claim_informer,
                quotas=quota_informer,
                snapshot=ingestor.snapshot,
                leading=leading,
                on_published=lambda namespace: (
                    runtime.reconciler.mark_namespace(namespace) if runtime else None
                ),
                admitted_here=ledgers.admitted_here,
            ),
            announcer=None
            if all(kind.owned for kind in enabled)
            else announcing.Announcer(
                events=events,
                claims=claim_index,
                quotas=quota_informer,
                enabled={kind.name: kind for kind in enabled},
                leading=leading,
            ),
            liveness=liveness,
            leases=leases,
            election=election,
        )
        runtime.wire()
        stack.callback(leases.close)
        supervisor = supervising.Supervisor()  # each loop restarted if it dies: _supervise
        tasks = [
            supervisor.spawn("quota watch", quota_informer.run),
            *(
                supervisor.spawn(f"{name} watch", informer.run)
                for name, informer in informers.items()
            ),
            supervisor.spawn("lease watch", leases.informer.run),
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
        stack.push_async_callback(_cancel, _workers(runtime, supervisor))
        probes.check = lambda: (
            None
            if ingestor.ready and quota_informer.synced.is_set()
            else "the billing cache is not warm yet, or the quota watch has not listed"
        )
        probes.health = supervisor.problem
        stack.callback(setattr, probes, "check", None)
        stack.callback(setattr, probes, "health", None)
        # Entered last, left first: no review is in flight when the ledgers flush and close.
        own_user = await _own_user(kube)
        port = await stack.enter_async_context(
            webhook.serving(
                cfg.webhook,
                admit=admit_claims(runtime, enabled),
                kinds=frozenset(registry.by_group_kind(enabled)),
                owned=frozenset(registry.by_group_kind(k for k in enabled if k.owned)),
                own_user=own_user,
            )
        )
        if cfg.webhook.dev and cfg.webhook.configuration_name:
            await register_dev_webhook(
                kube, cfg.webhook, port=port, enabled=enabled, own_user=own_user
            )
        memo["runtime"] = runtime
        _freeze_heap()
        await stop.wait()
        del memo["runtime"]


async def served(kube: Kube, enabled: tuple[kinds.Kind, ...], *, namespace: str = "") -> None:
    """Check that the apiserver serves every enabled kind (one object listed of each):
    a kind whose CRD is not installed fails start-up with :class:`ConfigurationError`
    naming it, retried every few seconds (``/readyz`` says why), rather than a watch that
    never lists and a reconciler that can never conclude anything from its objects."""
    for kind in enabled:
        resource = of_kind(kind.resource)
        where = namespace if resource.namespaced else ""
        try:
            await kube.request(
                "GET",
                resource.path(where),
                what=f"list {resource.plural}.{resource.group}",
                query={"limit": "1"},
            )
        except NotFound:
            raise ConfigurationError(
                f"--claim-kinds enables {kind.name}, but the apiserver does not serve "
                f"{resource.plural}.{resource.group}/{resource.version}: install its CRD "
                "first, or leave it out of --claim-kinds"
            ) from None


def _workers(
    runtime: runtime_.Runtime, supervisor: supervising.Supervisor
) -> list[asyncio.Task[None]]:
    """Start the reconciler and the claim status publisher, each kept running by
    ``supervisor``: one that dies of a bug is logged and started again with a backoff.

    Both are safe to restart: what they work through lives on their objects (the dirty
    quotas, the claims ready to be written), not in the loop; the loop only takes the
    next piece. What a dying loop had taken and not handled yet is rebuilt before the
    restart, as when this replica becomes the leader: every quota is marked, every claim
    without its price looked at again. The watches (:func:`_serve`) need nothing: a
    restarted watch lists again.
    """
    reconciler, publisher = runtime.reconciler, runtime.publisher
    workers = [supervisor.spawn("reconciler", reconciler.run, on_restart=reconciler.mark_all)]
    if publisher is not None:
        workers.append(
            supervisor.spawn("claim status publisher", publisher.run, on_restart=publisher.resync)
        )
    return workers


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


class Probes:
    """``/metrics``, ``/healthz`` and ``/readyz`` for the whole life of the process.

    They are served from the first start-up attempt on, so that while start-up fails and
    is retried (the apiserver unreachable, say) the kubelet's liveness probe passes and
    ``/readyz`` says why the replica is not ready, instead of nothing answering at all.
    """

    def __init__(self) -> None:
        self.problem: str | None = "starting"
        self.check: Callable[[], str | None] | None = None
        self.health: Callable[[], str | None] | None = None
        """Why the running operator needs a restart (a loop that keeps dying), or None."""
        self.stopping = False
        """Told to stop (:class:`Shutdown`): not ready from then on, whatever else holds."""
        self._stack = contextlib.AsyncExitStack()
        self._started = False

    def not_ready(self) -> str | None:
        """Why the replica is not ready, or None when it is."""
        if self.stopping:
            return "stopping"
        if self.problem is not None:
            return self.problem
        return "starting" if self.check is None else self.check()

    def not_alive(self) -> str | None:
        """Why the process should be restarted (``/healthz`` fails), or None. Never while
        start-up is retried: a new process would retry the same way."""
        return None if self.health is None else self.health()

    async def start(self, port: int) -> None:
        """Serve the probes on ``port`` (0: not at all), once."""
        if self._started or not port:
            return
        self._started = True
        bound = await self._stack.enter_async_context(
            metrics.serve_probes(port, ready=self.not_ready, alive=self.not_alive)
        )
        logger.info("serving /metrics, /healthz and /readyz on port %d", bound)

    async def stop(self) -> None:
        """Stop serving them."""
        await self._stack.aclose()


STARTUP_RETRY = 5.0
"""Seconds between two start-up attempts that failed for a reason dbquota knows (the
apiserver unreachable, a setting that cannot work): one line in the log each time."""
STOP_PATIENCE = 20.0
"""Most seconds the running operator gets to close in order on SIGTERM (write what it
admitted from escrow, give the escrow back, release its Leases) before it is cut short,
counted after ``--shutdown-delay``: the chart's terminationGracePeriodSeconds must cover
the delay, this and the 5 s after cutting short."""


class Shutdown:
    """What SIGTERM and SIGINT do: not ready at once, ``delay`` seconds more serving, then
    ``flag`` (kopf's ``stop_flag``) is set, and kopf stops and runs the clean-up.

    Why wait: a stopping pod leaves the webhook Service's endpoints only after the kubelet,
    the endpoints controller and kube-proxy (or the apiserver's own service resolution)
    have caught up, a second or a few. Meanwhile the apiserver still sends new webhook
    connections here; had the webhook stopped listening, each would be refused, and under
    ``failurePolicy: Fail`` so would a user's create, on every rollout and drain. The image
    has no shell for a ``preStop: exec: sleep``, and ``lifecycle.preStop.sleep`` needs
    Kubernetes 1.30: so the process waits itself, as Go servers' shutdown delay does.

    During the delay everything goes on as before: the webhook accepts connections and
    admits, kopf runs its handlers, and the replica keeps its liveness Lease (others must
    count its escrow while it may admit from it) and, if it leads, its leadership, so
    nothing changes hands while it still admits. Then the shutdown runs unchanged: the
    webhook stops (GOAWAY), the ledgers write what was admitted and give the escrow back,
    the Leases are released. Without the webhook serving (start-up not finished) nothing
    is to be drained and the stop is immediate, as it is with a delay of 0.

    A second signal during the delay skips the rest of it: a process told to stop always
    stops. Any later one is only logged: kopf's own handlers, replaced here, set a future
    that is already set, which logged a traceback.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, probes: Probes, *, delay: float, serving: Callable[[], bool]) -> None:
        self.probes = probes
        self.delay = delay
        self.serving = serving
        self.flag: asyncio.Future[signal.Signals] = asyncio.get_running_loop().create_future()
        self._delaying: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Take SIGINT and SIGTERM over from kopf: call after ``kopf.spawn_tasks``, which
        installs kopf's own handlers (a loop keeps one handler per signal)."""
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self.signalled, signum)

    def uninstall(self) -> None:
        """Leave the signals and any pending end of the delay, once kopf has stopped."""
        if self._delaying is not None:
            self._delaying.cancel()
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.remove_signal_handler(signum)

    def signalled(self, signum: signal.Signals) -> None:
        """A signal to stop: the first starts the delay (or stops at once), a second
        during the delay stops at once, any later one is only logged."""
        if self.flag.done():
            logger.info("%s received: already stopping", signum.name)
            return
        if self._delaying is not None:
            self._delaying.cancel()
            logger.info("%s received again: stopping without the rest of the delay", signum.name)
            self.flag.set_result(signum)
            return
        self.probes.stopping = True
        if self.delay <= 0 or not self.serving():
            self.flag.set_result(signum)
            return
        logger.info(
            "%s received: not ready; serving the webhook %gs more (--shutdown-delay) while "
            "the Service stops sending here",
            signum.name,
            self.delay,
        )
        self._delaying = asyncio.get_running_loop().call_later(self.delay, self._stop, signum)

    def _stop(self, signum: signal.Signals) -> None:
        if not self.flag.done():
            self.flag.set_result(signum)


def run(cfg: settings_.Settings) -> None:
    """Run the operator until SIGINT/SIGTERM, and ``--shutdown-delay`` after (:class:`Shutdown`)."""
    quotas.register_timer(cfg.enforcement.resync_interval)
    stop = asyncio.Event()
    serving: list[asyncio.Task[None]] = []  # at most one: the current attempt
    probes = Probes()

    @kopf.on.startup()
    async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        await probes.start(cfg.metrics_port)
        if not serving or serving[0].done():  # a retry after a failed attempt starts anew
            serving[:] = [
                asyncio.create_task(_serve(cfg, memo, stop, probes), name="dbquota runtime")
            ]
        task = serving[0]
        while "runtime" not in memo:  # fail start-up if building the runtime fails
            if task.done():
                failure = task.exception()
                if isinstance(failure, DbquotaError):  # ours: one line, retried soon
                    probes.problem = f"start-up failed, retrying: {failure}"
                    raise kopf.TemporaryError(str(failure), delay=STARTUP_RETRY)
                task.result()
            await asyncio.sleep(0.05)
        probes.problem = None

    @kopf.on.cleanup()
    async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
        stop.set()
        task = serving[0] if serving else None
        if task is not None and not task.done():
            if "runtime" not in memo:  # start-up never finished: nothing to hand over
                task.cancel()
            finished, _pending = await asyncio.wait({task}, timeout=STOP_PATIENCE)
            if not finished:
                logger.warning("closing took over %.0fs; cutting it short", STOP_PATIENCE)
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)
        await probes.stop()

    with asyncio.Runner(loop_factory=_loop_factory(cfg.event_loop)) as runner:
        runner.run(_operate(cfg, probes))


async def _operate(cfg: settings_.Settings, probes: Probes) -> None:
    """``kopf.operator`` (it is ``kopf.spawn_tasks``, then ``kopf.run_tasks``), with SIGTERM
    and SIGINT handled by :class:`Shutdown`: kopf stops when its ``stop_flag`` is set."""
    namespaces = [cfg.namespace] if cfg.namespace else []
    memo = kopf.Memo()  # the one kopf hands the start-up and clean-up handlers
    shutdown = Shutdown(probes, delay=cfg.shutdown_delay, serving=lambda: "runtime" in memo)
    existing = asyncio.all_tasks()
    tasks = await kopf.spawn_tasks(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=memo,
        stop_flag=shutdown.flag,
    )
    shutdown.install()
    try:
        await kopf.run_tasks(tasks, ignored=existing)
    finally:
        shutdown.uninstall()


def _loop_factory(kind: settings_.EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop (what ``kopf run`` picks when uvloop is installed), or asyncio's.

    uvloop's TLS and socket handling are compiled: it took the webhook server's own CPU
    per review from 0.31 to 0.25 ms, a few per cent of the whole operator's
    (``bench/README.md``).
    """
    if kind == "uvloop":
        return uvloop.new_event_loop
    return asyncio.new_event_loop
