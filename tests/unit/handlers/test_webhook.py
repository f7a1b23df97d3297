"""The webhook server, in process, over real TLS sockets, with a stand-in ``admit``.

Checks that a review of a handled kind is answered with what ``admit`` says (status code,
message, warnings, the request's uid); that other operations and kinds are admitted
without asking it; that junk bodies get 400 with the fixed message, oversized ones 413,
other paths 404 and methods 405, unparsable HTTP 400 and a body that never arrives 408,
each counted by reason and logged as one WARNING line without traceback, at most one per
second with the count of the unlogged ones; that pipelined requests are answered in order
and the apiserver's ``?timeout=`` query is accepted; that ``Expect: 100-continue`` is
answered; that a
client that reads no answers is read no more, then cut off (as is one whose connection
never finishes closing), and a request head that never ends gets 431; that an
exception in ``admit`` denies with a fixed message and is logged once with its traceback;
that TLS 1.2 is the minimum (1.2 and 1.3 are served); that new certificate files are
served to new connections without a restart; that with a client CA a client without a
certificate, or with one another CA signed, gets no HTTP answer, one with a certificate
of that CA is served, and ``--webhook-client-names`` refuses other names with 403; that
stopping lets a review in flight finish; that a client offering HTTP/2 (as the apiserver
does) gets many reviews answered at once on one connection, the same refusals, and its
reviews in flight finished on stop; that missing certificate files fail at start;
that dev certificates are made once and name the webhook host; and that a connection
whose deadline check raises is aborted, the error logged with its traceback once, and the
deadline sweep goes on for the others; and that a look at the certificate files that
fails unexpectedly is logged, and the looks go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from dbquota.adapters import metrics
from dbquota.domain import reviews
from dbquota.errors import ConfigurationError
from dbquota.handlers import webhook, webhook_h2, webhook_tls
from dbquota.kits import certs
from dbquota.settings import WebhookSettings
from tests.unit.handlers.test_webhook_h2 import Transport

KINDS = {("dbquota.io", "DatabaseClaim")}


def review(operation: str = "CREATE", kind: str = "DatabaseClaim", **request: Any) -> bytes:
    body: dict[str, Any] = {
        "uid": "uid-1",
        "kind": {"group": "dbquota.io", "version": "v1alpha1", "kind": kind},
        "resource": {"group": "dbquota.io", "version": "v1alpha1", "resource": "x"},
        "operation": operation,
        "namespace": "team-a",
        "name": "orders",
        "object": {"metadata": {"name": "orders"}, "spec": {"engine": "postgres"}},
        "oldObject": {"metadata": {"name": "orders"}, "spec": {}},
        **request,
    }
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}
    ).encode()


@dataclass
class Admitter:
    """A stand-in ``admit``: records what it was asked, answers ``answer`` or raises."""

    answer: reviews.Answer
    raises: BaseException | None = None
    delay: float = 0.0
    seen: list[reviews.Review] | None = None
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: int = 0

    async def __call__(self, rev: reviews.Review) -> reviews.Answer:
        self.seen = [*(self.seen or []), rev]
        self.asked.set()
        if self.delay:
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.raises is not None:
            raise self.raises
        return self.answer


def settings(tmp_path: Path, **changes: Any) -> WebhookSettings:
    base = WebhookSettings(
        dev=True, host="127.0.0.1", port=0, cert_dir=tmp_path / "certs", configuration_name=""
    )
    return replace(base, **changes)


def client_context(tmp_path: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


class Served:
    """A running server and an HTTPS client for it."""

    def __init__(self, port: int, client: httpx.AsyncClient) -> None:
        self.url = f"https://127.0.0.1:{port}"
        self.port = port
        self.client = client

    async def post(self, body: bytes, path: str = webhook.PATH) -> httpx.Response:
        return await self.client.post(self.url + path, content=body)


@pytest.fixture
def admitter() -> Admitter:
    return Admitter(answer=reviews.Answer(allowed=True, warnings=("cheap",)))


@pytest.fixture
async def served(tmp_path: Path, admitter: Admitter) -> AsyncIterator[Served]:
    async with (
        webhook.serving(settings(tmp_path), admit=admitter, kinds=KINDS) as port,
        httpx.AsyncClient(verify=client_context(tmp_path), timeout=10) as client,
    ):
        yield Served(port, client)


def rejected(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "dbquota_webhook_rejected_requests_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_handled_review_gets_admits_answer(served: Served, admitter: Admitter) -> None:
    answer = await served.post(review())
    assert answer.status_code == 200
    assert answer.json() == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "uid-1", "allowed": True, "warnings": ["cheap"]},
    }
    assert admitter.seen is not None
    assert admitter.seen[0].request.object_name == "orders"


async def test_a_denial_carries_its_code_and_message(served: Served, admitter: Admitter) -> None:
    admitter.answer = reviews.Answer(allowed=False, message="over budget", code=403)
    response = (await served.post(review(operation="UPDATE"))).json()["response"]
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "message": "over budget", "reason": "Forbidden"}


@pytest.mark.parametrize(
    "body",
    [
        review(operation="DELETE", object=None),
        review(operation="CONNECT"),
        review(kind="Pod"),
    ],
    ids=["delete", "connect", "another-kind"],
)
async def test_other_operations_and_kinds_are_admitted_without_asking(
    served: Served, admitter: Admitter, body: bytes
) -> None:
    answer = await served.post(body)
    assert answer.status_code == 200
    assert answer.json()["response"] == {"uid": "uid-1", "allowed": True}
    assert admitter.seen is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", "malformed AdmissionReview: apiVersion missing"),
        (b"null", "malformed AdmissionReview: the body must be a JSON object"),
        (b"[" * 50_000, "malformed AdmissionReview: the body must be a JSON object"),
        (review(uid=""), "malformed AdmissionReview: request.uid must be a non-empty string"),
        (review(object="x"), "malformed AdmissionReview: request.object must be an object"),
    ],
)
async def test_junk_gets_400_with_the_fixed_message(
    served: Served, body: bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = rejected("malformed")
    with caplog.at_level(logging.INFO, logger="dbquota"):
        answer = await served.post(body)
    assert answer.status_code == 400
    assert answer.text.startswith(message)
    assert rejected("malformed") == before + 1
    assert all(r.exc_info is None for r in caplog.records)
    assert all(r.levelno <= logging.WARNING for r in caplog.records)


async def test_wrong_path_method_and_size_get_404_405_413(served: Served) -> None:
    counts = {reason: rejected(reason) for reason in ("path", "method", "too_large")}
    assert (await served.post(review(), path="/mutate")).status_code == 404
    assert (await served.client.get(served.url + webhook.PATH)).status_code == 405
    big = b" " * (webhook.MAX_BODY + 1)
    assert (await served.post(big)).status_code == 413
    for reason, before in counts.items():
        assert rejected(reason) == before + 1


async def test_a_chunked_body_over_the_limit_gets_413(served: Served) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (1024 * 1024)

    answer = await served.client.post(served.url + webhook.PATH, content=chunks())
    assert answer.status_code == 413


async def test_an_exception_in_admit_denies_with_a_fixed_message_logged_once(
    served: Served, admitter: Admitter, caplog: pytest.LogCaptureFixture
) -> None:
    admitter.raises = TypeError("'NoneType' object is not iterable")
    with caplog.at_level(logging.INFO, logger="dbquota"):
        answer = await served.post(review())
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["allowed"] is False
    assert response["status"]["message"] == "internal error; see the operator log"
    assert "NoneType" not in answer.text
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None


async def exchange(port: int, ctx: ssl.SSLContext, data: bytes) -> bytes:
    """Write raw bytes on a fresh TLS connection; everything read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(-1), timeout=30)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def post(body: bytes, *, target: bytes = b"/validate-claims", extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (target, len(body), extra, body)
    )


