"""The service's HTTP endpoints: /metrics (Prometheus), /healthz (alive), /readyz (can work)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from syncer.dates import utc_now
from syncer.errors import SyncerError
from syncer.metrics import Metrics
from syncer.store.outbox_store import OutboxStore
from syncer.store.sync_store import SyncStore

# /readyz answers within this, whatever the database does (the control pool's statements
# are limited to a second), and reuses an answer this recent.
READY_TIMEOUT_SECONDS = 2.0
READY_CACHE_SECONDS = 2.0


class LivenessLike(Protocol):
    def problems(self) -> dict[str, float]: ...


# A scrape answers within this whatever the database does: its reads go through the control
# pool (statements limited to a second), and past this the lag is computed from the last read.
METRICS_READ_TIMEOUT_SECONDS = 1.0


def build_health_app(
    store: SyncStore,
    sources: list[str],
    metrics: Metrics,
    scheduler_running: Callable[[], bool],
    *,
    liveness: LivenessLike | None = None,
    stale_after_minutes: float = 60.0,
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        """No database here: the scheduler runs, the event loop ticks, jobs progress."""
        running = scheduler_running()
        problems = liveness.problems() if liveness is not None else {}
        healthy = running and not problems
        return web.json_response(
            {
                "status": "ok" if healthy else "down",
                "scheduler": "running" if running else "stopped",
                **problems,
            },
            status=200 if healthy else 503,
        )

    ready_cache: list[tuple[float, int, dict[str, object]]] = []
    ready_lock = asyncio.Lock()

    async def check_ready() -> tuple[int, dict[str, object]]:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                pending = await store.ready()
        except TimeoutError:
            reason = f"no answer within {READY_TIMEOUT_SECONDS:g}s"
            return 503, {"status": "not ready", "database": reason}
        except SyncerError as exc:
            return 503, {"status": "not ready", "database": str(exc)}
        if pending:
            return 503, {"status": "not ready", "migrations_pending": pending}
        return 200, {"status": "ready", "database": "ok", "migrations_pending": 0}

    async def readyz(request: web.Request) -> web.Response:
        async with ready_lock:  # concurrent probes share one check
            if not ready_cache or time.monotonic() - ready_cache[0][0] > READY_CACHE_SECONDS:
                status, body = await check_ready()
                ready_cache[:] = [(time.monotonic(), status, body)]
            _, status, body = ready_cache[0]
        return web.json_response(body, status=status)

    async def metrics_page(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(METRICS_READ_TIMEOUT_SECONDS):
                fresh = await store.freshness(sources, stale_after_minutes)
                backlog = await OutboxStore(store.control).backlog(sources)
            metrics.refresh_state(
                utc_now(),
                fresh.watermarks,
                fresh.last_success,
                backlog,
                sources,
                fresh.stalled,
                fresh.feed_waiting_seconds,
            )
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
