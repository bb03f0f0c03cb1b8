# syntax=docker/dockerfile:1

# The scoring runtime base image: one replica running an Azure ML entry script
# (`python -m scoring_runtime`). mlfe's Kubernetes backend runs it for every replica.
# Build from the repository root:
#   docker build -f deploy/docker/runtime.Dockerfile -t mlfe-runtime:latest .
# Extend it with your model's dependencies (pip or conda): see deploy/README.md.

# Stage 1 builds mlfe's wheels, so the final image holds no source tree or build tools:
# one compiled with mypyc (setup.py) for this image's Python, and one plain-Python wheel
# for a derived image's own Python (a conda env), which may be another version.
FROM python:3.11-slim AS wheel
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY router/ router/
COPY autoscaler/ autoscaler/
COPY scoring_runtime/ scoring_runtime/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /compiled . \
    && rm -rf build \
    && MLFE_PURE_PYTHON=1 pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The plain-Python wheel stays in the image: a derived image with its own Python (a
# conda env) installs it from /opt/mlfe/wheels into that environment.
COPY --from=wheel /wheels/ /opt/mlfe/wheels/
RUN --mount=type=bind,from=wheel,source=/compiled,target=/tmp/compiled \
    pip install --no-cache-dir /tmp/compiled/*.whl

# Root owns the code and /var/mlfe; the replica runs as a numeric non-root uid (so
# Kubernetes' runAsNonRoot can verify it) and cannot change what it runs.
RUN groupadd --system --gid 10001 mlfe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/mlfe \
        --no-create-home --shell /usr/sbin/nologin mlfe \
    && install -d -m 0755 /var/mlfe /var/mlfe/src /var/mlfe/models

# The layout mlfe's Kubernetes backend mounts into: source files at /var/mlfe/src
# (or baked into a derived image there), models read-only at /var/mlfe/models.
# The backend sets these per version; the defaults serve a derived image that
# copies its score.py into /var/mlfe/src and is run with plain `docker run`.
ENV AZUREML_SOURCE_DIRECTORY=/var/mlfe/src \
    AZUREML_ENTRY_SCRIPT=score.py
USER 10001:10001
WORKDIR /var/mlfe

EXPOSE 5001
# Docker only; on Kubernetes the backend's probes apply. init() may load a large model,
# so the start period is as long as Azure's default liveness initial delay.
HEALTHCHECK --interval=10s --timeout=3s --start-period=310s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5001/', timeout=2)"]

CMD ["python", "-m", "scoring_runtime", "--host", "0.0.0.0", "--port", "5001"]
