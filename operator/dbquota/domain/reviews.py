"""AdmissionReview bodies: decoded into a small frozen view, and answers encoded.

:func:`decode` turns the bytes of a POST body into a :class:`Review` with msgspec Structs
that read only the fields admission uses (every other field is skipped unread):

- ``request``: ``uid``, ``kind`` (group/version/kind), ``resource``
  (group/version/resource), ``subResource``, ``operation``, ``namespace``, ``name``, ``dryRun``,
  ``userInfo.username``, and ``object`` / ``oldObject`` as an :class:`ObjectView`;
- an :class:`ObjectView`: ``metadata`` (name, namespace, uid, generation, labels,
  annotations, creationTimestamp), and ``spec`` and ``status`` kept as the JSON values they
  are (a ``dict`` for an object), so that any kind can be read from them later.

Only the *envelope* is validated here: ``apiVersion`` ``admission.k8s.io/v1`` (or
``v1beta1``), ``kind`` ``AdmissionReview``, a ``request`` object with a non-empty ``uid``,
a known ``operation``, a ``kind`` and ``resource``, an ``object`` for CREATE and UPDATE and
an ``oldObject`` for UPDATE, and metadata of the right types. Whatever is wrong with the
body (not JSON, invalid UTF-8, nested too deeply, a number out of range, a field missing or
of the wrong type) raises :class:`~dbquota.errors.MalformedReview` with a short message
made of fixed words and our own field names, e.g. ``malformed AdmissionReview: request.uid
missing``: never the input, never an exception's text. ``spec`` is not judged here: a
well-formed review of a malformed object reaches admission, whose parsers deny it in
their own words (:mod:`dbquota.domain.claims`).

:func:`encode` builds the answer's JSON from a :class:`Review` and an :class:`Answer`.

Called by the webhook server (:mod:`dbquota.handlers.webhook`) and by the admission
adapter behind it. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from dbquota.errors import MalformedReview

__all__ = [
    "Answer",
    "GroupVersionKind",
    "GroupVersionResource",
    "MalformedReview",
    "Metadata",
    "ObjectView",
    "Request",
    "Review",
    "UserInfo",
    "decode",
    "encode",
]

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]

_Name = Annotated[str, msgspec.Meta(max_length=253)]
"""Object and namespace names: Kubernetes allows at most 253 characters."""


class GroupVersionKind(msgspec.Struct, frozen=True, gc=False):
    """``request.kind``: what kind of object is reviewed."""

    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(msgspec.Struct, frozen=True, gc=False):
    """``request.resource``: which resource the request was made on."""

    group: str = ""
    version: str = ""
    resource: str = ""


class UserInfo(msgspec.Struct, frozen=True, gc=False):
    """``request.userInfo``, reduced to the user's name."""

    username: str = ""


class Metadata(msgspec.Struct, frozen=True, rename="camel"):
    """The parts of an object's ``metadata`` dbquota reads."""

    name: _Name = ""
    namespace: _Name = ""
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    creation_timestamp: str = ""


class ObjectView(msgspec.Struct, frozen=True):
    """``request.object`` or ``request.oldObject``: metadata, and spec and status as JSON.

    ``spec`` and ``status`` are whatever JSON value the body holds (None when absent or
    null): the kind's own parser says what is wrong with them.
    """

    metadata: Metadata = msgspec.field(default_factory=Metadata)
    spec: object = None
    status: object = None


class Request(msgspec.Struct, frozen=True, rename="camel"):
    """``request`` of an AdmissionReview, as far as admission reads it."""

    uid: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Operation
    sub_resource: str = ""
    """``status`` for a write of the status subresource, else empty."""
    namespace: _Name = ""
    name: _Name = ""
    dry_run: bool | None = None
    user_info: UserInfo = msgspec.field(default_factory=UserInfo)
    object: ObjectView | None = None
    old_object: ObjectView | None = None

    @property
    def object_name(self) -> str:
        """``request.name``, or the object's own name when the request leaves it out."""
        if self.name or self.object is None:
            return self.name
        return self.object.metadata.name


class Review(msgspec.Struct, frozen=True, rename="camel"):
    """One decoded AdmissionReview."""

    api_version: Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]
    kind: Literal["AdmissionReview"]
    request: Request


