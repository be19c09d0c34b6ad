# syntax=docker/dockerfile:1
# One image for every recsys process (api, worker, train, simulate): the command picks the role.
#
#   docker build -t recsys:0.1.0 .
#   docker run --rm -p 8000:8000 -e RECSYS_REDIS_URL=... recsys:0.1.0
#
# torch is a dependency (the two-tower model), so the image is large (~2 GB with the CPU wheel
# index below, several GB with the default CUDA wheels); the build stage keeps compilers and pip
# caches out of the runtime image.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# implicit and a few other dependencies may build from source where no wheel matches.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a code change does not re-download torch.
COPY pyproject.toml README.md ./
# CPU-only torch: the services never use a GPU, and the CUDA wheels would add gigabytes.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --upgrade pip wheel \
    && pip install --index-url "$TORCH_INDEX_URL" torch \
    && python - <<'PY' > /tmp/requirements.txt
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
RUN pip install -r /tmp/requirements.txt
COPY schemas ./schemas
COPY core ./core
COPY streams ./streams
COPY batch ./batch
COPY api ./api
COPY infra ./infra
COPY recsys ./recsys
RUN pip install --no-deps .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# libgomp: OpenMP runtime of implicit and torch's CPU kernels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 recsys \
    && useradd --system --uid 10001 --gid recsys --home-dir /var/lib/recsys --shell /usr/sbin/nologin recsys \
    && mkdir -p /var/lib/recsys/state /var/lib/recsys/datasets /var/lib/recsys/cache \
    && chown -R recsys:recsys /var/lib/recsys
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/recsys \
    RECSYS_STATE_DIR=/var/lib/recsys/state \
    RECSYS_DATA_DIR=/var/lib/recsys/datasets \
    RECSYS_CACHE_DIR=/var/lib/recsys/cache
# Named volumes mounted on these paths start with this ownership, so the non-root user can write.
VOLUME ["/var/lib/recsys/state"]
WORKDIR /var/lib/recsys
USER recsys:recsys
EXPOSE 8000 6066
# Liveness of the API (the default command); docker-compose.yml overrides it per role.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=3)"]
CMD ["recsys", "serve", "--host", "0.0.0.0", "--port", "8000"]
