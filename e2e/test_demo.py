"""``make demo`` keeps telling its story: run ``python -m e2e.demo`` and read what it says.

The demo starts its own control plane, billing simulator and operator, and checks every
step it narrates (it exits non-zero when one does not behave); this test runs it as a
subprocess and asserts that it passed and that the key moments show in its output: the
over-budget denial with its message, the breaker Open and degraded, the conservative
price with kubectl's warning, the single probes and the breaker Closed again (as
``kubectl events`` prints them), and ``kubectl describe`` with a budget alert and a
repeated Event shown once with its count. On a
timeout the demo gets SIGINT first, so that it tears everything down.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def run_demo() -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e.demo"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the demo tears down on Ctrl-C
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"the demo took more than {TIMEOUT}s:\n{out}") from None
    return proc.returncode, out


def test_make_demo_tells_the_whole_story() -> None:
    code, out = run_demo()
    assert code == 0, out
    assert "\033[" not in out, "colours when not writing to a terminal"
    expected = [
        # admitted at live prices
        r"orders\s+postgres\s+db\.r6g\.large\s+100\s+1\s+[\d.]+\s+Live",
        r"reporting\s+postgres\s+db\.r6g\.xlarge\s+500\s+2\s+[\d.]+\s+Live",
        # denied over budget, by how much and why
        r'admission webhook "validate-claims\.dbquota\.io" denied the request: denied by '
        r"DatabaseQuota team-a: projected [\d,.]+ USD/month exceeds budget 5,000\.00 by "
        r"[\d,.]+ \(observed [\d,.]+ \+ reserved [\d,.]+ \+ this claim [\d,.]+; prices live\)",
        # the outage: Open and degraded, as kubectl get databasequotas shows it
        r"team-a\s+5000\s+[\d.]+\s+[\d.]+\s+Open\s+true",
        r"CircuitOpen\s+DatabaseQuota/team-a\s+billing circuit breaker Closed -> Open: 2 "
        r"consecutive failures",
        # a claim priced conservatively, with kubectl's warning
        r"Warning: billing degraded \(circuit Open\): policy Conservative, priced "
        r"conservatively at highest known prices x 1\.2",
        r"search\s+mysql\s+db\.m6g\.large\s+200\s+2\s+[\d.]+\s+Conservative",
        # one probe per recovery timeout, then the probe that closes the breaker
        r"CircuitOpen\s+DatabaseQuota/team-a\s+billing circuit breaker HalfOpen -> Open: probe "
        r"failed",
        r"CircuitClosed\s+DatabaseQuota/team-a\s+billing circuit breaker HalfOpen -> Closed: "
        r"probe succeeded",
        r"first request after recovery: \+[\d.]+s, 1 GET /pricing",
        r"team-a\s+5000\s+[\d.]+\s+[\d.]+\s+Closed\s+false",
        # kubectl describe: a budget alert, and a repeated Event shown once with its count
        r"Warning\s+BudgetThresholdCrossed\s+\S+\s+dbquota\.io/operator\s+spend reached 10% "
        r"of the monthly budget",
        r"Warning\s+CircuitOpen\s+\S+ \(x\d+ over \S+\)\s+dbquota\.io/operator",
        r"Tear down",
    ]
    missing = [pattern for pattern in expected if not re.search(pattern, out)]
    assert not missing, f"not in the demo's output: {missing}\n{out}"
