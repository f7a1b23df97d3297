"""An UPDATE's old object is read in its own words: every reader names its fields under
``oldObject`` when asked to (``field="oldObject.spec"``), as the apiserver's review names
it, and under the object's own paths otherwise.

The CloudNativePG and Zalando readers ignored ``field`` (and the RDS one dropped it), so
admission told a user whose new spec was valid that ``spec.storage.size`` was wrong.
"""

from __future__ import annotations

from typing import Any

import pytest

from dbquota.domain.kinds import registry
from tests.unit.domain.kinds import edited, example

BAD = [
    ("cnpg", "cnpg-cluster", "spec.storage.size", "ten gigs"),
    ("zalando", "zalando-postgresql", "spec.resources.requests.memory", "1K"),
    ("rds", "rds-instance", "spec.forProvider.allocatedStorage", 20.5),
    ("databaseclaims", "claim-orders", "spec.storageGiB", "ten"),
]


def _bad(name: str, path: str, value: Any) -> dict[str, Any]:
    obj = edited(example(name), path, value)
    obj["metadata"].setdefault("namespace", "team-a")
    return obj


@pytest.mark.parametrize(("kind", "name", "path", "value"), BAD)
def test_the_old_objects_fields_are_named_under_old_object(
    kind: str, name: str, path: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=r"^(DatabaseClaim \S+: )?oldObject\.spec\.") as exc:
        registry.KINDS[kind].read(_bad(name, path, value), field="oldObject.spec")
    assert path.removeprefix("spec.").split(".")[0] in str(exc.value)


@pytest.mark.parametrize(("kind", "name", "path", "value"), BAD)
def test_the_new_objects_fields_keep_their_paths(
    kind: str, name: str, path: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=r"^(DatabaseClaim \S+: )?spec\."):
        registry.KINDS[kind].read(_bad(name, path, value))


@pytest.mark.parametrize("kind", ["cnpg", "zalando", "rds"])
def test_an_old_object_that_is_no_object_is_named_old_object(kind: str) -> None:
    with pytest.raises(ValueError, match=r"^oldObject: must be an object, got null$"):
        registry.KINDS[kind].read(None, field="oldObject.spec")
