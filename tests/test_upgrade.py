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