async def test_pipelined_requests_are_answered_in_order_with_the_apiservers_query(
    served: Served, tmp_path: Path
) -> None:
    requests = (
        post(review(uid="first"), target=b"/validate-claims?timeout=10s")
        + post(b"{}")
        + post(review(uid="last"), extra=b"Connection: close\r\n")
    )
    answers = await exchange(served.port, client_context(tmp_path), requests)
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", answers)
    assert statuses == [b"200", b"400", b"200"]
    assert answers.index(b'"uid":"first"') < answers.index(b"malformed") < answers.index(b"last")


async def test_a_review_whose_client_closes_the_connection_has_its_admission_cancelled(
    served: Served, admitter: Admitter, tmp_path: Path
) -> None:
    """Over HTTP/1.1 the apiserver closes the connection at its webhook timeout."""
    before = metrics.REGISTRY.get_sample_value("dbquota_webhook_abandoned_reviews_total") or 0
    admitter.delay = 60.0
    _, writer = await asyncio.open_connection(
        "127.0.0.1", served.port, ssl=client_context(tmp_path)
    )
    writer.write(post(review(), target=b"/validate-claims?timeout=10s"))
    await asyncio.wait_for(admitter.asked.wait(), 10)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    await wait_until(lambda: admitter.cancelled == 1)
    abandoned = metrics.REGISTRY.get_sample_value("dbquota_webhook_abandoned_reviews_total")
    assert abandoned == before + 1
    admitter.delay = 0.0  # the server still answers the next client
    assert (await served.post(review())).status_code == 200


