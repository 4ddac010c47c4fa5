"""The fast lane's writes: its orders merged through the export's own merge statements
(never an older version over a newer one), its cursor in `sync_lanes`. It never touches
`sync_state`: only an export's merge moves the watermark.

A pass stages its orders in a temporary table of its own transaction (a few hundred
orders), merges them as one batch, records the pass and checks the lane's lease last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from syncer.store import queries as q
from syncer.store.binary_copy import StagedRow, copy_data
from syncer.store.db import Database, as_database, translated
from syncer.store.lease import LANE, fence
from syncer.store.sync_store import ExportMerge

# orders.run_id of an order the lane wrote last (runs are numbered from 1).
LANE_RUN_ID = 0
LANE_STAGING = "lane_staged_orders"

CREATE_LANE_STAGING = f"""
CREATE TEMP TABLE {LANE_STAGING} (LIKE staged_orders INCLUDING ALL) ON COMMIT DROP
"""

LANE_CHANGED = "SELECT count(DISTINCT order_id) FROM changed_in_export"

GET_LANE_CURSOR = "SELECT cursor FROM sync_lanes WHERE source = $1"

# The cursor moves forward only; NULL ($2) leaves it (a pass cut short by a 429).
RECORD_LANE_PASS = """
INSERT INTO sync_lanes AS l (source, cursor, last_pass_at, orders_read, orders_changed, pages,
    truncated, error)
VALUES ($1, $2, now(), $3, $4, $5, $6, $7)
ON CONFLICT (source) DO UPDATE SET
    cursor = GREATEST(l.cursor, EXCLUDED.cursor), last_pass_at = now(),
    orders_read = EXCLUDED.orders_read, orders_changed = EXCLUDED.orders_changed,
    pages = EXCLUDED.pages, truncated = EXCLUDED.truncated, error = EXCLUDED.error
"""


@dataclass(frozen=True)
class LanePass:
    """What a pass read and what it changes: `cursor_to` None keeps the cursor."""

    orders_read: int
    pages: int
    truncated: bool
    cursor_to: datetime | None
    error: str | None = None


class LaneStore:
    def __init__(self, pool: asyncpg.Pool | Database) -> None:
        self._pool = as_database(pool)

    async def cursor(self, source: str) -> datetime | None:
        async with translated("reading sync_lanes"):
            value: datetime | None = await self._pool.fetchval(GET_LANE_CURSOR, source)
            return value

    async def merge(
        self,
        source: str,
        rows: Sequence[StagedRow],
        done: LanePass,
        *,
        shop_id: int | None = None,
        history: bool = True,
    ) -> int:
        """Merge the pass's orders and record it, in one transaction under the lane's lease;
        return how many orders changed."""
        timeout = self._pool.long_timeout_seconds
        async with (
            translated("merging the fast lane's orders"),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            changed = 0
            if rows:
                await conn.execute(q.CREATE_MERGE_TABLES)
                await conn.execute(CREATE_LANE_STAGING)
                await conn.copy_to_table(
                    LANE_STAGING,
                    source=copy_data(rows),
                    columns=q.STAGED_COLUMNS,
                    format="binary",
                    timeout=timeout,
                )
                merge = ExportMerge(
                    conn,
                    LANE_RUN_ID,
                    source,
                    timeout,
                    shop_id,
                    staging=LANE_STAGING,
                    history=history,
                )
                await merge.merge_batch(0)
                changed = await conn.fetchval(LANE_CHANGED)
                await merge.record_change(changed)
            await conn.execute(
                RECORD_LANE_PASS,
                source,
                done.cursor_to,
                done.orders_read,
                changed,
                done.pages,
                done.truncated,
                done.error,
            )
            await fence(conn, LANE, source)
            return int(changed)
