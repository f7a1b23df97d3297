"""The chart's CRDs are the repository's CRDs: byte for byte in the chart, equal when rendered.

Checks that ``charts/dbquota/files/crds/`` holds exactly the files of ``crds/`` with the
same bytes; that the rendered CRDs equal the parsed ``crds/`` files except for the labels
and the ``helm.sh/resource-policy: keep`` annotation the chart adds; that ``crds.keep``
and ``crds.install`` switch the annotation and the CRDs off.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.chart.conftest import CHART, REPO, Doc, Manifests

SOURCE = REPO / "crds"
COPY = CHART / "files" / "crds"


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``1.0e12`` is a string; Go's YAML (the apiserver's,
    helm's) reads it as a float, as YAML 1.2 does. Resolve floats the 1.2 way."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def load_source(path: Path) -> Doc:
    doc: Doc = yaml.load(path.read_text(), Loader=Yaml12Loader)  # a SafeLoader subclass
    return doc


def test_chart_copy_is_byte_identical_to_crds() -> None:
    source = sorted(p.name for p in SOURCE.glob("*.yaml"))
    assert source
    assert sorted(p.name for p in COPY.glob("*.yaml")) == source
    for name in source:
        assert (COPY / name).read_bytes() == (SOURCE / name).read_bytes(), (
            f"{COPY / name} differs from {SOURCE / name}: cp crds/*.yaml {COPY}/"
        )


def without_chart_metadata(crd: Doc) -> Doc:
    meta = dict(crd["metadata"])
    meta.pop("labels", None)
    annotations = dict(meta.pop("annotations", {}) or {})
    annotations.pop("helm.sh/resource-policy", None)
    if annotations:
        meta["annotations"] = annotations
    return {**crd, "metadata": meta}


def test_rendered_crds_equal_the_source_but_for_labels_and_keep(
    render: Callable[..., Manifests],
) -> None:
    rendered = {c["metadata"]["name"]: c for c in render().of_kind("CustomResourceDefinition")}
    source = {}
    for path in SOURCE.glob("*.yaml"):
        crd = load_source(path)
        source[crd["metadata"]["name"]] = crd
    assert set(rendered) == set(source)
    for name, crd in rendered.items():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert without_chart_metadata(crd) == source[name]


def test_crds_can_be_left_to_helm_on_uninstall_or_switched_off(
    render: Callable[..., Manifests],
) -> None:
    for crd in render({"crds": {"keep": False}}).of_kind("CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
    assert not render({"crds": {"install": False}}).of_kind("CustomResourceDefinition")
