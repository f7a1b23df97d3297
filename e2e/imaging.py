"""Build the operator's image from the repository's Dockerfile with podman, without Docker.

The Dockerfile's default base (the official Python slim image) comes from a registry this
project's machines cannot reach, so the base is made here from Debian's own packages:
``mmdebstrap`` writes a Debian bookworm root filesystem with ``python3`` (and its venv
module) as a tar, ``podman import`` turns it into an image, and ``podman build
--build-arg BASE=<that image>`` builds the Dockerfile on it. Both images are cached in a
podman storage of their own under ``~/.cache/dbquota/podman/`` (``DBQUOTA_CACHE`` moves
it), keyed by content:

- the base by a hash of its recipe (:data:`BASE_RECIPE`), so it is rebuilt only when the
  recipe changes;
- the operator image by a hash of the base image's id, the Dockerfile, ``.dockerignore``
  and every file of the build context (the paths ``.dockerignore`` lets in), so it is
  rebuilt only when one of those changed. Older operator images are removed, the newest
  :data:`KEEP_IMAGES` kept (several worktrees may share the cache).

podman runs with a ``containers.conf`` of its own (``CONTAINERS_CONF``): the ``runc``
runtime (``crun`` refuses the hybrid cgroup v1/v2 hierarchy of these machines) and no
default ulimits (podman's default raises ``RLIMIT_NOFILE`` above the hard limit the
machine gives even root, and runc then fails to start any container). pip inside the
build uses the host's CA bundle, mounted read-only, through the Dockerfile's ``PIP_CERT``
argument, for machines that reach the package index through a TLS-inspecting proxy.
docs/image.md tells the whole story.

Called by ``e2e/test_image.py``; ``python -m e2e.imaging`` builds (or finds) both images
and prints the tag and the environment to run podman with by hand.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from e2e import controlplane

REPO = Path(__file__).resolve().parents[1]

TOOLS = ("podman", "runc", "mmdebstrap")
"""Executables the image build and run need (Debian packages of the same names)."""


@dataclass(frozen=True)
class Recipe:
    """How mmdebstrap makes the base image, and the image configuration podman import sets."""

    suite: str
    variant: str
    include: tuple[str, ...]
    dpkgopt: tuple[str, ...]
    config: tuple[str, ...]

    def key(self) -> str:
        """A hash of every field: a change to any of them names a new base image."""
        return _digest(json.dumps(asdict(self), sort_keys=True).encode())


BASE_RECIPE = Recipe(
    suite="bookworm",
    variant="minbase",
    include=("python3", "python3-venv", "ca-certificates"),
    # As Debian's slim images do: no documentation, manual pages or translations.
    dpkgopt=(
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
    ),
    config=(
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    ),
)
"""The stand-in for ``python:3.11-slim-bookworm``: Debian bookworm with its Python 3.11."""

BASE_REPOSITORY = "localhost/dbquota-test-base"
IMAGE_REPOSITORY = "localhost/dbquota"
KEEP_IMAGES = 3
"""Operator images kept in the cache: the one just built and the newest others."""

CONTAINERS_CONF = """\
# Written by e2e/imaging.py; see docs/image.md.
[containers]
# podman's default ulimits (RLIMIT_NOFILE 1048576) exceed the hard limit these machines
# give even root: runc could not start any container.
default_ulimits = []

[engine]
# crun refuses the hybrid cgroup v1/v2 hierarchy of these machines; runc accepts it.
runtime = "runc"
tmp_dir = "{run}/libpod"
"""

STORAGE_CONF = """\
# Written by e2e/imaging.py; see docs/image.md.
[storage]
driver = "overlay"
graphroot = "{graphroot}"
runroot = "{run}/storage"
"""


class ImageError(RuntimeError):
    """An image could not be built; the message carries the failing command's output."""


