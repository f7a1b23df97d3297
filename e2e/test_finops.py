"""What FinOps sees, end to end: Events with series, budget alerts, and ``Ready``.

Checks against the real apiserver, the real simulator and the session's operator:
1,000 ``WouldDeny`` on one Warn quota (AdmissionReviews posted to the operator's webhook)
are ONE ``events.k8s.io/v1`` Event whose series counts 1,000, with the latest note, as
``kubectl get events -o wide`` and ``kubectl events`` print it; a budget threshold crossed
up and down raises exactly one ``BudgetThresholdCrossed`` per crossing (Warning up, Normal
down) and moves the ``BudgetThresholdReached`` condition and ``status.alerts.reached``;
and a billing outage longer than a quota's ``maxStaleness`` turns ``Ready`` False with
reason ``BillingUnavailable``, while recovery brings it back to True.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from dbquota.kits import timestamps
from dbquota.services import recording
from e2e.harness import Cluster, Kubectl, Operator, as_apiserver
from e2e.test_crds import claim
from e2e.test_enforcement import live_quota, review, status, unit_cost
from e2e.waiting import wait_for
from tests.simulating import Simulator

IN_FLIGHT = 400
"""Reviews sent before waiting for their reservations to be released: below the session
operator's ``--max-reservations`` (500), past which a CREATE is refused, not warned about."""


def events(kubectl: Kubectl, namespace: str, reason: str) -> list[dict[str, Any]]:
    """The namespace's Events of ``reason`` as ``events.k8s.io/v1`` serves them."""
    items = kubectl.get_json("events.v1.events.k8s.io", "-n", namespace)["items"]
    return [e for e in items if e.get("reason") == reason]


def occurrences(event: dict[str, Any]) -> int:
    """How many times one Event happened: its series count, or 1."""
    return int((event.get("series") or {}).get("count", 1))


def conditions(kubectl: Kubectl, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status(kubectl, namespace, name).get("conditions", [])}


def test_a_thousand_would_deny_are_one_event_with_a_series(
    cluster: Cluster,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    billing: Simulator,
) -> None:
    live_quota(kubectl, namespace, "warn", monthlyBudget=1, enforcement="Warn")
    url = f"https://127.0.0.1:{operator.webhook_port}/validate-claims"
    names = [f"c{i:04d}" for i in range(1000)]
    with (
        httpx.Client(verify=as_apiserver(cluster, operator), timeout=30) as client,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):

        def send(name: str) -> None:
            answer = client.post(url, json=review(namespace, name)).json()["response"]
            assert answer["allowed"], answer
            assert "would be denied by DatabaseQuota warn" in " ".join(answer["warnings"])

        *most, last = names
        for start in range(0, len(most), IN_FLIGHT):
            wait_for(  # the previous batch's claims never appear: released after the grace
                lambda: not status(kubectl, namespace, "warn").get("reservations"),
                timeout=60,
                what="the reservations in flight to be released",
            )
            list(pool.map(send, most[start : start + IN_FLIGHT]))
        send(last)  # alone, after all the others: its note is the latest

    def counted() -> list[dict[str, Any]]:
        got = events(kubectl, namespace, "WouldDeny")
        return got if sum(map(occurrences, got)) == 1000 else []

    (event,) = wait_for(counted, timeout=60, what="1,000 WouldDeny in one Event series")
    assert event["series"]["count"] == 1000
    assert event["note"].startswith("claim c0999 admitted by enforcement mode only")
    assert event["type"] == "Warning"
    assert event["action"] == "Admit"
    assert event["reportingController"] == "dbquota.io/operator"
    assert event["reportingInstance"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["eventTime"])
    assert event["series"]["lastObservedTime"] > event["eventTime"]
    regarding = event["regarding"]
    quota_uid = kubectl.get_json("dbq", "warn", "-n", namespace)["metadata"]["uid"]
    assert (regarding["kind"], regarding["name"], regarding["uid"]) == (
        "DatabaseQuota",
        "warn",
        quota_uid,
    )
    wide = kubectl("get", "events", "-n", namespace, "-o", "wide").stdout.splitlines()
    (row,) = [line for line in wide if "WouldDeny" in line]
    assert " 1000 " in row  # the COUNT column
    printed = kubectl("events", "-n", namespace, "--for", "databasequota/warn").stdout
    assert "(x1000 over" in printed


