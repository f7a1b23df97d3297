"""``make demo``: the whole story on a fresh machine, narrated step by step.

Starts a local control plane (etcd + kube-apiserver built from their Go modules), installs
the CRDs, starts the operator with its dev webhook, applies the objects in ``examples/``,
shows what ``kubectl`` shows after each step, and tears everything down, also on Ctrl-C
or failure. ``--keep`` leaves it all running and prints how to reach it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e import controlplane

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

BOLD, DIM, RED, GREEN, RESET = "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = RED = GREEN = RESET = ""


class Demo:
    """Narration and the handful of commands the story needs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.bins = controlplane.binaries()
        self.env = {**os.environ, "KUBECONFIG": str(workdir / "kubeconfig")}
        self.step_no = 0
        self.children: list[subprocess.Popen[bytes]] = []

    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"\n{BOLD}== {self.step_no}. {text}{RESET}", flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def kubectl(self, *args: str, show: bool = True, check: bool = True) -> str:
        cmd = ["kubectl", *args]
        if show:
            print(f"{DIM}$ {' '.join(cmd)}{RESET}", flush=True)
        proc = subprocess.run(
            [str(self.bins.kubectl), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        out = (proc.stdout + proc.stderr).rstrip()
        if show and out:
            colour = RED if proc.returncode else ""
            print(f"{colour}{out}{RESET if colour else ''}", flush=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {out}")
        return out

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        self.children.append(proc)
        return proc

    def wait_until(self, what: str, predicate: object, timeout: float = 60) -> None:
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop_children(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run(demo: Demo) -> None:
    """The narrated story."""
    demo.step("Start a real control plane: etcd and kube-apiserver built from Go modules")
    state = controlplane.up(demo.workdir / "cp")
    (demo.workdir / "kubeconfig").write_text(Path(state.kubeconfig).read_text())
    demo.kubectl("version")

    demo.step("Install the CRDs: DatabaseQuota (dbq) and DatabaseClaim (dbc)")
    demo.kubectl("apply", "-f", str(REPO / "crds"))
    demo.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")

    demo.step("Start the operator with its webhook on 127.0.0.1 (TLS, generated certificate)")
    demo.spawn(
        "operator",
        [
            sys.executable,
            "-m",
            "dbquota",
            "run",
            "--dev-webhook",
            f"--webhook-cert-dir={demo.workdir / 'certs'}",
            f"--cache-path={demo.workdir / 'cache.sqlite3'}",
            "--metrics-port=0",
        ],
    )
    demo.wait_until(
        "the webhook registration",
        lambda: (
            "dbquota.io"
            in demo.kubectl("get", "validatingwebhookconfigurations", show=False, check=False)
        ),
    )
    demo.kubectl("get", "validatingwebhookconfigurations")

    demo.step("A tenant namespace with its monthly budget")
    demo.kubectl("apply", "-f", str(EXAMPLES / "namespace.yaml"))
    demo.kubectl("apply", "-f", str(EXAMPLES / "quota-team-a.yaml"))
    demo.wait_until(
        "the quota's first status",
        lambda: (
            "Ready"
            in demo.kubectl(
                "get",
                "dbq",
                "team-a",
                "-n",
                "team-a",
                "-o",
                "jsonpath={.status.conditions[*].type}",
                show=False,
                check=False,
            )
        ),
    )
    demo.kubectl("get", "databasequotas", "-n", "team-a")

    demo.step("A claim within the quota is admitted")
    demo.kubectl("apply", "-f", str(EXAMPLES / "claim-orders.yaml"))

    demo.step("A claim beyond the quota's hard storage cap is denied, with the reason")
    out = demo.kubectl("apply", "-f", str(EXAMPLES / "claim-analytics.yaml"), check=False)
    if "denied" not in out:
        raise RuntimeError("the over-cap claim was not denied")
    demo.say(f"{GREEN}denied by the webhook, as it should be{RESET}")

    demo.step("What FinOps sees")
    demo.kubectl("get", "databasequotas,databaseclaims", "-A")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dbquota-demo-"))
    demo = Demo(workdir)
    ok = False
    try:
        run(demo)
        ok = True
    except (RuntimeError, controlplane.ControlPlaneError) as exc:
        print(f"\n{RED}demo failed: {exc}{RESET}\nlogs are in {workdir}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        if args.keep and ok:
            print(f"\nstill running; export KUBECONFIG={workdir / 'kubeconfig'}")
            print(f"stop with: python -m e2e.controlplane down --dir {workdir / 'cp'}")
        else:
            demo.step("Tear down: operator, apiserver, etcd")
            demo.stop_children()
            controlplane.down(workdir / "cp", remove=False)
            if ok:
                subprocess.run(["rm", "-rf", str(workdir)], check=False)
            demo.say("done")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
