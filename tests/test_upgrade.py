"""Upgrading a database that already holds data: migrations apply over it, runs go on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import asyncpg

from syncer.commands import run_source
from syncer.config import Config
from syncer.dates import parse_instant, utc_now
from syncer.simulator import SimulatorState
from syncer.simulator.orders import dumps
from syncer.store.migrate import _apply, load_migrations, migrate
from syncer.store.sync_store import SyncStore
from tests.truth import assert_matches_truth, staging_left


async def test_typed_staging_migration_over_a_dead_runs_staging(
    pg_dsn: str,
    schema: str,
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """A database at 005 with rows staged by a run that died: 006 computes their typed
    columns, and the next run clears them and loads everything."""
    sim_state.seed_orders(40, days=30)
    order = next(iter(sim_state.orders.values()))
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await _apply(conn, schema, load_migrations()[:5])
        await conn.execute(
            f"INSERT INTO {schema}.sync_runs (source, mode, window_start, window_end)"
            " VALUES ('shop', 'full', now(), now())"
        )
        await conn.execute(
            f"INSERT INTO {schema}.staged_orders"
            " (run_id, batch, position, order_id, last_updated_date, raw)"
            f" SELECT max(run_id), 1, 0, $1, $2, $3::jsonb FROM {schema}.sync_runs",
            order["order_id"],
            parse_instant(order["last_updated_date"]),
            dumps(order).decode(),
        )

        assert await migrate(conn, schema) == [m.name for m in load_migrations()[5:]]
        staged = await conn.fetchrow(
            f"SELECT price, order_state, created_date FROM {schema}.staged_orders"
        )
        assert staged["price"] == Decimal(str(order["price"]))
        assert staged["order_state"] == order["order_state"]
        assert staged["created_date"] == order["created_date"]
    finally:
        await conn.close()

    config = make_config(start_date=utc_now() - timedelta(days=40))
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.status == "succeeded" and summary.orders == 40
    await assert_matches_truth(pool, sim_state)
    assert await staging_left(pool) == (0, 0)
    assert await pool.fetchval("SELECT status FROM sync_runs ORDER BY run_id LIMIT 1") == (
        "interrupted"
    )


async def test_change_feed_migration_over_a_mirror_with_line_documents(
    pg_dsn: str,
    schema: str,
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """A database at 013 holding orders and lines with their `raw`: 014 drops the lines'
    copy, and the refund and cancelation views return the same rows from orders.raw;
    existing rows are change 1 (read by a consumer starting at 0), each order starts its
    history, and the next run goes on from there."""
    sim_state.seed_orders(60, days=30)
    documents = (b"[" + b",".join(map(dumps, sim_state.orders.values())) + b"]").decode()
    views = ("order_line_refunds", "order_line_cancelations")
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await _apply(conn, schema, load_migrations()[:13])
        await conn.execute(
            """
            INSERT INTO orders (source, order_id, commercial_id, order_state, shop_id,
                created_date, last_updated_date, currency_iso_code, price, shipping_price,
                total_price, total_commission, raw)
            SELECT 'shop', d->>'order_id', d->>'commercial_id', d->>'order_state',
                d->>'shop_id', (d->>'created_date')::timestamptz,
                (d->>'last_updated_date')::timestamptz, d->>'currency_iso_code',
                (d->>'price')::numeric, (d->>'shipping_price')::numeric,
                (d->>'total_price')::numeric, (d->>'total_commission')::numeric, d
            FROM jsonb_array_elements($1::jsonb) d
            """,
            documents,
        )
        await conn.execute(
            """
            INSERT INTO order_lines (source, order_line_id, order_id, order_line_state,
                quantity, price, raw)
            SELECT 'shop', e->>'order_line_id', d->>'order_id', e->>'order_line_state',
                (e->>'quantity')::integer, (e->>'price')::numeric, e
            FROM jsonb_array_elements($1::jsonb) d,
                 jsonb_array_elements(d->'order_lines') e
            """,
            documents,
        )
        before = {v: await conn.fetch(f"SELECT * FROM {v} ORDER BY 1, 2, 3, 6") for v in views}
        assert before["order_line_refunds"], "the seeded orders have refunds"

        assert await migrate(conn, schema) == ["014_change_feed"]
        for view in views:
            assert await conn.fetch(f"SELECT * FROM {view} ORDER BY 1, 2, 3, 6") == before[view]
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE change_id = 1") == 60
        assert await conn.fetchval("SELECT count(*) FROM order_history WHERE change_id = 1") == 60
        assert await conn.fetchval("SELECT change_high_water()") == 2
        documents_view = await conn.fetchval("SELECT count(*) FROM order_line_documents")
        assert documents_view == await conn.fetchval("SELECT count(*) FROM order_lines")
        await conn.execute(
            "INSERT INTO sync_state (source, watermark) VALUES ('shop', now() - interval '1 hour')"
        )
    finally:
        await conn.close()

    sim_state.update_orders(15)
    config = make_config()
    summary = await run_source(config, store, config.sources[0], "differential")
    assert summary.status == "succeeded" and summary.orders_changed == 15
    await assert_matches_truth(pool, sim_state)
    changed = [
        r["order_id"] for r in await pool.fetch("SELECT order_id FROM orders WHERE change_id > 1")
    ]
    assert len(changed) == 15
    digests = await pool.fetchval("SELECT count(*) FROM order_lines WHERE line_digest IS NOT NULL")
    assert digests == sum(len(sim_state.orders[o]["order_lines"]) for o in changed)
