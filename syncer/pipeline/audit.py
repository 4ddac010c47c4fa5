"""The count audit: per day of last_updated_date over the last `audit.days` days, the
mirror's order count against Mirakl's (OR11 with max=1: its total_count). Read-only on the
mirror: it reports a mismatch (sync_audits, status, metric, log warning); the re-scan repairs.

Only what the mirror has claimed is audited: each day up to the watermark, the watermark's
own day up to the watermark itself (orders updated after it are the next export's). One OR11
call per day, `audit.call_spacing_seconds` apart; a 429 ends the audit as deferred.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from syncer.config import AuditConfig, Config, SourceConfig
from syncer.errors import RateLimited, RunDeferred, SyncerError
from syncer.log import get_logger
from syncer.metrics import METRICS
from syncer.mirakl.client import open_client
from syncer.store.audit_store import AuditStore
from syncer.store.sync_store import SyncStore

LAST_MOMENT = timedelta(milliseconds=1)  # Mirakl's precision: a day ends 1 ms before the next


class OrderCounter(Protocol):
    async def count_orders(self, start_update: datetime, end_update: datetime) -> int: ...


@dataclass(frozen=True)
class AuditSummary:
    source: str
    audit_id: int
    status: str  # ok, mismatch, deferred
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mismatched(self) -> list[dict[str, Any]]:
        return [d for d in self.details if d["mirror"] != d["mirakl"]]

    def describe(self) -> str:
        if self.status == "deferred":
            return (
                f"{self.source}: audit {self.audit_id} deferred: OR11 answered 429 after "
                f"{len(self.details)} day(s)"
            )
        if self.status == "mismatch":
            days = ", ".join(
                f"{d['day']} (mirror {d['mirror']}, Mirakl {d['mirakl']})" for d in self.mismatched
            )
            return (
                f"{self.source}: audit {self.audit_id} MISMATCH on {len(self.mismatched)} "
                f"day(s): {days}; `syncer rescan` repairs the last export.rescan_days days"
            )
        return f"{self.source}: audit {self.audit_id} ok: {len(self.details)} day(s) match"


def day_windows(watermark: datetime, days: int) -> list[tuple[str, datetime, datetime]]:
    """(day, start, end) of the last `days` days ending with the watermark's day, oldest
    first; each ends 1 ms before the next day, the watermark's day at the watermark."""
    last = watermark.astimezone(UTC).date()
    windows = []
    for back in range(days - 1, -1, -1):
        day = last - timedelta(days=back)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = min(start + timedelta(days=1) - LAST_MOMENT, watermark)
        windows.append((day.isoformat(), start, end))
    return windows


class CountAudit:
    def __init__(
        self,
        source: SourceConfig,
        audit: AuditConfig,
        client: OrderCounter,
        store: AuditStore,
        sync: SyncStore,
    ) -> None:
        self._source = source
        self._audit = audit
        self._client = client
        self._store = store
        self._sync = sync
        self._log = get_logger(source=source.name)

    async def run(self) -> AuditSummary:
        name = self._source.name
        watermark = await self._sync.watermark(name)
        if watermark is None:
            raise RunDeferred(f"{name}: no watermark yet: nothing claimed to audit")
        audit_id = await self._store.start(name)
        delta = timedelta(seconds=self._audit.start_delta_seconds)
        details: list[dict[str, Any]] = []
        try:
            for position, (day, start, end) in enumerate(day_windows(watermark, self._audit.days)):
                if position and self._audit.call_spacing_seconds:
                    await asyncio.sleep(self._audit.call_spacing_seconds)
                mirakl = await self._client.count_orders(start, end)
                mirror = await self._store.mirror_count(name, start - delta, end)
                details.append({"day": day, "mirror": mirror, "mirakl": mirakl})
        except RateLimited as exc:
            self._log.warning("audit_deferred", days_done=len(details), error=str(exc))
            await self._store.finish(audit_id, details, "deferred", str(exc))
            return AuditSummary(name, audit_id, "deferred", details)
        except SyncerError as exc:
            await self._store.finish(audit_id, details, "failed", str(exc))
            raise
        summary = AuditSummary(name, audit_id, "ok", details)
        if summary.mismatched:
            summary = AuditSummary(name, audit_id, "mismatch", details)
            self._log.warning(
                "audit_mismatch",
                days=[d["day"] for d in summary.mismatched],
                details=summary.mismatched,
            )
        await self._store.finish(audit_id, details, summary.status)
        METRICS.audit_mismatched_days.labels(name).set(len(summary.mismatched))
        return summary


async def audit_source(config: Config, store: SyncStore, source: SourceConfig) -> AuditSummary:
    """One count audit of one source with its own HTTP session."""
    async with open_client(source, config.http) as client:
        audit = CountAudit(source, config.audit, client, AuditStore(store.pool), store)
        return await audit.run()
