# dbquota operator image: `dbquota run` as a non-root user on a slim Python base.
# Stage 1 installs the package and its dependencies (from pyproject.toml, at the versions
# constraints.txt pins: the ones the tests ran with) into a virtual environment; stage 2
# copies only that environment: no pip cache, no sources, no compilers.
#
# Build:  docker build -t dbquota:0.1.0 .     (or: podman build -t dbquota:0.1.0 .)
# Build arguments:
#   BASE      the image both stages start from (default: the official Python slim image).
#             Any Debian-based image with `python3` >= 3.11, its venv module, `useradd`
#             and `groupadd` will do; both stages use the same one, because the virtual
#             environment links to the base's interpreter.
#   PIP_CERT  (builder stage only; unset by default) a CA bundle for pip inside the build,
#             when the package index is reached through a TLS-inspecting proxy; mount the
#             file into the build (podman build --volume HOST_CA:/run/ca.crt:ro
#             --build-arg PIP_CERT=/run/ca.crt). It does not reach the final image.
#   VERSION   the image's version label.
# e2e/test_image.py builds this file with BASE set to a Debian bookworm + python3 image
# made by mmdebstrap, and runs it as the Helm chart does (docs/image.md).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS builder
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/dbquota
# Every dependency has a binary wheel for this base, so the builder needs no compiler either.
COPY pyproject.toml README.md constraints.txt ./
COPY operator/ operator/
RUN /opt/dbquota/bin/pip install --no-cache-dir -c constraints.txt . \
 && /opt/dbquota/bin/dbquota run --help > /dev/null

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="dbquota" \
      org.opencontainers.image.description="Kubernetes operator that keeps database cost quotas enforced when billing APIs are slow, rate-limited or down" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user (65532) with a passwd entry, so that tools asking for the user name work;
# the Helm chart runs the pod as this uid with runAsNonRoot and a read-only root filesystem.
RUN groupadd --system --gid 65532 dbquota \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dbquota \
 && install -d -o 65532 -g 65532 -m 0750 /var/cache/dbquota
COPY --from=builder /opt/dbquota /opt/dbquota
ENV PATH=/opt/dbquota/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DBQUOTA_CACHE_PATH=/var/cache/dbquota/cache.sqlite3 \
    DBQUOTA_WEBHOOK_CERT_DIR=/var/run/secrets/dbquota/webhook
USER 65532:65532
WORKDIR /var/cache/dbquota
# 9443: the admission webhook (TLS); 8080: /metrics, /healthz and /readyz.
EXPOSE 9443 8080
# Exec form: the operator is PID 1 and gets SIGTERM itself; no shell is involved at runtime.
ENTRYPOINT ["dbquota", "run"]
