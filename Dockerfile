# syntax=docker/dockerfile:1
# mirakl-order-sync: `syncer run` as a service. Config is mounted at
# /etc/syncer/config.toml (or set SYNCER_CONFIG); secrets come from env vars
# named by api_key_env; SYNCER_DATABASE_DSN overrides the DSN.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncer ./syncer
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 syncer
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER syncer
WORKDIR /home/syncer
ENV SYNCER_CONFIG=/etc/syncer/config.toml \
    PYTHONUNBUFFERED=1
# Healthy while the database answers and its schema is migrated.
HEALTHCHECK --interval=60s --timeout=30s --start-period=30s --retries=3 \
    CMD ["syncer", "status"]
ENTRYPOINT ["syncer"]
CMD ["run"]
