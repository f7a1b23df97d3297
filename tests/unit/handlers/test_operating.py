"""Start-up helpers of ``dbquota run``: registering the dev webhook, kopf's settings.

Checks that dev mode registers one webhook for DatabaseClaim CREATE and UPDATE with
``sideEffects: NoneOnDryRun``, ``failurePolicy: Fail``, the configured timeout, the URL of
the bound port and the dev CA as caBundle, and that a configuration name the apiserver
would refuse fails with a clear error before any call; that kopf's diff base is built
as kopf builds it, without deep-copying the status or the managed fields; and that on
SIGTERM (:class:`~dbquota.handlers.operating.Shutdown`) ``/readyz`` says "stopping" at
once, the webhook goes on accepting connections and answering reviews for the shutdown
delay and stops after it, a second signal skips the rest of the delay and a third is only
logged, there is no delay without one set or before the webhook serves, and the signals
reach it in place of the handlers kopf installed; that the claim status publisher, dead
of a bug, is logged with its traceback, started again and writes; and that ``/healthz``
fails, saying why, while a loop of the running operator keeps dying.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import kopf
import pytest

from dbquota.adapters import metrics
from dbquota.adapters.kube import Kube
from dbquota.domain import reviews
from dbquota.errors import ConfigurationError
from dbquota.handlers import operating, webhook, webhook_tls
from dbquota.kits import supervising
from dbquota.kits.clock import FakeClock
from dbquota.settings import WebhookSettings
from tests.unit.handlers.test_webhook import KINDS, Admitter, client_context, review, wait_until
from tests.unit.handlers.test_webhook import settings as webhook_settings
from tests.unit.services import test_publishing as publishing_tests


class RecordingKube:
    """Stands in for the Kubernetes adapter: keeps what would be applied."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    async def apply_validating_webhook_configuration(self, body: dict[str, Any]) -> None:
        self.applied.append(body)


