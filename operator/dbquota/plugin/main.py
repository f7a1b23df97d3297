"""``kubectl dbquota``: the command line of the kubectl plugin, and its exit codes.

The ``kubectl-dbquota`` console script (``pyproject.toml``) runs :func:`main`; kubectl
finds it on ``PATH`` and runs it for ``kubectl dbquota ...`` (krew naming). This module
parses the flags, connects as kubectl would (:mod:`dbquota.adapters.kubeconfig`), fetches
(:mod:`dbquota.plugin.fetching`) and prints (:mod:`dbquota.plugin.reports`,
:mod:`dbquota.plugin.explanations`). It never runs kubectl itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from dbquota import __version__
from dbquota.adapters import kubeconfig
from dbquota.domain.kinds import registry
from dbquota.domain.kinds.rds import CLAIM_NAMESPACE_LABEL
from dbquota.errors import ConfigurationError, DbquotaError
from dbquota.plugin import explanations, fetching, manifests, reports, statuses, tables

ADMITTED, DENIED, ERROR = 0, 1, 2
"""Exit codes: ``explain`` exits 1 when any claim would be denied; every command exits 2
when it could not answer (bad flags or file, no cluster, no CRDs, no webhook)."""

DESCRIPTION = """\
See why the dbquota admission webhook would admit or deny a DatabaseClaim, and how
each DatabaseQuota's budget is used.

  explain   the verdict the webhook would give a claim (server-side dry run: nothing
            is created or reserved), quota by quota, with the figures behind it
  top       every quota's budget, spend and % used, most used first
  status    one quota in detail: reservations in flight, escrow by webhook replica,
            conditions and recent Events

Flags go after the command name: kubectl dbquota top -A, not kubectl -A dbquota top.
The plugin uses kubectl's kubeconfig (KUBECONFIG, --kubeconfig, --context, the
context's namespace) and never runs kubectl itself.
"""

EXIT_CODES = """\
exit codes:
  0  done (explain: every claim would be admitted, possibly with a warning)
  1  explain: at least one claim would be denied
  2  could not answer: bad flags or file, no cluster, CRDs not installed, no webhook
"""

EXPLAIN_HELP = """\
Send each claim in the file to the apiserver as a server-side dry run (dryRun=All): it
passes every admission webhook, dbquota's included, and nothing is stored or reserved.
A claim is a DatabaseClaim, or an object of another kind the operator enforces
(--claim-kinds): a CloudNativePG Cluster, a Zalando postgresql, a Crossplane RDS
Instance (cluster-scoped: its tenant namespace is in the label --claim-namespace-label).
The webhook tells a dry run how each quota decided; this prints it, with each quota's
budget, observed and reserved spend, escrow and remaining budget, and for a denial the
webhook's full message. A claim that exists already is explained as the change to it (an
UPDATE is charged its growth only).

examples:
  kubectl dbquota explain -f claim.yaml
  kubectl dbquota explain -f claims/ -n team-a -o json
  helm template ... | kubectl dbquota explain -f -
  kubectl dbquota explain -f cnpg-cluster.yaml -n team-a

columns: VERDICT admitted | warned (admitted under enforcement Warn or DryRun although
Enforce would deny) | denied | unchecked (the webhook stops at the first quota that
denies; quotas are visited in name order). COST is the claim's monthly price (an
update's growth), PRICING its basis (Live, Cached, Conservative, StrictCap, FailOpen),
POLICY the degradation policy that applied when billing is degraded.
"""

TOP_HELP = """\
Every DatabaseQuota of the namespace (or of all namespaces with -A), most used first:
USED is (observed + reserved) / budget. OBSERVED is what billing shows, RESERVED what
was admitted and is not billed yet, REMAINING the budget minus both. CIRCUIT is the
billing circuit breaker (Closed is healthy), DEGRADED whether admission prices by the
degradation policy, STALENESS the age of the billing data when the operator last wrote
the status. A quota the operator has not reconciled yet shows - and sorts last.

