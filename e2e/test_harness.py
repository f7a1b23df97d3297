"""The harness that the fixtures, the demo and the benchmarks share keeps its promises.

Checks that :meth:`e2e.harness.Cluster.ssl_context` reaches the apiserver with the
kubeconfig's client certificate given as files or inline (``*-data``), and refuses a
kubeconfig without one with a message naming what is missing; and that a script's
:class:`e2e.harness.Harness` tears down what it started (here the billing simulator) when
the script gets SIGTERM, not only on a normal exit.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from e2e import harness
from e2e.harness import Cluster

REPO = Path(__file__).resolve().parents[1]


def inline(kubeconfig: Path, target: Path) -> Path:
    """A copy of ``kubeconfig`` with its CA and client certificate inline, in ``target``."""
    config = json.loads(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    for section, key in ((cluster, "certificate-authority"), (user, "client-certificate")):
        section[f"{key}-data"] = base64.b64encode(Path(section.pop(key)).read_bytes()).decode()
    user["client-key-data"] = base64.b64encode(Path(user.pop("client-key")).read_bytes()).decode()
    target.write_text(json.dumps(config))
    return target


def test_ssl_context_reaches_the_apiserver_from_files_or_inline_data(
    cluster: Cluster, tmp_path: Path
) -> None:
    if cluster.state_dir is None:
        pytest.skip("DBQUOTA_E2E_USE_EXISTING: the kubeconfig is the user's, not ours")
    copy = Cluster(
        kubeconfig=inline(cluster.kubeconfig, tmp_path / "kubeconfig"),
        webhook_host=cluster.webhook_host,
        bins=cluster.bins,
        state_dir=None,
    )
    for each in (cluster, copy):
        answer = httpx.get(f"{each.server}/readyz", verify=each.ssl_context(), timeout=10)
        assert answer.text == "ok"


def test_a_kubeconfig_without_a_client_certificate_is_refused_clearly(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "secret"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    tokened = Cluster(
        kubeconfig=tmp_path / "kubeconfig", webhook_host="", bins=cluster.bins, state_dir=None
    )
    with pytest.raises(harness.HarnessError, match="no client-certificate"):
        tokened.ssl_context()


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from e2e.harness import Harness

    with Harness(Path(sys.argv[1])) as h:
        print(h.billing(clusters=5, seed=1).process.pid, flush=True)
        time.sleep(120)
    print("torn down", flush=True)
    """
)


def test_sigterm_tears_down_what_the_harness_started(tmp_path: Path) -> None:
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert script.stdout is not None
    simulator = int(script.stdout.readline())
    os.kill(simulator, 0)  # running
    script.send_signal(signal.SIGTERM)
    out, err = script.communicate(timeout=60)
    assert script.returncode != 0  # interrupted, not finished
    assert "KeyboardInterrupt" in err
    assert "torn down" not in out
    with pytest.raises(ProcessLookupError):
        os.kill(simulator, 0)  # stopped (and reaped) by the harness, not left behind
