"""The real operator's webhook port under junk and forged calls.

Checks, against the session operator (``dbquota run --dev-webhook``, which on the local
control plane requires the apiserver's webhook client certificate):

- fuzz: at least 2,000 generated bodies, presented with the apiserver's client certificate
  over one keep-alive connection: random bytes, random JSON of every type, nesting up to
  thousands of levels, huge numbers, unicode, envelopes with missing or wrong-typed
  fields, well-formed envelopes with junk objects, and well-formed reviews with junk
  specs. No answer is a 5xx; a malformed envelope gets 400 with a fixed message; a
  malformed object is denied in our words (no Python exception text, no "internal
  error"); the operator logs no traceback meanwhile, is still running afterwards, and its
  RSS grew by less than 100 MiB;
- bodies left unfinished on 16 connections, 4 MiB each, fill what all connections may
  hold together (64 MiB): a 17th body gets 503 with its reason, counted as ``busy``; once
  those connections close, a request is answered again, and the RSS grew by less than
  100 MiB;
- a request without a client certificate gets no HTTP answer at all (the TLS handshake
  refuses it);
- a flood of forged CREATE reviews without a client certificate never reaches admission
  (the operator counts no decision) and reserves nothing on a quota, while a real
  ``kubectl create`` of a claim is admitted and counted on it;
- a user whose Role lets them write claims' status (``kubectl --as``) cannot lower their
  claim's price through it: the apiserver refuses the patch with the webhook's words and
  the status keeps its price, while a write that leaves the status as it was goes
  through, and dbquota's own status writes (not sent to the webhook: its
  ``matchConditions``) still price new claims.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e.harness import Cluster, Kubectl, Operator
from e2e.test_crds import claim
from e2e.test_enforcement import claim_status, live_quota, review, status
from e2e.waiting import wait_for

FUZZ_EXAMPLES = 2000
REJECTED = "dbquota_webhook_rejected_requests_total"
FORBIDDEN = ("Traceback", "NoneType", "object is not", "internal error")
"""Text that would mean an exception leaked into an answer."""
NAMESPACE = "fuzz-no-quota"
"""Reviews the fuzz makes well-formed are for this namespace, which has no quota: nothing
they could admit reserves anything."""

# ------------------------------------------------------------------------------ helpers


def rss_mib(pid: int) -> float:
    """VmRSS of a process, in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    assert match, text
    return int(match.group(1)) / 1024


def webhook_context(cluster: Cluster, op: Operator, *, client: bool) -> ssl.SSLContext:
    """Trusts the operator's dev CA; presents the apiserver's client certificate if asked."""
    ctx = ssl.create_default_context(cafile=str(op.cert_dir / "ca.crt"))
    if client and cluster.webhook_client is not None:
        ctx.load_cert_chain(*cluster.webhook_client)
    return ctx


def needs_client_certificates(cluster: Cluster) -> None:
    if cluster.webhook_client_ca is None:
        pytest.skip("the cluster under test presents no webhook client certificate")


# ------------------------------------------------------------------------------ strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
REQUEST_FIELDS = (
    "uid",
    "kind",
    "resource",
    "operation",
    "namespace",
    "name",
    "dryRun",
    "userInfo",
    "object",
    "oldObject",
)
SPEC_FIELDS = ("engine", "instanceClass", "storageGiB", "replicas", "clusterId")


def envelope(**request: Any) -> dict[str, Any]:
    body = review(NAMESPACE, "fuzzed")
    body["request"].update(request)
    return body


def nested(depth: int, *, brackets: bool, leaf: str = "1") -> str:
    return (
        ("[" * depth + leaf + "]" * depth) if brackets else ('{"a":' * depth + leaf + "}" * depth)
    )


