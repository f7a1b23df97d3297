"""Any JSON value in any field read gives a Demand or a ValueError naming that field.

Hypothesis replaces one field of each example (every field the readers use, and their
parents) with an arbitrary JSON value (null, booleans, huge and fractional numbers, NaN
and infinities as YAML can carry them, strings that look like quantities, arrays,
objects), and also feeds whole arbitrary JSON documents: the reader either returns a
Demand with finite, non-negative numbers or raises ValueError whose message starts with
the replaced field's path, never any other exception.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dbquota.domain.kinds import Demand, cnpg, rds, reading, zalando
from tests.unit.domain.kinds import example

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


@settings(deadline=None)
@given(name=st.sampled_from(sorted(KINDS)), document=JSON)
def test_any_json_document_gives_a_demand_or_a_value_error(name: str, document: Any) -> None:
    read, _ = KINDS[name]
    try:
        got = read(document)
    except ValueError as exc:
        message = str(exc)
    else:
        assert_sane(got)
        return
    assert message.startswith(("object:", "spec", "metadata")), message
