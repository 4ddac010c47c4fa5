"""Prometheus metrics: what runs did (recorded as they finish) and the state in PostgreSQL
(watermark lag, last success, outbox backlog: refreshed at each scrape, so every replica
reports the same truth).

While PostgreSQL cannot be read, a scrape still tells the truth: `syncer_state_fresh` is 0,
and the lag goes on growing from the last watermark read (it is computed at each scrape,
never left at the value of the last good one), so a lag alert fires during an outage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from syncer.pipeline.push import PushSummary
from syncer.pipeline.run import RunSummary

STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """One registry and its metrics; `render()` gives the text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "syncer_runs", "Runs by result", ["source", "mode", "result"], registry=r
        )
        self.orders = Counter(
            "syncer_orders_loaded", "Orders received in exports", ["source"], registry=r
        )
        self.orders_changed = Counter(
            "syncer_orders_changed", "Orders inserted or updated by merges", ["source"], registry=r
        )
        self.lines = Counter(
            "syncer_order_lines_loaded", "Order lines written", ["source"], registry=r
        )
        self.bytes = Counter(
            "syncer_bytes_downloaded", "Chunk bytes downloaded (OR15)", ["source"], registry=r
        )
        self.stage = Histogram(
            "syncer_stage_seconds",
            "Time per run stage: export_wait (OR13+OR14), download_and_merge (OR15, parse, COPY "
            "and the batch merges overlapping it), merge (time the merger was busy), commit",
            ["source", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "syncer_run_seconds",
            "Run duration",
            ["source", "mode"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "syncer_watermark_lag_seconds",
            "Now minus the source's watermark (the last one read, while PostgreSQL is unreadable)",
            ["source"],
            registry=r,
        )
        self.state_fresh = Gauge(
            "syncer_state_fresh",
            "1 when this scrape read the state from PostgreSQL, 0 when it could not (lag then "
            "grows from the last watermark read; last success and backlog are the last read)",
            registry=r,
        )
        self._watermarks: dict[str, datetime] = {}  # the last watermark read, per source
        self.last_success = Gauge(
            "syncer_last_success_timestamp_seconds",
            "End of the last successful run",
            ["source"],
            registry=r,
        )
        self.backlog = Gauge(
            "syncer_outbox_backlog",
            "Order patches by status (OR04 outbox)",
            ["source", "status"],
            registry=r,
        )
        self.rescan_corrections = Counter(
            "syncer_rescan_corrections",
            "Orders a re-scan loaded that the mirror had missed or held stale",
            ["source"],
            registry=r,
        )
        self.never_succeeded = Gauge(
            "syncer_source_never_succeeded",
            "1 while the source has no successful run at all",
            ["source"],
            registry=r,
        )
        self.stalled = Gauge(
            "syncer_watermark_stalled",
            "1 when the watermark has not moved for service.stale_after_minutes although runs "
            "started since have succeeded",
            ["source"],
            registry=r,
        )
        self.audit_mismatched_days = Gauge(
            "syncer_audit_mismatched_days",
            "Days whose order count differs between the mirror and Mirakl (OR11) in the "
            "source's last finished count audit",
            ["source"],
            registry=r,
        )
        self.feed_waiting = Gauge(
            "syncer_change_feed_waiting_seconds",
            "How long the oldest committed change has waited above change_high_water(), "
            "unreadable for feed consumers because a writing transaction in the cluster is "
            "still open (0: every change is readable)",
            registry=r,
        )
        self.push_calls = Counter("syncer_push_calls", "OR04 calls made", ["source"], registry=r)
        self.patches = Counter(
            "syncer_patches", "Order patches settled", ["source", "result"], registry=r
        )

    def record_run(self, summary: RunSummary) -> None:
        source = summary.source
        self.runs.labels(source, summary.mode, summary.status).inc()
        if summary.watermark is not None:
            self._watermarks[source] = summary.watermark
        self.orders.labels(source).inc(summary.orders)
        self.orders_changed.labels(source).inc(summary.orders_changed)
        self.lines.labels(source).inc(summary.lines)
        self.bytes.labels(source).inc(summary.bytes)
        if summary.mode == "rescan" and summary.status == "succeeded":
            self.rescan_corrections.labels(source).inc(summary.orders_changed)
        self.duration.labels(source, summary.mode).observe(summary.duration_s)
        for stage, seconds in summary.stage_seconds.items():
            self.stage.labels(source, stage).observe(seconds)

    def record_skip(self, source: str, mode: str) -> None:
        self.runs.labels(source, mode, "skipped").inc()

    def record_failed_attempt(self, source: str, mode: str) -> None:
        """A run that failed before it had a run row (e.g. PostgreSQL unreachable)."""
        self.runs.labels(source, mode, "failed").inc()

    def record_push(self, summary: PushSummary) -> None:
        self.push_calls.labels(summary.source).inc(summary.calls)
        self.patches.labels(summary.source, "applied").inc(summary.applied)
        self.patches.labels(summary.source, "rejected").inc(summary.rejected)

    def refresh_state(
        self,
        now: datetime,
        watermarks: dict[str, datetime | None],
        last_success: dict[str, datetime | None],
        backlog: dict[str, dict[str, int]],
        sources: Sequence[str],
        stalled: dict[str, bool] | None = None,
        feed_waiting_seconds: float = 0.0,
    ) -> None:
        self.feed_waiting.set(max(feed_waiting_seconds, 0.0))
        for source in sources:
            self.never_succeeded.labels(source).set(0 if last_success.get(source) else 1)
            self.stalled.labels(source).set(1 if (stalled or {}).get(source) else 0)
            watermark = watermarks.get(source)
            if watermark is not None:
                self._watermarks[source] = watermark
            success = last_success.get(source)
            if success is not None:
                self.last_success.labels(source).set(success.timestamp())
            counts = backlog.get(source, {})
            for status in ("pending", "rejected", "failed"):
                self.backlog.labels(source, status).set(counts.get(status, 0))
        self.state_fresh.set(1)
        self._set_lag(now, sources)

    def state_unreadable(self, now: datetime, sources: Sequence[str]) -> None:
        """PostgreSQL could not be read for this scrape: say so, and let the lag grow."""
        self.state_fresh.set(0)
        self._set_lag(now, sources)

    def _set_lag(self, now: datetime, sources: Sequence[str]) -> None:
        for source in sources:
            watermark = self._watermarks.get(source)
            if watermark is not None:
                self.lag.labels(source).set((now - watermark).total_seconds())

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = Metrics()
