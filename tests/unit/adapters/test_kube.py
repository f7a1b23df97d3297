"""The Kubernetes connection's proxy, and the informer's judgement of its own watch.

Checks that ``HTTPS_PROXY`` (with its credentials) applies to the apiserver, that
``NO_PROXY`` exempts it, and that without either there is no proxy. Requests then carry
that proxy explicitly, with the session's ``trust_env`` off (so aiohttp does not read
``~/.netrc`` and the environment again per request).

Then the informer: a watch that delivers nothing for ``WATCH_SILENCE`` stops counting as
current (stalled, not quiet), and is current again when a new watch is accepted or the
stream speaks; bookmarks keep a quiet watch current, are stored as no object, and the next
watch starts from their version; after a 410 or a failed watch it is not current until the
relist is done. And the watch itself,
against a small HTTP server: it says when the apiserver has accepted it, asks for bookmarks,
passes them on, and ends a stream that then goes silent (instead of waiting out a 330 s read
timeout), for the informer to watch again from its version: no list, and current again
once the new watch is accepted.

Last, every failure of a call is a ``KubeError``: credentials that cannot be refreshed (the
token file unreadable) fail a request and a watch as one; and a call given a deadline of its
own (``seconds``) gives up at it, not at the generic 30 s. A list is read a page at a time
and the pages joined, and the informer takes a list in a slice at a time, letting other
tasks run in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from dbquota.adapters import kube
from dbquota.errors import KubeError
from dbquota.kits import steps
from tests.unit import turns


def test_the_apiserver_goes_through_https_proxy_with_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.corp:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxy, auth = kube._env_proxy("https://10.0.0.1:6443")
    assert proxy == "http://proxy.corp:3128"
    assert auth is not None
    assert (auth.login, auth.password) == ("user", "secret")


def test_no_proxy_exempts_the_apiserver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1,.svc")
    assert kube._env_proxy("https://10.0.0.1:6443") == (None, None)


def test_without_proxy_variables_there_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert kube._env_proxy("https://127.0.0.1:6443") == (None, None)


# -- the informer's watch: bookmarks, silence and relists ------------------------------------


class Stream:
    """An apiserver for one informer: lists ``items`` at ``version``; its watch streams what
    the test sends (``send``) and hangs while there is nothing. ``hold_lists`` keeps the
    next lists waiting until set again; ``fail`` makes the watch fail (as on a 500)."""

    def __init__(self, *items: dict[str, Any]) -> None:
        self.items = list(items)
        self.version = "10"
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.lists = 0
        self.watched_from: list[str] = []
        self.hold_lists = asyncio.Event()
        self.hold_lists.set()

    async def list(self, resource: kube.Resource, *, namespace: str = "") -> dict[str, Any]:
        await self.hold_lists.wait()
        self.lists += 1
        return {"items": self.items, "metadata": {"resourceVersion": self.version}}

    async def watch(
        self, resource: kube.Resource, *, namespace: str = "", version: str, seconds: int = 300
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(version)
        while True:
            kind, obj = await self.events.get()
            if kind == "FAIL":
                raise KubeError("watch databaseclaims: HTTP 500 etcdserver: leader changed")
            if kind == "END":  # the server's timeoutSeconds
                return
            yield kind, obj

    def send(self, kind: str, obj: dict[str, Any] | None = None) -> None:
        self.events.put_nowait((kind, obj or {}))


def claim(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


def bookmark(version: str) -> dict[str, Any]:
    return {"kind": "DatabaseClaim", "metadata": {"resourceVersion": version}}


@contextlib.asynccontextmanager
async def running(stream: Stream) -> AsyncIterator[kube.Informer[str]]:
    informer: kube.Informer[str] = kube.Informer(
        stream, kube.CLAIMS, derive=lambda obj: str(obj["metadata"]["name"])
    )
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(5):
            await informer.synced.wait()
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def current(informer: kube.Informer[str]) -> bool:
    """``informer.current``, read afresh (mypy would take one read for all)."""
    return informer.current


@pytest.fixture
def short_silence(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(kube, "WATCH_SILENCE", 0.3)
    return 0.3


async def test_a_silent_watch_stops_being_current_after_the_bound(short_silence: float) -> None:
    stream = Stream(claim("a", "5"))
    async with running(stream) as informer:
        assert current(informer)
        await asyncio.sleep(short_silence / 2)
        assert current(informer)
        await asyncio.sleep(short_silence)  # nothing came: stalled, not quiet
        assert not current(informer)
        assert informer.in_namespace("ns") == ["a"]  # what it shows stays, for readers
        stream.send("END")  # Kube.watch gives up on the silent stream: watched again
        stream.send(kube.OPENED)  # and the apiserver accepts the new watch
        for _ in range(5):
            await asyncio.sleep(0)
        assert current(informer)
        assert stream.watched_from == ["10", "10"]
        assert stream.lists == 1
        await asyncio.sleep(short_silence * 1.2)
        assert not current(informer)
        stream.send("MODIFIED", claim("a", "11"))  # the stream speaks again
        await asyncio.sleep(0)
        assert current(informer)


async def test_bookmarks_keep_a_quiet_watch_current_and_are_no_objects(
    short_silence: float,
) -> None:
    stream = Stream(claim("a", "5"))
    async with running(stream) as informer:
        for version in ("11", "12", "13", "14", "15"):
            await asyncio.sleep(short_silence / 3)
            stream.send("BOOKMARK", bookmark(version))
            await asyncio.sleep(0)
            assert current(informer)
        assert informer.in_namespace("ns") == ["a"]
        assert informer.namespaces() == ["ns"]  # no object in namespace "" from a bookmark
        stream.send("END")  # the server ends the watch: the next starts from the bookmark
        for _ in range(10):
            await asyncio.sleep(0)
        assert stream.watched_from == ["10", "15"]
        assert stream.lists == 1


@pytest.mark.parametrize("how", ["ERROR", "FAIL"])
async def test_a_relist_is_not_current_until_it_is_done(how: str) -> None:
    stream = Stream(claim("a", "5"))
    async with running(stream) as informer:
        assert current(informer)
        stream.hold_lists.clear()
        if how == "ERROR":  # 410 Gone: the watch's version is too old
            stream.send("ERROR", {"kind": "Status", "code": 410, "message": "too old"})
        else:
            stream.send("FAIL")
        for _ in range(5):
            await asyncio.sleep(0)
        assert not current(informer)
        stream.items = [claim("a", "5"), claim("b", "20")]
        stream.version = "20"
        await asyncio.sleep(1.2)  # past the backoff after a failure
        assert not current(informer)  # listing, not listed yet
        stream.hold_lists.set()
        for _ in range(500):
            if current(informer):
                break
            await asyncio.sleep(0.01)
        assert current(informer)
        assert sorted(informer.in_namespace("ns")) == ["a", "b"]
        assert stream.lists == 2


async def test_kube_asks_for_bookmarks_and_ends_a_silent_stream(
    tmp_path: Path, short_silence: float
) -> None:
    queries: list[dict[str, str]] = []
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        response = web.StreamResponse()
        await response.prepare(request)
        line = {"type": "BOOKMARK", "object": bookmark("42")}
        await response.write(json.dumps(line).encode() + b"\n")
        await done.wait()  # then nothing, the connection open: a stalled stream
        return response

    got: list[tuple[str, str]] = []
    async with apiserver(tmp_path, handle) as api:
        try:
            async with asyncio.timeout(5):  # not the 330 s of the read timeout before
                async for kind, obj in api.watch(kube.CLAIMS, version="41"):
                    got.append((kind, obj.get("metadata", {}).get("resourceVersion", "")))
        finally:
            done.set()
    assert got == [(kube.OPENED, ""), ("BOOKMARK", "42")]  # then it ended: watch again
    assert queries[0]["allowWatchBookmarks"] == "true"
    assert queries[0]["resourceVersion"] == "41"


# -- every failure a KubeError; a deadline of the caller's own ------------------------------


async def test_credentials_that_cannot_be_refreshed_fail_the_call_as_a_kube_error() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.api_key["BearerToken"] = "expired"

    def refresh(_: client.Configuration) -> None:  # in a pod: the token file read again
        raise OSError(2, "No such file or directory: /var/run/secrets/.../token")

    configuration.refresh_api_key_hook = refresh
    api = kube.Kube(client.ApiClient(configuration))
    try:
        with pytest.raises(KubeError, match="could not get credentials: FileNotFoundError"):
            await api.get(kube.LEASES, namespace="ns", name="a")
        with pytest.raises(KubeError, match="could not get credentials: FileNotFoundError"):
            async for _ in api.watch(kube.LEASES, namespace="ns", version="1"):
                pass
    finally:
        await api.close()


@contextlib.asynccontextmanager
async def apiserver(
    tmp_path: Path, handle: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> AsyncIterator[kube.Kube]:
    """A Kube connected to a small HTTP server that answers every request with ``handle``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "secret"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    (tmp_path / "config").write_text(json.dumps(config))
    api = await kube.Kube.connect(kubeconfig=str(tmp_path / "config"))
    try:
        yield api
    finally:
        await api.close()
        await runner.shutdown()
        await runner.cleanup()


