"""One contender per process (so each has its own peak RSS): ceiling, naive, dlt.

    python -m bench.contenders NAME --dsn DSN --schema SCHEMA --sim URL --days D

Prints one JSON line: {"name", "orders", "seconds", "bytes"}; `seconds` covers the
load only (imports, and for the ceiling the in-memory preparation, excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from bench.export import chunk_bodies
from syncer.dates import parse_instant
from syncer.store.sync_store import SyncStore


async def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """The same rows, pre-built in memory, written with COPY and the worker's merge SQL."""
    rows: list[tuple[int, int, int, str, datetime, bytes]] = []
    size = 0
    async for body in chunk_bodies(args.sim, args.days):
        size += len(body)
        for order in orjson.loads(body)["orders"]:  # positions unique across chunks
            raw = orjson.dumps(order)
            rows.append(
                (1, 0, len(rows), order["order_id"], parse_instant(order["last_updated_date"]), raw)
            )
    pool = await asyncpg.create_pool(
        args.dsn, min_size=2, max_size=2, server_settings={"search_path": args.schema}
    )
    await pool.execute(
        "INSERT INTO sync_runs (run_id, source, mode, window_start, window_end) VALUES (1, 'bench', 'full', now(), now())"
    )
    await pool.execute(
        "INSERT INTO sync_exports (tracking_id, source, run_id, mode, window_start, window_end) VALUES ('t', 'bench', 1, 'full', now(), now())"
    )
    store = SyncStore(pool, args.schema)
    await store.create_staging(1)
    started = time.perf_counter()
    await store.stage_rows(1, rows)
    async with store.export_merge(1, "bench") as merge:
        await merge.merge_batch(0)
        await merge.finish(tracking_id="t", chunks=1, bytes_read=size, watermark_to=None)
    seconds = time.perf_counter() - started
    await pool.close()
    return {"orders": len(rows), "seconds": seconds, "bytes": size}


# The naive contender's own tables: the columns its statements name, with the keys and
# indexes of the syncer's first schema (migration 001). Its own, so that it writes the same
# thing whatever the syncer's schema becomes.
NAIVE_TABLES = """
CREATE TABLE orders (
    source text NOT NULL, order_id text NOT NULL, commercial_id text, order_state text,
    shop_id text, created_date timestamptz, last_updated_date timestamptz NOT NULL,
    currency_iso_code text, price numeric, shipping_price numeric, total_price numeric,
    total_commission numeric, raw jsonb NOT NULL,
    PRIMARY KEY (source, order_id));
CREATE INDEX ON orders (source, last_updated_date);
CREATE INDEX ON orders (source, commercial_id);
CREATE TABLE order_lines (
    source text NOT NULL, order_line_id text NOT NULL, order_id text NOT NULL,
    order_line_state text, product_sku text, quantity integer, price_unit numeric,
    price numeric, total_price numeric, raw jsonb NOT NULL,
    PRIMARY KEY (source, order_line_id));
CREATE INDEX ON order_lines (source, order_id);
"""
UPSERT_ORDER = """
INSERT INTO orders (source, order_id, commercial_id, order_state, shop_id, created_date,
    last_updated_date, currency_iso_code, price, shipping_price, total_price, total_commission, raw)
VALUES ('bench', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (source, order_id) DO UPDATE SET commercial_id = EXCLUDED.commercial_id,
    order_state = EXCLUDED.order_state, last_updated_date = EXCLUDED.last_updated_date,
    price = EXCLUDED.price, shipping_price = EXCLUDED.shipping_price, total_price = EXCLUDED.total_price,
    total_commission = EXCLUDED.total_commission, raw = EXCLUDED.raw
WHERE orders.last_updated_date <= EXCLUDED.last_updated_date
"""
INSERT_LINE = """
INSERT INTO order_lines (source, order_line_id, order_id, order_line_state, product_sku, quantity,
    price_unit, price, total_price, raw)
VALUES ('bench', $1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (source, order_line_id) DO UPDATE SET order_line_state = EXCLUDED.order_line_state,
    quantity = EXCLUDED.quantity, price = EXCLUDED.price, total_price = EXCLUDED.total_price, raw = EXCLUDED.raw
"""


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def naive(args: argparse.Namespace) -> dict[str, Any]:
    """What one writes first: json.loads each chunk, executemany upserts."""
    conn = await asyncpg.connect(args.dsn)
    await conn.execute(f'CREATE SCHEMA "{args.schema}"; SET search_path TO "{args.schema}"')
    await conn.execute(NAIVE_TABLES)
    # lz4 for raw, as the syncer's tables have where the server has it (migration 004).
    with contextlib.suppress(asyncpg.PostgresError):
        await conn.execute("SET default_toast_compression = lz4")
    started = time.perf_counter()
    orders = size = 0
    async for body in chunk_bodies(args.sim, args.days):
        size += len(body)
        data = json.loads(body)["orders"]
        orders += len(data)
        await conn.executemany(UPSERT_ORDER, [
            (o["order_id"], o.get("commercial_id"), o.get("order_state"), str(o.get("shop_id")),
             parse_instant(o["created_date"]), parse_instant(o["last_updated_date"]),
             o.get("currency_iso_code"), _dec(o.get("price")), _dec(o.get("shipping_price")),
             _dec(o.get("total_price")), _dec(o.get("total_commission")), json.dumps(o))
            for o in data
        ])  # fmt: skip
        await conn.executemany(INSERT_LINE, [
            (line["order_line_id"], o["order_id"], line.get("order_line_state"), line.get("product_sku"),
             line.get("quantity"), _dec(line.get("price_unit")), _dec(line.get("price")),
             _dec(line.get("total_price")), json.dumps(line))
            for o in data for line in o.get("order_lines", [])
        ])  # fmt: skip
    seconds = time.perf_counter() - started
    await conn.close()
    return {"orders": orders, "seconds": seconds, "bytes": size}


async def with_dlt(args: argparse.Namespace) -> dict[str, Any]:
    """dlt 1.x, merge on order_id, default normalisation (child tables), Postgres destination."""
    import dlt

    started = time.perf_counter()
    bodies = [body async for body in chunk_bodies(args.sim, args.days)]
    size = sum(len(b) for b in bodies)
    count = 0

    @dlt.resource(name="orders", primary_key="order_id", write_disposition="merge")
    def orders() -> Any:
        nonlocal count
        for body in bodies:
            batch = orjson.loads(body)["orders"]
            count += len(batch)
            yield batch

    dsn = args.dsn
    if re.match(
        r"postgres(ql)?://[^:@/]+@", dsn
    ):  # dlt insists on a password; trust auth ignores it
        dsn = re.sub(r"://([^:@/]+)@", r"://\1:unused@", dsn, count=1)
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{args.schema}",
        destination=dlt.destinations.postgres(credentials=dsn),
        dataset_name=args.schema,
        pipelines_dir=args.workdir,
    )
    pipeline.run(orders())
    return {"orders": count, "seconds": time.perf_counter() - started, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=["ceiling", "naive", "dlt"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--sim", required=True)
    parser.add_argument("--days", type=float, required=True)
    parser.add_argument("--workdir", default="/tmp/bench-dlt")
    args = parser.parse_args()
    run = {"ceiling": ceiling, "naive": naive, "dlt": with_dlt}[args.name]
    result = asyncio.run(run(args))
    print(json.dumps({"name": args.name, **result}), flush=True)


if __name__ == "__main__":
    main()
