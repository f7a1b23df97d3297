"""``kubectl dbquota explain`` reads the webhook's dry-run warnings and the apiserver's answer.

Checks that the explain warning the operator writes (:func:`admitting.explain`) parses back
into the same decision, for an admission, a Warn-mode admission and a denial, in any
field order, with unknown fields and a word cut short; that other warnings are not taken
for ours; how an answer becomes a verdict: admitted, warned, denied with the webhook's own
words, a quota the webhook never reached (``unchecked``), a claim the apiserver refused
as invalid, a namespace without quota, and a decision on a quota no longer listed; that
an answer which explains nothing is an error that says what to check (no webhook answered,
the webhook could not be called, RBAC); the table and document layouts; and other
operators' kinds: named in the headline and the document, a cluster-scoped object by its
tenant namespace (or its lack of one), and no explanation ending with the hint to check
that the operator enforces the kind.
"""

from __future__ import annotations

import pytest

from dbquota.errors import KubeError
from dbquota.plugin import explanations, reports
from dbquota.services import admitting
from tests.unit.services.test_admitting import decision


def figures(name: str = "team-a", **fields: object) -> reports.Figures:
    base: dict[str, object] = {
        "namespace": "ns",
        "name": name,
        "currency": "USD",
        "budget": 5000.0,
        "enforcement": "Enforce",
        "policy": "Conservative",
        "observed": 4500.0,
        "reserved": 300.0,
        "remaining": 200.0,
        "escrow": 50.0,
        "circuit_state": "Closed",
        "degraded": False,
        "degraded_reason": None,
        "staleness_seconds": 3,
        "last_successful_sync": "2026-11-30T12:00:00Z",
    }
    base.update(fields)
    return reports.Figures(**base)  # type: ignore[arg-type]


DENIAL = (
    "denied by DatabaseQuota team-a: projected 5,210.40 USD/month exceeds budget 5,000.00 by "
    "210.40 (observed 4,500.00 + reserved 300.00 + this claim 410.40; prices live)"
)
RELAYED = f'admission webhook "validate-claims.dbquota.io" denied the request: {DENIAL}'


# -- the warning ------------------------------------------------------------------------


def test_the_operators_warning_parses_back_to_its_decision() -> None:
    got = explanations.parse(admitting.explain(decision()))
    assert got == explanations.QuotaVerdict(
        quota="team-a",
        verdict="admitted",
        reason="WithinBudget",
        cost=410.4,
        pricing="Live",
        degraded=False,
        policy=None,
    )


def test_warned_and_denied_decisions_parse_with_their_policy() -> None:
    warned = explanations.parse(
        admitting.explain(
            decision(
                would_deny=True,
                reason="BudgetExceeded",
                pricing="Conservative",
                degraded=True,
                policy="Conservative",
            )
        )
    )
    assert warned is not None
    assert (warned.verdict, warned.reason, warned.pricing, warned.degraded, warned.policy) == (
        "warned",
        "BudgetExceeded",
        "Conservative",
        True,
        "Conservative",
    )
    denied = explanations.parse(
        admitting.explain(
            decision(
                allowed=False,
                would_deny=True,
                reason="BillingUnavailable",
                pricing=None,
                cost=0.0,
                degraded=True,
                policy="FailClosed",
            )
        )
    )
    assert denied is not None
    assert (denied.verdict, denied.pricing, denied.cost, denied.policy) == (
        "denied",
        None,
        0.0,
        "FailClosed",
    )


def test_fields_in_any_order_unknown_ones_ignored_a_cut_word_unknown() -> None:
    got = explanations.parse(
        "dbquota explain: verdict=admitted future=1 quota=q reason=NoIncrease cost=12.5 "
        "pricing=None degraded=tr"
    )
    assert got == explanations.QuotaVerdict(
        quota="q",
        verdict="admitted",
        reason="NoIncrease",
        cost=12.5,
        pricing=None,
        degraded=None,
        policy=None,
    )


@pytest.mark.parametrize(
    "warning",
    [
        "enforcement Warn: would be denied by DatabaseQuota warn",
        "dbquota explain: quota=q verdict=maybe reason=X",
        "dbquota explain: verdict=admitted",
        "unknown field spec.foo",
    ],
)
def test_other_warnings_are_not_taken_for_an_explanation(warning: str) -> None:
    assert explanations.parse(warning) is None


