"""What each CLI command does, on top of config, store, pipeline and the Mirakl client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from syncer.config import Config, SourceConfig, pool_size_needed
from syncer.dates import utc_now
from syncer.errors import ConfigError, MigrationError, RunSkipped, SyncerError
from syncer.log import get_logger
from syncer.metrics import METRICS
from syncer.mirakl import open_client
from syncer.pipeline.push import PushRun, PushSummary
from syncer.pipeline.run import RunSummary, SyncRun
from syncer.progress import TerminalProgress
from syncer.redact import redact_dsn, scrub
from syncer.report import format_table, human_duration, moment, to_json
from syncer.store.audit_store import AuditStore
from syncer.store.db import CONTROL, CONTROL_POOL_SIZE, MIGRATE, Database, open_pool
from syncer.store.lease import LeaseKeeper
from syncer.store.migrate import ensure_change_clock
from syncer.store.migrate import migrate as apply_migrations
from syncer.store.outbox_store import OutboxStore
from syncer.store.sync_store import SourceStatus, SyncStore

CLOCK_MOVED = "the database's transaction ids restarted lower, as after a restore"


@asynccontextmanager
async def open_store(config: Config, *, require_migrated: bool = True) -> AsyncIterator[SyncStore]:
    """A SyncStore on the configured database; refuses a schema that is not migrated.

    Two pools: the work pool, sized for the service's limits, and a small control pool for
    the lease heartbeat and readiness, which a saturated work pool cannot starve."""
    size = config.database.pool_size or pool_size_needed(config.service)
    async with (
        open_pool(config.database, size=size) as pool,
        open_pool(config.database, size=CONTROL_POOL_SIZE, role=CONTROL) as control,
    ):
        leases = LeaseKeeper(control, config.database.lease_ttl_seconds)
        store = SyncStore(pool, config.database.schema, leases=leases, control=control)
        if require_migrated and (pending := await store.ping()):
            raise MigrationError(
                f"schema {config.database.schema} has {pending} pending migration(s): "
                "run `syncer migrate` first"
            )
        if require_migrated and (moved := await store.ensure_change_clock()):
            get_logger().warning("change_clock_moved", by=moved, reason=CLOCK_MOVED)
        yield store


async def migrate(config: Config) -> int:
    async with (
        open_pool(config.database, size=1, role=MIGRATE) as pool,
        pool.acquire() as conn,
    ):
        applied = await apply_migrations(conn, config.database.schema)
        moved = await ensure_change_clock(conn)
    if moved:
        print(
            f"schema {config.database.schema}: change ids moved forward by {moved} ({CLOCK_MOVED})"
        )
    if applied:
        print(f"schema {config.database.schema}: applied {', '.join(applied)}")
    else:
        print(f"schema {config.database.schema}: up to date")
    return 0


async def run_source(
    config: Config,
    store: SyncStore,
    source: SourceConfig,
    mode: str,
    since: datetime | None = None,
    *,
    restart: bool = False,
) -> RunSummary:
    """One run of one source with its own HTTP session. Every attempt is counted in the
    metrics, also one that failed before it had a run row (the database unreachable)."""
    finished: list[RunSummary] = []

    def record(summary: RunSummary) -> None:
        finished.append(summary)
        METRICS.record_run(summary)

    try:
        async with open_client(source, config.http) as client:
            with TerminalProgress(f"{source.name} {mode}") as progress:
                runner = SyncRun(
                    source,
                    config.export,
                    config.http,
                    client,
                    store,
                    on_finished=record,
                    on_progress=progress,
                )
                return await runner.run(mode, since, restart=restart)
    except RunSkipped:
        if not finished:  # a run deferred after it began is counted as such already
            METRICS.record_skip(source.name, mode)
        raise
    except Exception:
        if not finished:
            METRICS.record_failed_attempt(source.name, mode)
        raise


async def _for_each_source(
    config: Config,
    name: str | None,
    what: str,
    work: Callable[[SyncStore, SourceConfig], Awaitable[str | tuple[str, int]]],
) -> int:
    """Do `work` for the selected sources, one after the other, printing one line each
    (`work` gives the line, or the line and an exit code for an outcome that is a finding).

    Every source is tried; the exit code is the worst outcome (1 failed, 2 config, 3 skipped).
    """
    sources = config.select_sources(name)
    for source in sources:
        source.require_api_key()
    outcomes: list[int] = []
    async with open_store(config) as store:
        for source in sources:
            try:
                done = await work(store, source)
                line, code = done if isinstance(done, tuple) else (done, 0)
                print(line)
                outcomes.append(code)
            except RunSkipped as exc:
                print(f"{source.name}: {what + ' ' if what else ''}skipped: {exc}")
                outcomes.append(exc.exit_code)
            except SyncerError as exc:
                print(
                    f"{source.name}: {what} failed: {scrub(str(exc))}"
                    if what
                    else f"{source.name}: failed: {scrub(str(exc))}"
                )
                outcomes.append(exc.exit_code)
    return max(outcomes, key=lambda code: (code == 1, code == 2, code)) if outcomes else 0


def describe_summary(s: RunSummary) -> str:
    watermark = s.watermark.isoformat(timespec="seconds") if s.watermark else "-"
    return (
        f"{s.source}: {s.mode} run {s.run_id} {s.status}: {s.orders} orders "
        f"({s.orders_changed} changed), {s.lines} lines, {s.chunks} chunk(s) from "
        f"{s.exports} export(s), {s.bytes / 1e6:.1f} MB in {s.duration_s:.1f}s; watermark {watermark}"
        + (f"; resync resumed from window {s.resumed_from}" if s.resumed_from else "")
    )


async def sync(config: Config, name: str | None) -> int:
    return await _sync_each(config, name, "differential", None)


async def resync(
    config: Config, name: str | None, since: datetime | None, restart: bool = False
) -> int:
    return await _sync_each(config, name, "full", since, restart)


async def rescan(config: Config, name: str | None) -> int:
    """A re-scan per source now: what it corrected is in the summary line."""
    return await _sync_each(config, name, "rescan", None)


async def _sync_each(
    config: Config, name: str | None, mode: str, since: datetime | None, restart: bool = False
) -> int:
    async def one(store: SyncStore, source: SourceConfig) -> str:
        summary = await run_source(config, store, source, mode, since, restart=restart)
        return describe_summary(summary)

    return await _for_each_source(config, name, "", one)


async def audit(config: Config, name: str | None) -> int:
    """A count audit per source now, one line each: exit 0 when every day matches, 1 when
    a day differs (a finding, not a crash: the line names the days), 3 deferred (OR11's
    429, or no watermark yet), else the error's code; the worst outcome wins."""
    from syncer.pipeline.audit import audit_source

    async def one(store: SyncStore, source: SourceConfig) -> tuple[str, int]:
        summary = await audit_source(config, store, source)
        return summary.describe(), {"ok": 0, "mismatch": 1}.get(summary.status, 3)

    return await _for_each_source(config, name, "audit", one)


