"""Any JSON value in any field read gives a Demand or a ValueError naming that field.

Hypothesis replaces one field of each example (every field the readers use, and their
parents) with an arbitrary JSON value (null, booleans, huge and fractional numbers, NaN
and infinities as YAML can carry them, strings that look like quantities, arrays,
objects), and also feeds whole arbitrary JSON documents: the reader either returns a
Demand with finite, non-negative numbers or raises ValueError whose message starts with
the replaced field's path, never any other exception. The same through each kind's
``read`` (the whole claim, as admission and the informers read it), with huge numbers and
quantities in the size, cpu, memory and instance fields: a claim whose storage fits an
int64 and whose cost is finite, or a ValueError; and the audit's inputs that overflowed
(storage beyond an int64 of bytes, times instances; cpu beyond one of milli-cores) are
refused naming the field.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbquota.domain import bills, claims
from dbquota.domain.kinds import Demand, cnpg, rds, reading, registry, zalando
from tests.unit.domain.kinds import example

T = TypeVar("T")

Path = tuple[str | int, ...]

_quantity_text = st.from_regex(
    r"\A[+-]?[0-9]{0,4}(\.[0-9]{0,3})?([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{1,3})?\Z"
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | _quantity_text
)
JSON = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)

KINDS: dict[str, tuple[Callable[[Mapping[str, object]], Demand], list[Path]]] = {
    "cnpg-cluster": (
        cnpg.demand,
        [
            ("metadata",),
            ("metadata", "namespace"),
            ("spec",),
            ("spec", "instances"),
            ("spec", "resources"),
            ("spec", "resources", "requests"),
            ("spec", "resources", "requests", "cpu"),
            ("spec", "resources", "requests", "memory"),
            ("spec", "resources", "limits", "cpu"),
            ("spec", "resources", "limits", "memory"),
            ("spec", "storage"),
            ("spec", "storage", "size"),
            ("spec", "storage", "storageClass"),
            ("spec", "storage", "pvcTemplate"),
            ("spec", "walStorage"),
            ("spec", "walStorage", "size"),
            ("spec", "tablespaces"),
            ("spec", "tablespaces", 0),
            ("spec", "tablespaces", 0, "storage"),
            ("spec", "tablespaces", 0, "storage", "size"),
        ],
    ),
    "zalando-postgresql": (
        zalando.demand,
        [
            ("metadata",),
            ("spec",),
            ("spec", "numberOfInstances"),
            ("spec", "resources"),
            ("spec", "resources", "requests", "cpu"),
            ("spec", "resources", "requests", "memory"),
            ("spec", "resources", "limits"),
            ("spec", "volume"),
            ("spec", "volume", "size"),
            ("spec", "volume", "storageClass"),
            ("spec", "enableConnectionPooler"),
            ("spec", "enableReplicaConnectionPooler"),
            ("spec", "connectionPooler"),
            ("spec", "connectionPooler", "numberOfInstances"),
            ("spec", "connectionPooler", "resources"),
            ("spec", "connectionPooler", "resources", "requests", "cpu"),
            ("spec", "connectionPooler", "resources", "requests", "memory"),
            ("spec", "connectionPooler", "resources", "limits", "memory"),
        ],
    ),
    "rds-instance": (
        rds.demand,
        [
            ("metadata",),
            ("metadata", "labels"),
            ("metadata", "labels", "crossplane.io/claim-namespace"),
            ("spec",),
            ("spec", "forProvider"),
            ("spec", "forProvider", "instanceClass"),
            ("spec", "forProvider", "allocatedStorage"),
            ("spec", "forProvider", "multiAz"),
            ("spec", "forProvider", "storageType"),
            ("spec", "initProvider"),
        ],
    ),
}
CASES = [(name, path) for name, (_, paths) in KINDS.items() for path in paths]
OBJECTS = {name: example(name) for name in KINDS}


def shown(path: Path) -> str:
    text = ""
    for key in path:
        text = reading.join(text, key)
    return text


def replaced(obj: dict[str, Any], path: Path, value: object) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    node: Any = result
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    node[path[-1]] = value
    return result


def assert_sane(got: Demand) -> None:
    numbers = [got.cpu, got.memory_gib, *(v.gib for v in got.volumes)]
    numbers += [x for w in got.extras for x in (w.cpu, w.memory_gib)]
    assert all(math.isfinite(n) and n >= 0 for n in numbers)
    assert got.instances >= 0
    assert all(w.instances >= 1 for w in got.extras)


@settings(max_examples=600, deadline=None)  # a loaded machine must not fail it
@given(case=st.sampled_from(CASES), value=JSON)
def test_any_json_in_a_field_gives_a_demand_or_names_the_field(
    case: tuple[str, Path], value: object
) -> None:
    name, path = case
    read, _ = KINDS[name]
    obj = replaced(OBJECTS[name], path, value)
    try:
        got = read(obj)
    except ValueError as exc:
        message = str(exc)
    else:
        assert_sane(got)
        return
    assert message.startswith(shown(path)), (message, shown(path))
    assert ": " in message


def assert_read_or_refused(read: Callable[[], T], check: Callable[[T], None]) -> None:
    """``read()`` gives what ``check`` accepts, or a ValueError whose message starts with
    the path of what it refused."""
    try:
        got = read()
    except ValueError as exc:
        message = str(exc)
    else:
        check(got)
        return
    assert message.startswith(("object:", "spec", "metadata")), message


@settings(deadline=None)
@given(name=st.sampled_from(sorted(KINDS)), document=JSON)
def test_any_json_document_gives_a_demand_or_a_value_error(name: str, document: Any) -> None:
    read, _ = KINDS[name]
    assert_read_or_refused(lambda: read(document), assert_sane)


_huge = (
    st.floats(min_value=1e15, allow_nan=False, allow_infinity=False)
    | st.integers(min_value=2**31, max_value=2**80)
    | st.from_regex(r"\A[1-9][0-9]{0,2}(\.[0-9]{1,3})?[eE][1-9][0-9]{1,2}\Z")
    | st.from_regex(r"\A9{10,25}(Ei|Pi|Ti|E|P|T|G|)\Z")
)
_paths_of_numbers = [
    (name, path)
    for name, path in CASES
    if path[-1] in {"size", "cpu", "memory", "allocatedStorage", "instances", "numberOfInstances"}
]


def read_whole(name: str, obj: object) -> claims.ClaimSpec:
    """``obj`` through its kind's ``read`` (what admission and the informers call)."""
    kind = registry.KINDS[name.split("-", maxsplit=1)[0]]
    return kind.read(obj, namespace_label="crossplane.io/claim-namespace").claim