# -- the verdict --------------------------------------------------------------------------


def explain(**fields: object) -> explanations.Explanation:
    base: dict[str, object] = {
        "namespace": "ns",
        "name": "orders",
        "operation": "CREATE",
        "ok": True,
        "status": 201,
        "reason": "",
        "message": "",
        "warnings": (),
        "quotas": (),
    }
    base.update(fields)
    return explanations.explain(**base)  # type: ignore[arg-type]


def test_an_admission_names_each_quotas_decision_and_figures() -> None:
    warning = admitting.explain(decision())
    got = explain(warnings=(warning, "billing is fine"), quotas=(figures(),))
    assert (got.verdict, got.reason, got.message) == ("admitted", "WithinBudget", "")
    (line,) = got.quotas
    assert line.outcome == "admitted"
    assert line.figures == figures()
    assert got.warnings == ("billing is fine",)


def test_a_warn_mode_admission_is_warned() -> None:
    warning = admitting.explain(decision(would_deny=True, reason="BudgetExceeded"))
    got = explain(warnings=(warning,), quotas=(figures(),))
    assert (got.verdict, got.reason) == ("warned", "BudgetExceeded")


def test_a_denial_carries_the_webhooks_words_and_later_quotas_are_unchecked() -> None:
    first = admitting.explain(decision(quota="a-first"))
    denying = admitting.explain(
        decision(quota="b-team", allowed=False, would_deny=True, reason="BudgetExceeded")
    )
    got = explain(
        ok=False,
        status=403,
        reason="Forbidden",
        message=RELAYED,
        warnings=(first, denying),
        quotas=(figures("c-last"), figures("b-team"), figures("a-first")),
    )
    assert (got.verdict, got.reason, got.message) == ("denied", "BudgetExceeded", DENIAL)
    assert [(q.figures.name if q.figures else "", q.outcome) for q in got.quotas] == [
        ("a-first", "admitted"),
        ("b-team", "denied"),
        ("c-last", "unchecked"),
    ]


def test_a_claim_the_apiserver_refuses_as_invalid_is_denied() -> None:
    message = 'DatabaseClaim.dbquota.io "orders" is invalid: spec.storageGiB: Invalid value'
    got = explain(ok=False, status=422, reason="Invalid", message=message, quotas=(figures(),))
    assert (got.verdict, got.reason, got.message) == ("denied", "Invalid", message)
    assert [q.outcome for q in got.quotas] == ["unchecked"]


def test_a_namespace_without_quota_admits() -> None:
    got = explain()
    assert (got.verdict, got.reason, got.message) == (
        "admitted",
        "NoQuota",
        "namespace ns has no DatabaseQuota",
    )
    assert explanations.explanation_text(got) == (
        "DatabaseClaim ns/orders (CREATE): admitted: namespace ns has no DatabaseQuota"
    )


def test_quotas_but_no_explanation_means_no_webhook_answered() -> None:
    with pytest.raises(KubeError) as raised:
        explain(quotas=(figures("b"), figures("a")))
    assert str(raised.value).startswith(
        "no dbquota webhook answered: is the operator running? Namespace ns has DatabaseQuota "
        "a, b, yet the dry run was admitted with no dbquota explanation"
    )


def test_a_webhook_the_apiserver_could_not_call_is_no_webhook() -> None:
    message = (
        'Internal error occurred: failed calling webhook "validate-claims.dbquota.io": '
        "connect: connection refused"
    )
    with pytest.raises(KubeError, match="no dbquota webhook answered") as raised:
        explain(ok=False, status=500, reason="InternalError", message=message)
    assert "connection refused" in str(raised.value)


def test_a_refusal_of_the_request_itself_is_an_error() -> None:
    message = 'databaseclaims.dbquota.io is forbidden: User "bob" cannot create resource'
    with pytest.raises(KubeError, match="refused the dry run \\(HTTP 403\\): databaseclaims"):
        explain(ok=False, status=403, reason="Forbidden", message=message)


# -- printing ------------------------------------------------------------------------------


