"""The batch merge's statements keep per-batch cost whatever the planner's statistics say.

Inside an export's long transaction, order_lines and staged_orders grow by rows no
ANALYZE has seen. A plain join was then planned as a scan of everything loaded so
far, once per batch (a 30k-order resync in batches of 2,000 took 38 s instead of
7.6 s). These tests recreate those statistics and read the plans.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from syncer.store import queries as q

ORDERS, LINES_PER_ORDER, CHANGED = 10_000, 2, 2_000


async def plan(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    rows = await conn.fetch("EXPLAIN " + sql, *args)
    return "\n".join(row[0] for row in rows)


@asynccontextmanager
async def merge_transaction(pool: asyncpg.Pool, grown: str) -> AsyncIterator[asyncpg.Connection]:
    """An export's merge transaction, opened while statistics say `grown` is empty."""
    async with pool.acquire() as conn:
        await conn.execute(f"ANALYZE {grown}")
        async with conn.transaction():
            await conn.execute(q.CREATE_MERGE_TABLES)
            yield conn


async def test_removed_lines_are_found_by_index_probes(pool: asyncpg.Pool) -> None:
    """The changed orders' stored lines are found one index probe per order, and those the
    new versions no longer have are deleted by ctid and tombstoned; the others stay."""
    staging = q.staging_table(1)
    await pool.execute(q.on_staging(q.CREATE_STAGING, 1))
    async with merge_transaction(pool, "order_lines") as conn:
        await conn.execute(
            """
            INSERT INTO order_lines (source, order_line_id, order_id, change_id)
            SELECT 'shop', 'L' || o || '-' || l, 'O' || o, 1
            FROM generate_series(1, $1) o, generate_series(1, $2) l
            """,
            ORDERS,
            LINES_PER_ORDER,
        )
        # The new versions of the changed orders have no lines left.
        await conn.execute(
            f"""
            INSERT INTO {staging} (run_id, batch, position, order_id, last_updated_date, raw)
            SELECT 1, 1, o, 'O' || o, now(),
                   jsonb_build_object('order_id', 'O' || o, 'order_lines', '[]'::jsonb)
            FROM generate_series(1, $1) o
            """,
            CHANGED,
        )
        await conn.execute(
            f"INSERT INTO incoming SELECT order_id, position, last_updated_date FROM {staging}"
        )
        await conn.execute("INSERT INTO changed SELECT order_id FROM incoming")
        await conn.execute("ANALYZE incoming; ANALYZE changed")

        sql = q.on_staging(q.MERGE_CHANGED_LINES, 1)
        shown = await plan(conn, sql, "shop", 1, 1, 7)
        assert "Index Scan using order_lines_order_idx" in shown, shown
        assert "Tid Scan on order_lines" in shown, shown
        assert "Seq Scan on order_lines" not in shown, shown
        assert "Join Filter" not in shown, shown

        written, removed = await conn.fetchrow(sql, "shop", 1, 1, 7)
        assert (written, removed) == (0, CHANGED * LINES_PER_ORDER)
        left = await conn.fetchval(
            "SELECT count(*) FROM order_lines WHERE order_id IN (SELECT order_id FROM changed)"
        )
        assert left == 0
        others = await conn.fetchval("SELECT count(*) FROM order_lines")
        assert others == (ORDERS - CHANGED) * LINES_PER_ORDER
        tombstones = await conn.fetchval(
            "SELECT count(*) FROM order_line_tombstones WHERE change_id = 7"
        )
        assert tombstones == CHANGED * LINES_PER_ORDER


async def test_a_batch_reads_only_its_own_staged_rows(pool: asyncpg.Pool) -> None:
    staging = q.staging_table(1)
    await pool.execute(q.on_staging(q.CREATE_STAGING, 1))
    options = await pool.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)", staging
    )
    assert "autovacuum_enabled=off" in options, "a run's staging is never vacuumed or analyzed"
    async with merge_transaction(pool, staging) as conn:
        await conn.execute(
            f"""
            INSERT INTO {staging} (run_id, batch, position, order_id, last_updated_date, raw)
            SELECT 1, g / 1000, g, 'O' || g, now(),
                   jsonb_build_object('order_id', 'O' || g, 'order_lines', '[]'::jsonb)
            FROM generate_series(0, $1 - 1) g
            """,
            ORDERS,
        )
        await conn.execute(q.on_staging(q.FILL_INCOMING, 1), 1, 5, "shop", None)
        assert await conn.fetchval("SELECT count(*) FROM incoming") == 1000
        await conn.execute("ANALYZE incoming")
        await conn.execute("INSERT INTO changed SELECT order_id FROM incoming")
        await conn.execute("ANALYZE changed")

        for sql, args in (
            (q.FILL_INCOMING, (1, 5, "shop", None)),
            (q.UPSERT_ORDERS, (1, "shop", 5, None, 7, True)),
            (q.MERGE_CHANGED_LINES, ("shop", 1, 5, 7)),
        ):
            shown = await plan(conn, q.on_staging(sql, 1), *args)
            assert f"{staging}_run_id_batch_position_idx" in shown, shown  # made by LIKE
            assert f"Seq Scan on {staging}" not in shown, shown
