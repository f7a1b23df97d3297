"""What ``kubectl dbquota explain`` makes of a server-side dry run: the verdict and why.

For every dry-run admission the dbquota webhook adds one warning per quota it visited
(:data:`dbquota.services.admitting.EXPLAIN`)::

    dbquota explain: quota=team-a verdict=denied reason=BudgetExceeded cost=410.40
    pricing=Live degraded=false policy=-

:func:`parse` reads one such warning into a :class:`QuotaVerdict` (other warnings are not
ours: None). :func:`explain` puts together what the apiserver answered (admitted with its
warnings, or refused with a message) and the namespace's quotas as their status shows them
(:class:`dbquota.plugin.reports.Figures`) into an :class:`Explanation`: per quota the
verdict, reason, price and its basis, observed / reserved / escrow / remaining against the
budget, the policy and whether billing is degraded; for a denial, its full message.

It raises :class:`~dbquota.errors.KubeError` when the answer explains nothing: the
namespace has quotas but no dbquota webhook answered (no explain warning), or the
apiserver could not call it. :func:`explanation_text` and :func:`explanation_document`
print it. Pure; called by :mod:`dbquota.plugin.main`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dbquota.errors import KubeError
from dbquota.plugin import reports, tables
from dbquota.services import admitting

Verdict = Literal["admitted", "warned", "denied"]
QuotaOutcome = Literal["admitted", "warned", "denied", "unchecked"]

_WEBHOOK_DENIAL = re.compile(r'admission webhook "(?P<webhook>[^"]*)" denied the request: ')
_WEBHOOK_UNREACHABLE = "failed calling webhook"

NO_WEBHOOK = "no dbquota webhook answered: is the operator running?"


@dataclass(frozen=True, kw_only=True)
class QuotaVerdict:
    """One quota's decision as the webhook's explain warning states it."""

    quota: str
    verdict: Verdict
    """``admitted``; ``warned`` (admitted under enforcement Warn or DryRun, though
    Enforce would deny); ``denied``."""
    reason: str
    """One CamelCase word: ``WithinBudget``, ``BudgetExceeded``, ``HardCapExceeded``, ..."""
    cost: float | None
    """Monthly price of the claim (an UPDATE's growth), in the quota's currency."""
    pricing: str | None
    """Basis of ``cost``: Live, Cached, Conservative, StrictCap, FailOpen; None: not priced."""
    degraded: bool | None
    """Whether billing was degraded for this quota (its policy applied)."""
    policy: str | None
    """The degradation policy that applied; None when billing was healthy."""


def parse(warning: str) -> QuotaVerdict | None:
    """The :class:`QuotaVerdict` in one dbquota explain warning; None for any other warning.

    Fields are ``key=value`` words after the :data:`~dbquota.services.admitting.EXPLAIN`
    prefix, in any order; unknown keys are ignored (a newer operator may add some), a
    missing or unreadable value reads as unknown, and so does a word cut short by the
    apiserver's 256-character limit on warnings.
    """
    if not warning.startswith(admitting.EXPLAIN):
        return None
    words = warning[len(admitting.EXPLAIN) :].split()
    fields = dict(w.split("=", 1) for w in words if "=" in w)
    verdict = fields.get("verdict")
    if not fields.get("quota") or verdict not in ("admitted", "warned", "denied"):
        return None
    try:
        cost: float | None = float(fields.get("cost", ""))
    except ValueError:
        cost = None
    degraded = {"true": True, "false": False}.get(fields.get("degraded", ""))
    pricing, policy = fields.get("pricing"), fields.get("policy")
    return QuotaVerdict(
        quota=fields["quota"],
        verdict=verdict,  # type: ignore[arg-type]  # checked against the Literal above
        reason=fields.get("reason") or "Unknown",
        cost=cost,
        pricing=None if pricing in (None, "", "None") else pricing,
        degraded=degraded,
        policy=None if policy in (None, "", "-") else policy,
    )


@dataclass(frozen=True, kw_only=True)
class QuotaLine:
    """One quota in an explanation: its decision and its figures."""

    outcome: QuotaOutcome
    """The quota's verdict, or ``unchecked``: the webhook visits quotas in name order and
    stops at the first that denies, so later ones did not decide."""
    decision: QuotaVerdict | None
    figures: reports.Figures | None
    """None when the decision names a quota the namespace no longer has."""


@dataclass(frozen=True, kw_only=True)
class Explanation:
    """The verdict on one claim (of any kind dbquota prices), and why."""

    namespace: str
    """The claim's namespace; for a cluster-scoped object, the tenant namespace its label
    names ("" when it names none)."""
    name: str
    operation: Literal["CREATE", "UPDATE"]
    """CREATE for a new claim; UPDATE when the claim exists (explained as its change)."""
    verdict: Verdict
    reason: str
    """``NoQuota``; the first denying quota's reason; the apiserver's reason (``Invalid``)
    when it refused the object itself; else the last deciding quota's reason."""
    message: str
    """The denial's full message; ``namespace X has no DatabaseQuota``; else ""."""
    quotas: tuple[QuotaLine, ...]
    warnings: tuple[str, ...]
    """The other warnings of the answer (degraded billing, Warn mode, ...)."""
    kind: str = "DatabaseClaim"
    cluster_scoped: bool = False


def _denial(message: str) -> str | None:
    """The webhook's own words in an apiserver message that relays its denial, or None."""
    found = _WEBHOOK_DENIAL.search(message)
    return None if found is None else message[found.end() :]


def explain(
    *,
    namespace: str,
    name: str,
    operation: Literal["CREATE", "UPDATE"],
    ok: bool,
    status: int,
    reason: str,
    message: str,
    warnings: Sequence[str],
    quotas: Sequence[reports.Figures],
    kind: str = "DatabaseClaim",
    cluster_scoped: bool = False,
    label: str = "",
    hint: str = "",
) -> Explanation:
    """The :class:`Explanation` of a dry run that the apiserver answered with ``ok`` (or
    ``status``, ``reason``, ``message`` for a refusal) and ``warnings``, in a namespace
    with these ``quotas`` (a ``cluster_scoped`` object's tenant, from its ``label``; "" if
    none). Raises :class:`KubeError` when the answer says nothing of dbquota's verdict:
    the apiserver failed to call the webhook; it refused the request for another reason
    than the object (RBAC, a missing namespace); or it admitted a claim under quotas with
    no explain warning (no webhook answered: the error then ends with ``hint``)."""
    decisions = [d for d in (parse(w) for w in warnings) if d is not None]
    others = tuple(w for w in warnings if parse(w) is None)
    denial = None if ok else _denial(message)
    _require_a_verdict(
        namespace,
        ok=ok,
        status=status,
        message=message,
        denial=denial,
        quotas=quotas,
        decisions=decisions,
        hint=hint,
    )
    denying = next((d for d in decisions if d.verdict == "denied"), None)
    verdict: Verdict
    if not ok:
        verdict = "denied"
        reason_ = denying.reason if denying else (reason or "Denied")
        text = denial if denial is not None else message
    else:
        verdict = "warned" if any(d.verdict == "warned" for d in decisions) else "admitted"
        reason_ = decisions[-1].reason if decisions else "NoQuota"
        text = "" if quotas or decisions else _no_quota(namespace, label)
    return Explanation(
        namespace=namespace,
        name=name,
        operation=operation,
        verdict=verdict,
        reason=reason_,
        message=text,
        quotas=_lines(quotas, decisions),
        warnings=others,
        kind=kind,
        cluster_scoped=cluster_scoped,
    )


def _no_quota(namespace: str, label: str) -> str:
    """Why no quota decided: the namespace has none, or the object names no tenant."""
    if namespace:
        return f"namespace {namespace} has no DatabaseQuota"
    return f"it names no tenant namespace (label {label}), so no DatabaseQuota counts it"


def _require_a_verdict(
    namespace: str,
    *,
    ok: bool,
    status: int,
    message: str,
    denial: str | None,
    quotas: Sequence[reports.Figures],
    decisions: Sequence[QuotaVerdict],
    hint: str = "",
) -> None:
    """Raise :class:`KubeError` when the answer says nothing about dbquota's verdict."""
    if not ok and denial is None:
        if _WEBHOOK_UNREACHABLE in message:
            raise KubeError(f"{NO_WEBHOOK} The apiserver could not call it: {message}")
        if status != 422:  # 422 Invalid: the object itself is refused, which is a verdict
            raise KubeError(f"the apiserver refused the dry run (HTTP {status}): {message}")
    if ok and quotas and not decisions:
        names = ", ".join(sorted(q.name for q in quotas))
        raise KubeError(
            f"{NO_WEBHOOK} Namespace {namespace} has DatabaseQuota {names}, yet the dry run "
            "was admitted with no dbquota explanation (a quota created seconds ago may not "
            f"have reached the webhook yet: try again){hint}"
        )


def _lines(
    quotas: Sequence[reports.Figures], decisions: Sequence[QuotaVerdict]
) -> tuple[QuotaLine, ...]:
    """One line per quota by name (``unchecked`` if the webhook said nothing of it), then
    one per verdict on a quota the listing did not return (created since)."""
    by_name = {d.quota: d for d in decisions}
    lines = [
        QuotaLine(outcome=by_name[q.name].verdict, decision=by_name[q.name], figures=q)
        if q.name in by_name
        else QuotaLine(outcome="unchecked", decision=None, figures=q)
        for q in sorted(quotas, key=lambda q: q.name)
    ]
    known = {q.name for q in quotas}
    lines += [
        QuotaLine(outcome=d.verdict, decision=d, figures=None)
        for d in decisions
        if d.quota not in known
    ]
    return tuple(lines)


def overall(explanations: Sequence[Explanation]) -> Verdict:
    """``denied`` if any claim is denied, else ``warned`` if any is warned, else ``admitted``."""
    verdicts = {e.verdict for e in explanations}
    return "denied" if "denied" in verdicts else "warned" if "warned" in verdicts else "admitted"


EXPLAIN_HEADERS = (
    "QUOTA",
    "VERDICT",
    "REASON",
    "COST",
    "PRICING",
    "DEGRADED",
    "POLICY",
    "BUDGET",
    "OBSERVED",
    "RESERVED",
    "ESCROW",
    "REMAINING",
)


def _row(line: QuotaLine) -> list[str]:
    d, f = line.decision, line.figures
    return [
        d.quota if d else f.name if f else tables.NONE,
        line.outcome,
        tables.text(d.reason if d else None),
        tables.money(d.cost if d else None),
        tables.text(d.pricing if d else None),
        tables.flag(d.degraded if d else f.degraded if f else None),
        tables.text(d.policy if d else None),
        tables.money(f.budget if f else None),
        tables.money(f.observed if f else None),
        tables.money(f.reserved if f else None),
        tables.money(f.escrow if f else None),
        tables.money(f.remaining if f else None),
    ]


_HEADLINES = {
    "admitted": "admitted",
    "warned": "admitted with a warning: enforcement Warn or DryRun lets through what "
    "Enforce would deny",
    "denied": "denied",
}


def explanation_text(explanation: Explanation) -> str:
    """One claim's explanation for people: a headline, a row per quota, then the message
    and the other warnings."""
    e = explanation
    subject = f"{e.namespace}/{e.name}"
    if e.cluster_scoped:
        tenant = f"tenant namespace {e.namespace}" if e.namespace else "no tenant namespace"
        subject = f"{e.name} ({tenant})"
    headline = f"{e.kind} {subject} ({e.operation}): {_HEADLINES[e.verdict]}"
    if not e.quotas and e.message:
        headline += f": {e.message}"
    lines = [headline]
    if e.quotas:
        lines.append(tables.table(EXPLAIN_HEADERS, [_row(q) for q in e.quotas]))
        if e.message:
            lines.append(e.message)
    lines += [f"Warning: {w}" for w in e.warnings]
    return "\n".join(lines)


def _quota_document(line: QuotaLine) -> dict[str, object]:
    d, f = line.decision, line.figures
    doc: dict[str, object] = {
        "name": d.quota if d else f.name if f else None,
        "verdict": line.outcome,
        "reason": d.reason if d else None,
        "cost": d.cost if d else None,
        "pricing": d.pricing if d else None,
        "degraded": d.degraded if d else f.degraded if f else None,
        "policy": d.policy if d else None,
    }
    if f is not None:
        figures = f.document()
        for key in ("namespace", "name", "degraded"):
            figures.pop(key)
        doc.update(figures)
    return doc


def explanation_document(explanations: Sequence[Explanation]) -> dict[str, object]:
    """``explain -o json|yaml``: ``{apiVersion, kind: Explanation, verdict, claims: [...]}``."""
    return {
        "apiVersion": reports.API_VERSION,
        "kind": "Explanation",
        "verdict": overall(explanations),
        "claims": [
            {
                "kind": e.kind,
                "namespace": e.namespace,
                "name": e.name,
                "operation": e.operation,
                "verdict": e.verdict,
                "reason": e.reason,
                "message": e.message,
                "warnings": list(e.warnings),
                "quotas": [_quota_document(q) for q in e.quotas],
            }
            for e in explanations
        ],
    }
