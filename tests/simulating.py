"""The real billing simulator (``dbquota billing-sim``) as a child process, and its control API.

Used by the integration tests and, through :func:`e2e.harness.start_billing`, the e2e
suite, the demo and the benchmarks: :func:`launch` starts one on a free port and returns
once it listens; :func:`stop` ends it.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

FAST_SYNC = (
    "--sync-interval=1",
    "--resync-interval=1",
    "--breaker-failure-threshold=2",
    "--breaker-recovery-timeout=3",
    "--retry-attempts=1",
    "--request-timeout=1",
    "--connect-timeout=0.5",
)
"""``dbquota run`` flags for driving an operator against a simulator: billing syncs every
second, so an outage (and its recovery) shows in the quota's status within seconds."""


@dataclass
class Simulator:
    """A running simulator process and its control API."""

    url: str
    process: subprocess.Popen[str]

    def fault(self, **fault: Any) -> None:
        """Set the active fault (``mode=...`` and its options)."""
        response = httpx.post(f"{self.url}/_faults", json=fault, timeout=5)
        response.raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Requests received and outcomes by endpoint."""
        stats: dict[str, Any] = httpx.get(f"{self.url}/_stats", timeout=5).json()
        return stats

    def received(self, endpoint: str | None = None) -> int:
        """Requests received (at one endpoint, or at all)."""
        received: dict[str, int] = self.stats()["received"]
        return sum(received.values()) if endpoint is None else received.get(endpoint, 0)

    def outcomes(self, endpoint: str) -> dict[str, int]:
        outcomes: dict[str, int] = self.stats()["outcomes"].get(endpoint, {})
        return outcomes

    def reset_stats(self) -> None:
        httpx.delete(f"{self.url}/_stats", timeout=5).raise_for_status()

    def pricing(self) -> dict[str, Any]:
        """The provider's current price list (``GET /pricing``)."""
        prices: dict[str, Any] = httpx.get(f"{self.url}/pricing", timeout=5).json()
        return prices


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return process.stdout.readline()


def stop(process: subprocess.Popen[Any], *, grace: float = 15) -> None:
    """Stop a child process (the simulator, an operator): SIGTERM, then SIGKILL if it
    lingers past ``grace`` seconds; reaps it and closes its piped stdout."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def launch(*flags: str, log: IO[str], clusters: int = 200, seed: int = 7) -> Simulator:
    """Start a simulator on a free port (``--port 0``); stderr goes to ``log``."""
    argv = [sys.executable, "-m", "dbquota", "billing-sim", "--port", "0"]
    argv += ["--clusters", str(clusters), "--seed", str(seed), *flags]
    process = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ)
    )
    line = _read_line(process, timeout=30)
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        stop(process)
        raise RuntimeError(f"the simulator did not start: {line!r}")
    return Simulator(url=match.group(1), process=process)
