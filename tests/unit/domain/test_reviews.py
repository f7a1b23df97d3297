"""AdmissionReview bodies: what decodes, what is refused with which words, what is answered.

Checks that every shape of review the webhook meets decodes (CREATE, UPDATE with its old
object, dry run, DELETE without an object, v1beta1, unknown fields, a generated name) with
only the fields admission reads; that each class of junk body (not JSON, invalid UTF-8,
deep nesting, huge numbers, the wrong top-level type, a missing or null request, a missing
or empty uid, an unknown operation, an object that is not an object, a missing object or
old object, metadata of the wrong type, overlong names) is refused with its one short,
fixed message that echoes nothing of the input; that a malformed *spec* is not the
envelope's business; and that answers carry the uid, the apiVersion, the status and the
warnings. Properties: decoding any bytes, any JSON value, or any review with arbitrary
values in its fields raises nothing but ``MalformedReview``, whose message is short and
drawn from a fixed vocabulary.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbquota.domain import reviews
from dbquota.errors import MalformedReview

CLAIM_KIND = {"group": "dbquota.io", "version": "v1alpha1", "kind": "DatabaseClaim"}
CLAIMS = {"group": "dbquota.io", "version": "v1alpha1", "resource": "databaseclaims"}
SPEC = {"engine": "postgres", "instanceClass": "db.r6g.large", "storageGiB": 10}


def claim(name: str = "orders", spec: Any = SPEC, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseClaim",
        "metadata": {"name": name, "namespace": "team-a", **metadata},
        "spec": spec,
    }


def envelope(**request: Any) -> dict[str, Any]:
    """A CREATE review of a claim, as the apiserver sends it; ``request`` overrides."""
    body: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": CLAIM_KIND,
        "resource": CLAIMS,
        "requestKind": CLAIM_KIND,
        "namespace": "team-a",
        "name": "orders",
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": claim(),
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    body.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


def refusal(body: bytes) -> str:
    with pytest.raises(MalformedReview) as info:
        reviews.decode(body)
    return str(info.value)


def test_a_create_decodes_to_the_fields_admission_reads() -> None:
    review = reviews.decode(encoded(envelope()))
    request = review.request
    assert review.api_version == "admission.k8s.io/v1"
    assert request.uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert (request.kind.group, request.kind.kind) == ("dbquota.io", "DatabaseClaim")
    assert request.resource.resource == "databaseclaims"
    assert (request.operation, request.namespace, request.name) == ("CREATE", "team-a", "orders")
    assert request.dry_run is False
    assert request.user_info.username == "alice"
    assert request.object is not None
    assert request.object.spec == SPEC
    assert request.object.metadata.name == "orders"
    assert request.old_object is None


def test_an_update_carries_its_old_object_and_metadata() -> None:
    old = claim(spec={**SPEC, "storageGiB": 5}, uid="u-1", generation=3)
    new = claim(
        uid="u-1",
        generation=4,
        labels={"team": "a"},
        annotations={"note": "x"},
        creationTimestamp="2026-01-01T00:00:00Z",
    )
    review = reviews.decode(encoded(envelope(operation="UPDATE", object=new, oldObject=old)))
    request = review.request
    assert request.old_object is not None
    assert request.old_object.spec == {**SPEC, "storageGiB": 5}
    assert request.old_object.metadata.generation == 3
    assert request.object is not None
    meta = request.object.metadata
    assert (meta.uid, meta.generation, meta.labels, meta.annotations) == (
        "u-1",
        4,
        {"team": "a"},
        {"note": "x"},
    )
    assert meta.creation_timestamp == "2026-01-01T00:00:00Z"


def test_a_dry_run_a_delete_and_v1beta1_decode() -> None:
    assert reviews.decode(encoded(envelope(dryRun=True))).request.dry_run is True
    delete = reviews.decode(encoded(envelope(operation="DELETE", object=None, oldObject=claim())))
    assert delete.request.operation == "DELETE"
    assert delete.request.object is None
    beta = {**envelope(), "apiVersion": "admission.k8s.io/v1beta1"}
    assert reviews.decode(encoded(beta)).api_version == "admission.k8s.io/v1beta1"


def test_unknown_fields_are_skipped_and_a_missing_name_comes_from_the_object() -> None:
    body = envelope(name="", extra={"deep": [1, 2, {"x": None}]}, object=claim(name="gen-x1"))
    body["request"]["object"]["status"] = {"conditions": []}
    body["surprise"] = "ignored"
    request = reviews.decode(encoded(body)).request
    assert request.object_name == "gen-x1"
    assert request.object is not None
    assert request.object.status == {"conditions": []}


@pytest.mark.parametrize("spec", [None, "text", [1, 2], 7, {"engine": None}])
def test_any_spec_decodes_for_admission_to_judge(spec: Any) -> None:
    review = reviews.decode(encoded(envelope(object=claim(spec=spec))))
    assert review.request.object is not None
    assert review.request.object.spec == spec


def test_a_missing_spec_decodes_as_none() -> None:
    obj = claim()
    del obj["spec"]
    review = reviews.decode(encoded(envelope(object=obj)))
    assert review.request.object is not None
    assert review.request.object.spec is None


JUNK: list[tuple[str, bytes, str]] = [
    ("empty", b"", "not valid JSON"),
    ("not json", b"hello", "not valid JSON"),
    ("invalid utf-8", b'{"apiVersion": "\xff"}', "not valid JSON"),
    ("an empty object", b"{}", "apiVersion missing"),
    ("a list", b"[]", "the body must be a JSON object"),
    ("null", b"null", "the body must be a JSON object"),
    ("a string", b'"review"', "the body must be a JSON object"),
    ("a number", b"42", "the body must be a JSON object"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "the body must be a JSON object"),
    (
        "deep nesting inside",
        encoded(envelope(object=claim(spec={"a": 1}))).replace(
            b'{"a": 1}', b"[" * 5000 + b"]" * 5000
        ),
        "JSON nested too deeply",
    ),
    (
        "a huge number",
        encoded(envelope(object=claim(spec={"storageGiB": 1}))).replace(
            b'"storageGiB": 1', b'"storageGiB": ' + b"9" * 5000
        ),
        "a number out of range in request.object.spec",
    ),
    (
        "deep nesting in a skipped field",
        b'{"x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
        "JSON nested too deeply",
    ),
    ("null request", encoded({**envelope(), "request": None}), "request must be an object"),
    ("request a list", encoded({**envelope(), "request": []}), "request must be an object"),
    ("wrong apiVersion", encoded({**envelope(), "apiVersion": "v1"}), "apiVersion must be"),
    ("wrong kind", encoded({**envelope(), "kind": "Pod"}), "kind must be AdmissionReview"),
    ("no uid", encoded(envelope(uid=None)), "request.uid must be a non-empty string"),
    ("empty uid", encoded(envelope(uid="")), "request.uid must be a non-empty string"),
    ("uid a number", encoded(envelope(uid=7)), "request.uid must be a non-empty string"),
    ("long uid", encoded(envelope(uid="u" * 300)), "request.uid must be a non-empty string"),
    ("bad operation", encoded(envelope(operation="PATCH")), "request.operation must be"),
    ("object a string", encoded(envelope(object="x")), "request.object must be an object"),
    ("object a list", encoded(envelope(object=[1])), "request.object must be an object"),
    ("no object", encoded(envelope(object=None)), "request.object missing"),
    ("update, no old", encoded(envelope(operation="UPDATE")), "request.oldObject missing"),
    ("old a string", encoded(envelope(oldObject="x")), "request.oldObject must be an object"),
    ("kind null", encoded(envelope(kind=None)), "request.kind must be an object"),
    (
        "labels wrong",
        encoded(envelope(object=claim(labels={"a": 1}))),
        "request.object.metadata.labels has the wrong type",
    ),
    (
        "metadata a list",
        encoded(envelope(object={"metadata": [], "spec": {}})),
        "request.object.metadata must be an object",
    ),
    ("long name", encoded(envelope(name="n" * 300)), "request.name must be a name"),
    ("dryRun text", encoded(envelope(dryRun="yes")), "request.dryRun has the wrong type"),
]


@pytest.mark.parametrize(("body", "expected"), [j[1:] for j in JUNK], ids=[j[0] for j in JUNK])
def test_junk_is_refused_with_its_fixed_message(body: bytes, expected: str) -> None:
    message = refusal(body)
    assert message.startswith("malformed AdmissionReview: ")
    assert expected in message
    assert len(message) < 120


def test_a_missing_request_says_so() -> None:
    body = encoded({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
    assert refusal(body) == "malformed AdmissionReview: request missing"
    missing_uid = envelope()
    del missing_uid["request"]["uid"]
    assert refusal(encoded(missing_uid)) == "malformed AdmissionReview: request.uid missing"


def test_messages_never_echo_the_input() -> None:
    marker = "INJECTED`- at `$.request.uid`"
    for body in (
        envelope(operation=marker),
        envelope(object=claim(labels={marker: 1})),
        {**envelope(), "apiVersion": marker},
        envelope(uid=marker * 100),
    ):
        assert "INJECTED" not in refusal(encoded(body))


def test_an_answer_echoes_the_uid_and_api_version_with_status_and_warnings() -> None:
    review = reviews.decode(encoded({**envelope(), "apiVersion": "admission.k8s.io/v1beta1"}))
    denied = json.loads(
        reviews.encode(
            review,
            reviews.Answer(allowed=False, message="over budget", warnings=("w1",), code=403),
        )
    )
    assert denied == {
        "apiVersion": "admission.k8s.io/v1beta1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "allowed": False,
            "status": {"code": 403, "message": "over budget", "reason": "Forbidden"},
            "warnings": ["w1"],
        },
    }
    admitted = json.loads(reviews.encode(review, reviews.Answer(allowed=True)))
    assert admitted["response"] == {"uid": review.request.uid, "allowed": True}


# ---------------------------------------------------------------------------- properties

VOCABULARY = re.compile(
    r"^malformed AdmissionReview: ("
    r"not valid JSON|JSON nested too deeply|the body must be a JSON object"
    r"|[A-Za-z.]+ missing|a number out of range in [A-Za-z.]+"
    r"|[A-Za-z.]+ must be [A-Za-z0-9 ,./-]+|[A-Za-z.]+ has the wrong type)$"
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

FIELDS = [
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
]


def assert_clean(body: bytes) -> None:
    message = ""
    try:
        reviews.decode(body)
    except MalformedReview as exc:
        message = str(exc)
    assert not message or VOCABULARY.match(message), message


@given(st.binary(max_size=200))
def test_decoding_any_bytes_raises_only_malformed_review(body: bytes) -> None:
    assert_clean(body)


@given(json_values)
def test_decoding_any_json_value_raises_only_malformed_review(value: Any) -> None:
    assert_clean(encoded(value))


@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5), st.booleans())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_a_review_with_any_values_in_its_fields_raises_only_malformed_review(
    overrides: dict[str, Any], update: bool
) -> None:
    body = envelope(**overrides)
    if update:
        body["request"].setdefault("operation", "UPDATE")
    assert_clean(encoded(body))


@given(json_values, json_values)
def test_any_metadata_and_spec_values_raise_only_malformed_review(metadata: Any, spec: Any) -> None:
    assert_clean(encoded(envelope(object={"metadata": metadata, "spec": spec})))