async def push_source(
    config: Config,
    pool: asyncpg.Pool | Database,
    source: SourceConfig,
    leases: LeaseKeeper | None = None,
) -> PushSummary:
    """Send the source's pending order patches (OR04) with its own HTTP session."""
    async with open_client(source, config.http) as client:
        outbox = OutboxStore(pool, leases)
        summary = await PushRun(source, config.push, client, outbox).run()
    METRICS.record_push(summary)
    return summary


async def push(config: Config, name: str | None) -> int:
    async def one(store: SyncStore, source: SourceConfig) -> str:
        return (await push_source(config, store.pool, source, store.leases)).describe()

    return await _for_each_source(config, name, "push", one)


def status_record(
    row: SourceStatus, source: SourceConfig, now: datetime, stale_after_minutes: float = 60.0
) -> dict[str, Any]:
    """One source's status as data (for --json and the table). `last_run` is the last attempt
    that has a run row, whatever its result; `last_success` is the last one that succeeded
    (None and `never_succeeded`: none ever did)."""
    duration = (row.finished_at - row.started_at) if row.finished_at and row.started_at else None
    next_run = None
    if row.started_at is not None:
        next_run = max(now, row.started_at + timedelta(minutes=source.interval_minutes))
    return {
        "source": row.source,
        "watermark": row.watermark,
        "lag_seconds": row.lag.total_seconds() if row.lag is not None else None,
        "last_run": None
        if row.run_id is None
        else {
            "run_id": row.run_id,
            "mode": row.mode,
            "result": row.result,
            "orders": row.orders,
            "orders_changed": row.orders_changed,
            "lines": row.lines,
            "chunks": row.chunks,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
            "duration_seconds": duration.total_seconds() if duration else None,
            "error": row.error,
            "resumed_from": row.resumed_from,
        },
        "last_success": row.last_success,
        "never_succeeded": row.last_success is None,
        "watermark_moved_at": row.watermark_moved_at,
        "stalled": row.stalled(now, stale_after_minutes),
        "last_rescan": None
        if row.rescan_run_id is None
        else {
            "run_id": row.rescan_run_id,
            "result": row.rescan_result,
            "corrected": row.rescan_corrected,
            "finished_at": row.rescan_finished_at,
        },
        "export_in_flight": row.export_in_flight,
        "next_run_estimate": next_run,
        "orders_stored": row.orders_stored,
        "patches_pending": row.patches_pending,
        "not_before": None
        if row.not_before is None
        else {"until": row.not_before, "reason": row.not_before_reason},
        "resync": None
        if row.resync_id is None
        else {
            "resync_id": row.resync_id,
            "windows": row.resync_windows,
            "windows_merged": row.resync_windows_merged,
        },
    }


