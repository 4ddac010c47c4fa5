"""The count audit's reads and writes: the mirror's order count per day (read-only on the
mirror) and the audits themselves in `sync_audits`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from syncer.store.db import Database, as_database, translated

# Orders of the source whose last_updated_date is in [start, end] (both inclusive, like OR11's
# start_update_date and end_update_date); the index orders_last_updated_idx serves it.
COUNT_MIRROR = """
SELECT count(*) FROM orders
WHERE source = $1 AND last_updated_date >= $2 AND last_updated_date <= $3
"""

START_AUDIT = "INSERT INTO sync_audits (source) VALUES ($1) RETURNING audit_id"

FINISH_AUDIT = """
UPDATE sync_audits SET finished_at = now(), days = $2, mismatched_days = $3,
    details = $4::jsonb, status = $5, error = $6
WHERE audit_id = $1
"""

# The last finished audit of each source (a deferred or failed one too: status says which).
LAST_AUDITS = """
SELECT DISTINCT ON (source) audit_id, source, started_at, finished_at, days, mismatched_days,
    details::text AS details, status, error
FROM sync_audits
WHERE source = ANY($1::text[]) AND finished_at IS NOT NULL
ORDER BY source, audit_id DESC
"""


@dataclass(frozen=True)
class AuditRecord:
    audit_id: int
    source: str
    started_at: datetime
    finished_at: datetime | None
    days: int
    mismatched_days: int
    details: list[dict[str, Any]]
    status: str
    error: str | None


class AuditStore:
    def __init__(self, pool: asyncpg.Pool | Database) -> None:
        self._pool = as_database(pool)

    async def mirror_count(self, source: str, start: datetime, end: datetime) -> int:
        async with translated("counting the mirror's orders"):
            return int(await self._pool.fetchval(COUNT_MIRROR, source, start, end))

    async def start(self, source: str) -> int:
        async with translated("recording an audit (sync_audits)"):
            return int(await self._pool.fetchval(START_AUDIT, source))

    async def finish(
        self,
        audit_id: int,
        details: list[dict[str, Any]],
        status: str,
        error: str | None = None,
    ) -> None:
        mismatched = sum(1 for d in details if d["mirror"] != d["mirakl"])
        async with translated("recording an audit (sync_audits)"):
            await self._pool.execute(
                FINISH_AUDIT,
                audit_id,
                len(details),
                mismatched,
                orjson.dumps(details).decode(),
                status,
                error,
            )

    async def last_audits(self, sources: Sequence[str]) -> dict[str, AuditRecord]:
        async with translated("reading sync_audits"):
            rows = await self._pool.fetch(LAST_AUDITS, list(sources))
        found = {}
        for row in rows:
            fields = dict(row)
            fields["details"] = orjson.loads(fields["details"])
            found[row["source"]] = AuditRecord(**fields)
        return found