examples:
  kubectl dbquota top -A
  kubectl dbquota top -n team-a -o yaml
"""

STATUS_HELP = """\
One DatabaseQuota in detail: its figures; reservations in flight (admissions whose
claim does not show its price yet); escrow, the budget each webhook replica holds ahead
of admissions, with whether that replica's liveness Lease is live (Live, Lapsed: the
leader will let its escrow go, Missing: the replica is gone); conditions; and the
quota's recent Events, newest last (CircuitOpen, BudgetExceeded, ReservationReleased,
EscrowExpired, WouldDeny, ...).

examples:
  kubectl dbquota status team-a -n team-a
  kubectl dbquota status team-a -o json | jq .escrow
"""


def _common(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """kubectl's flags; a subcommand's copies default to nothing, so that a flag given
    before the command name is not overwritten."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("kubectl flags")
    group.add_argument(
        "--kubeconfig",
        default=default(None),
        metavar="FILE",
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )
    group.add_argument(
        "--context", default=default(None), help="kubeconfig context (default: the current one)"
    )
    group.add_argument(
        "-n",
        "--namespace",
        default=default(None),
        help="namespace (default: the context's namespace, else default)",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=tables.OUTPUTS,
        default=default("table"),
        help="table (default), or a json or yaml document (fields: docs/kubectl-dbquota.md)",
    )


def _command(sub: Any, name: str, *, summary: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _explain_parser(sub: Any) -> None:
    """The ``explain`` command's flags."""
    explain = _command(
        sub,
        "explain",
        summary="the verdict the webhook would give a claim, and why",
        description=EXPLAIN_HELP,
    )
    explain.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="a claim manifest (a DatabaseClaim, or a CloudNativePG Cluster, Zalando "
        "postgresql or Crossplane RDS Instance): a file, a folder of them, or - for stdin "
        "(repeatable; YAML or JSON, several documents or a List)",
    )
    explain.add_argument(
        "--claim-namespace-label",
        default=CLAIM_NAMESPACE_LABEL,
        metavar="LABEL",
        help="label naming the tenant namespace of a cluster-scoped object (Crossplane RDS "
        "Instance), as the operator's --claim-namespace-label (default %(default)s)",
    )
    _common(explain, defaults=False)


