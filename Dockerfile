# syntax=docker/dockerfile:1.7
#
# Sluice container images (multi-stage):
#
#   docker build --target runtime -t sluice:latest .   # Sluice + Python 3.13, no app: a base image
#   docker build -t sluice-hello:latest .              # the example app (examples/hello) on top
#   docker run --rm -p 7071:7071 sluice-hello:latest
#
# Stages: `build` compiles the sluice binary; `runtime` is the slim Python image with the binary,
# the worker's private environment pre-built into SLUICE_CACHE_DIR (a container needs no network
# for the worker), a non-root user and the platform's layout (/home/site/wwwroot); `example` adds
# examples/hello with its requirements pre-installed. An app image does the same as `example`
# from `sluice:latest` (deploy/README.md). Ports and the admin address are ENV, read by the
# entrypoint; extra `sluice serve` flags go after the image name (`docker run IMAGE --workers 4`).
#
# No container engine runs in this repository's CI. tests/deploy/ parses this file (every COPY
# source exists and survives .dockerignore; every program a RUN, HEALTHCHECK or ENTRYPOINT calls
# is in the base image or installed by an earlier step) and replays its `sluice check` steps and
# its entrypoint and health check against the real binary; scripts/check-deploy.sh lints it with
# hadolint and replays the `cargo build` step on exactly the files COPY brings in.

# The toolchain the test suite is verified with (Cargo.toml's rust-version, 1.89, is the floor).
# Build and runtime must share the Debian release: the binary links the build image's glibc.
ARG RUST_VERSION=1.95
ARG PYTHON_VERSION=3.13
ARG DEBIAN_RELEASE=bookworm
ARG SLUICE_UID=1000

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the release build reads: the manifest (which names benches/hot_paths.rs), build.rs
# and the proto it compiles (protox: no system protoc), the worker's native transport crate that
# build.rs builds (a workspace member), the host sources and the worker files the binary embeds.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto/ proto/
COPY native/ native/
COPY src/ src/
COPY worker/ worker/
COPY benches/ benches/
# Cache mounts keep the crate downloads and compiled dependencies between builds; the binary is
# copied out of the cached target directory within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice \
    && install -m 0755 target/release/sluice /usr/local/bin/sluice

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime
ARG PYTHON_VERSION
ARG SLUICE_UID
# The public port (the platform's local default; 80 works too: Docker lets unprivileged
# processes bind low ports inside a container, Kubernetes needs a securityContext sysctl).
ARG SLUICE_PORT=7071
# tini as PID 1 reaps orphaned grandchildren (a function's subprocesses) and forwards signals,
# so SIGTERM reaches sluice, which drains and exits 0. Not version-pinned: Debian's security
# updates replace the exact version within a release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid "${SLUICE_UID}" sluice \
    && useradd --uid "${SLUICE_UID}" --gid sluice --create-home --shell /usr/sbin/nologin sluice \
    && mkdir -p /home/site/wwwroot /opt/sluice/cache \
    && chown "${SLUICE_UID}:${SLUICE_UID}" /home/site/wwwroot
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
# AzureWebJobsScriptRoot and FUNCTIONS_WORKER_RUNTIME as the platform sets them; the entrypoint
# serves $AzureWebJobsScriptRoot. PIP_NO_CACHE_DIR keeps pip's download cache out of the layers.
# SLUICE_ADMIN_TOKEN is deliberately not set here (it is a secret, passed at run time): it locks
# POST /admin/assign in placeholder mode (see deploy/README.md).
ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    FUNCTIONS_WORKER_RUNTIME=python \
    SLUICE_PYTHON=/usr/local/bin/python${PYTHON_VERSION} \
    SLUICE_CACHE_DIR=/opt/sluice/cache \
    SLUICE_PORT=${SLUICE_PORT} \
    SLUICE_ADMIN_PORT=9091 \
    SLUICE_ADMIN_BIND=127.0.0.1 \
    PIP_NO_CACHE_DIR=1
# Pre-build the worker's private environment (keyed by this image's Python version and the
# worker files embedded in the binary) by checking a dependency-free copy of the example app:
# `sluice check` builds the environment and starts one real worker on it. Built as root and
# left read-only: a finished environment is only read, so containers (even with a read-only
# root filesystem) never run pip for the worker.
COPY examples/hello/function_app.py examples/hello/host.json /tmp/sluice-prebuild/
RUN sluice check /tmp/sluice-prebuild \
    && rm -rf /tmp/sluice-prebuild \
    && chmod -R a+rX,go-w /opt/sluice/cache
WORKDIR /home/site/wwwroot
USER ${SLUICE_UID}:${SLUICE_UID}
EXPOSE ${SLUICE_PORT} 9091
# /readyz on the admin listener: 200 only with a ready worker and not draining. curl is not in
# slim images; urlopen raises (exit 1) on 503 and on a refused connection. The admin listener
# binds 127.0.0.1 by default, which this check, run inside the container, reaches.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SLUICE_ADMIN_PORT', '9091') + '/readyz', timeout=4)"]
ENTRYPOINT ["tini", "--", "sh", "-c", "exec sluice serve \"$AzureWebJobsScriptRoot\" --port \"$SLUICE_PORT\" --admin-port \"$SLUICE_ADMIN_PORT\" --admin-bind \"$SLUICE_ADMIN_BIND\" \"$@\"", "sluice"]
CMD []

FROM runtime AS example
ARG SLUICE_UID
COPY --chown=${SLUICE_UID}:${SLUICE_UID} examples/hello/ /home/site/wwwroot/
# Install the app's requirements.txt into /home/site/wwwroot/.python_packages now (as the
# non-root user, as `serve` would on first start), so containers start without network.
RUN sluice check /home/site/wwwroot
