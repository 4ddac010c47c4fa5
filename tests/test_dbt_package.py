"""The dbt package (warehouse/dbt) matches the migrated schema, and its models' SQL runs.

dbt itself is not a dependency: a small renderer below turns each model into plain SQL
(source(), ref(), var(), this, config() dropped, either branch of is_incremental()) and
materializes it the way dbt-postgres does (table; incremental with delete+insert).
"""

from __future__ import annotations

import ast
import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from syncer.commands import run_source
from syncer.config import Config
from syncer.dates import parse_instant
from syncer.simulator import SimulatorState
from syncer.simulator.orders import iso_seconds, touch_order
from syncer.store.sync_store import SyncStore
from tests.truth import dec

PACKAGE = Path(__file__).resolve().parents[1] / "warehouse" / "dbt"
MODELS = PACKAGE / "models"

# What a warehouse reads: the mirrored data, the change feed and the views over them (the
# worker's own bookkeeping tables are left out).
WAREHOUSE_RELATIONS = {
    "orders",
    "order_lines",
    "order_line_tombstones",
    "order_history",
    "sync_changes",
    "sync_state",
    "order_line_documents",
    "order_line_refunds",
    "order_line_cancelations",
    "order_lines_flat",
    "daily_sales",
}

_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)
_IF_INCREMENTAL = re.compile(
    r"\{%-?\s*if\s+is_incremental\(\)\s*-?%\}(.*?)"
    r"(?:\{%-?\s*else\s*-?%\}(.*?))?\{%-?\s*endif\s*-?%\}",
    re.S,
)


def _call(text: str) -> tuple[str, list[Any], dict[str, Any]]:
    """`name(literal, ..., key=literal)` -> (name, args, keywords); anything else fails."""
    node = ast.parse(text.strip(), mode="eval").body
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name), text
    args = [ast.literal_eval(a) for a in node.args]
    keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    return node.func.id, args, keywords


def render(sql: str, *, schema: str, this: str = "", incremental: bool = False) -> str:
    """The model's SQL as dbt would compile it with `mirakl_schema` = `schema`."""
    sql = _IF_INCREMENTAL.sub(lambda m: m.group(1) if incremental else m.group(2) or "", sql)

    def expression(match: re.Match[str]) -> str:
        text = match.group(1).strip()
        if text == "this":
            assert this, "{{ this }} outside an incremental model"
            return this
        name, args, _ = _call(text)
        if name == "config":
            return ""
        if name == "var":
            assert args == ["mirakl_schema", "mirakl"], f"unexpected var({args})"
            return schema
        if name == "source":
            assert args[0] == "mirakl" and len(args) == 2, f"unexpected source({args})"
            return f'"{schema}"."{args[1]}"'
        if name == "ref":
            return f'"{schema}"."{args[0]}"'
        raise AssertionError(f"the test renderer does not know {{{{ {text} }}}}")

    sql = _EXPRESSION.sub(expression, sql)
    for left in ("{{", "{%", "{#"):
        assert left not in sql, f"Jinja left after rendering: {sql}"
    return sql


def model_config(sql: str) -> dict[str, Any]:
    for match in _EXPRESSION.finditer(sql):
        if match.group(1).strip().startswith("config("):
            return _call(match.group(1))[2]
    return {}


def model_sql(name: str) -> str:
    return (MODELS / f"{name}.sql").read_text(encoding="utf-8")


async def build(conn: asyncpg.Connection, name: str, schema: str) -> str:
    """Materializes a model as `dbt run` does; returns the table's name."""
    sql = model_sql(name)
    config = model_config(sql)
    this = f'"{schema}"."{name}"'
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", this)
    if config.get("materialized") != "incremental" or not exists:
        await conn.execute(f"DROP TABLE IF EXISTS {this}")
        await conn.execute(f"CREATE TABLE {this} AS {render(sql, schema=schema, this=this)}")
        return this
    assert config["incremental_strategy"] == "delete+insert"
    keys = config["unique_key"]
    batch = render(sql, schema=schema, this=this, incremental=True)
    async with conn.transaction():
        await conn.execute(f"CREATE TEMP TABLE dbt_batch ON COMMIT DROP AS {batch}")
        match = " AND ".join(f"t.{k} = b.{k}" for k in keys)
        await conn.execute(f"DELETE FROM {this} t USING dbt_batch b WHERE {match}")
        await conn.execute(f"INSERT INTO {this} SELECT * FROM dbt_batch")
    return this


async def caught_up(conn: asyncpg.Connection, deadline: float = 30.0) -> None:
    """Waits until change_high_water() is past every recorded change. Any transaction
    running in the cluster holds the high-water back (other tests' too): it delays a
    consumer, which this test does not measure."""
    give_up = time.monotonic() + deadline
    query = "SELECT change_high_water() > (SELECT max(change_id) FROM sync_changes)"
    while not await conn.fetchval(query):
        assert time.monotonic() < give_up, "a transaction in the cluster holds the high-water"
        await asyncio.sleep(0.05)