@pytest.mark.parametrize("verb", ["get", "create", "replace", "delete"])
async def test_a_call_with_a_deadline_of_its_own_gives_up_at_it(tmp_path: Path, verb: str) -> None:
    never = asyncio.Event()

    async def dead(request: web.Request) -> web.StreamResponse:  # a connection gone silent
        await never.wait()
        return web.Response()

    body = {"metadata": {"name": "a"}}
    async with apiserver(tmp_path, dead) as api:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get": lambda: api.get(kube.LEASES, namespace="ns", name="a", seconds=0.1),
            "create": lambda: api.create(kube.LEASES, namespace="ns", body=body, seconds=0.1),
            "replace": lambda: api.replace(
                kube.LEASES, namespace="ns", name="a", body=body, seconds=0.1
            ),
            "delete": lambda: api.delete(kube.LEASES, namespace="ns", name="a", seconds=0.1),
        }
        async with asyncio.timeout(5):  # not the generic 30 s
            with pytest.raises(KubeError, match="Timeout"):
                await calls[verb]()
        never.set()


async def test_a_relist_lets_other_tasks_run_between_slices() -> None:
    """A relist of 10,000 claims in one piece held the event loop 0.4 s: every review
    waited. Taken in a slice at a time, other tasks run between slices."""
    n = steps.SLICE * 4
    stream = Stream(*(claim(f"c{i}", str(i + 1)) for i in range(n)))
    informer: kube.Informer[str] = kube.Informer(
        stream, kube.CLAIMS, derive=lambda obj: str(obj["metadata"]["name"])
    )
    async with turns.counting() as seen:
        await informer._list()
    assert seen.count >= 4  # at least once per slice
    assert len(informer.in_namespace("ns")) == n


async def test_kube_lists_a_page_at_a_time_and_joins_the_pages(tmp_path: Path) -> None:
    queries: list[dict[str, str]] = []
    pages = {
        "": {"items": [claim("a", "1")], "metadata": {"continue": "p2"}},
        "p2": {"items": [claim("b", "2")], "metadata": {"continue": "p3"}},
        "p3": {"items": [claim("c", "3")], "metadata": {"resourceVersion": "30"}},
    }

    async def handle(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        return web.json_response(pages[request.query.get("continue", "")])

    async with apiserver(tmp_path, handle) as api:
        got = await api.list(kube.CLAIMS)
    assert [o["metadata"]["name"] for o in got["items"]] == ["a", "b", "c"]
    assert got["metadata"]["resourceVersion"] == "30"
    assert queries == [
        {"limit": str(kube.LIST_PAGE)},
        {"limit": str(kube.LIST_PAGE), "continue": "p2"},
        {"limit": str(kube.LIST_PAGE), "continue": "p3"},
    ]
