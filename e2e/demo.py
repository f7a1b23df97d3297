"""``make demo``: the whole story on a fresh machine, narrated step by step.

A local control plane (etcd + kube-apiserver built from their Go modules), the CRDs, the
billing simulator in its own process, and the operator with its dev webhook, syncing from
the simulator every 2 s. Then the objects in ``examples/``: a tenant's quota, claims
admitted at live prices, ``kubectl dbquota explain`` asking whether the next one would
fit (a server-side dry run through the real webhook), that one denied over budget with its
reason. Then the simulator goes
down: the circuit breaker opens, the quota shows ``Open`` and degraded, a new claim is
priced conservatively (with a kubectl warning), and every recovery timeout the breaker
lets exactly one probe through. The simulator recovers; the next single probe closes the
breaker. ``kubectl get databasequotas`` follows every step; ``kubectl dbquota top -A``
sums it up at the end.

Each step checks that what it narrates happened, within a bounded wait, so the demo is
also a smoke test (``e2e/test_demo.py``): it exits non-zero, saying which step failed and
where the logs are, when one did not. The processes are started and torn down by
:class:`e2e.harness.Harness` (always a control plane of its own, never an existing
cluster): at the end, also on failure, Ctrl-C or SIGTERM. ``--keep`` leaves it all running
and prints how to reach it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from e2e import controlplane, harness
from tests.simulating import Simulator

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NAMESPACE = QUOTA = "team-a"

BOLD, DIM, RED, GREEN, RESET = "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = RED = GREEN = RESET = ""
CHECK = "✓"
try:
    CHECK.encode(sys.stdout.encoding or "ascii")
except (UnicodeEncodeError, LookupError):
    CHECK = "ok:"

SIM_CLUSTERS, SIM_SEED, SIM_BILLED = 50, 47, "orders-db"
"""The simulator's data. With this seed it bills cluster ``orders-db`` as what
``examples/claim-orders.yaml`` asks for (one db.r6g.large, 100 GiB), so the claim's
observed cost matches its estimate."""

RECOVERY_TIMEOUT = 8.0
OPERATOR_FLAGS = (
    "--sync-interval=2",
    "--resync-interval=1",
    "--breaker-failure-threshold=2",
    f"--breaker-recovery-timeout={RECOVERY_TIMEOUT:g}",
    "--retry-attempts=1",
    "--request-timeout=1",
    "--connect-timeout=0.5",
)
"""Fast settings, so that an outage and a recovery show within seconds."""

T = TypeVar("T")


class DemoFailed(RuntimeError):
    """A step did not behave as narrated."""


def received(stats: dict[str, Any]) -> dict[str, int]:
    """Requests received by endpoint."""
    return dict(stats["received"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """What ``after`` counts beyond ``before``, endpoints with no change left out."""
    diff = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in diff.items() if v}


def requests_text(counts: dict[str, int]) -> str:
    """``1 GET /pricing, 1 GET /metrics (bulk)`` for people."""
    names = {
        "pricing": "GET /pricing",
        "bulk": "GET /metrics (bulk)",
        "cluster": "GET /metrics/{id}",
    }
    parts = [f"{n} {names.get(k, k)}" for k, n in sorted(counts.items()) if n]
    return ", ".join(parts) or "none"


class Demo:
    """Narration and the handful of commands the story needs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.harness = harness.Harness(workdir)
        self.step_no = 0
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        self.step_no += 1
        elapsed = time.monotonic() - self.started
        print(f"\n{BOLD}== {self.step_no}. {text}{RESET} {DIM}[{elapsed:.0f}s]{RESET}", flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def good(self, text: str) -> None:
        print(f"   {GREEN}{CHECK} {text}{RESET}", flush=True)

    def kubectl(self, *args: str, show: bool = True, check: bool = True) -> str:
        """Run kubectl; its output (stderr interleaved, as a terminal shows it) is returned."""
        if show:
            print(f"{DIM}$ kubectl {' '.join(args)}{RESET}", flush=True)
        proc = self.harness.kubectl(*args, check=False, interleave=True)
        out = proc.stdout.rstrip()
        if show and out:
            colour = RED if proc.returncode else ""
            print(f"{colour}{out}{RESET if colour else ''}", flush=True)
        if check and proc.returncode != 0:
            raise DemoFailed(f"kubectl {' '.join(args)} failed: {out}")
        return out

    def get_json(self, *args: str) -> dict[str, Any]:
        """``kubectl get ARGS -o json``, parsed; ``{}`` when it fails (not there yet)."""
        return self.harness.kubectl.get_json(*args, missing_ok=True)

    def quotas(self, *extra: str) -> None:
        """The quotas' table (``kubectl get databasequotas``), shown after every step."""
        self.kubectl("get", "databasequotas", *extra)

    def quota_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get_json("databasequota", QUOTA).get("status", {})
        return status

    def billing_state(self) -> tuple[str, bool | None]:
        """(circuitState, degraded) as the quota's status shows them."""
        billing = self.quota_status().get("billing", {})
        return str(billing.get("circuitState", "")), billing.get("degraded")

    def claim_status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get_json("databaseclaim", name).get("status", {})
        return status

    def wait_priced(self, name: str) -> dict[str, Any]:
        """The claim's status once the operator wrote its cost and pricing."""

        def priced() -> dict[str, Any] | None:
            status = self.claim_status(name)
            return status if status.get("pricing") else None

        return self.wait_until(
            f"claim {name}'s status (estimatedMonthlyCost, pricing)",
            priced,
            last=lambda: self.claim_status(name),
        )

    def breaker_events(self) -> list[tuple[str, str, int]]:
        """(reason, latest message, occurrences) of the quota's circuit breaker Events, in the
        order they last happened, as ``kubectl events`` sorts them: a repeat (a second
        CircuitOpen) is the same Event with a higher ``series.count``."""
        items = self.get_json(
            "events",
            "--field-selector",
            f"involvedObject.kind=DatabaseQuota,involvedObject.name={QUOTA}",
        ).get("items", [])
        items.sort(key=last_happened)
        return [
            (e["reason"], e["message"], int((e.get("series") or {}).get("count", 1)))
            for e in items
            if str(e["reason"]).startswith("Circuit")
        ]

    def show_breaker_events(self) -> None:
        self.kubectl("events", "-n", NAMESPACE, "--for", f"databasequota/{QUOTA}")

    def wait_until(
        self,
        what: str,
        predicate: Callable[[], T | None],
        *,
        timeout: float = 30,
        interval: float = 0.3,
        last: Callable[[], object] | None = None,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy (returned); fail after timeout
        with ``what`` and, if given, what ``last()`` shows then."""
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.harness.children().items():
                if proc.poll() is not None:
                    raise DemoFailed(
                        f"the {name} exited with {proc.returncode} while waiting for {what} "
                        f"(logs in {self.workdir})"
                    )
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                seen = f"; last seen: {last()}" if last is not None else ""
                raise DemoFailed(f"timed out after {timeout:g}s waiting for {what}{seen}")
            time.sleep(interval)


def last_happened(event: dict[str, Any]) -> str:
    """When an ``events.k8s.io/v1`` Event (read through the core API) last happened: its
    ``series.lastObservedTime``, else its ``eventTime`` (MicroTime strings sort in time)."""
    return str((event.get("series") or {}).get("lastObservedTime") or event.get("eventTime"))


def expect(condition: bool, failure: str) -> None:
    """Fail the demo with ``failure`` unless ``condition``."""
    if not condition:
        raise DemoFailed(failure)


def start_billing(demo: Demo) -> Simulator:
    demo.step("Start the billing simulator: a real HTTP billing provider, in its own process")
    flag = f"--cluster-id={SIM_BILLED}"
    demo.say(f"$ dbquota billing-sim --port=0 --clusters={SIM_CLUSTERS} --seed={SIM_SEED} {flag}")
    billing = demo.harness.billing(flag, clusters=SIM_CLUSTERS, seed=SIM_SEED)
    demo.say(f"listening on {billing.url}: {SIM_CLUSTERS} clusters, plus {SIM_BILLED}")
    prices = billing.pricing()
    hourly = prices["instance_hourly"]
    demo.say(f"$ curl {billing.url}/pricing   (prices move every minute, by up to 15 %)")
    for cls in ("db.r6g.large", "db.r6g.xlarge", "db.r6g.4xlarge", "db.m6g.large"):
        demo.say(f"  {cls:<16} {hourly[cls]:.4f} {prices['currency']}/hour")
    demo.say(f"  storage          {prices['storage_gib_month']:.4f} {prices['currency']}/GiB-month")
    demo.say("a claim costs hourly price x 730 h x replicas + GiB x storage price, per month")
    return billing


def start_operator(demo: Demo, billing: Simulator) -> None:
    demo.step("Start the operator: webhook on 127.0.0.1 (TLS, generated certificate)")
    # only the apiserver's webhook client certificate gets through TLS
    flags = [
        f"--billing-url={billing.url}",
        *OPERATOR_FLAGS,
        *demo.harness.current_cluster.client_ca_flags(),
    ]
    demo.say(f"$ dbquota run --dev-webhook {' '.join(flags)}")
    demo.say(
        f"(syncs billing every 2 s; the breaker opens after 2 failures and probes after "
        f"{RECOVERY_TIMEOUT:g} s)"
    )
    demo.harness.operator(extra=tuple(flags), configuration="dbquota.io")
    demo.kubectl("get", "validatingwebhookconfigurations")


def tenant(demo: Demo) -> None:
    demo.step("A tenant namespace with its monthly budget: 5,000 USD, policy Conservative")
    demo.kubectl("apply", "-f", str(EXAMPLES / "namespace.yaml"))
    demo.kubectl("config", "set-context", "--current", f"--namespace={NAMESPACE}")
    demo.kubectl("apply", "-f", str(EXAMPLES / "quota-team-a.yaml"))
    demo.wait_until(
        "the quota's status to show billing healthy (circuit Closed, not degraded)",
        lambda: demo.billing_state() == ("Closed", False),
        timeout=45,
        last=demo.billing_state,
    )
    demo.quotas()
    demo.good("billing is live: CIRCUIT Closed, DEGRADED false")


def admitted(demo: Demo) -> None:
    demo.step("Two claims within the budget are admitted, priced at live prices")
    for name in ("orders", "reporting"):
        out = demo.kubectl("apply", "-f", str(EXAMPLES / f"claim-{name}.yaml"))
        expect(f"databaseclaim.dbquota.io/{name} created" in out, f"claim {name} not created")
    for name in ("orders", "reporting"):
        status = demo.wait_priced(name)
        expect(status["pricing"] == "Live", f"claim {name} was priced {status['pricing']}")
    demo.kubectl("get", "databaseclaims")
    demo.good("admitted; PRICING Live")
    demo.say("each claim carries the price its admission charged (COST); the quota counts it")
    demo.say("as RESERVED until billing shows the database:")
    demo.quotas("-o", "wide")

    demo.say(f"the simulator bills cluster {SIM_BILLED} (claim orders); at the next sync the")
    demo.say("operator sees its cost and counts it as SPEND instead:")

    def billed() -> bool:
        spend = demo.quota_status().get("spend", {})
        return float(spend.get("observed", 0)) > 0

    demo.wait_until(
        f"billing to show {SIM_BILLED}: observed spend for orders",
        billed,
        timeout=30,
        last=lambda: demo.quota_status().get("spend"),
    )
    demo.quotas("-o", "wide")
    demo.good("SPEND is what billing observes; RESERVED what is admitted but not billed yet")


def denied(demo: Demo) -> None:
    demo.step("Would it fit? Ask before applying: kubectl dbquota explain (server-side dry run)")
    demo.say("the kubectl-dbquota plugin comes with the package; kubectl finds it on PATH")
    claim = str(EXAMPLES / "claim-analytics.yaml")
    asked = demo.kubectl("dbquota", "explain", "-f", claim, check=False)  # exit 1: denied
    expect("BudgetExceeded" in asked, "explain did not say the claim would be denied")
    demo.good("explain went through the real webhook as a dry run: the verdict, nothing reserved")

    demo.step("A claim that would take team-a over its budget is denied, with the reason")
    out = demo.kubectl("apply", "-f", str(EXAMPLES / "claim-analytics.yaml"), check=False)
    match = re.search(
        r"denied by DatabaseQuota team-a: projected ([\d,.]+) USD/month exceeds budget "
        r"5,000\.00 by ([\d,.]+) \(.*prices live\)",
        out,
    )
    expect(match is not None, "the over-budget claim was not denied with a budget message")
    expect(not demo.get_json("databaseclaim", "analytics"), "the denied claim exists after all")
    assert match is not None
    demo.good(f"denied: projected {match.group(1)} USD/month is {match.group(2)} over budget")
    demo.quotas()


def outage(demo: Demo, billing: Simulator) -> dict[str, Any]:
    """The simulator goes down; returns its counts from when the breaker opened."""
    demo.step("The billing API goes down")
    billing.reset_stats()
    demo.say(f'$ curl -X POST {billing.url}/_faults -d \'{{"mode": "outage"}}\'')
    billing.fault(mode="outage")
    demo.say("every billing request now gets 503; after 2 failed calls the breaker opens")
    demo.wait_until(
        "the quota to show CIRCUIT Open and DEGRADED true",
        lambda: demo.billing_state() == ("Open", True),
        timeout=30,
        last=demo.billing_state,
    )
    at_open = billing.stats()
    demo.quotas()
    failed = sum(o.get("503", 0) for o in at_open["outcomes"].values())
    expect(failed == 2, f"the breaker opened after {failed} failed requests, not 2")
    demo.say(f"the simulator answered {failed} requests with 503 before the breaker opened")
    reason = demo.quota_status().get("billing", {}).get("degradedReason", "")
    demo.good(f"CIRCUIT Open, DEGRADED true: {reason}")
    demo.say("the transition is an Event on every quota (kubectl describe databasequota shows it):")
    demo.show_breaker_events()
    expect(
        ("CircuitOpen" in [r for r, _, _ in demo.breaker_events()]),
        "no CircuitOpen Event on the quota",
    )
    return at_open


def conservative(demo: Demo, last_prices: dict[str, Any]) -> None:
    demo.step("While billing is down, a new claim is priced conservatively")
    demo.say("nothing on the admission path waits for billing; the quota's policy applies:")
    out = demo.kubectl("apply", "-f", str(EXAMPLES / "claim-search.yaml"))
    expect(
        "Warning: billing degraded (circuit Open" in out and "policy Conservative" in out,
        "the admission carried no conservative-pricing warning",
    )
    status = demo.wait_priced("search")
    expect(status["pricing"] == "Conservative", f"claim search was priced {status['pricing']}")
    demo.kubectl("get", "databaseclaims")
    # claim-search.yaml: 2 x db.m6g.large, 200 GiB
    live = 730 * 2 * last_prices["instance_hourly"]["db.m6g.large"]
    live += 200 * last_prices["storage_gib_month"]
    cost = float(status["estimatedMonthlyCost"])
    demo.good(f"admitted at {cost:,.2f} USD/month, PRICING Conservative")
    demo.say(
        f"(at the simulator's prices just before the outage: {live:,.2f}; conservative "
        "pricing takes the highest prices billing ever showed, x safetyMargin 1.2)"
    )
    demo.quotas()


def single_probes(demo: Demo, billing: Simulator, at_open: dict[str, Any]) -> None:
    demo.step(
        f"Still down: every {RECOVERY_TIMEOUT:g} s the breaker lets exactly one probe through"
    )
    demo.say("while Open, the operator's syncs (every 2 s) send nothing; when the recovery")
    demo.say("timeout ends, ONE request probes the provider (HalfOpen); it fails, Open again")

    def probes_failed() -> int:
        """Repeats of CircuitOpen: after the first, each is a half-open probe that failed."""
        opened = [n for r, _, n in demo.breaker_events() if r == "CircuitOpen"]
        return max(sum(opened) - 1, 0)

    demo.wait_until(
        "a failed half-open probe (the CircuitOpen Event seen twice)",
        probes_failed,
        timeout=RECOVERY_TIMEOUT + 20,
        last=demo.breaker_events,
    )
    # A consistent reading: the failed probes the Events show, and the requests since the
    # breaker opened, with no probe in between (the next one is a recovery timeout away).
    for _ in range(10):
        probes = probes_failed()
        stats = billing.stats()
        if probes_failed() == probes:
            break
        time.sleep(0.5)
    sent = delta(received(stats), received(at_open))
    refused = stats["outcomes"].get("pricing", {}).get("503", 0)
    refused -= at_open["outcomes"].get("pricing", {}).get("503", 0)
    demo.show_breaker_events()
    demo.say(f"requests since the breaker opened: {requests_text(sent)}")
    expect(
        sent == {"pricing": probes} and refused == probes,
        f"{probes} half-open probe(s) failed, but the operator sent {requests_text(sent)} "
        f"({refused} answered 503)",
    )
    demo.good(f"{probes} probe(s), one request each (GET /pricing), answered 503")
    demo.quotas()


def recovery(demo: Demo, billing: Simulator) -> None:
    demo.step("The billing API recovers")
    at_recovery = billing.stats()
    before = received(at_recovery)
    ok_before = at_recovery["outcomes"].get("pricing", {}).get("ok", 0)
    demo.say(f'$ curl -X POST {billing.url}/_faults -d \'{{"mode": "none"}}\'')
    billing.fault(mode="none")
    recovered = time.monotonic()
    demo.say(f"the breaker is still Open: nothing is sent until its {RECOVERY_TIMEOUT:g} s are up")
    first: list[tuple[float, dict[str, int], int]] = []

    def closed() -> bool:
        if not first:  # until the probe, only the simulator's counts are polled
            stats = billing.stats()
            sent = delta(received(stats), before)
            if not sent:
                return False
            after = time.monotonic() - recovered
            time.sleep(0.3)  # counted on arrival; its outcome once answered
            answered = billing.stats()["outcomes"].get("pricing", {}).get("ok", 0)
            first.append((after, sent, answered - ok_before))
        return demo.billing_state() == ("Closed", False)

    demo.wait_until(
        "the breaker to close (CIRCUIT Closed, DEGRADED false)",
        closed,
        timeout=RECOVERY_TIMEOUT + 20,
        interval=0.1,
        last=demo.billing_state,
    )
    after, sent, ok = first[0]
    demo.quotas()
    demo.show_breaker_events()
    events = demo.breaker_events()
    reasons = [r for r, _, _ in events]
    expect(
        reasons[-2:] == ["CircuitHalfOpen", "CircuitClosed"] and "probe succeeded" in events[-1][1],
        f"the Events do not end with HalfOpen -> Closed (probe succeeded): {reasons}",
    )
    expect(
        sent.get("pricing") == 1,
        f"the first requests after recovery were {requests_text(sent)}, not one probe",
    )
    expect(ok == 1, "the first request after recovery (the probe) did not succeed")
    demo.say(
        f"first request after recovery: +{after:.1f}s, {requests_text({'pricing': 1})}: the "
        "single half-open probe; it succeeded"
    )
    demo.good("Open -> HalfOpen -> Closed on one probe; syncing resumed, prices live again")


def run(demo: Demo) -> None:
    """The narrated story."""
    demo.step("Start a real control plane: etcd and kube-apiserver built from Go modules")
    demo.harness.cluster(reuse=False)
    demo.kubectl("version")

    demo.step("Install the CRDs: DatabaseQuota (dbq) and DatabaseClaim (dbc)")
    demo.kubectl("apply", "-f", str(harness.CRDS))
    demo.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    demo.quotas("-A")

    billing = start_billing(demo)
    start_operator(demo, billing)
    demo.quotas("-A")
    tenant(demo)
    admitted(demo)
    denied(demo)
    last_prices = billing.pricing()
    at_open = outage(demo, billing)
    conservative(demo, last_prices)
    single_probes(demo, billing, at_open)
    recovery(demo, billing)

    demo.step("What FinOps sees")
    demo.kubectl("get", "databasequotas,databaseclaims", "-A")
    demo.say("budgets by share used, across namespaces:")
    demo.kubectl("dbquota", "top", "-A")
    demo.say("conditions and Events (a repeated Event is one, with a count):")
    described = demo.kubectl("describe", "databasequota", QUOTA, "-n", NAMESPACE)
    alert = re.search(r"BudgetThresholdCrossed\s.*spend reached (\d+)%", described)
    expect(alert is not None, "no BudgetThresholdCrossed Event on the quota")
    expect(
        re.search(r"CircuitOpen\s+\S+ \(x\d+ over", described) is not None,
        "the repeated CircuitOpen is not one Event with its count",
    )
    demo.good(f"spend passed the {alert.group(1) if alert else '?'}% budget alert: one Event")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dbquota-demo-"))
    # kubectl finds the kubectl-dbquota plugin on PATH: the one installed beside this Python
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    demo = Demo(workdir)
    ok = False
    with demo.harness:  # tears down on exit, Ctrl-C and SIGTERM
        try:
            run(demo)
            ok = True
        except (
            DemoFailed,
            harness.HarnessError,
            controlplane.ControlPlaneError,
            httpx.HTTPError,
        ) as exc:
            print(f"\n{RED}demo failed: {exc}{RESET}\nlogs are in {workdir}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"\ninterrupted; logs are in {workdir}", file=sys.stderr)
        if args.keep and ok:
            demo.harness.keep()
            cluster = demo.harness.current_cluster
            pids = " ".join(str(p.pid) for p in demo.harness.children().values())
            print(f"\nstill running; export KUBECONFIG={cluster.kubeconfig}")
            down = f"python -m e2e.controlplane down --dir {cluster.state_dir}"
            print(f"stop with: kill {pids}; {down}")
            return 0
        demo.step("Tear down: operator, billing simulator, apiserver, etcd")
    if ok:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    demo.say(f"done in {time.monotonic() - demo.started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
