"""The outbox of order patches (OR04) in PostgreSQL: batches, rate limit, results."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from syncer.pipeline.push import OrderOutcome
from syncer.store.db import Database, as_database, translated
from syncer.store.lease import PUSH, LeaseKeeper, fence

# Rows sent by a push that died before recording the answer: send them again (OR04 is idempotent).
REQUEUE_UNANSWERED = """
WITH requeued AS (
    UPDATE order_patches SET status = 'pending',
        last_error = 'sent, but the answer was never recorded; sending again'
    WHERE source = $1 AND status = 'sent' RETURNING batch_id
)
UPDATE push_calls SET status = 'failed', finished_at = now(),
    error = 'the pusher stopped before recording the answer'
WHERE call_id IN (SELECT batch_id FROM requeued) AND status = 'sending'
"""

# The oldest orders with pending patches, each with all its pending patches in order.
NEXT_BATCH = """
WITH due AS (
    SELECT order_id, min(patch_id) AS first_patch
    FROM order_patches WHERE source = $1 AND status = 'pending'
    GROUP BY order_id ORDER BY first_patch LIMIT $2
)
SELECT d.order_id,
       array_agg(p.patch_id ORDER BY p.patch_id) AS patch_ids,
       array_agg(p.patch ORDER BY p.patch_id) AS patches,
       (SELECT o.payment_workflow FROM orders o WHERE o.source = $1 AND o.order_id = d.order_id)
           AS current_payment_workflow
FROM due d JOIN order_patches p ON p.source = $1 AND p.order_id = d.order_id AND p.status = 'pending'
GROUP BY d.order_id, d.first_patch ORDER BY d.first_patch
"""

REJECT = """
UPDATE order_patches SET status = 'rejected', errors = $2, finished_at = now()
WHERE patch_id = ANY($1::bigint[])
"""

# Counted from the end of the last call (Mirakl saw it at some moment before that).
SECONDS_SINCE_LAST_CALL = """
SELECT extract(epoch FROM clock_timestamp() - max(coalesce(finished_at, started_at)))::float8
FROM push_calls WHERE source = $1
"""

START_CALL = "INSERT INTO push_calls (source, orders) VALUES ($1, $2) RETURNING call_id"

CALL_SOURCE = "SELECT source FROM push_calls WHERE call_id = $1"

MARK_SENT = """
UPDATE order_patches SET status = 'sent', attempts = attempts + 1, sent_at = now(), batch_id = $2
WHERE patch_id = ANY($1::bigint[])
"""

RECORD_RESULT = """
UPDATE order_patches SET status = $2, errors = $3, result = $4, last_error = $5,
    finished_at = CASE WHEN $2 IN ('applied', 'rejected', 'failed') THEN now() END
WHERE patch_id = ANY($1::bigint[])
"""

FINISH_CALL = """
UPDATE push_calls SET status = $2, finished_at = now(), applied = $3, rejected = $4, error = $5
WHERE call_id = $1
"""

# After a failed call: back to pending, or failed for good past max attempts.
CALL_FAILED = """
UPDATE order_patches SET last_error = $2,
    status = CASE WHEN $4 OR attempts >= $3 THEN 'failed' ELSE 'pending' END,
    finished_at = CASE WHEN $4 OR attempts >= $3 THEN now() END
WHERE patch_id = ANY($1::bigint[])
"""

BACKLOG = """
SELECT source, count(*) FILTER (WHERE status IN ('pending', 'sent')) AS pending,
       count(*) FILTER (WHERE status = 'rejected') AS rejected,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM order_patches WHERE source = ANY($1::text[]) GROUP BY source
"""


@dataclass(frozen=True)
class DueOrder:
    order_id: str
    patch_ids: list[int]
    patches: list[Any]
    current_payment_workflow: str | None


class OutboxStore:
    def __init__(self, pool: asyncpg.Pool | Database, leases: LeaseKeeper | None = None) -> None:
        self._pool = as_database(pool)
        self._leases = leases or LeaseKeeper(self._pool)

    @asynccontextmanager
    async def push_lock(self, source: str) -> AsyncIterator[None]:
        """One pusher per source across processes (a lease); RunSkipped if another holds it.
        start_call, record_answer and call_failed commit only while it is held; losing it
        stops the push with LeaseLost."""
        async with self._leases.hold(PUSH, source):
            yield

    async def _execute(self, query: str, *args: Any) -> Any:
        async with translated():
            return await self._pool.execute(query, *args)

    async def requeue_unanswered(self, source: str) -> int:
        status = await self._execute(REQUEUE_UNANSWERED, source)
        return int(str(status).rsplit(" ", 1)[-1])

    async def next_batch(self, source: str, limit: int) -> list[DueOrder]:
        async with translated():
            rows = await self._pool.fetch(NEXT_BATCH, source, limit)
        return [
            DueOrder(
                row["order_id"],
                list(row["patch_ids"]),
                [orjson.loads(p) for p in row["patches"]],
                row["current_payment_workflow"],
            )
            for row in rows
        ]

    async def reject(self, patch_ids: Sequence[int], errors: list[dict[str, Any]]) -> None:
        await self._execute(REJECT, list(patch_ids), orjson.dumps(errors).decode())

    async def seconds_since_last_call(self, source: str) -> float | None:
        async with translated():
            value = await self._pool.fetchval(SECONDS_SINCE_LAST_CALL, source)
        return None if value is None else float(value)

    async def start_call(self, source: str, patch_ids: Sequence[int], orders: int) -> int:
        """Record the call and mark its rows sent, before anything goes out."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            call_id: int = await conn.fetchval(START_CALL, source, orders)
            await conn.execute(MARK_SENT, list(patch_ids), call_id)
            await fence(conn, PUSH, source)
            return call_id

    async def record_answer(self, call_id: int, outcomes: Sequence[OrderOutcome]) -> None:
        """Write every order's outcome and close the call, in one transaction."""
        applied = sum(1 for o in outcomes if o.status == "applied")
        rejected = sum(1 for o in outcomes if o.status == "rejected")
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            for outcome in outcomes:
                await conn.execute(
                    RECORD_RESULT,
                    outcome.patch_ids,
                    outcome.status,
                    None if outcome.errors is None else orjson.dumps(outcome.errors).decode(),
                    None if outcome.result is None else orjson.dumps(outcome.result).decode(),
                    outcome.note,
                )
            await conn.execute(FINISH_CALL, call_id, "answered", applied, rejected, None)
            await fence(conn, PUSH, await conn.fetchval(CALL_SOURCE, call_id))

    async def call_failed(
        self, call_id: int, patch_ids: Sequence[int], error: str, *, max_attempts: int, final: bool
    ) -> None:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(CALL_FAILED, list(patch_ids), error, max_attempts, final)
            await conn.execute(FINISH_CALL, call_id, "failed", 0, 0, error)
            await fence(conn, PUSH, await conn.fetchval(CALL_SOURCE, call_id))

    async def backlog(self, sources: Sequence[str]) -> dict[str, dict[str, int]]:
        async with translated():
            rows = await self._pool.fetch(BACKLOG, list(sources))
        return {r["source"]: {k: r[k] for k in ("pending", "rejected", "failed")} for r in rows}
