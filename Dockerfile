# dbquota operator image: `dbquota run` as a non-root user on a slim Python base.
# Stage 1 installs the package and its dependencies (from pyproject.toml) into a virtual
# environment; stage 2 copies only that environment: no pip cache, no sources, no compilers.
# Build:  docker build -t dbquota:0.1.0 .   (this project's CI has no Docker engine: the
# file is linted by hadolint in `make lint` and its entrypoint is tested as a command)
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/dbquota
# Every dependency has a binary wheel for this base, so the builder needs no compiler either.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/dbquota/bin/pip install --no-cache-dir . \
 && /opt/dbquota/bin/dbquota run --help > /dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm
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
# 9443: the admission webhook (TLS); 8080: /metrics, /healthz, /readyz.
EXPOSE 9443 8080
ENTRYPOINT ["dbquota", "run"]