def assert_countable(claim: claims.ClaimSpec) -> None:
    """What a status or a reservation writes of it fits there: whole GiB in an int64, and a
    finite cost at any catalog price."""
    assert 0 <= claim.storage_gib <= 2**63 - 1
    assert all(math.isfinite(q) and q >= 0 for q in claim.bill.values())
    assert math.isfinite(bills.cost(claim.bill, dict.fromkeys(claim.bill, 1e4)))


@settings(max_examples=600, deadline=None)  # a loaded machine must not fail it
@given(
    case=st.sampled_from(CASES),
    value=JSON | _huge,
    more=st.sampled_from(_paths_of_numbers),
    big=_huge,
)
def test_any_json_or_huge_values_give_a_claim_or_a_value_error_through_read(
    case: tuple[str, Path], value: object, more: tuple[str, Path], big: object
) -> None:
    """``read`` (not only ``demand``): the claim's totals too are only ever a ValueError."""
    name, path = case
    obj = replaced(OBJECTS[name], path, value)
    if more[0] == name and more[1][: len(path)] != path:  # not inside what was replaced
        obj = replaced(obj, more[1], big)
    assert_read_or_refused(lambda: read_whole(name, obj), assert_countable)


@pytest.mark.parametrize(
    ("name", "edits", "message"),
    [
        (
            "cnpg-cluster",
            {("spec", "instances"): 2, ("spec", "storage", "size"): "1.7e317"},
            'spec.storage.size: invalid quantity "1.7e317": too large',
        ),
        (
            "cnpg-cluster",
            {("spec", "resources", "requests", "cpu"): "1e308"},
            'spec.resources.requests.cpu: invalid quantity "1e308": too large',
        ),
        (
            "cnpg-cluster",
            {("spec", "storage", "size"): "1e28"},
            'spec.storage.size: invalid quantity "1e28": too large',
        ),
        (
            "zalando-postgresql",
            {("spec", "numberOfInstances"): 2, ("spec", "volume", "size"): "17e316"},
            'spec.volume.size: invalid quantity "17e316": too large',
        ),
        (
            "rds-instance",
            {
                ("spec", "forProvider", "allocatedStorage"): 1.7e308,
                ("spec", "forProvider", "multiAz"): True,
            },
            "spec.forProvider.allocatedStorage: must be at most 8,589,934,591 GiB",
        ),
        (
            "cnpg-cluster",
            {
                ("spec", "instances"): 2**31 - 1,
                ("spec", "storage", "size"): "9999999999999999999Ei",
            },
            "spec: 2,147,483,647 instances ask for more than 8 EiB of storage in all",
        ),
    ],
)
def test_values_too_large_to_count_are_refused_through_read(
    name: str, edits: dict[Path, object], message: str
) -> None:
    """The audit's inputs: each overflowed a whole-object total (OverflowError out of
    ``read``) or a status field (infinite cost, GiB beyond an int64)."""
    obj = OBJECTS[name]
    for path, value in edits.items():
        obj = replaced(obj, path, value)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        read_whole(name, obj)
