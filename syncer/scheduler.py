"""The long-running service: per source, a differential sync every `interval_minutes`, a
re-scan every `export.rescan_interval_hours`, a count audit every `audit.interval_hours`, an OR04 push every `push.interval_seconds` and,
when enabled, a fast-lane OR11 pass every `fast_lane.interval_seconds` (APScheduler 3.x), the
/metrics, /healthz and
/readyz endpoints, and a clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from syncer.config import Config, SourceConfig
from syncer.errors import ConfigError, RunSkipped, SyncerError
from syncer.health import build_health_app, serve_health
from syncer.log import get_logger
from syncer.metrics import METRICS
from syncer.store.sync_store import SyncStore


async def run_service(config: Config, store: SyncStore, stop: asyncio.Event | None = None) -> None:
    """Run the scheduled jobs until `stop` is set (or SIGTERM/SIGINT)."""
    from syncer.commands import describe_summary, push_source, run_source
    from syncer.pipeline.audit import audit_source
    from syncer.pipeline.fastlane import lane_source

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log = get_logger()
    running: set[asyncio.Task[Any]] = set()
    liveness = Liveness(stall_seconds=stall_seconds(config))
    # APScheduler starts every due job at once: these bound how many touch the database.
    # A run waits for a slot before any database work; pushes have their own, so they never
    # queue behind long loads. The work pool is sized for both (database.pool_size).
    run_slots = asyncio.Semaphore(config.service.max_concurrent_runs)
    push_slots = asyncio.Semaphore(config.service.max_concurrent_pushes)
    lane_slots = asyncio.Semaphore(1)  # a fast-lane pass holds one connection, briefly

    def tracked(kind: str, work: Callable[[SourceConfig], Awaitable[str | None]]) -> Any:
        """A job that registers its task (so shutdown can cancel it) and logs its outcome."""

        async def job(source: SourceConfig) -> None:
            task = asyncio.current_task()
            assert task is not None
            running.add(task)
            liveness.progressed()
            try:
                outcome = await work(source)
                if outcome:
                    log.info(f"scheduled_{kind}_done", source=source.name, summary=outcome)
            except RunSkipped as exc:
                log.info(f"{kind}_skipped", source=source.name, reason=str(exc))
            except SyncerError as exc:
                log.error(f"scheduled_{kind}_failed", source=source.name, error=str(exc))
            finally:
                running.discard(task)
                liveness.progressed()

        return job

    async def sync(source: SourceConfig) -> str:
        async with run_slots:
            liveness.progressed()
            return describe_summary(await run_source(config, store, source, "differential"))

    async def rescan(source: SourceConfig) -> str:
        async with run_slots:
            liveness.progressed()
            return describe_summary(await run_source(config, store, source, "rescan"))

    async def push(source: SourceConfig) -> str | None:
        async with push_slots:
            liveness.progressed()
            summary = await push_source(config, store.pool, source, store.leases)
        return summary.describe() if summary.calls or summary.rejected else None

    async def lane(source: SourceConfig) -> str | None:
        async with lane_slots:
            liveness.progressed()
            summary = await lane_source(config, store, source)
        return summary.describe() if summary.orders_changed or summary.truncated else None

    async def audit(source: SourceConfig) -> str:
        async with lane_slots:  # OR11 and a connection, like the lane's passes
            liveness.progressed()
            return (await audit_source(config, store, source)).describe()

    lane_every = IntervalTrigger(seconds=config.fast_lane.interval_seconds, timezone=UTC)
    scheduler = AsyncIOScheduler(timezone=UTC)
    for source in config.sources:
        for kind, work, trigger in (
            ("run", sync, IntervalTrigger(minutes=source.interval_minutes, timezone=UTC)),
            ("push", push, IntervalTrigger(seconds=config.push.interval_seconds, timezone=UTC)),
            *((("lane", lane, lane_every),) if config.fast_lane.enabled else ()),
        ):
            scheduler.add_job(
                tracked(kind, work),
                trigger,
                args=[source],
                id=f"{kind}:{source.name}",
                next_run_time=datetime.now(UTC),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        for kind, work, hours in (
            ("rescan", rescan, config.export.rescan_interval_hours),
            ("audit", audit, config.audit.interval_hours),
        ):
            if hours > 0:  # first one an interval after the start
                scheduler.add_job(
                    tracked(kind, work),
                    IntervalTrigger(hours=hours, timezone=UTC),
                    args=[source],
                    id=f"{kind}:{source.name}",
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=None,
                )
    async with AsyncExitStack() as stack:
        stack.push_async_callback(liveness.stop)
        liveness.start()
        if config.service.metrics_port:
            await _start_endpoints(config, store, stack, lambda: bool(scheduler.running), liveness)
        scheduler.start()
        log.info("service_started", sources=[s.name for s in config.sources])
        try:
            await stop.wait()
        finally:
            log.info("service_stopping", runs_in_flight=len(running))
            scheduler.shutdown(wait=False)
            for task in list(running):
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            log.info("service_stopped")


def stall_seconds(config: Config) -> float:
    """How long the service may go without any job starting, finishing or getting a slot
    before /healthz calls it stuck: pushes start every push.interval_seconds, and every
    wait of a job is bounded (pool acquire, lease, statements)."""
    return max(
        120.0,
        3 * config.push.interval_seconds + config.database.acquire_timeout_seconds,
    )


class Liveness:
    """What /healthz reads, without the database: the event loop ticks (a blocked loop
    stops ticking), and jobs make progress (start, get a slot, finish)."""

    TICK_SECONDS = 1.0

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.last_tick = self.last_progress = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    async def _tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(self.TICK_SECONDS)

    def problems(self) -> dict[str, float]:
        """Ages that are too old, in seconds (empty: healthy)."""
        now = time.monotonic()
        found = {}
        if now - self.last_tick > 10 * self.TICK_SECONDS:
            found["event_loop_stalled_seconds"] = round(now - self.last_tick, 1)
        if now - self.last_progress > self.stall_seconds:
            found["no_job_progress_seconds"] = round(now - self.last_progress, 1)
        return found


async def _start_endpoints(
    config: Config,
    store: SyncStore,
    stack: AsyncExitStack,
    scheduler_running: Callable[[], bool],
    liveness: Liveness,
) -> None:
    host, port = config.service.metrics_host, config.service.metrics_port
    app = build_health_app(
        store,
        [s.name for s in config.sources],
        METRICS,
        scheduler_running,
        liveness=liveness,
        stale_after_minutes=config.service.stale_after_minutes,
    )
    try:
        bound = await stack.enter_async_context(serve_health(app, host, port))
    except OSError as exc:
        raise ConfigError(
            f"service.metrics_port: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    get_logger().info(
        "endpoints_listening", host=host, port=bound, paths=["/metrics", "/healthz", "/readyz"]
    )
