"""One run of one source: plan the exports, request/resume, poll, stream chunks, merge.

The watermark moves only inside the merge transaction of the export that
completes the window, so a crash at any point leaves it where it was. A
tracking id is stored before polling; a later run adopts an export left in
flight instead of asking Mirakl for another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from syncer.cancel import cancel_for, cancel_reason, reason_instead
from syncer.config import ExportConfig, HttpConfig, SourceConfig
from syncer.dates import utc_now
from syncer.errors import (
    ChunkGone,
    ChunkInvalid,
    ConfigError,
    ExportBusy,
    ExportFailed,
    ExportNotFound,
    ExportTimeout,
    RateLimited,
    RunDeferred,
    RunTimeout,
    StreamBroken,
)
from syncer.log import get_logger, log_context
from syncer.pipeline.chunks import ChunkFormatError, OrderSplitter, ParsedOrder, parse_order
from syncer.pipeline.window import Window, differential_window, full_windows, settled_watermark
from syncer.redact import redact_url, scrub

TERMINAL_FAILURES = ("FAILED", "CANCELED")
# Staged batches waiting for the merger at most. The merger is the slowest stage, so the
# queue is always full; each waiting batch is one more batch merged after the download
# ends, on one core (0.3 s per 5,000 orders): a queue of 2 made that tail 0.4-0.7 s at
# 100k orders, a queue of 1 makes it 0.3 s (docs/benchmarks.md).
MERGE_QUEUE = 1
# (run_id, batch, position, order_id, last_updated_date, the order's bytes as received)
StagedRow = tuple[int, int, int, str, datetime, bytes]


class StatusLike(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def urls(self) -> tuple[str, ...]: ...


class ExportApi(Protocol):
    async def start_export(
        self,
        start_update: datetime,
        end_update: datetime,
        *,
        items_per_chunk: int | None = ...,
        megabytes_per_chunk: int | None = ...,
    ) -> str: ...
    async def export_status(self, tracking_id: str) -> StatusLike: ...
    def open_chunk(self, url: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...


class InFlightLike(Protocol):
    @property
    def tracking_id(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def window_start(self) -> datetime: ...
    @property
    def window_end(self) -> datetime: ...
    @property
    def moves_watermark_to(self) -> datetime | None: ...
    @property
    def resync_id(self) -> int | None: ...
    @property
    def window_index(self) -> int | None: ...


class ResyncLike(Protocol):
    @property
    def resync_id(self) -> int: ...
    @property
    def window_start(self) -> datetime: ...
    @property
    def window_end(self) -> datetime: ...
    @property
    def merged(self) -> frozenset[int]: ...


class NotBeforeLike(Protocol):
    @property
    def until(self) -> datetime: ...
    @property
    def reason(self) -> str: ...


class MergeLike(Protocol):
    @property
    def orders_received(self) -> int: ...
    @property
    def orders_changed(self) -> int: ...
    @property
    def lines_written(self) -> int: ...


class BatchMerge(Protocol):
    async def merge_batch(self, batch: int) -> None: ...
    async def finish(
        self, *, tracking_id: str, chunks: int, bytes_read: int, watermark_to: datetime | None
    ) -> MergeLike: ...


class RunStore(Protocol):
    # The source's lease: RunSkipped if another run holds it; losing it cancels the block,
    # which then raises LeaseLost. Durable writes made under it check it before committing.
    def source_lock(self, source: str) -> AbstractAsyncContextManager[object]: ...
    async def watermark(self, source: str) -> datetime | None: ...
    async def in_flight_export(self, source: str) -> InFlightLike | None: ...
    async def begin_run(
        self, source: str, mode: str, window_start: datetime, window_end: datetime, exports: int
    ) -> int: ...
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
        resync_id: int | None = ...,
        window_index: int | None = ...,
    ) -> None: ...
    async def not_before(self, source: str) -> NotBeforeLike | None: ...
    async def set_not_before(self, source: str, seconds: float, reason: str) -> datetime: ...
    async def seconds_since_export(self, source: str, mode: str) -> float | None: ...
    async def open_resync(self, source: str) -> ResyncLike | None: ...
    async def begin_resync(
        self, source: str, window_start: datetime, window_end: datetime, windows: int
    ) -> int: ...
    async def finish_resync(self, resync_id: int) -> None: ...
    async def note_resync(self, run_id: int, resync_id: int, resumed_from: int | None) -> None: ...
    async def adopt_export(self, tracking_id: str, run_id: int) -> None: ...
    async def close_export(self, tracking_id: str, status: str, error: str | None) -> None: ...
    async def clear_staging(self, run_id: int) -> None: ...
    async def stage_rows(
        self, run_id: int, rows: AsyncIterable[StagedRow] | Sequence[StagedRow]
    ) -> None: ...
    def export_merge(
        self, run_id: int, source: str, shop_id: int | None = None, history: bool = True
    ) -> AbstractAsyncContextManager[BatchMerge]: ...
    async def finish_run(self, run_id: int, status: str, error: str | None = None) -> None: ...
    async def drop_staging(self, run_id: int) -> None: ...


@dataclass
class ExportJob:
    """One export to load: a window, and where the watermark goes once it is merged."""

    window: Window
    mode: str
    moves_watermark_to: datetime | None
    tracking_id: str | None = None  # set when adopting an export left in flight
    resync_id: int | None = None  # the full resync this window belongs to
    window_index: int | None = None  # 1-based, in that resync
    windows: int = 1  # how many windows that resync has


@dataclass
class _Plan:
    jobs: list[ExportJob]
    mode: str
    resync_id: int | None = None
    resumed_from: int | None = None  # the resync goes on from this window (1-based)


def _adopted(in_flight: InFlightLike) -> ExportJob:
    return ExportJob(
        Window(in_flight.window_start, in_flight.window_end),
        in_flight.mode,
        in_flight.moves_watermark_to,
        in_flight.tracking_id,
    )


@dataclass
class RunSummary:
    run_id: int
    source: str
    mode: str
    window: Window
    exports: int = 0
    chunks: int = 0
    orders: int = 0
    orders_changed: int = 0
    lines: int = 0
    bytes: int = 0
    duration_s: float = 0.0
    status: str = "running"
    error: str | None = None
    watermark: datetime | None = None
    # Seconds per stage: export_wait (OR13 + OR14), download_and_merge (OR15, parse, COPY and
    # the batch merges overlapping them), merge (time the merger was busy), merge_tail (of
    # download_and_merge, the part after the last chunk was staged: the merger's backlog),
    # commit (counts, staging emptied, watermark, COMMIT).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    exports_total: int = 1
    resumed_from: int | None = None
    started_monotonic: float = field(default_factory=time.monotonic)

    def add_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class Progress:
    """Where a run is, for a progress display: export k of n, chunk i of m, orders so far."""

    source: str
    mode: str
    export: int
    exports: int
    chunk: int
    chunks: int
    orders: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        per_export = (self.chunk / self.chunks) if self.chunks else 1.0
        return min(1.0, ((self.export - 1) + per_export) / max(self.exports, 1))

    @property
    def eta_s(self) -> float | None:
        return self.elapsed_s * (1 - self.fraction) / self.fraction if self.fraction > 0 else None


@dataclass
class _ChunkCounter:
    bytes: int = 0
    orders: int = 0


@dataclass
class SyncRun:
    """Runs exports for one source against an API and a store."""

    source: SourceConfig
    export: ExportConfig
    http: HttpConfig
    api: ExportApi
    store: RunStore
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Told about every finished run, succeeded or not (metrics).
    on_finished: Callable[[RunSummary], None] | None = None
    # Told where the run is after each chunk (a progress line on a terminal).
    on_progress: Callable[[Progress], None] | None = None
    _batches: int = 0  # staging batches numbered across the run
    _deadline_at: float = 0.0  # loop time of the run's deadline

    async def run(
        self, mode: str, since: datetime | None = None, *, restart: bool = False
    ) -> RunSummary:
        """Take the source's lease, plan and load; the summary says what was done.

        Past `export.run_timeout_minutes` the run is cancelled and fails with RunTimeout
        (the merge in progress rolls back; the export in flight stays for the next run)."""
        task = asyncio.current_task()
        assert task is not None
        limit_minutes = self.export.run_timeout_minutes
        self._deadline_at = asyncio.get_running_loop().time() + limit_minutes * 60
        deadline = asyncio.get_running_loop().call_later(
            limit_minutes * 60,
            cancel_for,
            task,
            RunTimeout(
                f"source {self.source.name}: the run took longer than {limit_minutes:g} min "
                "(export.run_timeout_minutes); the export in flight is resumed by the next run"
            ),
        )
        try:
            async with self.store.source_lock(self.source.name):
                plan = await self._plan(mode, since, restart)
                return await self._execute(plan)
        except asyncio.CancelledError as exc:
            raise reason_instead(exc) from None
        finally:
            deadline.cancel()

    async def _plan(self, mode: str, since: datetime | None, restart: bool) -> _Plan:
        """The exports to load: the one left in flight, the rest of an unfinished resync
        (from its first window not merged), a differential window, or a new resync."""
        name = self.source.name
        paused = await self.store.not_before(name)
        if paused is not None:
            raise RunDeferred(
                f"source {name}: no export before {paused.until.isoformat(timespec='seconds')} "
                f"({paused.reason})"
            )
        in_flight = await self.store.in_flight_export(name)
        if mode == "rescan":
            return await self._rescan_plan(in_flight)
        if (
            mode == "differential"
            and in_flight is not None
            and in_flight.resync_id is None
            and in_flight.moves_watermark_to is not None
        ):
            return _Plan([_adopted(in_flight)], in_flight.mode)
        resync = await self.store.open_resync(name)
        if resync is not None and (
            restart or (mode == "full" and since not in (None, resync.window_start))
        ):
            resync = None  # begin_resync below abandons it
        if resync is not None:
            plan = await self._rest_of_resync(resync, in_flight)
            if plan is not None:
                return plan
        earlier = [] if in_flight is None else [_adopted(in_flight)]
        now = self.clock()
        watermark = await self.store.watermark(name)
        if mode == "differential" and watermark is not None:
            if not earlier:
                await self._check_differential_spacing()
            overlap = timedelta(minutes=self.source.overlap_minutes)
            window = differential_window(watermark, now, overlap)
            return _Plan([*earlier, ExportJob(window, "differential", window.end)], "differential")
        start = since or self.source.start_date
        if start is None:
            raise ConfigError(
                f"sources.{name}.start_date: needed for a full resync "
                "(or pass --since); the source has no watermark yet"
            )
        try:
            windows = full_windows(start, now)
        except ValueError as exc:
            raise ConfigError(f"--since: {exc}") from None
        resync_id = await self.store.begin_resync(name, start, now, len(windows))
        jobs = earlier
        for index, window in enumerate(windows, start=1):
            last = index == len(windows)
            jobs.append(
                ExportJob(
                    window, "full", now if last else None, None, resync_id, index, len(windows)
                )
            )
        return _Plan(jobs, "full", resync_id)

    async def _rescan_plan(self, in_flight: InFlightLike | None) -> _Plan:
        """One differential export of the last `export.rescan_days` days up to the watermark,
        merged through the same version guard, that moves no watermark: every order it
        changes is one the mirror had missed or held stale (a correction)."""
        name = self.source.name
        if in_flight is not None:
            raise RunDeferred(
                f"source {name}: export {in_flight.tracking_id} is in flight; "
                "the next sync loads it, the re-scan waits for the next time"
            )
        if await self.store.open_resync(name) is not None:
            raise RunDeferred(
                f"source {name}: a full resync is unfinished (it reloads every order); "
                "the re-scan waits for it to end"
            )
        watermark = await self.store.watermark(name)
        if watermark is None:
            raise RunDeferred(f"source {name}: never synced (no watermark): nothing to re-scan")
        await self._check_differential_spacing()
        end = min(watermark, self.clock())
        window = Window(end - timedelta(days=self.export.rescan_days), end)
        return _Plan([ExportJob(window, "rescan", None)], "rescan")

    async def _rest_of_resync(
        self, resync: ResyncLike, in_flight: InFlightLike | None
    ) -> _Plan | None:
        """The windows of an unfinished resync not merged yet; None if all are (closed now)."""
        windows = full_windows(resync.window_start, resync.window_end)
        ours = in_flight is not None and in_flight.resync_id == resync.resync_id
        jobs = [] if in_flight is None or ours else [_adopted(in_flight)]
        for index, window in enumerate(windows, start=1):
            if index in resync.merged:
                continue
            tracking_id = None
            if ours and in_flight is not None and in_flight.window_index == index:
                tracking_id = in_flight.tracking_id
            last = index == len(windows)
            moves_to = resync.window_end if last else None
            jobs.append(
                ExportJob(
                    window, "full", moves_to, tracking_id, resync.resync_id, index, len(windows)
                )
            )
        pending = [j for j in jobs if j.resync_id == resync.resync_id]
        if not pending:
            await self.store.finish_resync(resync.resync_id)
            return None
        first = pending[0].window_index
        get_logger(source=self.source.name).info(
            "resync_resumed",
            resync_id=resync.resync_id,
            from_window=first,
            windows=len(windows),
            merged=len(resync.merged),
        )
        return _Plan(jobs, "full", resync.resync_id, first)

    async def _check_differential_spacing(self) -> None:
        """RunDeferred if the source's last differential OR13 is more recent than
        export.differential_spacing_minutes (Mirakl: one every 5 min at most)."""
        spacing_s = self.export.differential_spacing_minutes * 60
        # A re-scan's OR13 is a differential export too.
        since = [
            await self.store.seconds_since_export(self.source.name, kind)
            for kind in ("differential", "rescan")
        ]
        since_s = min((s for s in since if s is not None), default=None)
        if spacing_s > 0 and since_s is not None and since_s < spacing_s:
            raise RunDeferred(
                f"source {self.source.name}: the last differential export was requested "
                f"{since_s:.0f} s ago; Mirakl allows one every "
                f"{self.export.differential_spacing_minutes:g} min "
                "(export.differential_spacing_minutes)"
            )

    async def _execute(self, plan: _Plan) -> RunSummary:
        name, jobs, mode = self.source.name, plan.jobs, plan.mode
        overall = Window(min(j.window.start for j in jobs), max(j.window.end for j in jobs))
        run_id = await self.store.begin_run(name, mode, overall.start, overall.end, len(jobs))
        if plan.resync_id is not None:
            await self.store.note_resync(run_id, plan.resync_id, plan.resumed_from)
        summary = RunSummary(
            run_id, name, mode, overall, exports_total=len(jobs), resumed_from=plan.resumed_from
        )
        with log_context(source=name, run_id=run_id):
            return await self._execute_logged(jobs, summary)

    async def _execute_logged(self, jobs: list[ExportJob], summary: RunSummary) -> RunSummary:
        name, run_id, overall = summary.source, summary.run_id, summary.window
        log = get_logger(mode=summary.mode)
        log.info("run_started", window=str(overall), exports=len(jobs))
        started = time.monotonic()
        try:
            for index, job in enumerate(jobs, start=1):
                await self._load_export(job, summary, f"{index}/{len(jobs)}")
        except RunDeferred as exc:
            summary.status, summary.error = "deferred", _one_line(exc)
            summary.duration_s = time.monotonic() - started
            await asyncio.shield(self._close_failed_run(summary))
            self._finished(summary)
            log.warning("run_deferred", reason=summary.error, exports=summary.exports)
            raise
        except BaseException as exc:
            # Cancelled for a reason (lease lost, run deadline): a failure with that reason.
            reason = cancel_reason() if isinstance(exc, asyncio.CancelledError) else None
            stopped = isinstance(exc, asyncio.CancelledError) and reason is None
            summary.status = "interrupted" if stopped else "failed"
            summary.error = "interrupted by shutdown" if stopped else _one_line(reason or exc)
            summary.duration_s = time.monotonic() - started
            await asyncio.shield(self._close_failed_run(summary))
            self._finished(summary)
            log.error(
                "run_failed" if summary.status == "failed" else "run_interrupted",
                error=summary.error,
                duration_s=round(summary.duration_s, 3),
            )
            raise
        summary.status = "succeeded"
        summary.duration_s = time.monotonic() - started
        summary.watermark = await self.store.watermark(name)
        await self.store.finish_run(run_id, "succeeded")
        await self._drop_staging(run_id)
        self._finished(summary)
        if summary.mode == "rescan" and summary.orders_changed:
            log.warning(
                "rescan_corrected",
                corrected=summary.orders_changed,
                orders=summary.orders,
                window=str(overall),
            )
        log.info(
            "run_finished",
            exports=summary.exports,
            chunks=summary.chunks,
            orders=summary.orders,
            orders_changed=summary.orders_changed,
            lines=summary.lines,
            mb=round(summary.bytes / 1e6, 2),
            duration_s=round(summary.duration_s, 3),
            watermark=summary.watermark.isoformat() if summary.watermark else None,
            **{f"{stage}_s": round(secs, 3) for stage, secs in summary.stage_seconds.items()},
        )
        return summary

    def _finished(self, summary: RunSummary) -> None:
        if self.on_finished is not None:
            self.on_finished(summary)

    async def _close_failed_run(self, summary: RunSummary) -> None:
        try:
            await self.store.finish_run(summary.run_id, summary.status, summary.error)
        except Exception as exc:  # the original error matters more
            get_logger().error("run_close_failed", error=_one_line(exc))
        if summary.status in ("failed", "deferred"):
            # Not on shutdown: the DROP may wait for the cancelled COPY's lock, and a
            # shutdown must not. The source's next run drops the table, as after a kill.
            await self._drop_staging(summary.run_id)

    async def _drop_staging(self, run_id: int) -> None:
        try:
            await self.store.drop_staging(run_id)
        except Exception as exc:  # the data is merged; the next run drops what is left
            get_logger().warning("staging_left", error=_one_line(exc))

    async def _load_export(self, job: ExportJob, summary: RunSummary, step: str) -> None:
        """Load one export; if Mirakl lost it (OR14 404, OR15 404/410), request it once more."""
        for attempt in (1, 2):
            requested = time.monotonic()
            tracking_id = await self._request_or_adopt(job, summary.run_id)
            summary.add_stage("export_wait", time.monotonic() - requested)  # OR13's share
            with log_context(tracking_id=tracking_id, export=step):
                try:
                    await self._load_and_merge(job, summary, tracking_id)
                    return
                except (ChunkGone, ExportNotFound) as exc:
                    await self.store.close_export(tracking_id, "abandoned", _one_line(exc))
                    await self.store.clear_staging(summary.run_id)
                    if attempt == 2:
                        raise
                    get_logger().warning("export_redone", reason=_one_line(exc))
                    job.tracking_id = None

    async def _load_and_merge(self, job: ExportJob, summary: RunSummary, tracking_id: str) -> None:
        """Stream the chunks into staging in batches while the previous batch merges.

        The merge runs in one transaction on its own connection: the export becomes
        visible, with the watermark moved, only when the last batch is in.
        """
        watermark_to = settled_watermark(job.moves_watermark_to) if job.moves_watermark_to else None
        try:
            stage_started = time.monotonic()
            urls = await self._wait_completed(tracking_id)
            summary.add_stage("export_wait", time.monotonic() - stage_started)
            stage_started = time.monotonic()
            async with self.store.export_merge(
                summary.run_id, self.source.name, self.source.shop_id, self.source.history
            ) as merge:
                counter = await self._stream_and_merge(urls, summary, merge)
                summary.add_stage("download_and_merge", time.monotonic() - stage_started)
                stage_started = time.monotonic()
                result = await merge.finish(
                    tracking_id=tracking_id,
                    chunks=len(urls),
                    bytes_read=counter.bytes,
                    watermark_to=watermark_to,
                )
        except ExportTimeout:
            raise  # still running on Mirakl's side: the next run resumes it
        except (ExportFailed, ChunkInvalid) as exc:
            await self.store.close_export(tracking_id, "failed", _one_line(exc))
            raise
        summary.add_stage("commit", time.monotonic() - stage_started)
        summary.exports += 1
        summary.chunks += len(urls)
        summary.orders += result.orders_received
        summary.orders_changed += result.orders_changed
        summary.lines += result.lines_written
        summary.bytes += counter.bytes
        get_logger().info(
            "export_merged",
            window=str(job.window),
            chunks=len(urls),
            orders=result.orders_received,
            orders_changed=result.orders_changed,
            lines=result.lines_written,
            watermark_to=watermark_to.isoformat() if watermark_to else None,
        )

    async def _stream_and_merge(
        self, urls: tuple[str, ...], summary: RunSummary, merge: BatchMerge
    ) -> _ChunkCounter:
        """Producer: chunks -> staged batches. Consumer: merges batches in order. Bounded."""
        batches: asyncio.Queue[int | None] = asyncio.Queue(maxsize=MERGE_QUEUE)
        merging_s = 0.0

        async def merge_batches() -> None:
            nonlocal merging_s
            while (batch := await batches.get()) is not None:
                started = time.monotonic()
                await merge.merge_batch(batch)
                merging_s += time.monotonic() - started

        merger = asyncio.create_task(merge_batches())
        counter = _ChunkCounter()
        try:
            for index, url in enumerate(urls):
                step = f"{index + 1}/{len(urls)}"
                await self._load_chunk(summary.run_id, url, counter, step, batches, merger)
                self._progress(summary, index + 1, len(urls), counter.orders)
            await _hand_over(batches, None, merger)
            staged = time.monotonic()
            await merger
            summary.add_stage("merge_tail", time.monotonic() - staged)
        finally:
            # Always collect the merger, also when it died with an error of its own while
            # the producer failed on another (e.g. the database went away under both): an
            # unretrieved task exception is printed by asyncio as a traceback at exit.
            merger.cancel()
            await asyncio.gather(merger, return_exceptions=True)
        summary.add_stage("merge", merging_s)
        return counter

    async def _request_or_adopt(self, job: ExportJob, run_id: int) -> str:
        if job.tracking_id is not None:
            await self.store.adopt_export(job.tracking_id, run_id)
            get_logger().info("export_resumed", tracking_id=job.tracking_id, window=str(job.window))
            return job.tracking_id
        tracking_id = await self._start_export(job)
        await self.store.record_export(
            tracking_id=tracking_id,
            source=self.source.name,
            run_id=run_id,
            mode=job.mode,
            window_start=job.window.start,
            window_end=job.window.end,
            moves_watermark_to=job.moves_watermark_to,
            resync_id=job.resync_id,
            window_index=job.window_index,
        )
        get_logger().info(
            "export_requested",
            tracking_id=tracking_id,
            window=str(job.window),
            resync_window=None if job.window_index is None else f"{job.window_index}/{job.windows}",
        )
        return tracking_id

    def _progress(self, summary: RunSummary, chunk: int, chunks: int, orders: int) -> None:
        if self.on_progress is None:
            return
        self.on_progress(
            Progress(
                summary.source,
                summary.mode,
                summary.exports + 1,
                summary.exports_total,
                chunk,
                chunks,
                summary.orders + orders,
                time.monotonic() - summary.started_monotonic,
            )
        )

    async def _start_export(self, job: ExportJob) -> str:
        """OR13; while Mirakl says another export runs (one we did not record), wait for it.

        A resync's windows are spaced by export.full_export_spacing_minutes; a wait too long
        for this run, or a 429 asking for one, is recorded (source_pacing) and the run stops
        as deferred: the next run goes on from this window."""
        if job.mode == "full":
            await self._wait_full_spacing(job)
        window = job.window
        deadline = time.monotonic() + self.export.poll_timeout_minutes * 60
        while True:
            try:
                return await self.api.start_export(
                    window.start,
                    window.end,
                    items_per_chunk=self.export.items_per_chunk,
                    megabytes_per_chunk=self.export.megabytes_per_chunk,
                )
            except RateLimited as exc:
                await self._defer(exc.retry_after_seconds, _one_line(exc))
            except ExportBusy as exc:
                if time.monotonic() >= deadline:
                    raise
                get_logger().warning("export_busy_waiting", reason=_one_line(exc))
                await self.sleep(self.export.poll_interval_seconds)

    async def _wait_full_spacing(self, job: ExportJob) -> None:
        spacing_s = self.export.full_export_spacing_minutes * 60
        if spacing_s <= 0:
            return
        since_s = await self.store.seconds_since_export(self.source.name, "full")
        wait_s = 0.0 if since_s is None else spacing_s - since_s
        if wait_s <= 0:
            return
        left_s = self._deadline_at - asyncio.get_running_loop().time()
        step = "" if job.window_index is None else f" {job.window_index}/{job.windows}"
        if wait_s > left_s / 2:
            await self._defer(
                wait_s,
                f"full export window{step} waits {wait_s:.0f} s for "
                f"export.full_export_spacing_minutes ({self.export.full_export_spacing_minutes:g})",
            )
        get_logger().info("export_spacing_wait", wait_s=round(wait_s, 3), window=step.strip())
        await self.sleep(wait_s)

    async def _defer(self, seconds: float, reason: str) -> None:
        """Record that the source makes no OR13 for `seconds`, and stop the run (deferred)."""
        until = await self.store.set_not_before(self.source.name, seconds, reason)
        raise RunDeferred(
            f"source {self.source.name}: no export before {until.isoformat(timespec='seconds')} "
            f"({reason}); the next run goes on from there"
        )

    async def _wait_completed(self, tracking_id: str) -> tuple[str, ...]:
        """Poll OR14 until COMPLETED; ExportFailed on FAILED/CANCELED or past the deadline."""
        deadline = time.monotonic() + self.export.poll_timeout_minutes * 60
        started = time.monotonic()
        polls = 0
        warned: set[str] = set()
        while True:
            status = await self.api.export_status(tracking_id)
            polls += 1
            if status.status == "COMPLETED":
                get_logger().info(
                    "export_completed",
                    chunks=len(status.urls),
                    polls=polls,
                    wait_s=round(time.monotonic() - started, 3),
                )
                return status.urls
            if status.status in TERMINAL_FAILURES:
                raise ExportFailed(
                    f"export {tracking_id} ended {status.status} on Mirakl's side",
                    tracking_id=tracking_id,
                )
            if status.status != "PENDING" and status.status not in warned:
                warned.add(status.status)
                get_logger().warning("export_status_unknown", status=status.status)
            if time.monotonic() >= deadline:
                raise ExportTimeout(
                    f"export {tracking_id} still {status.status} after "
                    f"{self.export.poll_timeout_minutes:g} min (export.poll_timeout_minutes); "
                    "the next run resumes it",
                    tracking_id=tracking_id,
                )
            await self.sleep(self.export.poll_interval_seconds)

    async def _load_chunk(
        self,
        run_id: int,
        url: str,
        counter: _ChunkCounter,
        step: str,
        batches: asyncio.Queue[int | None],
        merger: asyncio.Task[None],
    ) -> None:
        """Stream one chunk into staging, one COPY per batch of orders, each batch handed to
        the merger. A broken download is fetched again from the start: its batches already
        merged are merged again, which changes nothing."""
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            chunk = _ChunkCounter()
            try:
                async with self.api.open_chunk(url) as stream:
                    orders = _parsed_orders(
                        stream, url, chunk, self.export.max_order_megabytes * 1024 * 1024
                    )
                    while True:
                        self._batches += 1
                        batch = _Batch(orders, run_id, self._batches, self.export.batch_orders)
                        await self.store.stage_rows(run_id, batch)
                        if batch.count:
                            await _hand_over(batches, self._batches, merger)
                        if batch.exhausted:
                            break
            except StreamBroken as exc:
                if attempt >= self.http.max_attempts:
                    raise
                delay = min(
                    self.http.backoff_max_seconds,
                    self.http.backoff_base_seconds * 2 ** (attempt - 1),
                )
                get_logger().warning(
                    "chunk_retry", chunk=step, error=str(exc), attempt=attempt, delay_s=delay
                )
                await self.sleep(delay)
                continue
            counter.bytes += chunk.bytes
            counter.orders += chunk.orders
            elapsed = time.monotonic() - started
            get_logger().info(
                "chunk_loaded",
                chunk=step,
                orders=chunk.orders,
                mb=round(chunk.bytes / 1e6, 2),
                orders_per_s=round(chunk.orders / elapsed) if elapsed > 0 else None,
            )
            return


async def _hand_over(
    batches: asyncio.Queue[int | None], batch: int | None, merger: asyncio.Task[None]
) -> None:
    """Queue a batch for the merger, waiting for room; if the merger died, raise its error."""
    put = asyncio.ensure_future(batches.put(batch))
    try:
        await asyncio.wait({put, merger}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not put.done():  # the merger ended first, or this task is being cancelled
            put.cancel()
            await asyncio.gather(put, return_exceptions=True)
    if put.cancelled():
        merger.result()  # raises what stopped the merger
        raise RuntimeError("the merger stopped early")


class _Batch:
    """Up to `size` staged rows taken from a chunk's order stream (one COPY)."""

    def __init__(
        self, orders: AsyncIterator[tuple[int, ParsedOrder]], run_id: int, batch: int, size: int
    ) -> None:
        self._orders = orders
        self._run_id = run_id
        self._batch = batch
        self._size = size
        self.count = 0
        self.exhausted = False

    def __aiter__(self) -> _Batch:
        return self

    async def __anext__(self) -> StagedRow:
        if self.count >= self._size:
            raise StopAsyncIteration
        try:
            position, order = await anext(self._orders)
        except StopAsyncIteration:
            self.exhausted = True
            raise
        self.count += 1
        return (
            self._run_id,
            self._batch,
            position,
            order.order_id,
            order.last_updated_date,
            order.raw,
        )


async def _parsed_orders(
    stream: AsyncIterator[bytes], url: str, counter: _ChunkCounter, max_order_bytes: int
) -> AsyncIterator[tuple[int, ParsedOrder]]:
    """(position in chunk, order) for each order of a chunk file, parsed as it streams."""
    splitter = OrderSplitter(max_order_bytes)
    position = 0
    try:
        async for block in stream:
            counter.bytes += len(block)
            for data, parsed in zip(splitter.feed(block), splitter.parsed, strict=True):
                yield position, parse_order(data, position, parsed)
                position += 1
        splitter.close()
    except ChunkFormatError as exc:
        if exc.truncated:  # most likely the network: download it again
            raise StreamBroken(
                f"OR15 {redact_url(url)}: at order #{exc.position or 0}: {exc}"
            ) from None
        raise ChunkInvalid(str(exc), chunk=redact_url(url), position=exc.position) from None
    counter.orders = position


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return scrub(text.splitlines()[0][:1000])