async def test_dev_mode_registers_a_webhook_for_claims_and_one_for_their_status(
    tmp_path: Path,
) -> None:
    ca, _, _ = webhook_tls.ensure_dev_certificates(cert_dir=tmp_path, host="127.0.0.1")
    cfg = WebhookSettings(dev=True, cert_dir=tmp_path, configuration_name="e2e.dbquota.io")
    kube = RecordingKube()
    user = 'kubernetes-admin "of" e2e'
    await operating.register_dev_webhook(cast(Kube, kube), cfg, port=12345, own_user=user)
    (body,) = kube.applied
    assert body["metadata"]["name"] == "e2e.dbquota.io"
    hook, status = body["webhooks"]
    assert hook["name"] == "validate-claims.e2e.dbquota.io"
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 10
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [
        {
            "apiGroups": ["dbquota.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["databaseclaims"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:12345/validate-claims"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca.read_bytes()
    assert status["name"] == "claim-status.e2e.dbquota.io"
    assert (status["sideEffects"], status["failurePolicy"]) == ("None", "Fail")
    assert [(r["resources"], r["operations"]) for r in status["rules"]] == [
        (["databaseclaims/status"], ["UPDATE"])
    ]
    # dbquota's own writes never reach it; the name is quoted as a CEL string
    assert status["matchConditions"] == [
        {
            "name": "not-dbquota",
            "expression": 'request.userInfo.username != "kubernetes-admin \\"of\\" e2e"',
        }
    ]
    assert status["clientConfig"] == hook["clientConfig"]


async def test_without_its_own_user_dev_mode_leaves_the_status_unguarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    webhook_tls.ensure_dev_certificates(cert_dir=tmp_path, host="127.0.0.1")
    cfg = WebhookSettings(dev=True, cert_dir=tmp_path, configuration_name="e2e.dbquota.io")
    kube = RecordingKube()
    await operating.register_dev_webhook(cast(Kube, kube), cfg, port=1, own_user="")
    assert [hook["name"] for hook in kube.applied[0]["webhooks"]] == [
        "validate-claims.e2e.dbquota.io"
    ]
    assert "claims' status left unguarded" in caplog.text


async def test_a_configuration_name_without_a_dot_is_refused(tmp_path: Path) -> None:
    cfg = WebhookSettings(dev=True, cert_dir=tmp_path, configuration_name="dbquota")
    kube = RecordingKube()
    with pytest.raises(ConfigurationError, match="must be a domain name"):
        await operating.register_dev_webhook(cast(Kube, kube), cfg, port=1, own_user="me")
    assert kube.applied == []


class Uncopyable(dict[str, Any]):
    """A stanza that fails the test if anything deep-copies it."""

    def __deepcopy__(self, memo: object) -> Uncopyable:
        raise AssertionError("the status was deep-copied")


def test_kopfs_diff_base_is_built_without_copying_the_status_or_managed_fields() -> None:
    raw: dict[str, Any] = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {
            "name": "q",
            "namespace": "ns",
            "labels": {"team": "a"},
            "annotations": {"note": "kept", "dbquota.io/last-handled-configuration": "{}"},
            "managedFields": Uncopyable(entries=[{"manager": f"m{i}"} for i in range(50)]),
            "resourceVersion": "7",
        },
        "spec": {"monthlyBudget": 100},
        "status": Uncopyable(reservations=[{"uid": f"u{i}"} for i in range(500)]),
    }
    ours = operating.DiffBase(prefix="dbquota.io", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="dbquota.io", key="last-handled-configuration")
    essence = ours.build(body=kopf.Body(cast(kopf.RawBody, raw)))
    metadata = {**raw["metadata"], "managedFields": dict(raw["metadata"]["managedFields"])}
    plain = {**raw, "metadata": metadata, "status": dict(raw["status"])}
    assert essence == kopfs.build(body=kopf.Body(cast(kopf.RawBody, plain)))
    assert "status" not in essence
    # What kopf passes for DatabaseQuota, whose on.update handler watches the spec.
    for spec in (["spec"], [("spec",)], [("spec", "monthlyBudget")]):
        essence = ours.build(body=kopf.Body(cast(kopf.RawBody, raw)), extra_fields=spec)
        expected = kopfs.build(body=kopf.Body(cast(kopf.RawBody, plain)), extra_fields=spec)
        assert essence == expected
    # A handler that watches a status field still gets it, from the whole object.
    fields = ["status.reservations"]
    watched = ours.build(body=kopf.Body(cast(kopf.RawBody, plain)), extra_fields=fields)
    assert watched == kopfs.build(body=kopf.Body(cast(kopf.RawBody, plain)), extra_fields=fields)
    assert len(watched["status"]["reservations"]) == 500


def ready_probes() -> operating.Probes:
    """Probes of a replica that has started and is ready."""
    probes = operating.Probes()
    probes.problem = None
    probes.check = lambda: None
    return probes


async def test_on_sigterm_not_ready_first_the_webhook_serves_through_the_delay_then_stops(
    tmp_path: Path,
) -> None:
    admitter = Admitter(answer=reviews.Answer(allowed=True))
    probes = ready_probes()
    shutdown = operating.Shutdown(probes, delay=0.5, serving=lambda: True)
    ports: list[int] = []

    async def replica() -> None:
        """The webhook until kopf is told to stop: its clean-up then stops the webhook first."""
        cfg = webhook_settings(tmp_path)
        async with webhook.serving(cfg, admit=admitter, kinds=KINDS) as port:
            ports.append(port)
            await shutdown.flag

    loop = asyncio.get_running_loop()
    running = asyncio.create_task(replica())
    await wait_until(lambda: bool(ports))
    url = f"https://127.0.0.1:{ports[0]}{webhook.PATH}"
    async with (
        metrics.serve_probes(0, ready=probes.not_ready, host="127.0.0.1") as probe_port,
        httpx.AsyncClient(timeout=5) as plain,
    ):
        readyz = f"http://127.0.0.1:{probe_port}/readyz"
        assert (await plain.get(readyz)).status_code == 200
        shutdown.signalled(signal.SIGTERM)
        signalled = loop.time()
        answer = await plain.get(readyz)
        assert (answer.status_code, answer.text) == (503, "not ready: stopping\n")
    # During the delay a new connection is accepted and its review answered as before.
    async with httpx.AsyncClient(verify=client_context(tmp_path), timeout=5) as fresh:
        answer = await fresh.post(url, content=review())
    assert answer.status_code == 200
    assert answer.json()["response"]["allowed"] is True
    assert admitter.seen is not None
    assert not shutdown.flag.done()
    assert not running.done()
    assert await asyncio.wait_for(shutdown.flag, timeout=5) == signal.SIGTERM
    assert loop.time() - signalled >= 0.45  # the delay (the loop's clock is coarse)
    await asyncio.wait_for(running, timeout=10)
    async with httpx.AsyncClient(verify=client_context(tmp_path), timeout=5) as late:
        with pytest.raises(httpx.ConnectError):
            await late.post(url, content=review())


async def test_a_second_signal_skips_the_rest_of_the_delay_and_a_third_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=operating.logger.name)
    shutdown = operating.Shutdown(ready_probes(), delay=60, serving=lambda: True)
    shutdown.signalled(signal.SIGTERM)
    await asyncio.sleep(0.05)
    assert not shutdown.flag.done()
    shutdown.signalled(signal.SIGINT)
    assert shutdown.flag.done()
    assert shutdown.flag.result() == signal.SIGINT
    shutdown.signalled(signal.SIGTERM)  # kopf's handler raised here (a future set twice)
    assert "serving the webhook 60s more" in caplog.text
    assert "SIGINT received again: stopping without the rest of the delay" in caplog.text
    assert "SIGTERM received: already stopping" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(("delay", "serving"), [(0.0, True), (5.0, False)])
async def test_without_a_delay_or_before_the_webhook_serves_the_stop_is_at_once(
    delay: float, serving: bool
) -> None:
    probes = operating.Probes()  # start-up under way: "starting"
    shutdown = operating.Shutdown(probes, delay=delay, serving=lambda: serving)
    shutdown.signalled(signal.SIGTERM)
    assert shutdown.flag.done()
    assert probes.not_ready() == "stopping"
    probes.problem, probes.check = None, lambda: None  # a start-up finishing late
    assert probes.not_ready() == "stopping"


async def test_signals_reach_the_shutdown_in_place_of_kopfs_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=operating.logger.name)
    loop = asyncio.get_running_loop()
    kopfs: asyncio.Future[signal.Signals] = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, kopfs.set_result, signal.SIGTERM)  # as kopf does
    shutdown = operating.Shutdown(ready_probes(), delay=60, serving=lambda: True)
    shutdown.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until(lambda: shutdown.probes.stopping)
        assert not shutdown.flag.done()  # the delay
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(shutdown.flag, timeout=5) == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
        await wait_until(lambda: "SIGINT received: already stopping" in caplog.text)
    finally:
        shutdown.uninstall()
    assert not kopfs.done()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_publisher_dead_of_a_bug_is_logged_started_again_and_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The claim status publisher raising once (a bug in its recheck) used to end its task
    for good with nothing logged: no claim got its price again, and the probes stayed
    green. Started by :func:`operating._workers`, it is logged with its traceback and
    started again, and the claim waiting for its price gets it."""
    world = publishing_tests.World()
    recheck = world.publisher._recheck
    calls = [0]

    def buggy(now: float) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise KeyError("a bug")
        recheck(now)

    world.publisher._recheck = buggy  # type: ignore[method-assign]
    world.quotas.put(publishing_tests.quota("q", publishing_tests.hold("a", 40.0)))
    world.claims.put(publishing_tests.claim("a"))
    reconciler = SimpleNamespace(run=asyncio.Event().wait, mark_all=lambda: None)
    glue = cast(Any, SimpleNamespace(reconciler=reconciler, publisher=world.publisher))
    supervisor = supervising.Supervisor(backoff=supervising.Backoff(initial=0.01))
    workers = operating._workers(glue, supervisor)
    try:
        await wait_until(lambda: bool(world.api.written))
    finally:
        await operating._cancel(workers)
    assert [name for name, _ in world.api.written] == ["a"]
    (failed,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed.getMessage().startswith("claim status publisher failed; starting it again")
    assert failed.exc_info is not None
    assert isinstance(failed.exc_info[1], KeyError)
    assert supervisor.problem() is None  # stopped on purpose: nothing to report


async def test_healthz_fails_while_a_loop_of_the_running_operator_keeps_dying() -> None:
    """``/healthz`` always answered "ok", so a replica whose loops were dead lived on.
    It says why once a supervised loop keeps failing (the kubelet then restarts the
    container), and passes during start-up and again once the loop runs."""
    clock = FakeClock()
    backoff = supervising.Backoff(give_up=2, stable=60.0)
    supervisor = supervising.Supervisor(backoff=backoff, clock=clock)
    failing = [True]

    async def watch() -> None:
        if failing[0]:
            raise OSError("no")
        await asyncio.Event().wait()

    probes = ready_probes()
    task = supervisor.spawn("quota watch", watch)
    async with (
        metrics.serve_probes(
            0, ready=probes.not_ready, alive=probes.not_alive, host="127.0.0.1"
        ) as port,
        httpx.AsyncClient(timeout=5) as plain,
    ):
        healthz = f"http://127.0.0.1:{port}/healthz"
        await wait_until(lambda: clock.sleepers == 1)
        clock.advance(1.0)
        await wait_until(lambda: supervisor.problem() is not None)
        assert (await plain.get(healthz)).status_code == 200  # start-up: no health check yet
        probes.health = supervisor.problem  # what _serve sets
        answer = await plain.get(healthz)
        assert (answer.status_code, answer.text) == (
            503,
            "unhealthy: quota watch failed 2 times in a row\n",
        )
        failing[0] = False
        clock.advance(2.0)
        await wait_until(lambda: clock.sleepers == 0)
        clock.advance(60.0)
        assert (await plain.get(healthz)).status_code == 200
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
