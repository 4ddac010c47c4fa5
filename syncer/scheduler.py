"""The long-running service: one APScheduler job per source, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from syncer.config import Config, SourceConfig
from syncer.errors import RunSkipped, SyncerError
from syncer.log import get_logger
from syncer.store.sync_store import SyncStore


async def run_service(config: Config, store: SyncStore, stop: asyncio.Event | None = None) -> None:
    """Run differential syncs on schedule until `stop` is set (or SIGTERM/SIGINT)."""
    from syncer.commands import describe_summary, push_source, run_source

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log = get_logger()
    running: set[asyncio.Task[object]] = set()

    async def scheduled_run(source: SourceConfig) -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            summary = await run_source(config, store, source, "differential")
            log.info("scheduled_run_done", source=source.name, summary=describe_summary(summary))
        except RunSkipped as exc:
            log.info("run_skipped", source=source.name, reason=str(exc))
        except SyncerError as exc:
            log.error("scheduled_run_failed", source=source.name, error=str(exc))
        finally:
            running.discard(task)

    async def scheduled_push(source: SourceConfig) -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            summary = await push_source(config, store.pool, source)
            if summary.calls or summary.rejected:
                log.info("scheduled_push_done", source=source.name, summary=summary.describe())
        except RunSkipped as exc:
            log.info("push_skipped", source=source.name, reason=str(exc))
        except SyncerError as exc:
            log.error("scheduled_push_failed", source=source.name, error=str(exc))
        finally:
            running.discard(task)

    scheduler = AsyncIOScheduler(timezone=UTC)
    for source in config.sources:
        scheduler.add_job(
            scheduled_run,
            IntervalTrigger(minutes=source.interval_minutes, timezone=UTC),
            args=[source],
            id=f"sync:{source.name}",
            name=f"differential sync of {source.name}",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        scheduler.add_job(
            scheduled_push,
            IntervalTrigger(seconds=config.push.interval_seconds, timezone=UTC),
            args=[source],
            id=f"push:{source.name}",
            name=f"OR04 push of {source.name}",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
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
