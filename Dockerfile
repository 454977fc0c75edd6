# syntax=docker/dockerfile:1
#
# Alertbridge container image.
#
#   docker build -t alertbridge .
#   docker run --rm -p 8080:8080 -v "$PWD/alertbridge.yml:/etc/alertbridge/config.yml:ro" alertbridge
#
# The builder fetches every dependency pinned in requirements.lock, each file
# checked against its sha256, and builds the project's own wheel; the final
# stage installs only those wheels into a virtualenv, so no compiler, no
# source tree and no pip cache end up in the image. (requirements.lock is
# written by `bash .ci/lock`; tests/packaging replays these steps.)

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# The dependencies first: this layer changes only with the lock.
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements.lock \
    && cp requirements.lock /wheels/
# Only what the wheel is built from: metadata, the package, the built-in
# templates (bridge/templates) and the demo's sample payloads (bridge/examples).
COPY pyproject.toml README.md ./
COPY bridge/ bridge/
COPY templates/ templates/
COPY alertmanager-examples/payloads/ alertmanager-examples/payloads/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="alertbridge" \
      org.opencontainers.image.description="Alertmanager webhooks to Telegram, each notification exactly once" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/alertbridge \
    PATH=/opt/alertbridge/bin:$PATH \
    ALERTBRIDGE_CONFIG=/etc/alertbridge/config.yml

# Install from the builder's wheels only (--no-index: nothing is fetched here),
# the locked ones checked against the lock's hashes once more, the project
# without dependencies (the lock has them all, and pip check says so); then
# drop pip from the runtime venv.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-index --find-links=/wheels \
       --require-hashes -r /wheels/requirements.lock \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-index --no-deps /wheels/alertbridge-*.whl \
    && "$VIRTUAL_ENV/bin/pip" check \
    && "$VIRTUAL_ENV/bin/pip" uninstall --yes pip \
    && groupadd --system --gid 10001 alertbridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin alertbridge \
    && mkdir -p /etc/alertbridge

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# /healthz is served by `serve` and `receiver`. A `worker`-only container has
# no HTTP listener: run it with --no-healthcheck (Kubernetes ignores this
# instruction and uses the chart's probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["alertbridge"]
CMD ["serve", "--config", "/etc/alertbridge/config.yml"]
