"""The local control plane is the real thing: versions, health, RBAC, and its lifecycle.

Checks that kube-apiserver reports the version it was built as (ldflags), that the admin
client certificate works through real kubectl, that RBAC is on (an unknown user is
refused), and that ``python -m e2e.controlplane up/down`` start and clean up a second,
independent control plane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2e import controlplane
from e2e.harness import Cluster, Kubectl


def test_apiserver_and_kubectl_report_the_built_version(kubectl: Kubectl) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == controlplane.K8S_VERSION
    if kubectl.cluster.state_dir is not None:  # our own apiserver, not a user's cluster
        assert versions["serverVersion"]["gitVersion"] == controlplane.K8S_VERSION


def test_apiserver_is_ready_and_lists_core_resources(kubectl: Kubectl) -> None:
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    names = kubectl("api-resources", "-o", "name").stdout.split()
    assert "namespaces" in names
    assert "validatingwebhookconfigurations.admissionregistration.k8s.io" in names


def test_rbac_refuses_an_impersonated_unknown_user(kubectl: Kubectl) -> None:
    denied = kubectl("get", "namespaces", "--as=nobody", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_up_and_down_from_the_command_line(cluster: Cluster, tmp_path: Path) -> None:
    if cluster.state_dir is None:
        pytest.skip("DBQUOTA_E2E_USE_EXISTING: not starting a second control plane")
    state_dir = tmp_path / "cp"
    up = subprocess.run(
        [sys.executable, "-m", "e2e.controlplane", "up", "--dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    kubeconfig = state_dir / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout
    state = controlplane.read_state(state_dir)
    try:
        got = subprocess.run(
            [str(cluster.bins.kubectl), "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert got.stdout.strip() == "ok", got.stderr
        again = subprocess.run(
            [sys.executable, "-m", "e2e.controlplane", "up", "--dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert again.returncode == 1
        assert "already holds a control plane" in again.stderr
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "e2e.controlplane", "down", "--dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    assert not state_dir.exists()
    for pid in (state.apiserver_pid, state.etcd_pid):
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
