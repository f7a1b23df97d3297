"""DatabaseClaim parsing and growth.

Checks that ``parse_claim`` and ``from_object`` read every field, default ``replicas`` to 1
and ``clusterId`` to ``<namespace>/<name>``, and refuse bad fields naming them; that a spec
that is not an object (null, a list, a string) and values of any JSON type are refused in
our words, describing the value briefly (``got null``, ``got a list``, a long string cut);
and that ``grows_from`` / ``storage_growth`` tell which updates can cost more. Property:
whatever JSON value the spec is, or holds in its fields, parsing returns a claim or raises
``ValueError`` with a short message in our words, never another exception or its text.
Another kind's claim whose storage comes to more than 8 EiB in all is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbquota.domain import claims
from dbquota.domain.kinds import Demand, Volume
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


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "spec must be an object, got null"),
        ([1, 2], "spec must be an object, got a list"),
        ("postgres", "spec must be an object, got 'postgres'"),
        (True, "spec must be an object, got true"),
        ({"engine": {"a": 1}}, "spec.engine must be a non-empty string, got an object"),
        ({"engine": "p", "instanceClass": "x", "storageGiB": None}, "spec.storageGiB is required"),
        (
            {"engine": "p", "instanceClass": "x", "storageGiB": 10**30},
            "spec.storageGiB must be an integer, got a number of more than 19 digits",
        ),
        (
            {"engine": "p", "instanceClass": "x", "storageGiB": 1e300},
            "spec.storageGiB must be an integer, got 1e+300",
        ),
        (
            {"engine": "p", "instanceClass": "x", "storageGiB": "9" * 5000},
            "spec.storageGiB must be an integer, got '9999999999999999999999999999999999999999'"
            "... (5000 characters)",
        ),
    ],
)
def test_any_json_value_is_refused_in_our_words(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^DatabaseClaim team-a/orders: ") as info:
        claims.parse_claim(namespace="team-a", name="orders", spec=spec)
    assert str(info.value) == f"DatabaseClaim team-a/orders: {message}"


def test_the_old_spec_of_an_update_is_named_as_such() -> None:
    with pytest.raises(ValueError, match=r"oldObject\.spec must be an object, got a list"):
        claims.parse_claim(namespace="team-a", name="orders", spec=[], field="oldObject.spec")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=100),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
SPEC_KEYS = st.sampled_from(["engine", "instanceClass", "storageGiB", "replicas", "clusterId"])


def assert_parsed_or_refused_in_our_words(spec: Any) -> None:
    try:
        claims.parse_claim(namespace="team-a", name="orders", spec=spec)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith("DatabaseClaim team-a/orders: spec")
        assert len(message) < 200
        for leaked in ("Traceback", "NoneType", "object is not", "unhashable", "takes "):
            assert leaked not in message


@given(json_values)
def test_any_json_spec_parses_or_is_refused_in_our_words(spec: Any) -> None:
    assert_parsed_or_refused_in_our_words(spec)


@given(st.dictionaries(SPEC_KEYS, json_values, max_size=5))
def test_any_values_in_the_spec_fields_parse_or_are_refused_in_our_words(
    spec: dict[str, Any],
) -> None:
    assert_parsed_or_refused_in_our_words(spec)


def test_deeply_nested_values_are_described_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert_parsed_or_refused_in_our_words({"engine": deep})
    assert_parsed_or_refused_in_our_words(deep)


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


def test_another_kinds_storage_beyond_8_eib_in_all_is_refused() -> None:
    """Each volume fits an int64 of bytes, but all instances' together may not: the whole
    is refused, so that ``storage_gib`` (a reservation's and a status's ``storageGiB``,
    int64 fields) always fits, and never overflows to infinity on its way there."""
    most = Volume(None, 2.0**33)  # 9999999999999999999Ei, capped at 2^63-1 bytes
    one = claims.of_demand(kind="Cluster", demand=demand(1, most), cluster_id="a/b")
    assert one.storage_gib == 2**33
    for instances, volume in ((2, most), (2**31 - 1, most), (2, Volume(None, 1e308))):
        with pytest.raises(
            ValueError, match=rf"^spec: {instances:,} instances ask for more than 8 EiB"
        ):
            claims.of_demand(kind="Cluster", demand=demand(instances, volume), cluster_id="a/b")


def demand(instances: int, *volumes: Volume) -> Demand:
    return Demand(
        instances=instances, instance_class=None, cpu=1.0, memory_gib=1.0, volumes=volumes
    )
