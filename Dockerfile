# Worker image: a Prefect process worker for the `automl-pool` work pool, with automl installed
# and this checkout in /app (flows/, prefect.yaml, datasets/). Not built in this project's CI
# (no Docker engine there); tests/test_deployments.py lints it with hadolint and runs its
# entry point and health check against a real Prefect server.
#
#   docker build -t automl-worker .
#   docker run -e PREFECT_API_URL=http://HOST:4200/api automl-worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME=/home/automl/.prefect \
    KERAS_HOME=/home/automl/.keras \
    TF_CPP_MIN_LOG_LEVEL=2

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin automl

WORKDIR /app
COPY --chown=automl:automl . /app
# Installed as root into the system site-packages; the worker then runs unprivileged.
RUN pip install --no-cache-dir /app

USER 10001

# `prefect worker start --with-healthcheck` serves /health on this port while the worker polls.
ENV PREFECT_WORKER_WEBSERVER_PORT=8080
# A failed request raises, so python exits non-zero and Docker marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PREFECT_WORKER_WEBSERVER_PORT', '8080') + '/health', timeout=5)"]

ENTRYPOINT ["prefect", "worker", "start", "--pool", "automl-pool", "--type", "process", "--with-healthcheck"]