def _count(text: str) -> int:
    """A whole number, 0 or more (``--events``)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="kubectl dbquota",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubectl-dbquota {__version__}")
    _common(parser, defaults=True)
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="top: every namespace")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _explain_parser(sub)
    top = _command(
        sub,
        "top",
        summary="budgets, spend and %% used of every quota, most used first",
        description=TOP_HELP,
    )
    top.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        default=argparse.SUPPRESS,
        help="every namespace",
    )
    _common(top, defaults=False)
    status = _command(
        sub,
        "status",
        summary="one quota: figures, reservations, escrow, conditions, Events",
        description=STATUS_HELP,
    )
    status.add_argument("quota", metavar="QUOTA", help="name of the DatabaseQuota")
    status.add_argument(
        "--events",
        type=_count,
        default=20,
        metavar="N",
        help="how many of the latest Events to show, 0 for none (default %(default)s)",
    )
    _common(status, defaults=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kubectl dbquota`` with ``argv``; returns the exit code (see :data:`EXIT_CODES`)."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args, environ=os.environ, out=sys.stdout, stdin=sys.stdin))
    except DbquotaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        return ERROR


async def _run(
    args: argparse.Namespace, *, environ: Mapping[str, str], out: TextIO, stdin: TextIO
) -> int:
    found = None
    if args.command == "explain":  # read the files before connecting: bad input costs nothing
        found = manifests.claims(manifests.read(args.filename, stdin=stdin.read))
    session = await kubeconfig.connect(
        kubeconfig=args.kubeconfig or environ.get("KUBECONFIG"), context=args.context
    )
    try:
        await fetching.require_crds(session)
        if found is not None:
            return await _explain(session, args, found, out=out)
        if args.command == "top":
            return await _top(session, args, out=out)
        return await _status(session, args, out=out)
    finally:
        await session.close()


def _print(out: TextIO, args: argparse.Namespace, document: dict[str, object], text: str) -> None:
    out.write((text if args.output == "table" else tables.dump(document, args.output)) + "\n")


async def _explain(
    session: kubeconfig.Session,
    args: argparse.Namespace,
    found: list[manifests.Target],
    *,
    out: TextIO,
) -> int:
    results = [await _explain_one(session, args, target) for target in found]
    text = "\n\n".join(explanations.explanation_text(e) for e in results)
    _print(out, args, explanations.explanation_document(results), text)
    return DENIED if explanations.overall(results) == "denied" else ADMITTED


async def _explain_one(
    session: kubeconfig.Session, args: argparse.Namespace, target: manifests.Target
) -> explanations.Explanation:
    """Dry-run one claim, then read its (tenant) namespace's quotas as they stand."""
    manifest, resource = target.manifest, target.resource
    if resource.namespaced:
        namespace = manifests.namespace_of(
            manifest.obj, flag=args.namespace, default=session.namespace, where=manifest.where
        )
    else:
        namespace = manifests.tenant_of(manifest.obj, label=args.claim_namespace_label)
    operation, answer = await fetching.dry_run(
        session, resource=resource, namespace=namespace, claim=manifest.obj
    )
    if answer.status == 404 and answer.reason == "NotFound":
        if resource.namespaced and "namespaces" in answer.message:
            raise ConfigurationError(f"{manifest.where}: namespace {namespace} not found")
        raise ConfigurationError(
            f"{manifest.where}: the cluster does not serve {resource.kind} "
            f"({resource.api_version}): is its operator's CRD installed?"
        )
    sent, stored = manifest.obj["metadata"], answer.obj.get("metadata") if answer.ok else {}
    name = (stored or {}).get("name") or sent.get("name") or sent.get("generateName", "")
    figures = (
        [reports.figures(q) for q in await fetching.quotas(session, namespace=namespace)]
        if namespace
        else []
    )
    owned = target.kind.name == registry.CLAIMS_NAME
    return explanations.explain(
        namespace=namespace,
        name=str(name),
        operation=operation,
        ok=answer.ok,
        status=answer.status,
        reason=answer.reason,
        message=answer.message,
        warnings=answer.warnings,
        quotas=figures,
        kind=resource.kind,
        cluster_scoped=not resource.namespaced,
        label=args.claim_namespace_label,
        hint=""
        if owned
        else f" Is {target.kind.name} in the operator's --claim-kinds (the chart's claimKinds)?",
    )


async def _top(session: kubeconfig.Session, args: argparse.Namespace, *, out: TextIO) -> int:
    everywhere = bool(args.all_namespaces)
    namespace = None if everywhere else args.namespace or session.namespace
    rows = reports.by_use(
        reports.figures(q) for q in await fetching.quotas(session, namespace=namespace)
    )
    if not rows and args.output == "table":
        where = "any namespace" if everywhere else f"namespace {namespace}"
        print(f"No DatabaseQuota found in {where}.", file=sys.stderr)
        return ADMITTED
    text = reports.top_table(rows, all_namespaces=everywhere)
    _print(out, args, reports.top_document(rows), text)
    return ADMITTED


async def _status(session: kubeconfig.Session, args: argparse.Namespace, *, out: TextIO) -> int:
    namespace = args.namespace or session.namespace
    quota = await fetching.quota(session, namespace=namespace, name=args.quota)
    uid = str((quota.get("metadata") or {}).get("uid", ""))
    events = await fetching.quota_events(session, namespace=namespace, name=args.quota, uid=uid)
    report = statuses.StatusReport(
        figures=reports.figures(quota),
        quota=quota,
        leases=await fetching.replica_leases(session),
        events=statuses.recent_events(events, limit=args.events),
        now=time.time(),
    )
    _print(out, args, statuses.status_document(report), statuses.status_text(report))
    return ADMITTED


if __name__ == "__main__":
    sys.exit(main())
