"""Connecting as kubectl does, and the dry run that returns the apiserver's warnings.

Checks the ``Warning`` header reader (one or several warnings per header, escaped quotes,
a date, a value that does not parse kept whole); the kubeconfig search (``KUBECONFIG``'s
list, missing files skipped); that :func:`connect` takes the current context or the one
asked for, and its namespace (``default`` when it names none), and says what is missing
(an unknown context, no kubeconfig at all). Then, against a small HTTP server standing in
for the apiserver: a dry-run create is a POST with ``dryRun=All`` whose every ``Warning``
header comes back in order; a refusal comes back as an answer with the apiserver's
``Status`` (message, reason), not an error; a dry-run patch is a JSON *merge* patch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dbquota.adapters import kubeconfig
from dbquota.adapters.kube import CLAIMS
from dbquota.errors import KubeError


def test_warning_headers_are_read_as_kubectl_reads_them() -> None:
    assert kubeconfig.warning_texts(
        [
            '299 - "dbquota explain: quota=a verdict=admitted"',
            '299 - "say \\"hi\\" \\\\ o/", 299 - "second"',
            '299 - "dated" "Sat, 01 Jan 2026 00:00:00 GMT"',
            "not a warning header",
        ]
    ) == [
        "dbquota explain: quota=a verdict=admitted",
        'say "hi" \\ o/',
        "second",
        "dated",
        "not a warning header",
    ]


def write_kubeconfig(path: Path, server: str, *, current: str = "one") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "secret"}}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
            {"name": "two", "context": {"cluster": "c", "user": "u"}},
        ],
    }
    path.write_text(json.dumps(config))
    return path


def test_kubeconfig_files_skip_what_does_not_exist(tmp_path: Path) -> None:
    a = write_kubeconfig(tmp_path / "a", "http://127.0.0.1:1")
    found = kubeconfig.kubeconfig_files(f"{tmp_path / 'missing'}:{a}:")
    assert found == [a]


async def test_connect_uses_the_current_context_and_its_namespace(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:1")
    session = await kubeconfig.connect(kubeconfig=str(path), context=None)
    try:
        assert (session.context, session.namespace) == ("one", "team-a")
    finally:
        await session.close()
    session = await kubeconfig.connect(kubeconfig=str(path), context="two")
    try:
        assert (session.context, session.namespace) == ("two", "default")
    finally:
        await session.close()


async def test_connect_says_what_is_missing(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:1")
    with pytest.raises(KubeError, match="cannot use context 'three' of the kubeconfig"):
        await kubeconfig.connect(kubeconfig=str(path), context="three")
    with pytest.raises(KubeError, match=r"no kubeconfig found .* set KUBECONFIG or pass"):
        await kubeconfig.connect(kubeconfig=str(tmp_path / "none"), context=None)


class FakeApiserver:
    """Records requests; answers with ``status``, ``body`` and ``Warning`` headers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 201
        self.body: dict[str, Any] = {}
        self.warnings: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "content_type": request.headers.get("Content-Type", ""),
                "authorization": request.headers.get("Authorization", ""),
                "body": await request.json(),
            }
        )
        response = web.json_response(self.body, status=self.status)
        for warning in self.warnings:
            response.headers.add("Warning", f'299 - "{warning}"')
        return response


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[FakeApiserver, kubeconfig.Session]]:
    server = FakeApiserver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    path = write_kubeconfig(tmp_path / "config", f"http://127.0.0.1:{port}")
    session = await kubeconfig.connect(kubeconfig=str(path), context=None)
    try:
        yield server, session
    finally:
        await session.close()
        await runner.cleanup()


CLAIM = {"apiVersion": "dbquota.io/v1alpha1", "kind": "DatabaseClaim", "metadata": {"name": "c"}}


async def test_a_dry_run_create_returns_every_warning_in_order(
    fake: tuple[FakeApiserver, kubeconfig.Session],
) -> None:
    server, session = fake
    server.body = {**CLAIM, "metadata": {"name": "c", "uid": "u"}}
    server.warnings = ["dbquota explain: quota=a", "dbquota explain: quota=b"]
    answer = await session.dry_run(CLAIMS, namespace="team-a", body=CLAIM)
    assert answer.ok
    assert answer.warnings == ("dbquota explain: quota=a", "dbquota explain: quota=b")
    assert answer.obj["metadata"]["uid"] == "u"
    (request,) = server.requests
    assert (request["method"], request["path"], request["query"]) == (
        "POST",
        "/apis/dbquota.io/v1alpha1/namespaces/team-a/databaseclaims",
        {"dryRun": "All"},
    )
    assert request["authorization"] == "Bearer secret"
    assert request["body"] == CLAIM


async def test_a_refusal_is_an_answer_with_the_apiservers_status(
    fake: tuple[FakeApiserver, kubeconfig.Session],
) -> None:
    server, session = fake
    server.status = 403
    server.body = {"kind": "Status", "reason": "Forbidden", "message": "denied by DatabaseQuota"}
    server.warnings = ["dbquota explain: quota=a verdict=denied"]
    answer = await session.dry_run(CLAIMS, namespace="team-a", body=CLAIM)
    assert not answer.ok
    assert (answer.status, answer.reason, answer.message) == (
        403,
        "Forbidden",
        "denied by DatabaseQuota",
    )
    assert answer.warnings == ("dbquota explain: quota=a verdict=denied",)


async def test_a_dry_run_patch_is_a_merge_patch(
    fake: tuple[FakeApiserver, kubeconfig.Session],
) -> None:
    server, session = fake
    server.status = 200
    await session.dry_run(
        CLAIMS, namespace="team-a", body={"spec": {"storageGiB": 300}}, patch_name="c"
    )
    (request,) = server.requests
    assert (request["method"], request["path"], request["content_type"]) == (
        "PATCH",
        "/apis/dbquota.io/v1alpha1/namespaces/team-a/databaseclaims/c",
        "application/merge-patch+json",
    )
    assert request["query"] == {"dryRun": "All"}


async def test_an_unreachable_apiserver_is_a_kube_error(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:1")
    session = await kubeconfig.connect(kubeconfig=str(path), context=None)
    try:
        with pytest.raises(KubeError, match="dry run of DatabaseClaim team-a/c"):
            await session.dry_run(CLAIMS, namespace="team-a", body=CLAIM)
    finally:
        await session.close()
