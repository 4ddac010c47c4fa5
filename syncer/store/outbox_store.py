"""The outbox of order patches (OR04) in PostgreSQL: batches, rate limit, results."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from syncer.pipeline.push import OrderOutcome, RetryPolicy
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

# The oldest orders with pending patches that are due, each with all its pending patches in
# order. An order waits while any of its pending patches waits (backoff), so its patches
# keep their order. A patch larger than $3 bytes (as text) comes without its body.
NEXT_BATCH = """
WITH due AS (
    SELECT order_id, min(patch_id) AS first_patch
    FROM order_patches WHERE source = $1 AND status = 'pending'
    GROUP BY order_id
    HAVING coalesce(max(next_attempt_at) <= now(), true)
    ORDER BY first_patch LIMIT $2
)
SELECT d.order_id,
       array_agg(p.patch_id ORDER BY p.patch_id) AS patch_ids,
       array_agg(CASE WHEN s.bytes <= $3 THEN p.patch::text END ORDER BY p.patch_id) AS patches,
       array_agg(s.bytes ORDER BY p.patch_id) AS patch_bytes,
       (SELECT o.payment_workflow FROM orders o WHERE o.source = $1 AND o.order_id = d.order_id)
           AS current_payment_workflow
FROM due d
JOIN order_patches p ON p.source = $1 AND p.order_id = d.order_id AND p.status = 'pending'
CROSS JOIN LATERAL (SELECT octet_length(p.patch::text) AS bytes) s
GROUP BY d.order_id, d.first_patch ORDER BY d.first_patch
"""

REJECT = """
UPDATE order_patches SET status = 'rejected', errors = $2, finished_at = now(),
    next_attempt_at = NULL
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
    finished_at = CASE WHEN $2 IN ('applied', 'rejected', 'failed') THEN now() END,
    next_attempt_at = NULL
WHERE patch_id = ANY($1::bigint[])
"""

FINISH_CALL = """
UPDATE push_calls SET status = $2, finished_at = now(), applied = $3, rejected = $4, error = $5
WHERE call_id = $1
"""

# A transient failure (or no answer for the order): wait, then send again; failed for good
# (the dead letter, kept for people) once the row was sent max_attempts ($3) times. The wait
# is min(cap $5, base $4 * 2^(sends - 1)), between half and all of it (jitter).
DEFER = """
UPDATE order_patches SET last_error = $2,
    status = CASE WHEN attempts >= $3 THEN 'failed' ELSE 'pending' END,
    finished_at = CASE WHEN attempts >= $3 THEN now() END,
    next_attempt_at = CASE WHEN attempts < $3 THEN now() + make_interval(
        secs => least($5::float8, $4::float8 * power(2, greatest(attempts - 1, 0)))
                 * (0.5 + random() / 2)) END
WHERE patch_id = ANY($1::bigint[])
RETURNING status
"""

# The call was refused for a reason that is not these rows' doing (whole-call refusal being
# split, API key refused...): back to pending, due now, and the send is not counted.
RELEASE = """
UPDATE order_patches SET status = 'pending', last_error = $2, next_attempt_at = NULL,
    attempts = greatest(attempts - 1, 0)
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
    raw_patches: list[str | None]  # JSON text; None when larger than asked for
    patch_bytes: list[int]  # size of each patch as JSON text
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

    async def next_batch(self, source: str, limit: int, max_text_bytes: int) -> list[DueOrder]:
        """Up to `limit` due orders; patches over max_text_bytes come without their text.

        Nothing is decoded here: a patch that cannot be read is the pusher's to reject alone.
        """
        async with translated():
            rows = await self._pool.fetch(NEXT_BATCH, source, limit, max_text_bytes)
        return [
            DueOrder(
                row["order_id"],
                list(row["patch_ids"]),
                list(row["patches"]),
                list(row["patch_bytes"]),
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

    async def record_answer(
        self,
        call_id: int,
        outcomes: Sequence[OrderOutcome],
        *,
        retry: RetryPolicy,
        error: str | None = None,
    ) -> None:
        """Write every order's outcome and close the call, in one transaction.

        `pending` outcomes (no answer for the order) wait and count as an attempt. With
        `error` the call itself was refused (its rows are settled by the outcomes).
        """
        applied = sum(1 for o in outcomes if o.status == "applied")
        rejected = sum(1 for o in outcomes if o.status == "rejected")
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            for outcome in outcomes:
                if outcome.status == "pending":
                    await conn.execute(DEFER, outcome.patch_ids, outcome.note, *_retry_args(retry))
                    continue
                await conn.execute(
                    RECORD_RESULT,
                    outcome.patch_ids,
                    outcome.status,
                    None if outcome.errors is None else orjson.dumps(outcome.errors).decode(),
                    None if outcome.result is None else orjson.dumps(outcome.result).decode(),
                    outcome.note,
                )
            status = "answered" if error is None else "failed"
            await conn.execute(FINISH_CALL, call_id, status, applied, rejected, error)
            await fence(conn, PUSH, await conn.fetchval(CALL_SOURCE, call_id))

    async def call_failed(
        self, call_id: int, patch_ids: Sequence[int], error: str, *, retry: RetryPolicy | None
    ) -> int:
        """Close a call that got no usable answer; return how many rows failed for good.

        With `retry` the rows wait (backoff), or fail for good at max attempts; without, they
        are pending again and the send is not counted (the refusal was not theirs).
        """
        failed = 0
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            if retry is None:
                await conn.execute(RELEASE, list(patch_ids), error)
            else:
                rows = await conn.fetch(DEFER, list(patch_ids), error, *_retry_args(retry))
                failed = sum(1 for row in rows if row["status"] == "failed")
            await conn.execute(FINISH_CALL, call_id, "failed", 0, 0, error)
            await fence(conn, PUSH, await conn.fetchval(CALL_SOURCE, call_id))
        return failed

    async def backlog(self, sources: Sequence[str]) -> dict[str, dict[str, int]]:
        async with translated():
            rows = await self._pool.fetch(BACKLOG, list(sources))
        return {r["source"]: {k: r[k] for k in ("pending", "rejected", "failed")} for r in rows}


def _retry_args(retry: RetryPolicy) -> tuple[int, float, float]:
    return retry.max_attempts, retry.base_seconds, retry.max_seconds
