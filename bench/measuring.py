"""What the benchmarks share: reading processes from /proc, percentiles, the machine line,
Markdown tables, the apiserver's own request counts from its ``/metrics``, whether the wall
clock stepped during a phase and how much CPU the hypervisor stole meanwhile, and the
largest DatabaseQuota a phase saw.

Used by ``bench/admission.py``, ``bench/create.py`` and ``bench/status_writes.py`` (not a
benchmark itself: ``make bench`` runs the scripts it lists).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from e2e import scraping

RequestKey = tuple[str, str, str]
"""(verb, resource, subresource) of ``apiserver_request_total``; resource is
``<resource>.<group>`` for an API group, the bare resource for the core group."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> float:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM``, ``VmRSS``), in MiB; NaN if absent."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024.0 if match else float("nan")


@dataclass
class ClockSteps:
    """How far the wall clock moved apart from the monotonic one since :meth:`start`.

    On this kind of machine (a virtual machine on a shared host) the guest's wall clock is
    corrected in steps: one bench run saw it jump 17.5 s ahead in 1.2 s of monotonic
    time. Every process's wall-clock arithmetic (timestamps written to objects, ages
    computed from them, the apiserver's and etcd's) sees the jump, and the phase that holds
    it showed a tail several times its neighbours'. A phase with a step is reported as such
    rather than compared as if nothing happened.
    """

    wall: float = field(default_factory=time.time)
    monotonic: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.wall, self.monotonic = time.time(), time.monotonic()

    def stepped(self) -> float:
        """Seconds the wall clock gained (negative: lost) on the monotonic one since
        :meth:`start`; the two otherwise agree within milliseconds over a phase."""
        return (time.time() - self.wall) - (time.monotonic() - self.monotonic)


def _cpu_ticks() -> tuple[int, int]:
    """(steal, user + nice + system + idle + iowait + irq + softirq + steal) of all cores."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return (0, 0)
    return (fields[7], sum(fields)) if len(fields) == 8 else (0, 0)


@dataclass
class Steal:
    """The share of the machine's CPU time that the hypervisor gave to other guests since
    :meth:`start` (``steal`` in /proc/stat, over all cores; NaN where there is none).

    On a virtual machine of a shared host, a run during which the neighbours took the CPU
    measured them as much as the code; this tells such a run apart from one that measured
    a change.
    """

    begun: tuple[int, int] = field(default_factory=_cpu_ticks)

    def start(self) -> None:
        self.begun = _cpu_ticks()

    def share(self) -> float:
        """Stolen ticks / all ticks since :meth:`start`, 0..1."""
        stolen, total = (now - then for now, then in zip(_cpu_ticks(), self.begun, strict=True))
        return stolen / total if total > 0 and stolen >= 0 else float("nan")


def steal_text(share: float) -> str:
    """``, CPU stolen 12 %`` for a progress line when over 2 %; else nothing."""
    return f", CPU stolen {share:.0%}" if share == share and share > 0.02 else ""


STEP_NOTICED = 0.5
"""Seconds of :meth:`ClockSteps.stepped` from which a phase is reported as disturbed."""


def noticed(step: float) -> bool:
    """Whether a step of :meth:`ClockSteps.stepped` is big enough to report."""
    return abs(step) >= STEP_NOTICED


def step_text(step: float) -> str:
    """A table cell for a step: the seconds if noticed, else ``-``."""
    return f"{step:+.1f}" if noticed(step) else "-"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load() -> str:
    """The load averages over 1, 5 and 15 minutes."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """One line about the machine and its load, for the top of a benchmark's output."""
    return (
        f"machine: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average {load()}"
    )