def declared_sources() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((MODELS / "sources.yml").read_text(encoding="utf-8"))
    (source,) = document["sources"]
    assert source["name"] == "mirakl"
    return {table["name"]: table for table in source["tables"]}


def declared_models() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((MODELS / "schema.yml").read_text(encoding="utf-8"))
    return {model["name"]: model for model in document["models"]}


async def test_sources_declare_every_column_of_the_migrated_schema(
    pool: asyncpg.Pool, schema: str
) -> None:
    """sources.yml names exactly the columns the migrations create, each described; the
    freshness fields exist and are timestamps."""
    document = yaml.safe_load((MODELS / "sources.yml").read_text(encoding="utf-8"))
    assert render(document["sources"][0]["schema"], schema=schema) == schema
    tables = declared_sources()
    rows = await pool.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1",
        schema,
    )
    actual: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        actual[row["table_name"]][row["column_name"]] = row["data_type"]
    for name, table in tables.items():
        assert table.get("description"), name
        declared = [c["name"] for c in table["columns"]]
        assert len(declared) == len(set(declared)), f"{name}: a column declared twice"
        assert set(declared) == set(actual[name]), (
            f"{name}: not in the schema {sorted(set(declared) - set(actual[name]))}, "
            f"not declared {sorted(set(actual[name]) - set(declared))}"
        )
        for column in table["columns"]:
            assert column.get("description"), f"{name}.{column['name']} has no description"
    assert set(tables) == WAREHOUSE_RELATIONS

    fresh = {name: t for name, t in tables.items() if "freshness" in t}
    assert {name: t["loaded_at_field"] for name, t in fresh.items()} == {
        "sync_state": "watermark",
        "orders": "synced_at",
    }
    for name, table in fresh.items():
        assert actual[name][table["loaded_at_field"]] == "timestamp with time zone"
        warn, error = (table["freshness"][f"{level}_after"] for level in ("warn", "error"))
        assert warn["period"] == error["period"] == "hour", name
        assert 0 < warn["count"] < error["count"], name
    assert fresh["sync_state"]["freshness"]["warn_after"]["count"] == 1


def update_order(sim: SimulatorState, order_id: str, moment: datetime) -> None:
    """A Mirakl update at `moment` (whole seconds, strictly later each round): a random
    state, lines changed and sometimes one dropped."""
    touch_order(sim.rng, sim.orders[order_id], moment)
    sim.changed(order_id)


def expected_ship_times(versions: set[tuple[str, datetime, str]]) -> dict[str, tuple[str, float]]:
    """From the versions the worker saw: order -> (start state, hours to first SHIPPED)."""
    by_order: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for order_id, updated, state in versions:
        by_order[order_id].append((updated, state))
    expected = {}
    for order_id, seen in by_order.items():
        shipped = [updated for updated, state in seen if state == "SHIPPED"]
        if not shipped:
            continue
        before = sorted(v for v in seen if v[0] < min(shipped))
        if not before:
            continue
        waiting = [v for v in before if v[1] == "WAITING_ACCEPTANCE"]
        start = waiting[0] if waiting else before[0]
        expected[order_id] = (start[1], (min(shipped) - start[0]).total_seconds() / 3600)
    return expected


