"""The run's bookkeeping and data path in PostgreSQL: lease, watermark, runs, exports, COPY,
merge.

Every write that commits a run's progress (begin, the tracking id, the merge that moves the
watermark, the run's success) checks the run's lease as its last statement (`fence`): a run
that lost its lease commits nothing more. Only this package catches asyncpg errors; they
leave it as DatabaseError.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from syncer.errors import DatabaseError
from syncer.store import queries as q
from syncer.store.binary_copy import StagedRow, copy_data
from syncer.store.db import Database, as_database, translated
from syncer.store.lease import RUN, Lease, LeaseKeeper, fence
from syncer.store.migrate import ensure_change_clock, pending_migrations


@dataclass(frozen=True)
class InFlightExport:
    tracking_id: str
    run_id: int
    mode: str
    window_start: datetime
    window_end: datetime
    moves_watermark_to: datetime | None
    resync_id: int | None = None
    window_index: int | None = None


@dataclass(frozen=True)
class OpenResync:
    """A full resync not finished: its windows and which of them (1-based) are merged."""

    resync_id: int
    window_start: datetime
    window_end: datetime
    windows: int
    merged: frozenset[int]


@dataclass(frozen=True)
class NotBefore:
    """No OR13 for the source before `until` (database clock), for `reason`."""

    until: datetime
    reason: str
    seconds_left: float


@dataclass(frozen=True)
class MergeResult:
    orders_received: int
    orders_changed: int
    lines_written: int
    lines_removed: int = 0
    change_id: int | None = None  # None: nothing changed, no change recorded


@dataclass(frozen=True)
class SourceStatus:
    source: str
    watermark: datetime | None
    lag: timedelta | None
    run_id: int | None
    mode: str | None
    result: str | None
    orders: int | None
    orders_changed: int | None
    lines: int | None
    chunks: int | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    export_in_flight: str | None
    orders_stored: int
    patches_pending: int
    resumed_from: int | None = None
    not_before: datetime | None = None
    not_before_reason: str | None = None
    resync_id: int | None = None
    resync_windows: int | None = None
    resync_windows_merged: int | None = None
    watermark_moved_at: datetime | None = None  # when the watermark last moved forward
    last_success: datetime | None = None  # end of the last successful run (None: never)
    last_success_started: datetime | None = None
    rescan_run_id: int | None = None  # the last re-scan that ended, and what it corrected
    rescan_result: str | None = None
    rescan_corrected: int | None = None
    rescan_finished_at: datetime | None = None

    def stalled(self, now: datetime, stale_after_minutes: float) -> bool:
        return watermark_stalled(
            self.watermark_moved_at, self.last_success_started, now, stale_after_minutes
        )


def watermark_stalled(
    moved_at: datetime | None,
    last_success_started: datetime | None,
    now: datetime,
    stale_after_minutes: float,
) -> bool:
    """The watermark has not moved for longer than `stale_after_minutes` although a run that
    started after its last move succeeded: runs "work" but the mirror does not advance."""
    if moved_at is None or last_success_started is None:
        return False
    return last_success_started > moved_at and now - moved_at > timedelta(
        minutes=stale_after_minutes
    )


@dataclass(frozen=True)
class Freshness:
    """Per source, what /metrics reports about staleness (database clock for `stalled`)."""

    watermarks: dict[str, datetime | None]
    last_success: dict[str, datetime | None]
    stalled: dict[str, bool]
    # How long the oldest committed change has waited above change_high_water(): feed
    # consumers cannot read it yet (a long writing transaction in the cluster). 0: none.
    feed_waiting_seconds: float = 0.0


class ExportMerge:
    """The merge of one export, batch by batch, in one open transaction.

    Everything it writes carries one change id, its transaction's (migration 014), taken
    at the first batch; `record_change` lists the change in sync_changes if anything
    changed, so a merge that only re-delivers stored orders leaves no trace.
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        run_id: int,
        source: str,
        timeout: float | None = None,
        shop_id: int | None = None,
        staging: str | None = None,
        history: bool = True,
    ) -> None:
        """`staging`: the table the batches are in (default: the run's own). `history`:
        add a row to order_history for each order version written."""
        self._conn = conn
        self._shop_id = None if shop_id is None else str(shop_id)  # for orders without one
        self._timeout = timeout
        self._run_id = run_id
        self._source = source
        self._history = history
        self._change_id: int | None = None
        self._lines = 0
        self._removed = 0
        table = staging or q.staging_table(run_id)
        self._fill = q.FILL_INCOMING.format(staging=table)
        self._upsert = q.UPSERT_ORDERS.format(staging=table)
        self._merge_lines = q.MERGE_CHANGED_LINES.format(staging=table)
        self._count = q.on_staging(q.COUNT_EXPORT, run_id)
        self._empty = q.on_staging(q.EMPTY_STAGING, run_id)

    async def merge_batch(self, batch: int) -> None:
        """Staged batch -> orders (never older over newer, nothing for an order stored as
        it is) and the changed orders' lines (updated in place, removed ones tombstoned)."""
        conn, run_id, source, timeout = self._conn, self._run_id, self._source, self._timeout
        async with translated("merging a batch into orders and order_lines"):
            if self._change_id is None:
                self._change_id = int(await conn.fetchval(q.CURRENT_CHANGE_ID))
            await conn.execute(q.RESET_BATCH_TABLES)
            await conn.execute(self._fill, run_id, batch, source, self._shop_id, timeout=timeout)
            await conn.execute("ANALYZE incoming")
            await conn.execute(
                self._upsert,
                run_id,
                source,
                batch,
                self._shop_id,
                self._change_id,
                self._history,
                timeout=timeout,
            )
            await conn.execute("ANALYZE changed")
            written, removed = await conn.fetchrow(
                self._merge_lines, source, run_id, batch, self._change_id, timeout=timeout
            )
            self._lines += written
            self._removed += removed

    async def record_change(self, orders_changed: int) -> int | None:
        """List this merge in sync_changes if it changed anything; its change id, or None."""
        if self._change_id is None or not (orders_changed or self._lines or self._removed):
            return None
        async with translated("recording the change (sync_changes)"):
            await self._conn.execute(
                q.RECORD_CHANGE,
                self._change_id,
                self._source,
                self._run_id or None,
                orders_changed,
                self._lines,
                self._removed,
            )
        return self._change_id

    async def finish(
        self, *, tracking_id: str, chunks: int, bytes_read: int, watermark_to: datetime | None
    ) -> MergeResult:
        """Close the export, count, record the change, move the watermark, empty the run's
        staging (for its next export, if any), check the lease; the caller's block then
        commits."""
        conn, run_id, source = self._conn, self._run_id, self._source
        async with translated("committing the export (sync_exports, sync_runs, sync_state)"):
            received, changed = await conn.fetchrow(self._count, timeout=self._timeout)
            change_id = await self.record_change(changed)
            await conn.execute(self._empty)
            await conn.execute(q.CLOSE_EXPORT, tracking_id, "merged", None)
            await conn.execute(q.CLOSE_COMPLETE_RESYNC, tracking_id)
            await conn.execute(
                q.ADD_RUN_COUNTS, run_id, 1, chunks, received, changed, self._lines, bytes_read
            )
            if watermark_to is not None:
                await conn.execute(q.SET_WATERMARK, source, watermark_to)
        await fence(conn, RUN, source)
        return MergeResult(received, changed, self._lines, self._removed, change_id)