@dataclass(frozen=True)
class Answer:
    """What admission says about one review."""

    allowed: bool
    message: str = ""
    """Why, in words (shown by kubectl on a denial)."""
    warnings: tuple[str, ...] = ()
    """Printed by kubectl whether admitted or not."""
    code: int = 200
    """The HTTP-style code of the answer's status: 403 for a denial."""


_DECODER: Final = msgspec.json.Decoder(Review)
_ENCODER: Final = msgspec.json.Encoder()

_REASONS: Final = {
    400: "BadRequest",
    403: "Forbidden",
    500: "InternalError",
    503: "ServiceUnavailable",
}
"""metav1.Status reasons of the codes dbquota answers with; others get none."""


def decode(body: bytes) -> Review:
    """The :class:`Review` in ``body``; :class:`MalformedReview` when it is not one."""
    try:
        review = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise MalformedReview(_explain(str(exc))) from None
    except msgspec.DecodeError:
        raise MalformedReview("malformed AdmissionReview: not valid JSON") from None
    except RecursionError:
        raise MalformedReview("malformed AdmissionReview: JSON nested too deeply") from None
    request = review.request
    if request.operation in ("CREATE", "UPDATE") and request.object is None:
        raise MalformedReview("malformed AdmissionReview: request.object missing")
    if request.operation == "UPDATE" and request.old_object is None:
        raise MalformedReview("malformed AdmissionReview: request.oldObject missing")
    return review


def encode(review: Review, answer: Answer) -> bytes:
    """The AdmissionReview answering ``review`` (same apiVersion) with ``answer``, as JSON."""
    response: dict[str, object] = {"uid": review.request.uid, "allowed": answer.allowed}
    if not answer.allowed or answer.message:
        status: dict[str, object] = {"code": answer.code, "message": answer.message}
        if answer.code in _REASONS:
            status["reason"] = _REASONS[answer.code]
        response["status"] = status
    if answer.warnings:
        response["warnings"] = list(answer.warnings)
    return _ENCODER.encode(
        {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}
    )


# --------------------------------------------------------------------------- error words


def _paths(cls: type[msgspec.Struct], prefix: str = "") -> dict[str, type[msgspec.Struct]]:
    """Every field path of the Struct tree under ``cls`` (JSON names), to the Struct at it."""
    found: dict[str, type[msgspec.Struct]] = {prefix: cls}
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        path = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
        found.setdefault(path, cls)
        types = [field.type]
        if isinstance(field.type, msgspec.inspect.UnionType):
            types = list(field.type.types)
        for type_ in types:
            if isinstance(type_, msgspec.inspect.StructType):
                found.update(_paths(type_.cls, path))
    return found


_KNOWN_PATHS: Final = frozenset(_paths(Review))
"""Paths that may appear in a message: our own field names, never the input's keys."""

_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([A-Za-z]+)`")

_PROBLEMS: Final = {
    "apiVersion": "apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1",
    "kind": "kind must be AdmissionReview",
    "request.uid": "request.uid must be a non-empty string of at most 256 characters",
    "request.operation": "request.operation must be CREATE, UPDATE, DELETE or CONNECT",
    "request.name": "request.name must be a name of at most 253 characters",
    "request.namespace": "request.namespace must be a name of at most 253 characters",
}


def _explain(text: str) -> str:
    """A fixed message for msgspec's validation error ``text``, which is never echoed."""
    at = _AT.search(text)
    path = at.group(1) if at else ""
    path = path.split("[", 1)[0]  # what follows an index or a key comes from the input
    while path not in _KNOWN_PATHS:
        path = path.rpartition(".")[0]
    missing = _MISSING.match(text)
    if missing and f"{path}.{missing.group(1)}".lstrip(".") in _KNOWN_PATHS:
        return f"malformed AdmissionReview: {f'{path}.{missing.group(1)}'.lstrip('.')} missing"
    if path in _PROBLEMS:
        return f"malformed AdmissionReview: {_PROBLEMS[path]}"
    if not path:
        return "malformed AdmissionReview: the body must be a JSON object"
    if "out of range" in text:
        return f"malformed AdmissionReview: a number out of range in {path}"
    if text.startswith("Expected `object"):
        return f"malformed AdmissionReview: {path} must be an object"
    return f"malformed AdmissionReview: {path} has the wrong type"