def test_the_table_has_a_headline_a_row_per_quota_and_the_message() -> None:
    denying = admitting.explain(decision(allowed=False, would_deny=True, reason="BudgetExceeded"))
    got = explain(
        ok=False,
        status=403,
        message=RELAYED,
        warnings=(denying, "billing data is 20 minutes old"),
        quotas=(figures(),),
    )
    assert explanations.explanation_text(got).splitlines() == [
        "DatabaseClaim ns/orders (CREATE): denied",
        "QUOTA    VERDICT   REASON           COST     PRICING   DEGRADED   POLICY   BUDGET     "
        "OBSERVED   RESERVED   ESCROW   REMAINING",
        "team-a   denied    BudgetExceeded   410.40   Live      false      -        5,000.00   "
        "4,500.00   300.00     50.00    200.00",
        DENIAL,
        "Warning: billing data is 20 minutes old",
    ]


def test_the_document_is_stable_and_says_the_overall_verdict() -> None:
    admitted = explain(warnings=(admitting.explain(decision()),), quotas=(figures(),))
    warned = explain(
        name="loud",
        warnings=(admitting.explain(decision(would_deny=True, reason="BudgetExceeded")),),
        quotas=(figures(),),
    )
    doc = explanations.explanation_document([admitted, warned])
    assert (doc["apiVersion"], doc["kind"], doc["verdict"]) == (
        "plugin.dbquota.io/v1",
        "Explanation",
        "warned",
    )
    first = doc["claims"][0]  # type: ignore[index]
    assert first == {
        "kind": "DatabaseClaim",
        "namespace": "ns",
        "name": "orders",
        "operation": "CREATE",
        "verdict": "admitted",
        "reason": "WithinBudget",
        "message": "",
        "warnings": [],
        "quotas": [
            {
                "name": "team-a",
                "verdict": "admitted",
                "reason": "WithinBudget",
                "cost": 410.4,
                "pricing": "Live",
                "degraded": False,
                "policy": None,
                "currency": "USD",
                "budget": 5000.0,
                "observed": 4500.0,
                "reserved": 300.0,
                "escrow": 50.0,
                "remaining": 200.0,
                "usedPercent": 96.0,
                "enforcement": "Enforce",
                "degradationPolicy": "Conservative",
                "circuitState": "Closed",
                "degradedReason": None,
                "stalenessSeconds": 3,
                "lastSuccessfulSync": "2026-11-30T12:00:00Z",
            }
        ],
    }
    assert explanations.overall([admitted]) == "admitted"
    denied = explain(ok=False, status=403, message=RELAYED)
    assert explanations.overall([admitted, warned, denied]) == "denied"


def test_a_decision_on_a_quota_listed_no_more_is_kept_without_figures() -> None:
    got = explain(warnings=(admitting.explain(decision(quota="gone")),))
    assert (got.verdict, got.reason, got.message) == ("admitted", "WithinBudget", "")
    (line,) = got.quotas
    assert (line.outcome, line.figures) == ("admitted", None)
    row = explanations.explanation_text(got).splitlines()[2].split()
    assert row[:4] == ["gone", "admitted", "WithinBudget", "410.40"]
    assert row[-5:] == ["-"] * 5


def test_another_operators_kind_is_named_and_a_cluster_scoped_one_by_its_tenant() -> None:
    warning = admitting.explain(decision())
    cnpg = explain(kind="Cluster", warnings=(warning,), quotas=(figures(),))
    assert explanations.explanation_text(cnpg).startswith("Cluster ns/orders (CREATE): admitted\n")
    assert explanations.explanation_document([cnpg])["claims"][0]["kind"] == "Cluster"  # type: ignore[index]
    rds = explain(kind="Instance", cluster_scoped=True, warnings=(warning,), quotas=(figures(),))
    assert explanations.explanation_text(rds).startswith(
        "Instance orders (tenant namespace ns) (CREATE): admitted\n"
    )
    untenanted = explain(
        kind="Instance", cluster_scoped=True, namespace="", label="crossplane.io/claim-namespace"
    )
    assert explanations.explanation_text(untenanted) == (
        "Instance orders (no tenant namespace) (CREATE): admitted: it names no tenant "
        "namespace (label crossplane.io/claim-namespace), so no DatabaseQuota counts it"
    )


def test_no_explanation_of_another_kind_asks_whether_the_operator_enforces_it() -> None:
    hint = " Is cnpg in the operator's --claim-kinds (the chart's claimKinds)?"
    with pytest.raises(KubeError) as raised:
        explain(kind="Cluster", quotas=(figures(),), hint=hint)
    assert str(raised.value).endswith("try again)" + hint)
