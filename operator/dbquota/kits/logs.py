"""The process's log lines: today's text, or one JSON object per line for a log collector.

One handler on the root logger formats every record of the process, dbquota's and those of
kopf, aiohttp and the Kubernetes client alike, so that a log pipeline parses each line the
same way. kopf's own logging set-up (``kopf.configure``, which ``kopf run`` calls) is not
used: dbquota starts kopf with ``kopf.operator()``, which configures no logging, and kopf's
records reach this handler through the root logger like everyone else's.

In JSON, a line holds ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message``, then any fields the log call passed with ``extra=``, then ``exception`` (the
traceback) and ``stack`` when the record has them. kopf's per-object records carry the
object's reference in an attribute of their own; it is written as ``object``, the name
kopf's JSON format (``kopf.LogFormat.JSON``) gives it, so queries written for kopf's field
still work. kopf's other bookkeeping attributes (its settings, its flag for Kubernetes
Events) are left out.

Why hand-written: python-json-logger (what kopf's JSON format uses) is installed with kopf,
but its field names, its timestamp (microseconds, ``+00:00``) and its exception key would
each need overriding, its module moved between 3.0 and 3.1 (kopf imports both), and it is
not a dependency of ours. The formatter below is the standard library's ``json`` and a
few lines of field selection.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from types import TracebackType
from typing import Any, Literal, TextIO

from dbquota.kits import timestamps

LogFormat = Literal["text", "json"]

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format: ``2026-01-31 12:00:00,123 INFO dbquota.x: message``."""

RENAMED = {"k8s_ref": "object"}
"""Record attributes written under another name: kopf's object reference."""
HIDDEN = frozenset({"k8s_skip", "settings"})
"""Record attributes never written: kopf's Event-posting flag and its settings object."""

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}
"""Attributes every record has: what is left of a record's ``__dict__`` came from ``extra=``."""
_CORE = ("time", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    """One record as one line of JSON (ASCII, no line breaks inside).

    An ``extra=`` field whose name is one of the fixed fields (``time``, ``level``,
    ``logger``, ``message``, ``exception``, ``stack``) is left out: the fixed one wins.
    Values JSON has no type for are written as their ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": timestamps.to_milli(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in HIDDEN:
                continue
            name = RENAMED.get(key, key)
            if name not in fields and name not in ("exception", "stack"):
                fields[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exception"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(fields, default=str, allow_nan=False)
        except ValueError:  # a NaN, an infinity or a cycle in an extra field
            return json.dumps(
                {k: v if k in _CORE else str(v) for k, v in fields.items()}, default=str
            )


class TextFormatter(logging.Formatter):
    """The text format (:data:`TEXT`). A record about an object (kopf's, carrying
    ``k8s_ref``) names it first, ``[namespace/name]``, as kopf's own text format does:
    without it, "Handler 'quota_changed' succeeded." would not say which quota."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def format(self, record: logging.LogRecord) -> str:
        ref = getattr(record, "k8s_ref", None)
        if not isinstance(ref, dict) or not ref.get("name"):
            return super().format(record)
        name = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref["name"]
        named = logging.makeLogRecord(record.__dict__)  # the record itself stays as it was
        named.msg, named.args = f"[{name}] {record.getMessage()}", None
        return super().format(named)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of ``log_format``."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup(log_format: LogFormat, *, level: int, stream: TextIO | None = None) -> None:
    """Send every record of ``level`` or above to ``stream`` (stderr) in ``log_format``.

    Like :func:`logging.basicConfig`, does nothing when the root logger has a handler
    already (under pytest, say). In JSON, also routes what would bypass logging through
    it: :mod:`warnings`, and exceptions no code caught (in the main thread or another),
    which Python would print as a bare traceback.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("dbquota").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return  # what the default hook ignores too
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("dbquota").critical(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