def format_status(records: list[dict[str, Any]]) -> str:
    """An aligned table, one row per source."""
    header = ("SOURCE", "WATERMARK", "LAG", "LAST RUN", "RESULT", "ORDERS", "DURATION",
              "STALLED", "LAST SUCCESS", "LAST RESCAN", "AUDIT", "STORED", "IN FLIGHT",
              "NEXT RUN (EST.)", "NOT BEFORE", "RESYNC", "PATCHES", "ERROR")  # fmt: skip
    rows = []
    for r in records:
        run = r["last_run"] or {}
        rows.append(
            (
                r["source"],
                moment(r["watermark"]) if r["watermark"] else "never",
                human_duration(r["lag_seconds"]),
                f"{run['run_id']} {run['mode']}" if run else "-",
                run.get("result") or "-",
                f"{run['orders']} ({run['orders_changed']} changed)" if run else "-",
                human_duration(run.get("duration_seconds")),
                "STALLED" if r["stalled"] else "-",
                moment(r["last_success"]) if r["last_success"] else "never",
                _rescan_cell(r["last_rescan"]),
                _audit_cell(r.get("last_audit")),
                str(r["orders_stored"]),
                r["export_in_flight"] or "-",
                moment(r["next_run_estimate"]),
                moment(r["not_before"]["until"]) if r["not_before"] else "-",
                f"{r['resync']['windows_merged']}/{r['resync']['windows']} merged"
                if r["resync"]
                else "-",
                str(r["patches_pending"]),
                (run.get("error") or "")[:80],
            )
        )
    return format_table(header, rows)


def _rescan_cell(rescan: dict[str, Any] | None) -> str:
    if rescan is None:
        return "-"
    if rescan["result"] != "succeeded":
        return f"{moment(rescan['finished_at'])} {rescan['result']}"
    return f"{moment(rescan['finished_at'])} corrected {rescan['corrected']}"


def _audit_cell(audit: dict[str, Any] | None) -> str:
    if audit is None:
        return "-"
    if audit["status"] == "mismatch":
        return f"MISMATCH {audit['mismatched_days']} day(s)"
    return f"{audit['status']} {moment(audit['finished_at'])}"


async def status(config: Config, as_json: bool = False) -> int:
    names = [s.name for s in config.sources]
    async with open_store(config) as store:
        rows = await store.status(names)
        audits = await AuditStore(store.pool).last_audits(names)
    now = utc_now()
    records = [
        status_record(row, source, now, config.service.stale_after_minutes)
        for row, source in zip(rows, config.sources, strict=True)
    ]
    for record in records:
        found = audits.get(record["source"])
        record["last_audit"] = None if found is None else asdict(found)
    print(to_json(records) if as_json else format_status(records))
    return 0


async def runs(config: Config, name: str | None, limit: int, as_json: bool = False) -> int:
    if name is not None:
        config.select_sources(name)
    if limit < 1:
        raise ConfigError(f"--limit: must be at least 1, got {limit}")
    async with open_store(config) as store:
        records = await store.runs(name, limit)
    if as_json:
        print(to_json(records))
        return 0
    header = ("RUN", "SOURCE", "MODE", "RESULT", "STARTED", "DURATION", "EXPORTS", "CHUNKS",
              "ORDERS", "CHANGED", "LINES", "MB", "ERROR")  # fmt: skip
    rows = [
        (
            str(r["run_id"]),
            r["source"],
            r["mode"],
            r["status"],
            moment(r["started_at"]),
            human_duration(r["duration"]),
            f"{r['exports_done']}/{r['exports_total']}",
            str(r["chunks"]),
            str(r["orders"]),
            str(r["orders_changed"]),
            str(r["lines"]),
            f"{r['bytes'] / 1e6:.1f}",
            (r["error"] or "")[:60],
        )
        for r in records
    ]
    print(format_table(header, rows))
    return 0


async def check_config(config: Config) -> int:
    """Print the config as resolved (defaults filled in, secrets masked); errors exit 2."""
    for source in config.sources:
        source.require_api_key()
    print(f"config {config.path}: OK")
    print(to_json(config_view(config)))
    return 0


def config_view(config: Config) -> dict[str, Any]:
    """The resolved configuration as data, with every secret masked."""
    database = asdict(config.database)
    if config.database.dsn:
        database["dsn"] = redact_dsn(config.database.dsn)
    database["data_dir"] = str(config.database.data_dir)
    sources = []
    for source in config.sources:
        view = asdict(source)
        view["api_key"] = "***" if source.api_key is not None else None
        sources.append(view)
    return {
        "database": database,
        "export": asdict(config.export),
        "http": asdict(config.http),
        "push": asdict(config.push),
        "fast_lane": asdict(config.fast_lane),
        "audit": asdict(config.audit),
        "service": asdict(config.service),
        "sources": sources,
    }


async def serve(config: Config) -> int:
    from syncer.scheduler import run_service

    for source in config.select_sources(None):
        source.require_api_key()
    async with open_store(config) as store:
        await run_service(config, store)
    return 0


async def simulator(
    host: str, port: int, orders: int, api_key: str, seed: int, days: float, pending_polls: int
) -> None:
    from syncer.simulator import SimulatorConfig, SimulatorState
    from syncer.simulator.app import serve_forever

    state = SimulatorState(SimulatorConfig(api_key=api_key, seed=seed, pending_polls=pending_polls))
    state.seed_orders(orders, days=days)
    await serve_forever(state, host, port)


async def demo(orders: int) -> int:
    from syncer.demo import run_demo

    return await run_demo(orders)


__all__ = ["get_logger"]
