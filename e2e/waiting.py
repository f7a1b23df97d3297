"""Polling with a deadline, for the e2e suite and the benchmarks that drive real processes,
and the conditions they poll for in more than one place."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 30,
    what: str = "condition",
    error: type[Exception] = AssertionError,
    interval: float = 0.2,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; after
    ``timeout`` seconds raise ``error`` naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise error(f"timed out after {timeout:.0f}s waiting for {what}; last value {last!r}")


def webhook_points_at(configuration: Mapping[str, Any], port: int) -> bool:
    """Whether a ValidatingWebhookConfiguration (as JSON) calls a webhook on ``port``.

    A configuration without ``webhooks`` (or one left by an earlier run on another port)
    does not count: the operator registers by server-side apply once it listens.
    """
    urls = [w.get("clientConfig", {}).get("url", "") for w in configuration.get("webhooks") or []]
    return any(f":{port}/" in url for url in urls)
