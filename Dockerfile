# syntax=docker/dockerfile:1
# The gpu-autoscaler controller image (ghcr.io/gpu-autoscaler/gpu-autoscaler in manifests/).
#
#   docker build -t ghcr.io/gpu-autoscaler/gpu-autoscaler:0.1.0 .
#
# builder: builds the project's wheel and installs it with its dependencies into a virtual
#          environment at /opt/venv (every dependency ships manylinux wheels for CPython 3.11
#          on amd64 and arm64, so no compiler is needed);
# final:   the same Python base with only that environment copied in, run as the non-root
#          user 65532 (no passwd entry is needed; HOME points at /tmp, an emptyDir in the
#          Deployment, whose root filesystem is read-only). The bytecode is compiled at
#          build time, so nothing is written under /opt/venv at run time.
# The GPU extra (torch) is not installed: the controller does not use it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY autoscaler ./autoscaler
COPY policies ./policies
COPY simulator ./simulator
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/python -m compileall -q /opt/venv \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/gpu-autoscaler --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gpu-autoscaler" \
      org.opencontainers.image.description="Predictive, SLO-aware autoscaler for GPU inference on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=builder /opt/venv /opt/venv
USER 65532:65532
# 8080: HTTP (/healthz, /readyz, /metrics, /v1); 9090: KEDA external scaler (gRPC)
EXPOSE 8080 9090
ENTRYPOINT ["gpu-autoscaler"]
CMD ["run"]
