# syntax=docker/dockerfile:1
# The sriovdra image: one image for `serve` (DaemonSet), `webhook` (Deployment) and the node tools.
# Build: docker build -t sriovdra:0.1.0 .   (podman build works the same)
# tests/unit/test_dockerfile.py checks these steps against the package: keep each step's shape.

# The Python the test suite runs on; pyproject's requires-python must allow it (checked by the test).
ARG PYTHON_VERSION=3.11
# Releases pin the base by digest, so a rebuild gets the same bytes:
#   --build-arg BASE_IMAGE=python:3.11-slim@sha256:<digest of the tag at release time>
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

FROM ${BASE_IMAGE} AS build
# Must equal pyproject's [project] version (checked by the test; a mismatch fails this stage).
ARG VERSION=0.1.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# pyproject's [build-system] requires, installed once so the wheel step below needs no isolation.
RUN pip install "setuptools>=68" wheel
COPY pyproject.toml README.md ./
COPY sriovdra ./sriovdra
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .
# A --build-arg VERSION that is not the package's would label the image with a version it does not hold.
RUN test -f "/wheels/sriovdra-${VERSION}-py3-none-any.whl" \
    || { echo "VERSION=${VERSION} but pyproject.toml builds: $(ls /wheels)" >&2; exit 1; }

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sriovdra" \
      org.opencontainers.image.description="Kubernetes DRA driver for SR-IOV virtual functions and InfiniBand devices" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Logs leave at once (the kubelet reads them line by line); no .pyc writes into a read-only root.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the wheel and its declared dependencies. No host tools: serve shells out to nothing but the
# node's CNI IPAM plugins, which it runs from the node's /opt/cni/bin (mounted by the chart).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install "/wheels/sriovdra-${VERSION}-py3-none-any.whl"
# Non-root by default: webhook, discover and doctor need no privileges. The DaemonSet runs serve as
# root and privileged (sysfs writes, netns moves, NRI and kubelet sockets): see README "Container image".
RUN useradd --system --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin sriovdra
USER 65532:65532
ENTRYPOINT ["sriovdra"]
CMD ["--help"]