@st.composite
def deep_bodies(draw: st.DrawFn) -> bytes:
    """Nesting up to thousands of levels: the whole body, or inside a field or a spec."""
    depth = draw(st.integers(min_value=1, max_value=5000))
    inner = nested(depth, brackets=draw(st.booleans()))
    where = draw(st.sampled_from(["body", "unknown", "spec", "spec-field", "metadata"]))
    if where == "body":
        return inner.encode()
    marker = '"__DEEP__"'
    template = {
        "unknown": {**envelope(), "extra": "__DEEP__"},
        "spec": envelope(object={**claim(NAMESPACE, "fuzzed"), "spec": "__DEEP__"}),
        "spec-field": envelope(object=claim(NAMESPACE, "fuzzed", storageGiB="__DEEP__")),
        "metadata": envelope(object={"metadata": "__DEEP__", "spec": {}}),
    }[where]
    return json.dumps(template).replace(marker, inner).encode()


@st.composite
def huge_numbers(draw: st.DrawFn) -> bytes:
    digits = draw(st.integers(min_value=15, max_value=6000))
    number = draw(
        st.sampled_from(["9" * digits, "-" + "1" * digits, f"1e{digits}", "0." + "5" * digits])
    )
    field = draw(st.sampled_from(["storageGiB", "replicas", "engine"]))
    body = json.dumps(envelope(object=claim(NAMESPACE, "fuzzed", **{field: "__N__"})))
    return body.replace('"__N__"', number).encode()


wrong_envelopes = st.builds(
    lambda overrides, drop: json.dumps(
        {k: v for k, v in envelope(**overrides).items() if k not in drop}
    ).encode(),
    st.dictionaries(st.sampled_from(REQUEST_FIELDS), json_values, max_size=4),
    st.sets(st.sampled_from(["apiVersion", "kind", "request"]), max_size=1),
)
junk_objects = st.builds(
    lambda obj, operation: json.dumps(
        envelope(operation=operation, object=obj, oldObject=obj)
    ).encode(),
    json_values | st.fixed_dictionaries({"metadata": json_values, "spec": json_values}),
    st.sampled_from(["CREATE", "UPDATE"]),
)
junk_specs = st.builds(
    lambda spec, old, operation, dry_run: json.dumps(
        envelope(
            operation=operation,
            dryRun=dry_run,
            object={**claim(NAMESPACE, "fuzzed"), "spec": spec},
            oldObject={**claim(NAMESPACE, "fuzzed"), "spec": old},
        )
    ).encode(),
    json_values | st.dictionaries(st.sampled_from(SPEC_FIELDS), json_values, max_size=5),
    json_values,
    st.sampled_from(["CREATE", "UPDATE"]),
    st.booleans(),
)
unicode_names = st.builds(
    lambda name, spec_text: json.dumps(
        envelope(
            name=name,
            object=claim(NAMESPACE, name, engine=spec_text, instanceClass=spec_text),
        ),
        ensure_ascii=False,
    ).encode("utf-8", errors="surrogatepass"),
    st.text(min_size=1, max_size=60),
    st.text(max_size=200),
)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(alphabet=string.printable, max_size=500).map(str.encode),
    deep_bodies(),
    huge_numbers(),
    wrong_envelopes,
    junk_objects,
    junk_specs,
    unicode_names,
)

# ------------------------------------------------------------------------------ tests


@pytest.fixture
def webhook_client(cluster: Cluster, operator: Operator) -> Iterator[httpx.Client]:
    ctx = webhook_context(cluster, operator, client=True)
    base = f"https://127.0.0.1:{operator.webhook_port}"
    with httpx.Client(base_url=base, verify=ctx, timeout=30) as client:
        yield client


NAMELESS = "invalid DatabaseClaim: DatabaseClaim.metadata."


def check_answer(body: bytes, answer: httpx.Response) -> str:
    """Assert one answer is clean; return its class for the tally."""
    assert answer.status_code < 500, (body[:200], answer.status_code, answer.text[:300])
    if answer.status_code == 400:
        assert answer.text.startswith("malformed AdmissionReview: "), answer.text[:300]
        assert len(answer.text) < 150
        return "400"
    assert answer.status_code == 200, (body[:200], answer.status_code, answer.text[:300])
    response = answer.json()["response"]
    message = response.get("status", {}).get("message", "")
    for leaked in FORBIDDEN:
        assert leaked not in message, (body[:200], message)
    if response["allowed"]:
        return "admitted"
    # "DatabaseClaim ns/name: spec...", or "DatabaseClaim.metadata.name ..." (or
    # ".namespace") for a review with none (the API allows no name on a CREATE whose name
    # the server generates later)
    assert message.startswith(("invalid DatabaseClaim: DatabaseClaim ", NAMELESS)), message
    return "denied"


