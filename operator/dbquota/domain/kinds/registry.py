"""The kinds dbquota can price, by name: what ``--claim-kinds`` chooses from.

=================  ============================================  ================
name               kind (group/version)                          module
=================  ============================================  ================
``databaseclaims`` ``DatabaseClaim`` (dbquota.io/v1alpha1)       :mod:`.databaseclaims`
``cnpg``           ``Cluster`` (postgresql.cnpg.io/v1)           :mod:`.cnpg`
``zalando``        ``postgresql`` (acid.zalan.do/v1)             :mod:`.zalando`
``rds``            ``Instance`` (rds.aws.upbound.io/v1beta1)     :mod:`.rds`
=================  ============================================  ================

Everything that depends on which kinds are enabled (the webhook's dispatch, the informers,
the reconciler's recount, the chart's webhook rules and RBAC) reads them from here.
Pure; called by :mod:`dbquota.settings` (to check ``--claim-kinds``) and the wiring.
"""

from __future__ import annotations

from collections.abc import Iterable

from dbquota.domain.kinds import Kind, cnpg, databaseclaims, rds, zalando

KINDS: dict[str, Kind] = {
    kind.name: kind for kind in (databaseclaims.KIND, cnpg.KIND, zalando.KIND, rds.KIND)
}
"""Every kind, by its ``--claim-kinds`` name."""

DEFAULT: tuple[str, ...] = (databaseclaims.KIND.name,)  # the claims kind
"""The kinds enabled unless ``--claim-kinds`` says otherwise."""

CLAIMS = databaseclaims.RESOURCE
"""The DatabaseClaim resource, dbquota's own kind."""
CLAIMS_NAME = databaseclaims.KIND.name
"""Its name in ``--claim-kinds``."""


def names(text: Iterable[str]) -> tuple[str, ...]:
    """The kinds named, checked and without repeats; ``ValueError`` naming an unknown one
    and the known ones."""
    chosen: list[str] = []
    for name in text:
        if name not in KINDS:
            raise ValueError(f"unknown claim kind {name!r}; known: {', '.join(KINDS)}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError(f"no claim kind enabled; choose from: {', '.join(KINDS)}")
    return tuple(chosen)


def enabled(chosen: Iterable[str]) -> tuple[Kind, ...]:
    """The :class:`Kind` of each name in ``chosen`` (checked by :func:`names`)."""
    return tuple(KINDS[name] for name in names(chosen))


def by_group_kind(kinds: Iterable[Kind]) -> dict[tuple[str, str], Kind]:
    """``kinds`` by (group, kind), as an AdmissionReview's ``request.kind`` names them."""
    return {(k.resource.group, k.resource.kind): k for k in kinds}