def clean_up(workdir: Path, *, keep: bool, failed: bool) -> None:
    """Remove a run's work directory, or keep it for its logs (after a failure, or when
    asked) and say where it is."""
    if keep or failed:
        print(f"work directory kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def table(header: str, rows: list[str]) -> None:
    """Print a Markdown table: ``header`` (``| a | b |``), the alignment row (first column
    left, the others right), then ``rows``."""
    print("\n" + header)
    print("| --- |" + " ---: |" * (header.count("|") - 2))
    for row in rows:
        print(row)


class Watching:
    """A watch of the apiserver kept open while a block runs (``async with``): subclasses
    say what to do first (:meth:`_ready`, before the block starts) and with the stream
    (:meth:`_watch`, a task cancelled when the block ends)."""

    def __init__(self, server: str, ctx: ssl.SSLContext) -> None:
        self._client = httpx.AsyncClient(base_url=server, verify=ctx, timeout=None)
        self._task: asyncio.Task[None] | None = None

    async def _ready(self) -> None:
        """Before the block starts: nothing unless a subclass needs it."""

    async def _watch(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self._ready()
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._client.aclose()


class QuotaSizes(Watching):
    """The largest DatabaseQuota the apiserver sent while a block ran, from a watch of
    every quota (cluster-wide, so that a phase over many namespaces is covered): its bytes
    on the wire and its count of reservations (``peak``). Each reservation's entries cost
    the apiserver and every watcher on every write of the quota (``bench/README.md``), so
    the list's length is what to watch. The object is measured, not parsed (during a
    burst it can be hundreds of KiB, several times a second), so the client's CPU stays
    low."""

    PATH = "/apis/dbquota.io/v1alpha1/databasequotas"

    def __init__(self, server: str, ctx: ssl.SSLContext) -> None:
        super().__init__(server, ctx)
        self.peak = (0, 0)

    async def _watch(self) -> None:
        while True:  # the apiserver ends a watch now and then: open another
            async with self._client.stream("GET", self.PATH, params={"watch": "1"}) as response:
                async for line in response.aiter_lines():
                    if '"kind":"DatabaseQuota"' not in line[:200]:
                        continue  # an error or bookmark event, not a quota
                    held = line.count('"reservedAt"')  # one per reservation
                    self.peak = (max(self.peak[0], len(line)), max(self.peak[1], held))


@dataclass(frozen=True)
class ApiserverMetrics:
    """What one scrape of the apiserver's ``/metrics`` says about requests and webhooks."""

    requests: dict[RequestKey, float]
    """``apiserver_request_total`` summed over codes, by (verb, resource, subresource), for
    resource requests (``/metrics`` and other non-resource paths are left out)."""
    webhook_seconds: float
    """``apiserver_admission_webhook_admission_duration_seconds_sum`` over all webhooks."""
    webhook_calls: float
    """Its ``_count``: webhook calls the apiserver made."""
    webhook_within: dict[float, float]
    """Its cumulative ``_bucket`` counts by upper bound in seconds: calls that took at most
    that long."""
    watches_open: float
    """``apiserver_longrunning_requests`` of verb WATCH: watches open right now."""

    @classmethod
    def parse(cls, text: str) -> ApiserverMetrics:
        requests: dict[RequestKey, float] = {}
        webhook_seconds = webhook_calls = watches_open = 0.0
        webhook_within: dict[float, float] = {}
        for sample in scraping.samples(text):
            labels = sample.labels
            if sample.name == "apiserver_request_total" and labels.get("resource"):
                group = labels.get("group")
                resource = labels["resource"] + (f".{group}" if group else "")
                key = (labels["verb"], resource, labels.get("subresource", ""))
                requests[key] = requests.get(key, 0.0) + sample.value
            elif sample.name == "apiserver_admission_webhook_admission_duration_seconds_sum":
                webhook_seconds += sample.value
            elif sample.name == "apiserver_admission_webhook_admission_duration_seconds_count":
                webhook_calls += sample.value
            elif sample.name == "apiserver_admission_webhook_admission_duration_seconds_bucket":
                bound = float(labels["le"])
                webhook_within[bound] = webhook_within.get(bound, 0.0) + sample.value
            elif sample.name == "apiserver_longrunning_requests" and labels.get("verb") == "WATCH":
                watches_open += sample.value
        return cls(requests, webhook_seconds, webhook_calls, webhook_within, watches_open)


def delta(
    after: dict[RequestKey, float], before: dict[RequestKey, float]
) -> dict[RequestKey, float]:
    """What ``after`` counts beyond ``before``, keys with no change left out."""
    diff = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {k: v for k, v in diff.items() if v}