def test_junk_never_gets_a_5xx_a_traceback_or_exception_text(
    operator: Operator, webhook_client: httpx.Client
) -> None:
    pid = operator.proc.pid
    log_start = operator.log.stat().st_size
    rss_before = rss_mib(pid)
    tally: dict[str, int] = {}

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )
    @given(bodies)
    def fuzz(body: bytes) -> None:
        answer = webhook_client.post("/validate-claims", content=body)
        kind = check_answer(body, answer)
        tally[kind] = tally.get(kind, 0) + 1

    fuzz()
    assert sum(tally.values()) >= FUZZ_EXAMPLES
    assert tally.get("400", 0) > 100, tally
    assert tally.get("denied", 0) > 100, tally
    assert operator.proc.poll() is None, "the operator died"
    with operator.log.open("rb") as log:
        log.seek(log_start)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, written[-5000:]
    assert " ERROR " not in written, written[-5000:]
    assert rss_mib(pid) - rss_before < 100, (rss_before, rss_mib(pid))


def test_an_oversized_body_gets_413_and_the_connection_is_closed(
    operator: Operator, webhook_client: httpx.Client
) -> None:
    answer = webhook_client.post("/validate-claims", content=b"[" * (5 * 1024 * 1024))
    assert answer.status_code == 413
    assert webhook_client.post("/validate-claims", content=b"{}").status_code == 400


def raw_exchange(ctx: ssl.SSLContext, port: int, body: bytes) -> bytes:
    """Send one POST over a fresh TLS connection; whatever came back (b"" if nothing)."""
    request = (
        b"POST /validate-claims HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(request)
            while chunk := tls.recv(65536):
                received += chunk
    except (ssl.SSLError, OSError):
        pass
    return received


def unfinished(ctx: ssl.SSLContext, port: int, *, length: int, sent: int) -> ssl.SSLSocket:
    """A TLS connection that sent a POST promising ``length`` body bytes and ``sent`` of them."""
    tls = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
    )
    tls.sendall(
        b"POST /validate-claims HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        b"\r\nContent-Length: %d\r\n\r\n%s" % (length, b" " * sent)
    )
    return tls


def read_all(tls: ssl.SSLSocket, *, timeout: float) -> bytes:
    """What ``tls`` receives until the server closes or ``timeout`` passes."""
    tls.settimeout(timeout)
    received = b""
    with contextlib.suppress(ssl.SSLError, OSError):
        while chunk := tls.recv(65536):
            received += chunk
    return received


def test_bodies_held_on_many_connections_past_64_mib_get_503_and_are_let_go(
    cluster: Cluster, operator: Operator, webhook_client: httpx.Client
) -> None:
    ctx = webhook_context(cluster, operator, client=True)
    port, size = operator.webhook_port, 4 * 1024 * 1024 - 64  # each under MAX_BODY
    busy, rss_before = operator.metric(REJECTED, reason="busy"), rss_mib(operator.proc.pid)
    holders: list[ssl.SSLSocket] = []

    def refused() -> bytes:  # 64 KiB more than fits, once the server has read the rest
        with unfinished(ctx, port, length=1024 * 1024, sent=64 * 1024) as probe:
            answer = read_all(probe, timeout=2)
        return answer if answer.startswith(b"HTTP/1.1 503 ") else b""

    try:
        # 4 MiB less 64 bytes each, one byte short of what they promise
        holders.extend(unfinished(ctx, port, length=size + 1, sent=size) for _ in range(16))
        answer = wait_for(refused, timeout=60, what="a body past 64 MiB held to get 503")
        assert b"holds too many request bytes" in answer
        assert operator.metric(REJECTED, reason="busy") > busy
    finally:
        for tls in holders:
            tls.close()
    again = wait_for(
        lambda: (
            (a := webhook_client.post("/validate-claims", content=b"{}")).status_code == 400 and a
        ),
        timeout=30,
        what="the webhook to answer again once the holding connections closed",
    )
    assert again.text.startswith("malformed AdmissionReview: ")
    assert operator.proc.poll() is None, "the operator died"
    assert rss_mib(operator.proc.pid) - rss_before < 100, (rss_before, rss_mib(operator.proc.pid))


