"""The claims ``kubectl dbquota explain -f`` reads: files, folders or stdin, YAML or JSON.

:func:`read` takes what ``-f`` named (a file, a folder's ``*.yaml``/``*.yml``/``*.json``
files, or ``-`` for stdin) and returns every object in them, in order; a ``List`` (``kind:
List``, or any ``*List`` with ``items``) counts as its items. :func:`claims` checks that
each is an object of a kind dbquota prices (a DatabaseClaim, a CloudNativePG ``Cluster``,
a Zalando ``postgresql``, a Crossplane RDS ``Instance``: :mod:`dbquota.domain.kinds`, at
any version of its group) with a name, :func:`namespace_of` picks a namespaced object's
namespace the way kubectl does, and :func:`tenant_of` reads a cluster-scoped object's
tenant namespace from its label. Anything else is a
:class:`~dbquota.errors.ConfigurationError` that names the file and the document: nothing
is sent to the cluster until every object reads. Called by :mod:`dbquota.plugin.main`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dbquota.adapters.kube import Resource
from dbquota.domain.kinds import Kind, registry
from dbquota.errors import ConfigurationError

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Manifest:
    """One object read from ``source`` (a path or ``-``), the ``index``-th document there."""

    source: str
    index: int
    obj: dict[str, Any]

    @property
    def where(self) -> str:
        """``claim.yaml, document 2`` for messages."""
        return f"{self.source}, document {self.index}"


def parse(text: str, *, source: str) -> list[Manifest]:
    """Every object in ``text`` (YAML documents, or JSON), ``List`` items expanded."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: not valid YAML or JSON: {exc}") from exc
    found: list[Manifest] = []
    for index, document in enumerate(documents, start=1):
        if not isinstance(document, dict):
            raise ConfigurationError(
                f"{source}, document {index}: expected an object, got {type(document).__name__}"
            )
        kind = str(document.get("kind", ""))
        if kind.endswith("List") and isinstance(document.get("items"), list):
            for item in document["items"]:
                if not isinstance(item, dict):
                    raise ConfigurationError(
                        f"{source}, document {index}: a {kind} item is not an object"
                    )
                found.append(Manifest(source, index, item))
        else:
            found.append(Manifest(source, index, document))
    return found


def read(filenames: Iterable[str], *, stdin: Callable[[], str]) -> list[Manifest]:
    """The objects in ``filenames`` (``-`` reads ``stdin()`` once); a folder contributes its
    ``*.yaml``, ``*.yml`` and ``*.json`` files in name order (not its subfolders)."""
    found: list[Manifest] = []
    stdin_read = False
    for name in filenames:
        if name == "-":
            if stdin_read:
                raise ConfigurationError("-f - given twice: stdin can be read only once")
            stdin_read = True
            found += parse(stdin(), source="stdin")
            continue
        path = Path(name)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            if path.is_dir()
            else [path]
        )
        if not files:
            raise ConfigurationError(f"{name}: the folder holds no .yaml, .yml or .json file")
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"{file}: cannot read it: {exc}") from exc
            found += parse(text, source=str(file))
    if not found:
        raise ConfigurationError("no object found in " + ", ".join(filenames))
    return found


@dataclass(frozen=True)
class Target:
    """A manifest to explain: its kind, and its resource at the manifest's apiVersion."""

    manifest: Manifest
    kind: Kind
    resource: Resource


def _known() -> str:
    return ", ".join(
        f"{k.resource.kind} ({k.resource.group}/{k.resource.version})"
        for k in registry.KINDS.values()
    )


def claims(manifests: Iterable[Manifest]) -> list[Target]:
    """``manifests``, each checked to be an object of a kind dbquota prices (another
    operator's at any version of its group) with a name (or generateName)."""
    by_group_kind = registry.by_group_kind(registry.KINDS.values())
    checked = []
    for m in manifests:
        kind, api_version = m.obj.get("kind"), m.obj.get("apiVersion")
        group, _, version = str(api_version or "").rpartition("/")
        known = by_group_kind.get((group, str(kind)))
        # Any served version of another operator's kind (their CRDs move on; Crossplane's
        # Instance serves three); dbquota's own at the one it serves.
        if known is not None and known.owned and version != known.resource.version:
            known = None
        if known is None or not version:
            raise ConfigurationError(
                f"{m.where} is {_describe(kind, api_version)}, not a kind dbquota prices: "
                f"explain takes {_known()} (to see a quota, use kubectl dbquota status NAME)"
            )
        meta = m.obj.get("metadata")
        if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
            raise ConfigurationError(f"{m.where}: the {kind} has no metadata.name")
        at = known.resource
        resource = Resource(group, version, at.plural, at.kind, at.namespaced)
        checked.append(Target(manifest=m, kind=known, resource=resource))
    return checked


def tenant_of(obj: Mapping[str, Any], *, label: str) -> str:
    """The tenant namespace a cluster-scoped object names in its ``label`` ("" if none)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    found = labels.get(label) if isinstance(labels, Mapping) else None
    return found if isinstance(found, str) else ""


def _describe(kind: object, api_version: object) -> str:
    if not kind:
        return "an object with no kind"
    return f"a {kind}" + (f" ({api_version})" if api_version else "")


def namespace_of(obj: Mapping[str, Any], *, flag: str | None, default: str, where: str) -> str:
    """The object's ``metadata.namespace``, else ``-n``'s ``flag``, else the context's
    ``default``; an object whose namespace differs from ``-n`` is refused, as kubectl does."""
    own = (obj.get("metadata") or {}).get("namespace")
    if own and flag and own != flag:
        raise ConfigurationError(
            f"{where}: the object's namespace {own!r} does not match --namespace {flag!r}"
        )
    return str(own or flag or default)