def missing_tools() -> list[str]:
    """The executables of :data:`TOOLS` that are not on ``PATH``."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class Podman:
    """podman bound to dbquota's own storage and configuration under ``root``."""

    root: Path

    @classmethod
    def setup(cls, root: Path | None = None) -> Podman:
        """Write the configuration files (idempotent) and return the bound podman."""
        root = (root or controlplane.cache_dir() / "podman").resolve()
        run = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run") / "dbquota-podman"
        (root / "storage").mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(CONTAINERS_CONF.format(run=run))
        (root / "storage.conf").write_text(STORAGE_CONF.format(graphroot=root / "storage", run=run))
        return cls(root=root)

    def env(self) -> dict[str, str]:
        """The environment that makes ``podman`` use this storage and configuration."""
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman args...``; raise :class:`ImageError` with its output when ``check``
        and it fails."""
        proc = subprocess.run(
            ["podman", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ImageError(f"podman {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
        return proc

    def logged(self, *args: str, log: Path, timeout: float) -> None:
        """Run ``podman args...`` with its output appended to ``log``; raise
        :class:`ImageError` with the log's tail when it fails."""
        _logged(["podman", *args], log=log, env=self.env(), timeout=timeout)

    def exists(self, image: str) -> bool:
        """Whether ``image`` is in this storage."""
        return self("image", "exists", image, check=False).returncode == 0

    def image_id(self, image: str) -> str:
        """The full id of ``image``."""
        return self("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


def _logged(argv: list[str], *, log: Path, env: dict[str, str], timeout: float) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise ImageError(f"{argv[0]} exited with {proc.returncode} (log: {log}):\n{tail}")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def base_tag(recipe: Recipe = BASE_RECIPE) -> str:
    """The base image's tag: the suite and a hash of the recipe."""
    return f"{BASE_REPOSITORY}:{recipe.suite}-{recipe.key()}"


def base_image(podman: Podman, *, log: Path, recipe: Recipe = BASE_RECIPE) -> str:
    """The base image's tag, made with mmdebstrap and ``podman import`` if not cached."""
    tag = base_tag(recipe)
    if podman.exists(tag):
        return tag
    work = podman.root / "tmp"
    work.mkdir(exist_ok=True)
    tarball = work / f"{tag.rsplit(':', 1)[1]}.{os.getpid()}.tar"
    argv = [
        "mmdebstrap",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.include)}",
        *(f"--dpkgopt={opt}" for opt in recipe.dpkgopt),
        recipe.suite,
        str(tarball),
    ]
    try:
        _logged(argv, log=log, env=dict(os.environ), timeout=1200)
        changes = [arg for change in recipe.config for arg in ("--change", change)]
        podman.logged("import", *changes, str(tarball), tag, log=log, timeout=600)
    finally:
        tarball.unlink(missing_ok=True)
    _remove_others(podman, repository=BASE_REPOSITORY, keep=tag, count=1)
    return tag


def context_files(repo: Path = REPO) -> list[Path]:
    """The files ``podman build`` sends from ``repo``, as its ``.dockerignore`` selects
    them: that file excludes everything (``*``), lets paths in (``!path``) and then
    excludes patterns again (``**/__pycache__``), which is the only form handled here."""
    lines = [
        ln.strip()
        for ln in (repo / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines or lines[0] != "*":
        raise ImageError(".dockerignore must start with '*' and let paths in with '!path'")
    included = [ln[1:] for ln in lines[1:] if ln.startswith("!")]
    excluded = [ln.removeprefix("**/") for ln in lines[1:] if not ln.startswith("!")]

    def kept(path: Path) -> bool:
        rel = path.relative_to(repo)
        return not any(
            fnmatch.fnmatch(part, pattern) if "/" not in pattern else rel.match(pattern)
            for pattern in excluded
            for part in rel.parts
        )

    def walk(path: Path) -> Iterator[Path]:
        if path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path

    return sorted(p for inc in included for p in walk(repo / inc.rstrip("/")) if kept(p))


def image_tag(podman: Podman, *, base: str, repo: Path = REPO) -> str:
    """The operator image's tag: a hash of the base image, the Dockerfile and the build
    context, so that any change to them names a new image."""
    parts = [podman.image_id(base).encode()]
    for path in [repo / "Dockerfile", repo / ".dockerignore", *context_files(repo)]:
        parts += [str(path.relative_to(repo)).encode(), path.read_bytes()]
    return f"{IMAGE_REPOSITORY}:test-{_digest(*parts)}"


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip and Python trust, for pip inside the build."""
    candidates = [
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def operator_image(podman: Podman, *, log: Path, repo: Path = REPO) -> str:
    """The operator image's tag, built from ``repo``'s Dockerfile if not cached."""
    base = base_image(podman, log=log)
    tag = image_tag(podman, base=base, repo=repo)
    if podman.exists(tag):
        return tag
    ca = host_ca_bundle()
    mount = ["--volume", f"{ca}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    podman.logged(
        "build",
        "--runtime=runc",
        "--pull=never",
        f"--build-arg=BASE={base}",
        *(mount if ca else []),
        "--tag",
        tag,
        "--file",
        str(repo / "Dockerfile"),
        str(repo),
        log=log,
        timeout=1800,
    )
    _remove_others(podman, repository=IMAGE_REPOSITORY, keep=tag, count=KEEP_IMAGES)
    return tag


def _remove_others(podman: Podman, *, repository: str, keep: str, count: int) -> None:
    """Untag all but the ``count`` newest images of ``repository`` (``keep`` among them),
    then drop the layers nothing uses any more. Best effort: another worktree's run may
    be using one."""
    listed = podman(
        "images", "--filter", f"reference={repository}", "--format", "{{.Repository}}:{{.Tag}}"
    ).stdout.split()  # newest first
    others = [tag for tag in listed if tag != keep]
    for tag in others[count - 1 :]:
        podman("rmi", tag, check=False)
    podman("image", "prune", "--force", check=False)


def main() -> int:
    """Build (or find) the images; print the tag and how to run podman with this storage."""
    missing = missing_tools()
    if missing:
        print(f"error: missing {', '.join(missing)} (apt-get install {' '.join(TOOLS)})")
        return 1
    podman = Podman.setup()
    log = podman.root / "logs" / "build.log"
    started = time.monotonic()
    try:
        tag = operator_image(podman, log=log)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"image {tag} ready in {time.monotonic() - started:.0f}s (build log: {log})")
    env = podman.env()
    print(
        f"export CONTAINERS_CONF={env['CONTAINERS_CONF']} "
        f"CONTAINERS_STORAGE_CONF={env['CONTAINERS_STORAGE_CONF']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
