# syntax=docker/dockerfile:1
# mirakl-order-sync: `syncer run` as a service.
#   config:   mount it at /etc/syncer/config.toml (or set SYNCER_CONFIG)
#   secrets:  env vars named by api_key_env, or files named by api_key_file
#   database: SYNCER_DATABASE_DSN overrides [database] dsn
#   port 9108: /metrics, /healthz, /readyz ([service] metrics_port)
# BASE_IMAGE: any Debian-like image with python3.11 and pip on PATH (scripts/container-check
# builds with a debootstrapped stand-in where no registry is reachable).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncer ./syncer
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 syncer && useradd --create-home --uid 10001 --gid 10001 syncer
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /home/syncer
ENV SYNCER_CONFIG=/etc/syncer/config.toml \
    PYTHONUNBUFFERED=1
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["syncer"]
CMD ["run"]