def test_budget_thresholds_raise_one_event_per_crossing(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    cost = unit_cost(billing)
    quota = "alerting"
    live_quota(
        kubectl, namespace, quota, monthlyBudget=round(cost * 3, 2), alerts={"thresholds": [25, 50]}
    )

    def reached(value: int) -> dict[str, Any]:
        got = status(kubectl, namespace, quota)
        return got if got.get("alerts", {}).get("reached") == value else {}

    assert wait_for(lambda: reached(0), what="no threshold reached")
    assert conditions(kubectl, namespace, quota)["BudgetThresholdReached"]["reason"] == (
        "BelowThresholds"
    )
    kubectl.apply(claim(namespace, name="one"))  # a third of the budget: 25% crossed
    wait_for(lambda: reached(25), what="threshold 25% reached")
    kubectl.apply(claim(namespace, name="two"))  # two thirds: 50% crossed
    wait_for(lambda: reached(50), what="threshold 50% reached")
    reached_50 = conditions(kubectl, namespace, quota)["BudgetThresholdReached"]
    assert (reached_50["status"], reached_50["reason"]) == ("True", "ThresholdReached")
    assert reached_50["message"] == "threshold 50% reached"  # figures: status.spend, Events
    kubectl("delete", "dbc", "two", "-n", namespace)  # back to a third: 50% crossed down
    wait_for(lambda: reached(25), what="back below 50%")
    kubectl("delete", "dbc", "one", "-n", namespace)  # nothing: 25% crossed down
    wait_for(lambda: reached(0), what="back below 25%")

    def by_type() -> dict[str, list[dict[str, Any]]]:
        got = events(kubectl, namespace, "BudgetThresholdCrossed")
        return {
            kind: [e for e in got if e["type"] == kind and e["regarding"]["name"] == quota]
            for kind in ("Warning", "Normal")
        }

    def all_four() -> dict[str, list[dict[str, Any]]]:
        got = by_type()
        counts = {kind: sum(map(occurrences, items)) for kind, items in got.items()}
        return got if counts == {"Warning": 2, "Normal": 2} else {}

    crossed = wait_for(all_four, timeout=30, what="two crossings up and two down")
    (up,) = crossed["Warning"]  # isomorphic: one Event, a series of two
    (down,) = crossed["Normal"]
    assert up["note"].startswith("spend reached 50% of the monthly budget")
    assert down["note"].startswith("spend fell below 25% of the monthly budget")
    # The operator refreshes the quota every second: what it announced stays announced
    # once (status.alerts.reached remembers it), however many refreshes and syncs follow.
    synced = timestamps.from_rfc3339(
        status(kubectl, namespace, quota)["billing"]["lastSuccessfulSync"]
    )
    wait_for(
        lambda: (
            timestamps.from_rfc3339(
                status(kubectl, namespace, quota)["billing"]["lastSuccessfulSync"]
            )
            >= synced + 2 * recording.INTERVAL
        ),
        what="more syncs and refreshes (longer than a series' write interval)",
    )
    assert {k: sum(map(occurrences, v)) for k, v in by_type().items()} == {
        "Warning": 2,
        "Normal": 2,
    }


def test_ready_goes_false_while_billing_is_older_than_max_staleness_and_back(
    kubectl: Kubectl, operator: Operator, namespace: str, billing: Simulator
) -> None:
    live_quota(kubectl, namespace, "strict", monthlyBudget=5000, degradation={"maxStaleness": "4s"})

    def ready_again() -> dict[str, Any]:
        got = conditions(kubectl, namespace, "strict").get("Ready", {})
        return got if got.get("status") == "True" else {}

    assert wait_for(ready_again, what="Ready True with live billing")["reason"] == "Reconciled"
    billing.fault(mode="outage")
    try:

        def not_ready() -> dict[str, Any]:
            got = conditions(kubectl, namespace, "strict").get("Ready", {})
            return got if got.get("status") == "False" else {}

        down = wait_for(not_ready, timeout=60, what="Ready False during the outage")
        assert down["reason"] == "BillingUnavailable"
        assert "beyond maxStaleness 4s" in down["message"]
        got = status(kubectl, namespace, "strict")
        assert got["billing"]["degraded"] is True
        assert got["billing"]["stalenessSeconds"] >= 4
        assert conditions(kubectl, namespace, "strict")["BillingAvailable"]["status"] == "False"
    finally:
        billing.fault(mode="none")
    up = wait_for(ready_again, timeout=60, what="Ready True after recovery")
    assert up["reason"] == "Reconciled"
    assert up["lastTransitionTime"] >= down["lastTransitionTime"]
    billing_now = status(kubectl, namespace, "strict")["billing"]
    assert billing_now["circuitState"] == "Closed"