class SyncStore:
    """All of a run's reads and writes, on one pool and one schema."""

    def __init__(
        self,
        pool: asyncpg.Pool | Database,
        schema: str,
        *,
        leases: LeaseKeeper | None = None,
        control: Database | None = None,
    ) -> None:
        self._pool = as_database(pool)
        self._schema = schema
        self.leases = leases or LeaseKeeper(self._pool)
        # Readiness checks run here: a saturated work pool cannot starve them.
        self._control = control or self._pool

    @property
    def control(self) -> Database:
        """The control pool: second-long limits, for health checks and lease heartbeats."""
        return self._control

    @property
    def pool(self) -> Database:
        return self._pool

    def source_lock(self, source: str) -> AbstractAsyncContextManager[Lease]:
        """One run per source at a time, across processes and replicas; RunSkipped if taken."""
        return self.leases.hold(RUN, source)

    async def watermark(self, source: str) -> datetime | None:
        async with translated():
            value: datetime | None = await self._pool.fetchval(q.GET_WATERMARK, source)
            return value

    async def in_flight_export(self, source: str) -> InFlightExport | None:
        async with translated():
            row = await self._pool.fetchrow(q.IN_FLIGHT_EXPORT, source)
        return InFlightExport(**dict(row)) if row else None

    async def begin_run(
        self, source: str, mode: str, window_start: datetime, window_end: datetime, exports: int
    ) -> int:
        """Start the run's row and staging. Under the source's lease no other run is alive:
        staging and 'running' rows of the source are a dead (or fenced-off) run's."""
        async with (
            translated("beginning the run (sync_runs, staging)"),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            for (table,) in await conn.fetch(q.STAGING_OF_SOURCE, source):
                await conn.execute(q.DROP_STAGING.format(staging=table))
            await conn.execute(q.CLEAR_SHARED_STAGING_OF_SOURCE, source)
            await conn.execute(q.CLOSE_DEAD_RUNS, source)
            run_id: int = await conn.fetchval(
                q.BEGIN_RUN, source, mode, window_start, window_end, exports
            )
            await conn.execute(q.on_staging(q.CREATE_STAGING, run_id))
            await fence(conn, RUN, source)
            return run_id

    async def create_staging(self, run_id: int) -> None:
        """The staging table of a run that begin_run did not start (the benchmark's)."""
        async with translated():
            await self._pool.execute(q.on_staging(q.CREATE_STAGING, run_id))

    async def record_export(
        self,
        *,
        tracking_id: str,
        source: str,
        run_id: int,
        mode: str,
        window_start: datetime,
        window_end: datetime,
        moves_watermark_to: datetime | None,
        resync_id: int | None = None,
        window_index: int | None = None,
    ) -> None:
        """Store a tracking id the moment OR13 returns it, before any polling."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                q.RECORD_EXPORT,
                tracking_id,
                source,
                run_id,
                mode,
                window_start,
                window_end,
                moves_watermark_to,
                resync_id,
                window_index,
            )
            await conn.execute(q.RUN_TRACKING, run_id, tracking_id)
            await fence(conn, RUN, source)

    async def not_before(self, source: str) -> NotBefore | None:
        """The source's pause, if it is not over (database clock)."""
        async with translated("reading source_pacing"):
            row = await self._pool.fetchrow(q.GET_NOT_BEFORE, source)
        if row is None:
            return None
        left = (row["not_before"] - row["db_now"]).total_seconds()
        return NotBefore(row["not_before"], row["reason"], left)

    async def set_not_before(self, source: str, seconds: float, reason: str) -> datetime:
        """No OR13 for the source for `seconds` from now (database clock); returns until when."""
        async with translated("writing source_pacing"):
            until: datetime = await self._pool.fetchval(q.SET_NOT_BEFORE, source, seconds, reason)
            return until

    async def seconds_since_export(self, source: str, mode: str) -> float | None:
        """Seconds since the source's last OR13 of this mode that Mirakl accepted (None: never)."""
        async with translated("reading sync_exports"):
            value: float | None = await self._pool.fetchval(q.SECONDS_SINCE_EXPORT, source, mode)
            return value

    async def open_resync(self, source: str) -> OpenResync | None:
        async with translated("reading sync_resyncs"):
            row = await self._pool.fetchrow(q.OPEN_RESYNC, source)
            if row is None:
                return None
            merged = await self._pool.fetch(q.MERGED_WINDOWS, row["resync_id"])
        return OpenResync(**dict(row), merged=frozenset(r["window_index"] for r in merged))

    async def begin_resync(
        self, source: str, window_start: datetime, window_end: datetime, windows: int
    ) -> int:
        """Record a new full resync; one still open for the source is abandoned."""
        async with (
            translated("recording the resync"),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(q.ABANDON_RESYNCS, source)
            resync_id: int = await conn.fetchval(
                q.BEGIN_RESYNC, source, window_start, window_end, windows
            )
            await fence(conn, RUN, source)
            return resync_id

    async def finish_resync(self, resync_id: int) -> None:
        async with translated("closing the resync"):
            await self._pool.execute(q.FINISH_RESYNC, resync_id)

    async def note_resync(self, run_id: int, resync_id: int, resumed_from: int | None) -> None:
        """The run's row says which resync it works on, and from which window it went on."""
        async with translated():
            await self._pool.execute(q.RUN_RESYNC, run_id, resync_id, resumed_from)

    async def adopt_export(self, tracking_id: str, run_id: int) -> None:
        """Make a run the owner of an export a previous run left in flight."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            source = await conn.fetchval(q.ADOPT_EXPORT, tracking_id, run_id)
            await conn.execute(q.RUN_TRACKING, run_id, tracking_id)
            if source is not None:
                await fence(conn, RUN, source)

    async def close_export(self, tracking_id: str, status: str, error: str | None) -> None:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            source = await conn.fetchval(q.CLOSE_EXPORT, tracking_id, status, error)
            if source is not None:
                await fence(conn, RUN, source)

    async def clear_staging(self, run_id: int) -> None:
        """Empty the run's staging (an export that is requested again starts from nothing)."""
        async with translated():
            await self._pool.execute(q.on_staging(q.EMPTY_STAGING, run_id))

    async def stage_rows(
        self, run_id: int, rows: AsyncIterable[StagedRow] | Sequence[StagedRow]
    ) -> None:
        """COPY rows into the run's staging. If `rows` raises, nothing of it stays staged."""
        async with translated("staging a batch (COPY)"), self._pool.acquire() as conn:
            await conn.copy_to_table(
                q.staging_table(run_id),
                source=copy_data(rows),
                columns=q.STAGED_COLUMNS,
                schema_name=self._schema,
                format="binary",
                timeout=self._pool.long_timeout_seconds,
            )

    @asynccontextmanager
    async def export_merge(
        self, run_id: int, source: str, shop_id: int | None = None, history: bool = True
    ) -> AsyncIterator[ExportMerge]:
        """A transaction on its own connection that merges the export's batches as they come.

        Nothing is visible to readers until `ExportMerge.finish` commits; leaving the
        block any other way rolls everything back. `shop_id`: the source's configured one,
        stored for orders that carry none (a seller's view). `history`: keep a row per
        order version in order_history.
        """
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(q.CREATE_MERGE_TABLES)
            yield ExportMerge(
                conn, run_id, source, self._pool.long_timeout_seconds, shop_id, history=history
            )

    async def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        """Close the run's row. Success commits only under the lease; a failure is written
        in any case (on the run's own row, if no later run has closed it already)."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            source = await conn.fetchval(q.FINISH_RUN, run_id, status, error)
            if status == "succeeded" and source is not None:
                await fence(conn, RUN, source)

    async def drop_staging(self, run_id: int) -> None:
        """Drop the run's staging table once the run is over. Waits at most a few seconds
        for a lock (a connection cut in the middle of a COPY may still hold one): the
        source's next run drops what is left."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(q.DROP_STAGING_QUICKLY)
            await conn.execute(q.on_staging(q.DROP_STAGING, run_id))

    async def freshness(self, sources: Sequence[str], stale_after_minutes: float) -> Freshness:
        """Per source: the watermark, when the last successful run ended, and whether the
        watermark is stalled; and how long committed changes wait for the feed's high water
        (on the control pool, for /metrics: a work pool busy with runs
        cannot hold a scrape up)."""
        async with translated("reading the watermarks"):
            rows = await self._control.fetch(q.FRESHNESS, list(sources))
            waiting = await self._control.fetchval(q.FEED_WAITING)
        return Freshness(
            {r["source"]: r["watermark"] for r in rows},
            {r["source"]: r["last_success"] for r in rows},
            {
                r["source"]: watermark_stalled(
                    r["moved_at"], r["last_success_started"], r["db_now"], stale_after_minutes
                )
                for r in rows
            },
            float(waiting or 0.0),
        )

    async def ensure_change_clock(self) -> int:
        """`migrate.ensure_change_clock` on the work pool."""
        async with translated("checking the change clock"), self._pool.acquire() as conn:
            return await ensure_change_clock(conn)

    async def ping(self) -> int:
        """Round trip to the database; the number of pending migrations."""
        async with translated(), self._pool.acquire() as conn:
            return await pending_migrations(conn, self._schema)

    async def ready(self) -> int:
        """`ping` on the control pool (second-long limits), for /readyz."""
        async with translated("checking readiness"), self._control.acquire() as conn:
            return await pending_migrations(conn, self._schema)

    async def runs(self, source: str | None, limit: int) -> list[dict[str, Any]]:
        """The most recent runs, newest first."""
        async with translated():
            return [dict(row) for row in await self._pool.fetch(q.RUNS, source, limit)]

    async def status(self, sources: Sequence[str]) -> list[SourceStatus]:
        async with translated("reading the status (sync_state, sync_runs, orders, order_patches)"):
            rows = await self._pool.fetch(q.STATUS, list(sources))
        return [SourceStatus(**_status_fields(row)) for row in rows]


def _status_fields(row: Any) -> dict[str, Any]:
    fields = dict(row)
    fields["result"] = fields.pop("status")
    return fields


__all__ = [
    "DatabaseError",
    "Freshness",
    "InFlightExport",
    "MergeResult",
    "NotBefore",
    "OpenResync",
    "SourceStatus",
    "SyncStore",
]