async def test_models_run_against_a_synced_database(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    schema: str,
    sim_state: SimulatorState,
) -> None:
    """Synced from the simulator through three rounds of changes: daily sales equal the
    orders' sums, ship times equal the versions seen, the incremental model equals the
    orders table after each round, and every model has the columns schema.yml declares."""
    sim_state.seed_orders(300, days=40)
    config = make_config(shop_id=2001)  # a seller's source: its orders carry no shop_id
    # Updates are dated just after every seeded order and before the first run's
    # watermark (within the differential overlap): one distinct second per round.
    base = parse_instant(iso_seconds(sim_state.now())) - timedelta(seconds=50)
    versions: set[tuple[str, datetime, str]] = set()

    def seen() -> None:
        for order in sim_state.orders.values():
            versions.add(
                (order["order_id"], parse_instant(order["last_updated_date"]), order["order_state"])
            )

    seen()
    await run_source(config, store, config.sources[0], "full")
    async with pool.acquire() as conn:
        changes = await build(conn, "mirakl_orders_changes", schema)
        for round_ in range(1, 4):
            for order_id in sim_state.rng.sample(sorted(sim_state.orders), 120):
                update_order(sim_state, order_id, base + timedelta(seconds=round_))
            seen()
            summary = await run_source(config, store, config.sources[0], "differential")
            assert summary.status == "succeeded" and summary.orders_changed == 120
            await caught_up(conn)
            await build(conn, "mirakl_orders_changes", schema)
            mirrored = await conn.fetch(f"SELECT * FROM {changes} ORDER BY source, order_id")
            orders = await conn.fetch("SELECT * FROM orders ORDER BY source, order_id")
            assert [dict(r) | {"feed_high_water": None} for r in mirrored] == [
                dict(r) | {"feed_high_water": None} for r in orders
            ], f"round {round_}"

        daily = await build(conn, "mirakl_daily_sales", schema)
        sums: dict[tuple[Any, ...], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 5)
        for order in sim_state.orders.values():
            if order["order_state"] in ("REFUSED", "CANCELED"):
                continue
            day = parse_instant(order["created_date"]).date()
            key = (day, "shop", "2001", order["currency_iso_code"])
            total = sums[key]
            total[0] += 1
            for i, field in enumerate(
                ("price", "shipping_price", "total_price", "total_commission"), 1
            ):
                total[i] += dec(order[field]) or 0
        rows = await conn.fetch(f"SELECT * FROM {daily}")
        assert {
            (r["day"], r["source"], r["shop_id"], r["currency_iso_code"]): [
                r["orders"],
                r["items_amount"],
                r["shipping_amount"],
                r["total_amount"],
                r["commission"],
            ]
            for r in rows
        } == dict(sums)
        assert len({r["currency_iso_code"] for r in rows}) > 1

        ship = await build(conn, "mirakl_order_ship_times", schema)
        rows = await conn.fetch(f"SELECT * FROM {ship}")
        got = {r["order_id"]: (r["started_state"], float(r["hours_to_ship"])) for r in rows}
        expected = expected_ship_times(versions)
        assert got.keys() == expected.keys()
        for order_id, (state, hours) in expected.items():
            assert got[order_id][0] == state and abs(got[order_id][1] - hours) < 1e-9, order_id
        assert all(r["hours_to_ship"] > 0 for r in rows)
        starts = {state for state, _ in expected.values()}
        assert "WAITING_ACCEPTANCE" in starts and len(starts) > 1, starts

        for name, model in declared_models().items():
            statement = await conn.prepare(f'SELECT * FROM "{schema}"."{name}"')
            assert [a.name for a in statement.get_attributes()] == [
                c["name"] for c in model["columns"]
            ], name


async def test_incremental_model_waits_for_a_merge_that_commits_late(
    pool: asyncpg.Pool, schema: str
) -> None:
    """Merges written by hand as the worker writes them. C commits; A starts; B starts
    later and commits first. The run in between loads C only and stops at or below A's
    id (the high-water: A is running); the next run loads A and B: the orders table and
    the model end equal."""

    async def merge(conn: asyncpg.Connection, order_id: str) -> int:
        await conn.execute(
            "UPDATE orders SET order_state = 'SHIPPING', change_id = current_change_id()"
            " WHERE order_id = $1",
            order_id,
        )
        return int(
            await conn.fetchval(
                "INSERT INTO sync_changes (change_id, source, orders_changed)"
                " VALUES (current_change_id(), 'shop', 1) RETURNING change_id"
            )
        )

    await pool.executemany(
        "INSERT INTO orders (source, order_id, order_state, last_updated_date, raw, change_id)"
        " VALUES ('shop', $1, 'WAITING_ACCEPTANCE', now(), '{}', 1)",
        [("A",), ("B",), ("C",)],
    )
    states = "SELECT order_id, order_state, change_id FROM {} ORDER BY order_id"
    async with pool.acquire() as first, pool.acquire() as second, pool.acquire() as dbt:
        changes = await build(dbt, "mirakl_orders_changes", schema)
        async with first.transaction():
            await merge(first, "C")
        started_first = first.transaction()
        await started_first.start()
        a = await merge(first, "A")
        async with second.transaction():
            b = await merge(second, "B")
        assert a < b, "A's change id is the smaller: it started first"
        await build(dbt, "mirakl_orders_changes", schema)
        loaded = [tuple(r) for r in await dbt.fetch(states.format(changes))]
        assert [state for _, state, _ in loaded] == ["WAITING_ACCEPTANCE"] * 2 + ["SHIPPING"]
        high_water = await dbt.fetchval(f"SELECT max(feed_high_water) FROM {changes}")
        assert high_water <= a, "the high-water stays at or below the merge still running"
        await started_first.commit()
        await caught_up(dbt)
        await build(dbt, "mirakl_orders_changes", schema)
        mirrored = [tuple(r) for r in await dbt.fetch(states.format(changes))]
        orders = [tuple(r) for r in await dbt.fetch(states.format("orders"))]
        assert mirrored == orders
        assert [state for _, state, _ in orders] == ["SHIPPING"] * 3
