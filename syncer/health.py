"""The service's HTTP endpoints: /metrics (Prometheus), /healthz (alive), /readyz (can work)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from syncer.dates import utc_now
from syncer.errors import SyncerError
from syncer.metrics import Metrics
from syncer.store.outbox_store import OutboxStore
from syncer.store.sync_store import SyncStore

# A scrape must answer before Prometheus gives up (10 s by default), database or not.
METRICS_READ_TIMEOUT_SECONDS = 5.0


def build_health_app(
    store: SyncStore, sources: list[str], metrics: Metrics, scheduler_running: Callable[[], bool]
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        running = scheduler_running()
        return web.json_response(
            {
                "status": "ok" if running else "down",
                "scheduler": "running" if running else "stopped",
            },
            status=200 if running else 503,
        )

    async def readyz(request: web.Request) -> web.Response:
        try:
            pending = await store.ping()
        except SyncerError as exc:
            return web.json_response({"status": "not ready", "database": str(exc)}, status=503)
        if pending:
            return web.json_response(
                {"status": "not ready", "migrations_pending": pending}, status=503
            )
        return web.json_response({"status": "ready", "database": "ok", "migrations_pending": 0})

    async def metrics_page(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(METRICS_READ_TIMEOUT_SECONDS):
                watermarks, last_success = await store.freshness(sources)
                backlog = await OutboxStore(store.pool).backlog(sources)
            metrics.refresh_state(utc_now(), watermarks, last_success, backlog, sources)
        except (SyncerError, TimeoutError):
            # The counters are still worth serving; the lag grows from the last watermark
            # read and syncer_state_fresh says 0. /readyz reports the database.
            metrics.state_unreadable(utc_now(), sources)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


@asynccontextmanager
async def serve_health(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve the endpoints; yield the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
