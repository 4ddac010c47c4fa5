"""What each CLI command does, on top of config, store, pipeline and the Mirakl client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import asyncpg

from syncer.config import Config, SourceConfig
from syncer.errors import MigrationError, RunSkipped, SyncerError
from syncer.log import get_logger
from syncer.mirakl import open_client
from syncer.pipeline.push import PushRun, PushSummary
from syncer.pipeline.run import RunSummary, SyncRun
from syncer.store.db import open_pool
from syncer.store.migrate import migrate as apply_migrations
from syncer.store.migrate import pending_migrations
from syncer.store.outbox_store import OutboxStore
from syncer.store.sync_store import SourceStatus, SyncStore


@asynccontextmanager
async def open_store(config: Config, *, require_migrated: bool = True) -> AsyncIterator[SyncStore]:
    """A SyncStore on the configured database; refuses a schema that is not migrated."""
    async with open_pool(config.database) as pool:
        if require_migrated:
            async with pool.acquire() as conn:
                try:
                    pending = await pending_migrations(conn, config.database.schema)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"cannot read the schema version: {exc}") from None
            if pending:
                raise MigrationError(
                    f"schema {config.database.schema} has {pending} pending migration(s): "
                    "run `syncer migrate` first"
                )
        yield SyncStore(pool, config.database.schema)


async def migrate(config: Config) -> int:
    async with open_pool(config.database, size=1) as pool, pool.acquire() as conn:
        applied = await apply_migrations(conn, config.database.schema)
    if applied:
        print(f"schema {config.database.schema}: applied {', '.join(applied)}")
    else:
        print(f"schema {config.database.schema}: up to date")
    return 0


async def run_source(
    config: Config, store: SyncStore, source: SourceConfig, mode: str, since: datetime | None = None
) -> RunSummary:
    """One run of one source with its own HTTP session."""
    async with open_client(source, config.http) as client:
        runner = SyncRun(source, config.export, config.http, client, store)
        return await runner.run(mode, since)


async def _run_each(config: Config, name: str | None, mode: str, since: datetime | None) -> int:
    sources = config.select_sources(name)
    for source in sources:
        source.require_api_key()
    outcomes: list[int] = []
    async with open_store(config) as store:
        for source in sources:
            try:
                summary = await run_source(config, store, source, mode, since)
            except RunSkipped as exc:
                print(f"{source.name}: skipped: {exc}")
                outcomes.append(exc.exit_code)
                continue
            except SyncerError as exc:
                print(f"{source.name}: failed: {exc}")
                outcomes.append(exc.exit_code)
                continue
            print(describe_summary(summary))
            outcomes.append(0)
    return max(outcomes, key=lambda code: (code == 1, code == 2, code)) if outcomes else 0


def describe_summary(s: RunSummary) -> str:
    watermark = s.watermark.isoformat(timespec="seconds") if s.watermark else "-"
    return (
        f"{s.source}: {s.mode} run {s.run_id} {s.status}: {s.orders} orders "
        f"({s.orders_changed} changed), {s.lines} lines, {s.chunks} chunk(s) from "
        f"{s.exports} export(s), {s.bytes / 1e6:.1f} MB in {s.duration_s:.1f}s; watermark {watermark}"
    )


async def sync(config: Config, name: str | None) -> int:
    return await _run_each(config, name, "differential", None)


async def resync(config: Config, name: str | None, since: datetime | None) -> int:
    return await _run_each(config, name, "full", since)


async def push_source(config: Config, pool: asyncpg.Pool, source: SourceConfig) -> PushSummary:
    """Send the source's pending order patches (OR04) with its own HTTP session."""
    async with open_client(source, config.http) as client:
        return await PushRun(source, config.push, client, OutboxStore(pool)).run()


async def push(config: Config, name: str | None) -> int:
    sources = config.select_sources(name)
    for source in sources:
        source.require_api_key()
    outcomes: list[int] = []
    async with open_store(config) as store:
        for source in sources:
            try:
                summary = await push_source(config, store.pool, source)
            except SyncerError as exc:
                print(f"{source.name}: push failed: {exc}")
                outcomes.append(exc.exit_code)
                continue
            print(summary.describe())
            outcomes.append(0)
    return max(outcomes, key=lambda code: (code == 1, code == 2, code)) if outcomes else 0


async def status(config: Config) -> int:
    names = [s.name for s in config.sources]
    async with open_store(config) as store:
        rows = await store.status(names)
    print(format_status(rows))
    return 0


def _lag(lag: timedelta | None) -> str:
    if lag is None:
        return "-"
    seconds = int(lag.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def format_status(rows: list[SourceStatus]) -> str:
    """An aligned table, one row per source."""
    header = (
        "SOURCE",
        "WATERMARK",
        "LAG",
        "LAST RUN",
        "RESULT",
        "ORDERS",
        "CHANGED",
        "DURATION",
        "STORED",
        "IN FLIGHT",
        "ERROR",
    )
    table = [header]
    for r in rows:
        duration = (
            f"{(r.finished_at - r.started_at).total_seconds():.1f}s"
            if r.finished_at and r.started_at
            else "-"
        )
        table.append(
            (
                r.source,
                r.watermark.isoformat(timespec="seconds") if r.watermark else "never",
                _lag(r.lag),
                f"{r.run_id} {r.mode}" if r.run_id else "-",
                r.result or "-",
                str(r.orders) if r.orders is not None else "-",
                str(r.orders_changed) if r.orders_changed is not None else "-",
                duration,
                str(r.orders_stored),
                r.export_in_flight or "-",
                (r.error or "")[:80],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


async def serve(config: Config) -> int:
    from syncer.scheduler import run_service

    for source in config.select_sources(None):
        source.require_api_key()
    async with open_store(config) as store:
        await run_service(config, store)
    return 0


async def simulator(host: str, port: int, orders: int, api_key: str, seed: int) -> None:
    from syncer.simulator import SimulatorConfig, SimulatorState
    from syncer.simulator.app import serve_forever

    state = SimulatorState(SimulatorConfig(api_key=api_key, seed=seed))
    state.seed_orders(orders)
    await serve_forever(state, host, port)


async def demo(orders: int) -> int:
    from syncer.demo import run_demo

    return await run_demo(orders)


__all__ = ["get_logger"]