async def test_unparsable_http_gets_400_and_the_connection_closes(
    served: Served, tmp_path: Path
) -> None:
    before = rejected("http")
    answer = await exchange(served.port, client_context(tmp_path), b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert rejected("http") == before + 1


async def test_past_its_age_an_http1_connection_closes_after_its_next_answer(
    tmp_path: Path, admitter: Admitter
) -> None:
    cfg = settings(tmp_path, max_connection_age=1.0)
    async with webhook.serving(cfg, admit=admitter, kinds=KINDS) as port:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(tmp_path)
        )
        try:
            writer.write(post(review(uid="young")))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            length = re.search(rb"Content-Length: (\d+)", head)
            assert length is not None
            await reader.readexactly(int(length.group(1)))
            assert b"Connection: close" not in head  # young: kept alive
            await asyncio.sleep(1.05)
            writer.write(post(review(uid="old")))
            rest = await asyncio.wait_for(reader.read(-1), timeout=10)  # until it closes
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close\r\n" in rest
    assert b'"uid":"old"' in rest


def connection(admitter: Admitter) -> tuple[webhook._Connection, Transport]:
    """An HTTP/1.1 connection of a server with ``admitter``, over a stand-in transport."""
    server = webhook._Webhook(
        admit=admitter, kinds=KINDS, client_names=(), rejections=webhook.Rejections()
    )
    conn, transport = webhook._Connection(server), Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_an_http1_client_that_reads_no_answers_is_read_no_more_then_cut_off(
    admitter: Admitter,
) -> None:
    """Pipelined requests from a client that reads no answer (a 404 is longer than its
    request): past the transport's high-water mark (``pause_writing``) the connection
    reads nothing more until it drains, so its answers cannot pile up without bound; a
    client that takes nothing for SEND_PATIENCE is aborted, counted as stalled, and so is
    one that never lets its connection finish closing."""
    before = rejected("stalled")
    conn, transport = connection(admitter)
    conn.pause_writing()
    assert not transport.is_reading()
    conn.resume_writing()
    assert transport.is_reading()
    now = asyncio.get_running_loop().time()
    conn.pause_writing()
    conn.expire(now + webhook_h2.SEND_PATIENCE - 1)
    assert (transport.is_reading(), transport.aborted) == (False, False)
    conn.expire(now + webhook_h2.SEND_PATIENCE + 1)
    assert (transport.aborted, rejected("stalled")) == (True, before + 1)
    conn, transport = connection(admitter)
    conn.data_received(post(b"{}", target=b"/elsewhere", extra=b"Connection: close\r\n"))
    assert transport.written.startswith(b"HTTP/1.1 404 ")
    assert (transport.closed, transport.aborted) == (True, False)
    conn.expire(now + webhook_h2.SEND_PATIENCE + 1)
    assert transport.aborted


