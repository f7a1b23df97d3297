"""What ``explain -f`` accepts: YAML or JSON, several documents, Lists, folders, stdin.

And what it refuses, naming the file and the document before anything reaches the
cluster: invalid YAML, a non-object, an object of no kind dbquota prices (another kind, or
a DatabaseClaim at another version; another operator's kind is taken at any version of its
group), a claim without a name, an empty file, stdin twice, and a namespace that
contradicts ``-n``. A cluster-scoped object's tenant namespace comes from its label.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbquota.errors import ConfigurationError
from dbquota.plugin import manifests

CLAIM = """\
apiVersion: dbquota.io/v1alpha1
kind: DatabaseClaim
metadata: {name: %s}
spec: {engine: postgres, instanceClass: db.r6g.large, storageGiB: 100}
"""


def test_documents_and_list_items_in_order() -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [{"kind": "DatabaseClaim", "metadata": {"name": "c"}}],
    }
    text = CLAIM % "a" + "---\n" + CLAIM % "b" + "---\n" + json.dumps(listed)
    got = manifests.parse(text, source="f.yaml")
    assert [(m.index, m.obj["metadata"]["name"]) for m in got] == [(1, "a"), (2, "b"), (3, "c")]


def test_folders_stdin_and_files(tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "b.yaml").write_text(CLAIM % "b")
    (folder / "a.json").write_text(json.dumps({"kind": "DatabaseClaim", "metadata": {"name": "a"}}))
    (folder / "notes.txt").write_text("not a manifest")
    single = tmp_path / "c.yml"
    single.write_text(CLAIM % "c")
    got = manifests.read([str(folder), "-", str(single)], stdin=lambda: CLAIM % "s")
    assert [m.obj["metadata"]["name"] for m in got] == ["a", "b", "s", "c"]
    assert got[2].where == "stdin, document 1"


def test_claims_are_checked() -> None:
    (ok,) = manifests.claims(manifests.parse(CLAIM % "a", source="f"))
    assert (ok.kind.name, ok.resource.api_version, ok.resource.namespaced) == (
        "databaseclaims",
        "dbquota.io/v1alpha1",
        True,
    )


OTHERS = """\
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: pg}
---
apiVersion: acid.zalan.do/v1
kind: postgresql
metadata: {name: acid-pg}
---
apiVersion: rds.aws.upbound.io/v1beta2
kind: Instance
metadata: {name: orders, labels: {crossplane.io/claim-namespace: team-a}}
"""


def test_other_operators_kinds_are_taken_at_any_version_of_their_group() -> None:
    found = manifests.claims(manifests.parse(OTHERS, source="f"))
    assert [(t.kind.name, t.resource.api_version, t.resource.namespaced) for t in found] == [
        ("cnpg", "postgresql.cnpg.io/v1", True),
        ("zalando", "acid.zalan.do/v1", True),
        ("rds", "rds.aws.upbound.io/v1beta2", False),
    ]
    rds = found[2].manifest.obj
    assert manifests.tenant_of(rds, label="crossplane.io/claim-namespace") == "team-a"
    assert manifests.tenant_of(rds, label="example.com/tenant") == ""
    assert manifests.tenant_of({"metadata": {"labels": None}}, label="x") == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1", "f.yaml: not valid YAML or JSON"),
        ("- 1\n- 2", "f.yaml, document 1: expected an object, got list"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}",
            "f.yaml, document 1 is a ConfigMap (v1), not a kind dbquota prices: explain takes "
            "DatabaseClaim (dbquota.io/v1alpha1), Cluster (postgresql.cnpg.io/v1), postgresql "
            "(acid.zalan.do/v1), Instance (rds.aws.upbound.io/v1beta1) (to see a quota, use "
            "kubectl dbquota status NAME)",
        ),
        (
            (CLAIM % "a").replace("v1alpha1", "v2"),
            "f.yaml, document 1 is a DatabaseClaim (dbquota.io/v2), not a kind dbquota prices",
        ),
        ("metadata: {name: x}", "f.yaml, document 1 is an object with no kind"),
        (
            "apiVersion: dbquota.io/v1alpha1\nkind: DatabaseClaim\nspec: {}",
            "f.yaml, document 1: the DatabaseClaim has no metadata.name",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_document(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        manifests.claims(manifests.parse(text, source="f.yaml"))
    assert str(raised.value).startswith(message)


def test_empty_input_stdin_twice_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n")
    with pytest.raises(ConfigurationError, match=r"no object found in .*empty\.yaml"):
        manifests.read([str(empty)], stdin=str)
    with pytest.raises(ConfigurationError, match="stdin can be read only once"):
        manifests.read(["-", "-"], stdin=lambda: CLAIM % "a")
    with pytest.raises(ConfigurationError, match=r"missing\.yaml: cannot read it"):
        manifests.read([str(tmp_path / "missing.yaml")], stdin=str)
    with pytest.raises(ConfigurationError, match=r"holds no \.yaml"):
        manifests.read([str(_empty_dir(tmp_path))], stdin=str)


def _empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "nothing"
    folder.mkdir()
    return folder


def test_namespace_from_the_object_then_the_flag_then_the_context() -> None:
    own = {"metadata": {"name": "a", "namespace": "team-a"}}
    bare = {"metadata": {"name": "a"}}
    assert manifests.namespace_of(own, flag=None, default="dflt", where="f") == "team-a"
    assert manifests.namespace_of(own, flag="team-a", default="dflt", where="f") == "team-a"
    assert manifests.namespace_of(bare, flag="team-b", default="dflt", where="f") == "team-b"
    assert manifests.namespace_of(bare, flag=None, default="dflt", where="f") == "dflt"
    with pytest.raises(ConfigurationError, match="namespace 'team-a' does not match"):
        manifests.namespace_of(own, flag="team-b", default="dflt", where="f")
