# syntax=docker/dockerfile:1
#
# One image for every smsfleet role; the command picks the role:
#
#   docker run IMAGE worker --role send --gateway smsc --grace 25 --metrics-port 9100
#   docker run IMAGE worker --role status --metrics-port 9100
#   docker run IMAGE webhooks --port 8080
#   docker run IMAGE topology declare
#
# PID 1 is tini (exec form, no shell): it forwards SIGTERM to smsfleet, whose asyncio handlers stop
# consuming and drain within --grace, and reaps zombies. Give the container --grace + 5 s to stop
# (`docker run --stop-timeout 30`, compose `stop_grace_period: 30s`, Kubernetes
# `terminationGracePeriodSeconds: 30`); Docker's default of 10 s cuts the drain short.

ARG PYTHON_VERSION=3.11

# -- build: a virtualenv with the dependencies and smsfleet, to be copied whole ---------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/smsfleet
ENV PATH=/opt/smsfleet/bin:$PATH
WORKDIR /src
# The dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
# Then the packages (.dockerignore lets in only what pyproject.toml ships), installed non-editable.
COPY . .
RUN pip install --no-deps . \
 && smsfleet --help > /dev/null

# -- runtime -------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="smsfleet" \
      org.opencontainers.image.description="SMS delivery worker fleet: send/status/suppression workers, webhooks receiver" \
      org.opencontainers.image.licenses="MIT"
# tini from Debian: a 30 kB init, so that SIGTERM is never lost while the process starts up
# (a PID 1 without a handler ignores SIGTERM) and so that nothing is left as a zombie.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 smsfleet \
 && useradd --system --uid 10001 --gid smsfleet --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin smsfleet
COPY --from=build /opt/smsfleet /opt/smsfleet
ENV PATH=/opt/smsfleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SMSFLEET_LOG_FORMAT=json
# numeric, so that Kubernetes can verify runAsNonRoot
USER 10001:10001
WORKDIR /tmp
# 8080: webhooks receiver (callbacks, /healthz, /readyz, /metrics); 9100: worker --metrics-port
# (/metrics, /livez, /readyz)
EXPOSE 8080 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "smsfleet"]
CMD ["--help"]
