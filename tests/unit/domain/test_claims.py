"""DatabaseClaim parsing and growth.

Checks that ``parse_claim`` and ``from_object`` read every field, default ``replicas`` to 1
and ``clusterId`` to ``<namespace>/<name>``, and refuse bad fields naming them; and that
``grows_from`` / ``storage_growth`` tell which updates can cost more.
"""

from __future__ import annotations

import pytest

from dbquota.domain import claims
from tests.unit.domain import samples


def test_defaults_replicas_and_cluster_id() -> None:
    spec: claims.DatabaseClaimSpec = {
        "engine": "postgres",
        "instanceClass": "db.r6g.large",
        "storageGiB": 100,
    }
    claim = claims.parse_claim(namespace="team-a", name="orders", spec=spec)
    assert claim == claims.ClaimSpec(
        engine="postgres",
        instance_class="db.r6g.large",
        storage_gib=100,
        replicas=1,
        cluster_id="team-a/orders",
    )


def test_reads_a_whole_object_with_explicit_fields() -> None:
    obj = {
        "apiVersion": "dbquota.io/v1alpha1",
        "kind": "DatabaseClaim",
        "metadata": {"name": "orders", "namespace": "team-a"},
        "spec": {
            "engine": "mysql",
            "instanceClass": "db.m5.2xlarge",
            "storageGiB": 500,
            "replicas": 3,
            "clusterId": "orders-db",
        },
    }
    claim = claims.from_object(obj)
    assert (claim.engine, claim.instance_class, claim.storage_gib) == (
        "mysql",
        "db.m5.2xlarge",
        500,
    )
    assert (claim.replicas, claim.cluster_id) == (3, "orders-db")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"instanceClass": "x", "storageGiB": 1}, "spec.engine is required"),
        ({"engine": "postgres", "storageGiB": 1}, "spec.instanceClass is required"),
        (
            {"engine": "postgres", "instanceClass": "x", "storageGiB": "100Gi"},
            "spec.storageGiB must be an integer, got '100Gi'",
        ),
        (
            {"engine": "postgres", "instanceClass": "x", "storageGiB": -1},
            "spec.storageGiB must be >= 0, got -1",
        ),
        (
            {"engine": "postgres", "instanceClass": "x", "storageGiB": 1, "replicas": 0},
            "spec.replicas must be >= 1, got 0",
        ),
    ],
)
def test_invalid_claims_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"^DatabaseClaim team-a/orders: ") as info:
        claims.parse_claim(namespace="team-a", name="orders", spec=spec)
    assert message in str(info.value)


def test_object_without_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match=r"DatabaseClaim\.metadata\.name is required"):
        claims.from_object({"spec": {}})


def test_growth() -> None:
    base = samples.claim(storage_gib=100, replicas=2)
    assert base.grows_from(None)
    assert base.storage_growth(None) == 100
    assert not base.grows_from(base)
    assert not samples.claim(storage_gib=50, replicas=1).grows_from(base)
    assert samples.claim(storage_gib=150, replicas=2).grows_from(base)
    assert samples.claim(storage_gib=150, replicas=2).storage_growth(base) == 50
    assert samples.claim(storage_gib=50, replicas=3).grows_from(base)
    assert samples.claim(storage_gib=50, replicas=3).storage_growth(base) == 0
    cheaper_class = samples.claim("db.t3.micro", storage_gib=100, replicas=2)
    assert cheaper_class.grows_from(base), "a class change needs pricing whatever the class"