def test_a_request_without_a_client_certificate_gets_no_http_answer(
    cluster: Cluster, operator: Operator
) -> None:
    needs_client_certificates(cluster)
    body = json.dumps(envelope()).encode()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = webhook_context(cluster, operator, client=False)
        ctx.maximum_version = version
        assert raw_exchange(ctx, operator.webhook_port, body) == b""
        if version == ssl.TLSVersion.TLSv1_2:  # there the handshake itself fails
            with (
                socket.create_connection(("127.0.0.1", operator.webhook_port)) as sock,
                pytest.raises(ssl.SSLError),
            ):
                ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    with_certificate = webhook_context(cluster, operator, client=True)
    assert raw_exchange(with_certificate, operator.webhook_port, body).startswith(b"HTTP/1.1 200")


def decisions(op: Operator) -> float:
    """Admission decisions the operator has counted so far (every review that reached it)."""
    return op.metric("dbquota_admission_decisions_total")


def test_forged_creates_without_a_client_certificate_reserve_nothing(
    cluster: Cluster, kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    needs_client_certificates(cluster)
    live_quota(kubectl, namespace, "guarded", monthlyBudget=1_000_000)
    ctx = webhook_context(cluster, operator, client=False)
    before = decisions(operator)
    answers = [
        raw_exchange(ctx, operator.webhook_port, json.dumps(review(namespace, f"f{i}")).encode())
        for i in range(200)
    ]
    assert answers == [b""] * 200
    assert decisions(operator) == before  # not one reached admission
    quiet = status(kubectl, namespace, "guarded")
    assert quiet.get("reservations", []) == []
    assert quiet["spend"]["reserved"] == 0
    kubectl.apply(claim(namespace, name="real"))
    cost = claim_status(kubectl, namespace, "real")["estimatedMonthlyCost"]
    settled = wait_for(
        lambda: (got := status(kubectl, namespace, "guarded"))["used"]["claims"] == 1 and got,
        what="the quota to count the real claim",
    )
    assert settled["spend"]["reserved"] == pytest.approx(cost, abs=0.01)
    assert decisions(operator) == before + 1


def test_a_tenant_cannot_lower_its_claims_price_through_the_status(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    live_quota(kubectl, namespace, "guarded", monthlyBudget=1_000_000)
    kubectl.apply(claim(namespace, name="pinned"))
    cost = claim_status(kubectl, namespace, "pinned")["estimatedMonthlyCost"]
    grant = {"apiGroups": ["dbquota.io"], "resources": ["databaseclaims", "databaseclaims/status"]}
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "claims-and-status", "namespace": namespace},
                    "rules": [{**grant, "verbs": ["get", "patch", "update"]}],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "mallory", "namespace": namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "claims-and-status",
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}
                    ],
                },
            ],
        }
    )

    def patch_status(value: float) -> Any:
        body = json.dumps({"status": {"estimatedMonthlyCost": value}})
        args = ("patch", "databaseclaim", "pinned", "-n", namespace, "--subresource=status")
        return kubectl(*args, "--type=merge", "-p", body, "--as=mallory", check=False)

    forged = patch_status(0)
    assert forged.returncode != 0
    assert f"the status of DatabaseClaim {namespace}/pinned is written by dbquota only" in (
        forged.stderr
    )
    assert "mallory may not change it" in forged.stderr
    assert claim_status(kubectl, namespace, "pinned")["estimatedMonthlyCost"] == cost
    assert patch_status(cost).returncode == 0  # nothing changed: let through
    kubectl.apply(claim(namespace, name="second"))
    assert claim_status(kubectl, namespace, "second")["pricing"] == "Live"
