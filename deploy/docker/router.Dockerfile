# The mlfe router: `mlfe serve` (data plane, management API, autoscaler).
# Build from the repository root:
#   docker build -f deploy/docker/router.Dockerfile -t mlfe-router:latest .

# Stage 1 builds mlfe's wheel, so the final image holds no source tree or build tools.
# With a C compiler there, setup.py compiles the scoring path with mypyc.
FROM python:3.11-slim AS wheel
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY router/ router/
COPY autoscaler/ autoscaler/
COPY scoring_runtime/ scoring_runtime/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels/ /opt/mlfe/wheels/
RUN pip install --no-cache-dir /opt/mlfe/wheels/*.whl

# A numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
# /var/lib/mlfe is the state dir; on Kubernetes the state lives in the cluster and the
# manifest mounts an emptyDir here, so the root filesystem can stay read-only.
RUN groupadd --system --gid 10001 mlfe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mlfe \
        --no-create-home --shell /usr/sbin/nologin mlfe \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/mlfe
USER 10001:10001
WORKDIR /var/lib/mlfe

EXPOSE 8080
# Docker only; Kubernetes ignores HEALTHCHECK and uses the manifest's probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

# `docker run IMAGE service list --url ...` runs any other mlfe command.
ENTRYPOINT ["mlfe"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--state-dir", "/var/lib/mlfe"]
