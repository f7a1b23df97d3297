"""The benchmarks still run: each script of ``bench/``, at a size that takes seconds.

``bench/README.md``'s figures come from these scripts, which ``make test`` does not
otherwise run; one stopped at its start for weeks, unnoticed, when the CRD it copies
changed. Each runs here as its README says, on a control plane of its own, with the
smallest rates and counts it takes: the check is that it exits 0 and prints its tables
whole (every phase ran, nothing was an error), not any figure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, timeout: float = 300) -> str:
    """``script``'s standard output; fails the test on a non-zero exit, with its output."""
    env = {k: v for k, v in os.environ.items() if k != "DBQUOTA_E2E_USE_EXISTING"}
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rows(out: str, first: str) -> list[list[str]]:
    """The cells of the table rows of ``out`` whose first cell is ``first``."""
    found = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in r] for r in found if r[0].strip() == first]


def test_ingest_runs_every_mode_both_ways() -> None:
    out = run(
        "ingest.py",
        "--clusters",
        "100",
        "--naive-clusters",
        "20",
        "--latency-naive-clusters",
        "10",
        "--page-size",
        "50",
    )
    assert [r[1] for r in rows(out, "bulk") + rows(out, "per-cluster")] == ["100"] * 4
    assert [r[1] for r in rows(out, "naive")] == ["20", "10"]


def test_webhook_server_runs_both_protocols() -> None:
    out = run("webhook_server.py", "--reviews", "50", "--rounds", "1")
    table = rows(out, "h2") + rows(out, "http/1.1")
    assert [(r[2], r[3]) for r in table] == [("50", "0")] * 2  # every review, no error


def test_status_writes_prints_both_tables() -> None:
    out = run("status_writes.py", "--sizes", "1", "--writes", "2", "--claims", "3")
    assert len(rows(out, "map")) == len(rows(out, "atomic")) == 1
    bodies = [r[1] for r in rows(out, "1") + rows(out, "2")]
    assert bodies == ["as sent", "no condition", "price only"] * 2


def test_admission_runs_both_phases() -> None:
    out = run("admission.py", "--rates", "20", "--seconds", "1", "--warmup", "0")
    for phase in ("healthy", "outage"):
        sent, ok, errors = rows(out, phase)[0][2:5]
        assert (sent, ok, errors) == ("20", "20", "0"), out
        assert int(rows(out, phase)[1][-1]) > 0, out  # the quota watch saw the reservations


def create(*args: str) -> str:
    """``bench/create.py`` at its smallest: 5 creates per phase, no lead-in."""
    return run("create.py", "--rates", "5", "--seconds", "1", "--lead-in", "0", *args, timeout=600)


def test_create_runs_its_phases_against_resourcequota() -> None:
    out = create("--phases", "nothing,resourcequota,dbquota")
    for phase in ("nothing", "resourcequota", "dbquota"):
        sent, created, errors = rows(out, phase)[0][2:5]
        assert (sent, created, errors) == ("5", "5", "0"), out
    # Every created claim showed its price, as a watcher of claims saw it.
    assert re.fullmatch(r"\d+ / \d+ \(0\)", rows(out, "dbquota")[0][-1]), out
    assert re.search(r"^\| dbquota \| 5 \| .* \| 0 \|$", out, re.MULTILINE), (
        "no row against ResourceQuota"
    )


def test_create_rounds_are_each_set_against_their_own_resourcequota_run() -> None:
    out = create("--phases", "resourcequota,dbquota", "--rounds", "2")
    for name in ("resourcequota #1", "resourcequota #2", "dbquota #1", "dbquota #2"):
        sent, created, errors = rows(out, name)[0][2:5]
        assert (sent, created, errors) == ("5", "5", "0"), out
    against = [r for r in rows(out, "dbquota #1") + rows(out, "dbquota #2") if len(r) == 9]
    assert len(against) == 2, out  # one row against ResourceQuota per round
    assert re.search(r"dbquota at 5/s: p99 .* \(median of 2 rounds: [\d.]+x, [\d.]+x\)", out), out
