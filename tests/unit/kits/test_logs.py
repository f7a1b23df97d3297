"""Log lines in text and in JSON: the fields a record becomes, kopf's records included.

Checks: in JSON a record is one parseable line with time (RFC 3339, UTC, milliseconds),
level, logger and message, its ``extra=`` fields, and its traceback as ``exception``; a
fixed field is not overwritten by an extra one; a value JSON cannot hold still gives a
parseable line; kopf's per-object records, which reach the root logger, carry their object
reference as ``object``, as kopf's own JSON format names it, without kopf's bookkeeping;
text is today's format, a kopf record about an object naming it first, ``[ns/name]``;
``setup`` leaves a configured root logger alone, and in JSON routes
uncaught exceptions through logging.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._core.actions.loggers import ObjectLogger

from dbquota.kits import logs

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """What the root logger writes in JSON while the test runs, at INFO and above."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_is_one_json_line_with_its_extra_fields(stream: io.StringIO) -> None:
    logging.getLogger("dbquota.test").warning(
        "quota %s is\nfull", "team-a/q", extra={"quota": "team-a/q", "spend": 12.5}
    )
    (line,) = lines(stream)
    assert list(line) == ["time", "level", "logger", "message", "quota", "spend"]
    assert TIME.match(line["time"]), line["time"]
    assert line["level"] == "WARNING"
    assert line["logger"] == "dbquota.test"
    assert line["message"] == "quota team-a/q is\nfull"
    assert (line["quota"], line["spend"]) == ("team-a/q", 12.5)
    assert "exception" not in line


def test_an_exception_is_a_field_of_the_same_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad price")
    except ValueError:
        logging.getLogger("dbquota.test").exception("sync failed", extra={"attempt": 3})
    (line,) = lines(stream)
    assert line["level"] == "ERROR"
    assert line["message"] == "sync failed"
    assert line["attempt"] == 3
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: bad price")


def test_the_time_is_utc_with_milliseconds() -> None:
    record = logging.LogRecord("x", logging.INFO, "f.py", 1, "m", (), None)
    record.created, record.msecs = 1_780_000_000.25, 250.0
    assert json.loads(logs.JsonFormatter().format(record))["time"] == "2026-05-28T20:26:40.250Z"


def test_an_extra_field_never_replaces_a_fixed_one(stream: io.StringIO) -> None:
    logging.getLogger("dbquota.test").info("m", extra={"level": "x", "time": 0, "logger": "y"})
    (line,) = lines(stream)
    assert (line["level"], line["logger"]) == ("INFO", "dbquota.test")
    assert TIME.match(line["time"])


def test_values_json_cannot_hold_still_make_a_parseable_line(stream: io.StringIO) -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    log = logging.getLogger("dbquota.test")
    log.info("m", extra={"ratio": float("nan"), "path": object()})
    log.info("m", extra={"cycle": cycle})
    first, second = lines(stream)
    assert first["ratio"] == "nan"
    assert first["path"].startswith("<object object")
    assert second["cycle"] == "[[...]]"


def test_kopf_object_records_name_their_object_as_kopf_does(stream: io.StringIO) -> None:
    body = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "metadata": {"name": "q", "namespace": "team-a", "uid": "u-1"},
    }
    ObjectLogger(body=kopf.Body(body), settings=kopf.OperatorSettings()).info(  # type: ignore[arg-type]
        "Handler 'x' succeeded."
    )
    logging.getLogger("kopf.activities.startup").warning("kopf's own logger")
    first, second = lines(stream)
    assert first["logger"] == "kopf.objects"
    assert first["message"] == "Handler 'x' succeeded."
    assert first["object"] == {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseQuota",
        "name": "q",
        "uid": "u-1",
        "namespace": "team-a",
    }
    assert not {"k8s_ref", "k8s_skip", "settings"} & set(first)
    assert (second["logger"], second["level"]) == ("kopf.activities.startup", "WARNING")


def test_text_is_the_format_of_before() -> None:
    record = logging.LogRecord("dbquota.x", logging.INFO, "f.py", 1, "hello %s", ("w",), None)
    text = logs.formatter("text").format(record)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO dbquota.x: hello w$", text)


def test_text_names_the_object_a_kopf_record_is_about() -> None:
    body = {"kind": "DatabaseQuota", "metadata": {"name": "q", "namespace": "team-a"}}
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter("text"))
    kopf_objects = logging.getLogger("kopf.objects")
    kopf_objects.addHandler(handler)
    level, kopf_objects.level = kopf_objects.level, logging.INFO
    try:
        logger = ObjectLogger(body=kopf.Body(body), settings=kopf.OperatorSettings())  # type: ignore[arg-type]
        logger.info("Handler %r succeeded.", "quota_changed")
    finally:
        kopf_objects.removeHandler(handler)
        kopf_objects.setLevel(level)
    assert out.getvalue().endswith(
        " INFO kopf.objects: [team-a/q] Handler 'quota_changed' succeeded.\n"
    )


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without handlers (pytest adds its own to each test's call), then
    everything ``setup`` changes put back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook)
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers, level, sys.excepthook, threading.excepthook = saved
        root.setLevel(level)
        logging.captureWarnings(False)


def test_setup_in_json_logs_uncaught_exceptions() -> None:
    out = io.StringIO()
    with bare_root() as root:
        logs.setup("json", level=logging.INFO, stream=out)
        assert root.level == logging.INFO
        try:
            raise RuntimeError("escaped")
        except RuntimeError as exc:
            sys.excepthook(RuntimeError, exc, exc.__traceback__)
        thread = threading.Thread(target=lambda: 1 / 0, name="worker")
        thread.start()
        thread.join()
    first, second = lines(out)
    assert (first["level"], first["message"]) == ("CRITICAL", "uncaught exception")
    assert first["exception"].endswith("RuntimeError: escaped")
    assert second["message"] == "uncaught exception in thread worker"
    assert second["exception"].endswith("ZeroDivisionError: division by zero")


def test_setup_in_text_leaves_the_hooks_alone() -> None:
    hook = sys.excepthook
    out = io.StringIO()
    with bare_root():
        logs.setup("text", level=logging.DEBUG, stream=out)
        logging.getLogger("dbquota.x").debug("plain")
        assert sys.excepthook is hook
    assert out.getvalue().rstrip().endswith(" DEBUG dbquota.x: plain")


def test_setup_leaves_a_configured_root_logger_alone() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert before  # pytest's
    logs.setup("json", level=logging.DEBUG, stream=io.StringIO())
    assert root.handlers == before