async def test_an_http1_head_that_never_ends_gets_431(admitter: Admitter) -> None:
    """httptools joins one header's pieces as they arrive: without a bound, an endless
    header costs memory and CPU growing as its square until the request's patience."""
    before = rejected("too_large")
    conn, transport = connection(admitter)
    conn.data_received(b"POST /validate-claims HTTP/1.1\r\nX-Long: ")
    for _ in range(2):
        conn.data_received(b"v" * 30_000)
    assert transport.written == b""  # 60,000 bytes: not yet
    conn.data_received(b"v" * 30_000)
    assert transport.written.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert (transport.closed, rejected("too_large")) == (True, before + 1)
    conn, transport = connection(admitter)  # a head that ends in time is read as ever
    conn.data_received(post(b"{}", extra=b"X-Long: " + b"v" * 60_000 + b"\r\n"))
    assert transport.written.startswith(b"HTTP/1.1 400 ")


async def test_a_client_that_expects_100_continue_gets_it(served: Served, tmp_path: Path) -> None:
    request = post(review(), extra=b"Expect: 100-continue\r\nConnection: close\r\n")
    answer = await exchange(served.port, client_context(tmp_path), request)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


async def test_a_body_that_never_arrives_gets_408(
    tmp_path: Path, admitter: Admitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "BODY_PATIENCE", 0.2)
    before = rejected("timeout")
    async with webhook.serving(settings(tmp_path), admit=admitter, kinds=KINDS) as port:
        partial = post(review())[:-10]  # the headers promise more than is sent
        answer = await exchange(port, client_context(tmp_path), partial)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert rejected("timeout") == before + 1
    assert admitter.seen is None


async def test_bodies_past_what_all_connections_may_hold_get_503_until_some_are_let_go(
    tmp_path: Path, admitter: Admitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "MAX_HELD", 100_000)
    padded = review() + b" " * 60_000  # over half of what may be held
    before = rejected("busy")
    async with webhook.serving(settings(tmp_path), admit=admitter, kinds=KINDS) as port:
        ctx = client_context(tmp_path)
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        writer.write(post(padded)[:-10])  # held, never finished
        await writer.drain()
        await asyncio.sleep(0.2)
        answer = await exchange(port, ctx, post(padded))  # would hold 120,000 bytes
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"holds too many request bytes" in answer
        assert rejected("busy") == before + 1
        writer.close()  # its bytes are let go with its connection
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(verify=ctx, timeout=10) as client:
            for _ in range(3):  # and each request's bytes once it is read
                ok = await client.post(f"https://127.0.0.1:{port}{webhook.PATH}", content=padded)
                assert ok.status_code == 200
    assert rejected("busy") == before + 1


def test_refusals_log_one_line_per_interval_with_the_count_of_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    rejections = webhook.Rejections(interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="dbquota"):
        for _ in range(5):
            rejections("malformed", peer="10.0.0.1", detail="400 malformed AdmissionReview")
        now[0] += 1.5
        rejections("path", peer="10.0.0.2", detail="404 not found")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "webhook refused a request from 10.0.0.1: 400 malformed AdmissionReview",
        "webhook refused a request from 10.0.0.2: 404 not found (4 more refused since the "
        "last line)",
    ]


