"""`syncer demo`: the simulator and an embedded PostgreSQL, end to end, on a fresh machine.

A full resync with progress, then changes on the Mirakl side and a
differential run, then the status table, a check against the simulator's
truth and a sample query.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from syncer.commands import (
    describe_summary,
    format_status,
    open_store,
    run_source,
    status_record,
)
from syncer.config import Config, DatabaseConfig, ExportConfig, Secret, SourceConfig
from syncer.dates import utc_now
from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.store.db import open_pool
from syncer.store.embedded import resolve_dsn
from syncer.store.migrate import migrate

DEMO_SCHEMA = "mirakl_demo"

SAMPLE_QUERY = """
SELECT currency_iso_code AS currency, order_state, count(*) AS orders,
       sum(total_price) AS revenue
FROM orders GROUP BY 1, 2 ORDER BY 1, 3 DESC LIMIT 8
"""

TRUTH_QUERY = "SELECT order_id, last_updated_date, total_price, raw FROM orders"


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


async def run_demo(order_count: int) -> int:
    dsn = os.environ.get("SYNCER_DATABASE_DSN")
    database = DatabaseConfig(dsn=dsn, schema=DEMO_SCHEMA, data_dir=Path(".syncer/demo-pgdata"))
    state = SimulatorState(SimulatorConfig(pending_polls=2, seed=42))
    _step(f"seeding the Mirakl simulator with {order_count} orders over two years")
    state.seed_orders(order_count, days=730)
    async with serve(state) as base_url:
        source = SourceConfig(
            name="demo-shop",
            base_url=base_url,
            api_key=Secret(state.config.api_key),
            start_date=utc_now() - timedelta(days=731),
            overlap_minutes=5,
        )
        config = Config(
            database=database,
            # One simulated account, no rate limit: the windows need no spacing.
            export=ExportConfig(
                poll_interval_seconds=0.2,
                poll_timeout_minutes=5,
                full_export_spacing_minutes=0,
                differential_spacing_minutes=0,
            ),
            sources=(source,),
        )
        _step(
            f"PostgreSQL: {'embedded in ' + str(database.data_dir) if not dsn else 'SYNCER_DATABASE_DSN'}"
        )
        # Started once here: every pool below connects to this server.
        config = replace(config, database=replace(database, dsn=await resolve_dsn(database)))
        async with open_pool(config.database, size=1) as pool, pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {DEMO_SCHEMA} CASCADE")
            applied = await migrate(conn, DEMO_SCHEMA)
            print(f"schema {DEMO_SCHEMA}: applied {', '.join(applied)}")

        async with open_store(config) as store:
            _step("full resync (windows of at most one year, as Mirakl requires)")
            print(describe_summary(await run_source(config, store, source, "full")), flush=True)

            updated = state.update_orders(max(1, order_count // 15))
            created = state.create_orders(max(1, order_count // 60))
            _step(
                f"on Mirakl: {len(updated)} orders updated, {len(created)} created; differential run"
            )
            print(
                describe_summary(await run_source(config, store, source, "differential")),
                flush=True,
            )

            _step("syncer status")
            [row] = await store.status([source.name])
            print(format_status([status_record(row, source, utc_now())]))

        async with open_pool(config.database, size=1) as pool, pool.acquire() as conn:
            _step("check: the database equals the simulator's truth")
            mismatches = await _compare(conn, state)
            print(
                f"{len(state.orders)} orders in Mirakl, "
                f"{await conn.fetchval('SELECT count(*) FROM orders')} in PostgreSQL, "
                f"{mismatches} mismatches"
            )
            _step(f"sample query (schema {DEMO_SCHEMA}):{SAMPLE_QUERY.rstrip()}")
            rows = await conn.fetch(SAMPLE_QUERY)
            print(f"{'currency':8}  {'order_state':20}  {'orders':>6}  {'revenue':>12}")
            for row in rows:
                print(
                    f"{row['currency']:8}  {row['order_state']:20}  {row['orders']:>6}  {row['revenue']:>12}"
                )
    _step("done: `syncer --help` lists the commands; README.md explains the config")
    return 0 if mismatches == 0 else 1


async def _compare(conn: object, state: SimulatorState) -> int:
    from syncer.dates import parse_instant

    rows = {r["order_id"]: r for r in await conn.fetch(TRUTH_QUERY)}  # type: ignore[attr-defined]
    bad = 0
    for order_id, order in state.orders.items():
        row = rows.get(order_id)
        if (
            row is None
            or row["last_updated_date"] != parse_instant(order["last_updated_date"])
            or row["total_price"] != Decimal(str(order["total_price"]))
        ):
            bad += 1
    return bad + len(set(rows) - set(state.orders))
