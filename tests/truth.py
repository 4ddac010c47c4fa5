"""Compare the database with the simulator's truth, field by field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from syncer.dates import parse_instant
from syncer.simulator import SimulatorState


def dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def assert_matches_truth(
    pool: asyncpg.Pool | asyncpg.Connection, state: SimulatorState, source: str = "shop"
) -> None:
    """Every order at its latest version, exact decimals, exactly its lines, raw intact."""
    orders = {
        r["order_id"]: r for r in await pool.fetch("SELECT * FROM orders WHERE source = $1", source)
    }
    assert set(orders) == set(state.orders), (
        f"missing {sorted(set(state.orders) - set(orders))[:5]}, "
        f"extra {sorted(set(orders) - set(state.orders))[:5]}"
    )
    lines: dict[str, list[Any]] = {}
    for row in await pool.fetch("SELECT * FROM order_lines WHERE source = $1", source):
        lines.setdefault(row["order_id"], []).append(row)
    for order_id, truth in state.orders.items():
        row = orders[order_id]
        assert row["last_updated_date"] == parse_instant(truth["last_updated_date"]), order_id
        assert row["order_state"] == truth["order_state"], order_id
        assert row["commercial_id"] == truth["commercial_id"]
        assert row["created_date"] == parse_instant(truth["created_date"])
        for key in ("price", "shipping_price", "total_price", "total_commission"):
            assert row[key] == dec(truth[key]), (order_id, key, row[key], truth[key])
            assert isinstance(row[key], Decimal)
        assert orjson.loads(row["raw"]) == truth, order_id
        got = {line["order_line_id"]: line for line in lines.get(order_id, [])}
        want = {line["order_line_id"]: line for line in truth["order_lines"]}
        assert set(got) == set(want), order_id
        for line_id, line in want.items():
            assert got[line_id]["quantity"] == line["quantity"]
            assert got[line_id]["price"] == dec(line["price"])
            assert got[line_id]["order_line_state"] == line["order_line_state"]
            # A line is written only with its order: never a later change than the order's.
            assert got[line_id]["change_id"] <= row["change_id"], (order_id, line_id)
    # A line id is in order_lines or among the tombstones, never both.
    both = await pool.fetchval(
        "SELECT count(*) FROM order_lines l JOIN order_line_tombstones t"
        " USING (source, order_line_id) WHERE l.source = $1",
        source,
    )
    assert both == 0


async def staging_left(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int, int]:
    """(rows in staged_orders, runs' staging tables) still in the schema."""
    rows = await conn.fetchval("SELECT count(*) FROM staged_orders")
    tables = await conn.fetchval(
        "SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        " AND relkind = 'r' AND relname ~ '^staged_orders_[0-9]+$'"
    )
    return int(rows), int(tables)