@contextlib.asynccontextmanager
async def tls_server(tls: webhook_tls.Tls) -> AsyncIterator[int]:
    """A TLS listener with ``tls.context`` that closes each connection after its handshake."""
    writers: list[asyncio.StreamWriter] = []

    async def handshaken(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.close()

    server = await asyncio.start_server(handshaken, "127.0.0.1", 0, ssl=tls.context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        for writer in writers:
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def handshake(port: int, ctx: ssl.SSLContext) -> tuple[str, x509.Certificate]:
    """Connect; the TLS version and the certificate the server presented."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    tls = writer.get_extra_info("ssl_object")
    version, der = tls.version(), tls.getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return version, x509.load_der_x509_certificate(der)


async def test_tls_1_2_is_the_minimum(tmp_path: Path) -> None:
    _, cert, key = webhook_tls.ensure_dev_certificates(
        cert_dir=tmp_path / "certs", host="127.0.0.1"
    )
    tls = webhook_tls.Tls(cert=cert, key=key, client_ca=None)
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    async with tls_server(tls) as port:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_context(tmp_path)
            ctx.minimum_version = ctx.maximum_version = version
            assert (await handshake(port, ctx))[0] == version.name.replace("_", ".")


async def test_new_certificate_files_are_served_to_new_connections(tmp_path: Path) -> None:
    cert_dir = tmp_path / "certs"
    ca_path, cert, key = webhook_tls.ensure_dev_certificates(cert_dir=cert_dir, host="127.0.0.1")
    tls = webhook_tls.Tls(cert=cert, key=key, client_ca=None)
    old_ca = ssl.create_default_context(cafile=str(ca_path))
    async with tls_server(tls) as port:
        _, first = await handshake(port, old_ca)
        assert not tls.reload_if_changed()
        ca = certs.new_ca(common_name="ca-2")
        leaf = certs.issue(ca=ca, common_name="renewed", hosts=("127.0.0.1",), server=True)
        cert.write_bytes(leaf.cert_pem)  # caught mid-rotation: the old key does not fit
        assert not tls.reload_if_changed()
        assert (await handshake(port, old_ca))[1] == first  # still served
        leaf.write(cert_path=cert, key_path=key)
        assert tls.reload_if_changed()
        new_ca = ssl.create_default_context(cadata=ca.cert_pem.decode())
        _, renewed = await handshake(port, new_ca)
        assert renewed.subject.rfc4514_string() == "CN=renewed"
        assert tls.reloads == 1


@pytest.fixture
def client_pki(tmp_path: Path) -> Callable[[str], tuple[Path, Path]]:
    """A client CA in ``tmp_path/client-ca.crt`` and a function issuing certificates."""
    ca = certs.new_ca(common_name="webhook-client-ca")
    (tmp_path / "client-ca.crt").write_bytes(ca.cert_pem)

    def issue(name: str) -> tuple[Path, Path]:
        pair = certs.issue(ca=ca, common_name=name, client=True)
        paths = (tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        pair.write(cert_path=paths[0], key_path=paths[1])
        return paths

    return issue


async def test_with_a_client_ca_only_its_certificates_get_an_answer(
    tmp_path: Path, admitter: Admitter, client_pki: Callable[[str], tuple[Path, Path]]
) -> None:
    apiserver = client_pki("kube-apiserver")
    cfg = settings(tmp_path, client_ca=tmp_path / "client-ca.crt")
    async with webhook.serving(cfg, admit=admitter, kinds=KINDS) as port:
        url = f"https://127.0.0.1:{port}{webhook.PATH}"
        async with httpx.AsyncClient(verify=client_context(tmp_path)) as anonymous:
            with pytest.raises(httpx.TransportError):
                await anonymous.post(url, content=review())
        stranger = certs.issue(ca=certs.new_ca(common_name="other"), common_name="x", client=True)
        stranger.write(cert_path=tmp_path / "s.crt", key_path=tmp_path / "s.key")
        ctx = client_context(tmp_path, (tmp_path / "s.crt", tmp_path / "s.key"))
        async with httpx.AsyncClient(verify=ctx) as forged:
            with pytest.raises(httpx.TransportError):
                await forged.post(url, content=review())
        async with httpx.AsyncClient(verify=client_context(tmp_path, apiserver)) as client:
            assert (await client.post(url, content=review())).status_code == 200
    assert admitter.seen is not None
    assert len(admitter.seen) == 1


async def test_client_names_refuse_other_certificates_of_the_ca(
    tmp_path: Path, admitter: Admitter, client_pki: Callable[[str], tuple[Path, Path]]
) -> None:
    cfg = settings(tmp_path, client_ca=tmp_path / "client-ca.crt", client_names=("kube-apiserver",))
    async with webhook.serving(cfg, admit=admitter, kinds=KINDS) as port:
        url = f"https://127.0.0.1:{port}{webhook.PATH}"
        for name, status in (("someone", 403), ("kube-apiserver", 200)):
            ctx = client_context(tmp_path, client_pki(name))
            async with httpx.AsyncClient(verify=ctx) as client:
                assert (await client.post(url, content=review())).status_code == status


async def test_stopping_lets_a_review_in_flight_finish(tmp_path: Path) -> None:
    slow = Admitter(answer=reviews.Answer(allowed=True), delay=0.5)
    async with httpx.AsyncClient(verify=False, timeout=10) as client:
        async with webhook.serving(settings(tmp_path), admit=slow, kinds=KINDS) as port:
            pending = asyncio.create_task(
                client.post(f"https://127.0.0.1:{port}{webhook.PATH}", content=review())
            )
            await slow.asked.wait()
        answer = await pending
    assert answer.status_code == 200
    assert answer.json()["response"]["allowed"] is True


async def test_a_review_cut_off_by_our_own_stop_is_not_counted_as_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "STOP_PATIENCE", 0.2)
    before = metrics.REGISTRY.get_sample_value("dbquota_webhook_abandoned_reviews_total") or 0
    slow = Admitter(answer=reviews.Answer(allowed=True), delay=60.0)
    async with httpx.AsyncClient(verify=False, timeout=10) as client:
        async with webhook.serving(settings(tmp_path), admit=slow, kinds=KINDS) as port:
            pending = asyncio.create_task(
                client.post(f"https://127.0.0.1:{port}{webhook.PATH}", content=review())
            )
            await slow.asked.wait()
        with pytest.raises(httpx.HTTPError):
            await pending
    await wait_until(lambda: slow.cancelled == 1)
    after = metrics.REGISTRY.get_sample_value("dbquota_webhook_abandoned_reviews_total") or 0
    assert after == before


def test_dev_certificates_are_made_once_for_the_host(tmp_path: Path) -> None:
    ca, cert, key = webhook_tls.ensure_dev_certificates(cert_dir=tmp_path, host="10.1.2.3")
    first = cert.read_bytes()
    again = webhook_tls.ensure_dev_certificates(cert_dir=tmp_path, host="10.1.2.3")
    assert again == (ca, cert, key)
    assert cert.read_bytes() == first
    leaf = x509.load_pem_x509_certificate(first)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.1.2.3" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert key.stat().st_mode & 0o077 == 0


async def test_missing_certificate_files_fail_at_start(tmp_path: Path) -> None:
    cfg = settings(tmp_path, dev=False)
    with pytest.raises(ConfigurationError, match="no webhook certificate"):
        async with webhook.serving(cfg, admit=Admitter(reviews.Answer(True)), kinds=KINDS):
            pass


# -- HTTP/2, as the apiserver speaks it when the server offers h2 ------------------------------


@pytest.fixture
async def served_h2(tmp_path: Path, admitter: Admitter) -> AsyncIterator[Served]:
    async with (
        webhook.serving(settings(tmp_path), admit=admitter, kinds=KINDS) as port,
        httpx.AsyncClient(
            verify=client_context(tmp_path), timeout=10, http1=False, http2=True
        ) as client,
    ):
        yield Served(port, client)


async def test_http2_answers_many_reviews_at_once_on_one_connection(
    served_h2: Served, admitter: Admitter
) -> None:
    admitter.delay = 0.2  # every admission in flight at the same time
    bodies = [review(uid=f"uid-{i}") for i in range(200)]
    answers = await asyncio.gather(*(served_h2.post(b) for b in bodies))
    assert {a.http_version for a in answers} == {"HTTP/2"}
    assert [a.json()["response"]["uid"] for a in answers] == [f"uid-{i}" for i in range(200)]
    assert all(a.json()["response"]["allowed"] for a in answers)
    assert len(admitter.seen or []) == 200


async def test_http2_refuses_as_http1_does(served_h2: Served) -> None:
    counts = {reason: rejected(reason) for reason in ("path", "method", "too_large", "malformed")}
    assert (await served_h2.post(review(), path="/mutate")).status_code == 404
    assert (await served_h2.client.get(served_h2.url + webhook.PATH)).status_code == 405
    junk = await served_h2.post(b"{}")
    assert junk.status_code == 400
    assert junk.text.startswith("malformed AdmissionReview: apiVersion missing")
    big = await served_h2.post(b" " * (webhook.MAX_BODY + 1))
    assert big.status_code == 413
    for reason, before in counts.items():
        assert rejected(reason) == before + 1
    # the connection is still good after all of that
    after = await served_h2.post(review())
    assert after.status_code == 200
    assert after.http_version == "HTTP/2"


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - polling a plain attribute
            await asyncio.sleep(0.01)


async def test_stopping_lets_http2_reviews_in_flight_finish(tmp_path: Path) -> None:
    slow = Admitter(answer=reviews.Answer(allowed=True), delay=0.5)
    server = webhook.serving(settings(tmp_path), admit=slow, kinds=KINDS)
    port = await server.__aenter__()
    async with httpx.AsyncClient(
        verify=client_context(tmp_path), timeout=10, http1=False, http2=True
    ) as client:
        url = f"https://127.0.0.1:{port}{webhook.PATH}"
        pending = asyncio.gather(*(client.post(url, content=review()) for _ in range(5)))
        await wait_until(lambda: len(slow.seen or []) == 5)
        await server.__aexit__(None, None, None)  # stop while the five are in flight
        answers = await pending
    assert [a.status_code for a in answers] == [200] * 5


def late() -> float:
    return metrics.REGISTRY.get_sample_value("dbquota_webhook_late_reviews_total") or 0.0


@pytest.mark.parametrize(
    ("target", "within"),
    [
        (b"/validate-claims?timeout=10s", 9.0),
        (b"/validate-claims?timeout=5s", 4.5),
        (b"/validate-claims?timeout=1s", 0.75),
        (b"/validate-claims?timeout=4.2s", 3.78),
        (b"/validate-claims?timeout=1m0s", 54.0),
        (b"/validate-claims?x=1&timeout=300ms", 0.15),
        (b"/validate-claims?timeout=12ms", 0.006),
        (b"/validate-claims", None),
        (b"/validate-claims?timeout=", None),
        (b"/validate-claims?timeout=0s", None),
        (b"/validate-claims?timeout=-3s", None),
        (b"/validate-claims?timeout=soon", None),
        (b"/validate-claims?timeout=\xff", None),
    ],
)
def test_patience_leaves_the_answer_time_to_reach_the_apiserver(
    target: bytes, within: float | None
) -> None:
    got = webhook.patience(target)
    assert got == pytest.approx(within) if within is not None else got is None


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/2"])
async def test_a_review_not_decided_before_the_apiservers_timeout_is_denied_to_try_again(
    tmp_path: Path, admitter: Admitter, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    """Instead of the apiserver giving up (the create failing, or admitted unchecked under
    failurePolicy Ignore), the review gets a denial that says why, and its admission is
    cancelled."""
    admitter.delay = 60.0
    before = late(), metrics.REGISTRY.get_sample_value("dbquota_webhook_abandoned_reviews_total")
    h2 = protocol == "HTTP/2"
    async with (
        webhook.serving(settings(tmp_path), admit=admitter, kinds=KINDS) as port,
        httpx.AsyncClient(
            verify=client_context(tmp_path), timeout=30, http1=not h2, http2=h2
        ) as client,
    ):
        with caplog.at_level(logging.WARNING, logger="dbquota"):
            answer = await client.post(
                f"https://127.0.0.1:{port}{webhook.PATH}?timeout=1s", content=review(uid="u-1")
            )
    assert answer.http_version == protocol
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["uid"] == "u-1"
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 503
    assert status["reason"] == "ServiceUnavailable"
    assert status["message"].startswith("dbquota could not decide now: DatabaseClaim ")
    assert status["message"].endswith("; try again")
    assert admitter.cancelled == 1
    abandoned = metrics.REGISTRY.get_sample_value("dbquota_webhook_abandoned_reviews_total")
    assert (late(), abandoned) == (before[0] + 1, before[1])
    (line,) = [r.getMessage() for r in caplog.records if "late review" in r.getMessage()]
    assert "not decided within 0.75s" in line


async def test_a_timeout_raised_inside_admit_is_a_bug_not_a_late_review(
    served: Served, admitter: Admitter
) -> None:
    admitter.raises = TimeoutError()
    before = late()
    answer = await served.client.post(served.url + webhook.PATH + "?timeout=10s", content=review())
    assert answer.json()["response"]["status"]["code"] == 500
    assert late() == before


@dataclass(eq=False)
class Swept:
    """A connection as the deadline sweep sees it, whose ``expire`` raises ``fail`` times."""

    fail: int = 0
    expired: int = 0
    aborted: bool = False

    def expire(self, now: float) -> None:
        del now
        self.expired += 1
        if self.fail:
            self.fail -= 1
            raise KeyError("a bug")

    def abort(self) -> None:
        self.aborted = True


async def test_a_connection_whose_deadline_check_raises_is_aborted_and_the_sweep_goes_on(
    admitter: Admitter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweep that gives 408s, closes idle connections, cuts off stalled clients and
    ages connections used to die with the first error of one connection, and all of that
    stopped, silently. Such a connection is aborted and the error logged, its traceback
    once however many connections fail the same way; the sweep goes on for the others."""
    monkeypatch.setattr(webhook, "SWEEP_EVERY", 0.01, raising=False)
    server = webhook._Webhook(
        admit=admitter, kinds=KINDS, client_names=(), rejections=webhook.Rejections()
    )
    broken, also_broken, healthy = Swept(fail=1), Swept(fail=1), Swept()
    server.connections.update([broken, also_broken, healthy])  # type: ignore[list-item]
    sweep = asyncio.create_task(webhook._sweep_forever(server))
    try:
        await wait_until(lambda: healthy.expired >= 3)
        assert not sweep.done()
    finally:
        sweep.cancel()
        await asyncio.gather(sweep, return_exceptions=True)
    assert (broken.aborted, also_broken.aborted, healthy.aborted) == (True, True, False)
    assert broken.expired >= 3  # still swept (a real one leaves the set once closed)
    logged = [r for r in caplog.records if r.name == webhook.logger.name]
    assert [(r.levelno, r.exc_info is not None) for r in logged] == [
        (logging.ERROR, True),
        (logging.WARNING, False),
    ]
    assert logged[0].getMessage().startswith("checking a webhook connection's deadlines")


async def test_a_look_at_the_certificate_files_that_fails_is_logged_and_the_looks_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Files:
        looks = 0

        def reload_if_changed(self) -> bool:
            self.looks += 1
            if self.looks == 1:
                raise ValueError("a bug")
            return False

    monkeypatch.setattr(webhook_tls, "RELOAD_INTERVAL", 0.01)
    files = Files()
    task = asyncio.create_task(webhook_tls.reload_forever(files))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert files.looks > 2
    assert "looking at the webhook's TLS files failed" in caplog.text
