"""Fixtures that start the real billing simulator (``dbquota billing-sim``) in its own
process on a free port, talk to its control API, and stop it after the test."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


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


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return process.stdout.readline()


def stop(process: subprocess.Popen[str]) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    """Start simulators with extra flags; every one is stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*flags: str, clusters: int = 200, seed: int = 7) -> Simulator:
        log = (tmp_path / f"sim-{len(started)}.log").open("w")
        argv = [sys.executable, "-m", "dbquota", "billing-sim", "--port", "0"]
        argv += ["--clusters", str(clusters), "--seed", str(seed), *flags]
        process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ)
        )
        log.close()
        started.append(process)
        line = _read_line(process, timeout=30)
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"the simulator did not start: {line!r}"
        return Simulator(url=match.group(1), process=process)

    yield start
    for process in started:
        stop(process)


@pytest.fixture
def simulator(start_simulator: Callable[..., Simulator]) -> Simulator:
    """A simulator with 200 clusters and a bulk listing."""
    return start_simulator()
