"""The change feed (migration 014, docs/warehouse.md): change ids that a consumer reads
without gaps, no churn on re-delivery, order history, and removed lines as tombstones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from syncer.commands import migrate, run_source
from syncer.config import Config
from syncer.dates import utc_now
from syncer.metrics import Metrics
from syncer.simulator import SimulatorState
from syncer.simulator.orders import iso_seconds
from syncer.store import queries as q
from syncer.store.sync_store import ExportMerge, SyncStore
from tests.truth import assert_matches_truth

Rows = dict[tuple[str, str], dict[str, Any]]


class FeedConsumer:
    """A warehouse loader as docs/warehouse.md tells one to read: everything with
    `since <= change_id < change_high_water()`, then `since = high water`."""

    def __init__(self) -> None:
        self.since = 0
        self.orders: Rows = {}
        self.lines: Rows = {}
        self.history: set[tuple[str, str, datetime]] = set()
        self.reads = 0

    async def read(self, db: asyncpg.Pool | asyncpg.Connection, *, settled: bool = True) -> int:
        """One extract; returns how many rows it brought. `settled`: first wait until every
        recorded change is below the high water (other transactions on the cluster, which
        the tests do not control, can hold it back for a moment)."""
        high = await high_water(db, settled=settled)
        window = (self.since, high)
        where = "WHERE change_id >= $1 AND change_id < $2"
        orders = await db.fetch(f"SELECT * FROM orders {where}", *window)
        lines = await db.fetch(f"SELECT * FROM order_lines {where}", *window)
        removed = await db.fetch(f"SELECT * FROM order_line_tombstones {where}", *window)
        history = await db.fetch(f"SELECT * FROM order_history {where}", *window)
        # Apply in change order: a line removed and later back is a tombstone, then a row.
        events = sorted(
            [(r["change_id"], 0, r) for r in removed] + [(r["change_id"], 1, r) for r in lines],
            key=lambda e: (e[0], e[1]),
        )
        for _, kind, row in events:
            key = (row["source"], row["order_line_id"])
            if kind == 0:
                self.lines.pop(key, None)
            else:
                self.lines[key] = dict(row)
        for row in orders:
            self.orders[(row["source"], row["order_id"])] = dict(row)
        self.history |= {(r["source"], r["order_id"], r["last_updated_date"]) for r in history}
        self.since = high
        self.reads += 1
        return len(orders) + len(lines) + len(removed) + len(history)

    async def assert_mirrors(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        """What the consumer holds is exactly the mirror's tables."""
        orders = {
            (r["source"], r["order_id"]): dict(r) for r in await db.fetch("SELECT * FROM orders")
        }
        lines = {
            (r["source"], r["order_line_id"]): dict(r)
            for r in await db.fetch("SELECT * FROM order_lines")
        }
        assert self.orders == orders
        assert self.lines == lines
        history = {
            (r["source"], r["order_id"], r["last_updated_date"])
            for r in await db.fetch("SELECT source, order_id, last_updated_date FROM order_history")
        }
        assert self.history == history


async def high_water(db: asyncpg.Pool | asyncpg.Connection, *, settled: bool = True) -> int:
    """change_high_water(); with `settled`, once it is above every recorded change."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        high, last = await db.fetchrow(
            "SELECT change_high_water(), (SELECT max(change_id) FROM sync_changes)"
        )
        if not settled or high > last:
            return int(high)
        assert asyncio.get_running_loop().time() < deadline, "the high water never settled"
        await asyncio.sleep(0.05)


async def row_versions(
    db: asyncpg.Pool, table: str, key: str
) -> dict[str, tuple[str, str, str, int]]:
    """Each row's (xmin, xmax, ctid, change_id): a rewrite changes xmin and ctid, and even
    a row lock (an upsert that then updates nothing) changes xmax."""
    rows = await db.fetch(
        f"SELECT {key} AS k, xmin::text, xmax::text, ctid::text, change_id FROM {table}"
    )
    return {r["k"]: (r["xmin"], r["xmax"], r["ctid"], r["change_id"]) for r in rows}


def change_in_place(
    sim: SimulatorState, order_id: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    """A new version of one order, edited by `edit` (its date is the simulator's now: the
    same second as an earlier change is the same date with other content)."""
    order = sim.orders[order_id]
    edit(order)
    order["last_updated_date"] = iso_seconds(sim.now())
    sim.changed(order_id)


async def test_a_merge_that_starts_first_and_commits_last_is_not_skipped(
    pool: asyncpg.Pool, store: SyncStore
) -> None:
    """Two sources' merges interleave: A starts, B starts, B commits, then A commits. A
    consumer reading between the two commits gets neither yet (B's change is above A's, and
    A is still running), and everything after A commits. A consumer keyed on synced_at
    (the merge's start time) reads B, moves past A's time, and never sees A."""
    documents = {
        "a": [{"order_id": f"A-{n}", "order_lines": []} for n in range(3)],
        "b": [{"order_id": f"B-{n}", "order_lines": []} for n in range(2)],
    }
    moment = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for run_id, source in ((1, "a"), (2, "b")):
        await store.create_staging(run_id)
        await store.stage_rows(
            run_id,
            [
                (run_id, 0, n, doc["order_id"], moment, orjson.dumps(doc))
                for n, doc in enumerate(documents[source])
            ],
        )

    feed, naive_since, naive = FeedConsumer(), datetime.min.replace(tzinfo=UTC), set()

    async def naive_read() -> None:
        nonlocal naive_since
        rows = await pool.fetch(
            "SELECT order_id, synced_at FROM orders WHERE synced_at > $1", naive_since
        )
        naive.update(r["order_id"] for r in rows)
        naive_since = max([naive_since, *(r["synced_at"] for r in rows)])

    async with pool.acquire() as conn_a, pool.acquire() as conn_b:
        tx_a = conn_a.transaction()
        await tx_a.start()
        await conn_a.execute(q.CREATE_MERGE_TABLES)
        merge_a = ExportMerge(conn_a, 1, "a")
        await merge_a.merge_batch(0)  # A takes its change id first, and its start time

        async with conn_b.transaction():
            await conn_b.execute(q.CREATE_MERGE_TABLES)
            merge_b = ExportMerge(conn_b, 2, "b")
            await merge_b.merge_batch(0)
            change_b = await merge_b.record_change(2)

        assert await feed.read(pool, settled=False) == 0, "B is above A's; A is not committed"
        await naive_read()
        assert naive == {"B-0", "B-1"}

        change_a = await merge_a.record_change(3)
        await tx_a.commit()
    assert change_a is not None and change_b is not None and change_a < change_b

    await feed.read(pool)
    await naive_read()
    assert {order_id for _, order_id in feed.orders} == {"A-0", "A-1", "A-2", "B-0", "B-1"}
    assert naive == {"B-0", "B-1"}, "synced_at skips A: its rows are older than B's"
    await feed.assert_mirrors(pool)
    listed = await pool.fetch("SELECT change_id, source FROM sync_changes WHERE change_id > 1")
    assert {(r["change_id"], r["source"]) for r in listed} == {(change_a, "a"), (change_b, "b")}


async def test_the_high_water_waits_for_any_writing_transaction(pool: asyncpg.Pool) -> None:
    """A writing transaction that is still open (here: an analyst's, on another table) holds
    the high water back: the feed is late, never wrong. A read-only one does not."""
    # A change far ahead, so the cap (last change + 1) is not what stops the high water.
    await pool.execute("INSERT INTO sync_changes (change_id) VALUES (4611686018427387904)")
    first = await pool.fetchval("SELECT change_high_water()")
    async with (
        pool.acquire() as reader,
        pool.acquire() as writer,
        reader.transaction(isolation="repeatable_read"),
    ):
        await reader.fetchval("SELECT count(*) FROM orders")
        async with writer.transaction():
            await writer.execute("CREATE TEMP TABLE scratch (x int)")
            xid = int(await writer.fetchval("SELECT pg_current_xact_id()::text::bigint"))
            held = await pool.fetchval("SELECT change_high_water()")
            assert first <= held <= xid
        # The writer committed; the reader's transaction is still open and holds nothing.
        deadline = asyncio.get_running_loop().time() + 30
        while await pool.fetchval("SELECT change_high_water()") <= xid:
            assert asyncio.get_running_loop().time() < deadline, "held back by a reader"
            await asyncio.sleep(0.05)


async def test_redelivered_orders_change_no_row_and_no_change_id(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """A full resync of the same data, and a differential whose overlap repeats orders,
    rewrite nothing: every order, line and history row keeps its xmin, ctid and change
    id, and no change is recorded."""
    sim_state.seed_orders(200, days=20)
    config = make_config(start_date=utc_now() - timedelta(days=30))
    source = config.sources[0]
    assert (await run_source(config, store, source, "full")).status == "succeeded"
    sim_state.update_orders(20)
    assert (await run_source(config, store, source, "differential")).orders_changed == 20

    before = [
        await row_versions(pool, "orders", "order_id"),
        await row_versions(pool, "order_lines", "order_line_id"),
        await row_versions(pool, "order_history", "order_id || last_updated_date"),
    ]
    changes = await pool.fetchval("SELECT count(*) FROM sync_changes")
    again = await run_source(config, store, source, "differential")
    assert again.orders == 20 and again.orders_changed == 0
    full = await run_source(config, store, source, "full")
    assert full.orders == 200 and full.orders_changed == 0 and full.lines == 0
    after = [
        await row_versions(pool, "orders", "order_id"),
        await row_versions(pool, "order_lines", "order_line_id"),
        await row_versions(pool, "order_history", "order_id || last_updated_date"),
    ]
    assert after == before
    assert await pool.fetchval("SELECT count(*) FROM sync_changes") == changes
    await assert_matches_truth(pool, sim_state)


async def test_a_changed_order_rewrites_only_its_changed_lines(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """One line of an order changes: the order and that line get the new change id, the
    order's other lines keep their rows, and history holds both versions."""
    sim_state.seed_orders(60, days=10)
    config = make_config(start_date=utc_now() - timedelta(days=20))
    source = config.sources[0]
    await run_source(config, store, source, "full")
    order_id = next(o for o, d in sim_state.orders.items() if len(d["order_lines"]) >= 2)
    lines = [line["order_line_id"] for line in sim_state.orders[order_id]["order_lines"]]
    before = await row_versions(pool, "order_lines", "order_line_id")

    def one_more_unit(order: dict[str, Any]) -> None:
        order["order_lines"][0]["quantity"] += 1
        order["order_state"] = "SHIPPED"

    change_in_place(sim_state, order_id, one_more_unit)
    result = await run_source(config, store, source, "differential")
    assert (result.orders_changed, result.lines) == (1, 1)

    after = await row_versions(pool, "order_lines", "order_line_id")
    order = await pool.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    assert after[lines[0]][3] == order["change_id"] > before[lines[0]][3]
    for line_id in lines[1:]:
        assert after[line_id] == before[line_id], "an unchanged line keeps its row"
    assert {k: v for k, v in after.items() if k not in lines} == {
        k: v for k, v in before.items() if k not in lines
    }
    versions = await pool.fetch(
        "SELECT order_state, change_id FROM order_history WHERE order_id = $1"
        " ORDER BY last_updated_date",
        order_id,
    )
    assert len(versions) == 2
    assert versions[-1]["order_state"] == "SHIPPED"
    assert versions[-1]["change_id"] == order["change_id"]
    await assert_matches_truth(pool, sim_state)


async def test_a_removed_line_is_a_tombstone_in_the_feed_and_leaves_it_when_back(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """A line the new version no longer has leaves order_lines and appears in
    order_line_tombstones under the order's change id; a consumer reading the feed drops
    it. When the line comes back it leaves the tombstones. Through random updates as
    well, the consumer's copy stays equal to the mirror."""
    sim_state.seed_orders(120, days=10)
    config = make_config(start_date=utc_now() - timedelta(days=20))
    source = config.sources[0]
    feed = FeedConsumer()
    await run_source(config, store, source, "full")
    await feed.read(pool)
    await feed.assert_mirrors(pool)

    order_id = next(o for o, d in sim_state.orders.items() if len(d["order_lines"]) >= 2)
    kept: list[dict[str, Any]] = []
    change_in_place(sim_state, order_id, lambda order: kept.append(order["order_lines"].pop()))
    gone = kept[0]["order_line_id"]
    result = await run_source(config, store, source, "differential")
    assert result.orders_changed == 1
    tomb = await pool.fetchrow("SELECT * FROM order_line_tombstones WHERE order_line_id = $1", gone)
    change_id = await pool.fetchval("SELECT change_id FROM orders WHERE order_id = $1", order_id)
    assert tomb["order_id"] == order_id and tomb["change_id"] == change_id
    assert (
        await pool.fetchval("SELECT count(*) FROM order_lines WHERE order_line_id = $1", gone) == 0
    )
    assert (source.name, gone) in feed.lines
    assert await feed.read(pool) > 0
    assert (source.name, gone) not in feed.lines
    await feed.assert_mirrors(pool)
    removed = await pool.fetchval(
        "SELECT lines_removed FROM sync_changes WHERE change_id = $1", change_id
    )
    assert removed == 1

    change_in_place(sim_state, order_id, lambda order: order["order_lines"].append(kept[0]))
    await run_source(config, store, source, "differential")
    assert await pool.fetchval("SELECT count(*) FROM order_line_tombstones") == 0
    await feed.read(pool)
    assert (source.name, gone) in feed.lines
    await feed.assert_mirrors(pool)

    for _ in range(3):
        sim_state.update_orders(30)  # states, quantities, and now and then a line dropped
        sim_state.create_orders(5)
        await run_source(config, store, source, "differential")
        await feed.read(pool)
        await feed.assert_mirrors(pool)
    await assert_matches_truth(pool, sim_state)
    assert await pool.fetchval("SELECT count(*) FROM order_line_tombstones") > 0


async def test_history_keeps_one_row_per_version_and_can_be_off(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """History on (the default): one row per version seen, with its state and money. Off
    for a source: none for that source."""
    sim_state.seed_orders(30, days=5)
    config = make_config(start_date=utc_now() - timedelta(days=10))
    source = config.sources[0]
    assert source.history
    await run_source(config, store, source, "full")
    touched = set()
    for _ in range(2):
        await asyncio.sleep(1.01)  # a later whole second: each update is a new version
        touched |= set(sim_state.update_orders(5))
        await run_source(config, store, source, "differential")
    counts = {
        r["order_id"]: r["n"]
        for r in await pool.fetch("SELECT order_id, count(*) AS n FROM order_history GROUP BY 1")
    }
    assert set(counts) == set(sim_state.orders)
    assert all(counts[o] >= 2 for o in touched)
    assert sum(counts.values()) == 30 + await pool.fetchval(
        "SELECT sum(orders_changed) FROM sync_runs WHERE mode = 'differential'"
    )
    latest = await pool.fetch(
        "SELECT DISTINCT ON (order_id) order_id, order_state, total_price FROM order_history"
        " ORDER BY order_id, last_updated_date DESC"
    )
    stored = {
        r["order_id"]: (r["order_state"], r["total_price"])
        for r in await pool.fetch("SELECT order_id, order_state, total_price FROM orders")
    }
    assert {r["order_id"]: (r["order_state"], r["total_price"]) for r in latest} == stored

    # Two versions within one second share the date: their row holds the later one.
    order_id = sorted(sim_state.orders)[0]
    change_in_place(sim_state, order_id, lambda order: order.update(order_state="SHIPPING"))
    await run_source(config, store, source, "differential")
    same_second = sim_state.orders[order_id]["last_updated_date"]

    def shipped(order: dict[str, Any]) -> None:
        order["order_state"] = "SHIPPED"

    change_in_place(sim_state, order_id, shipped)
    sim_state.orders[order_id]["last_updated_date"] = same_second
    assert (await run_source(config, store, source, "differential")).orders_changed == 1
    row = await pool.fetchrow(
        "SELECT h.order_state, h.change_id = o.change_id AS latest FROM order_history h"
        " JOIN orders o USING (source, order_id, last_updated_date) WHERE order_id = $1",
        order_id,
    )
    assert (row["order_state"], row["latest"]) == ("SHIPPED", True)

    quiet = make_config(history=False)
    assert not quiet.sources[0].history
    await pool.execute("TRUNCATE order_history")
    sim_state.update_orders(5)
    assert (await run_source(quiet, store, quiet.sources[0], "differential")).orders_changed >= 5
    assert await pool.fetchval("SELECT count(*) FROM order_history") == 0


async def test_change_ids_keep_increasing_after_a_restore(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dump restored into another cluster carries change ids above the new cluster's
    transaction ids (simulated: a recorded change far ahead). The worker moves the clock
    past it, so new changes sort after it and a consumer's stored position stays valid."""
    sim_state.seed_orders(20, days=5)
    config = make_config(start_date=utc_now() - timedelta(days=10))
    source = config.sources[0]
    await run_source(config, store, source, "full")
    assert await store.ensure_change_clock() == 0, "nothing to do on the cluster that wrote them"
    ahead = int(await pool.fetchval("SELECT max(change_id) FROM sync_changes")) + 5_000_000
    await pool.execute("INSERT INTO sync_changes (change_id, source) VALUES ($1, 'old')", ahead)
    consumer_position = await pool.fetchval("SELECT change_high_water()")
    assert consumer_position <= ahead + 1

    assert await migrate(config) == 0  # `syncer migrate` moves the clock, and says so
    printed = capsys.readouterr().out
    assert "change ids moved forward by" in printed and "restore" in printed, printed
    assert await store.ensure_change_clock() == 0
    # The worker does the same when it opens the database (a restore, then `syncer run`).
    ahead += 3_000_000
    await pool.execute("INSERT INTO sync_changes (change_id, source) VALUES ($1, 'old')", ahead)
    assert await store.ensure_change_clock() > 2_000_000
    assert await store.ensure_change_clock() == 0
    sim_state.update_orders(3)
    await run_source(config, store, source, "differential")
    newest = await pool.fetchval("SELECT max(change_id) FROM orders")
    assert newest > ahead >= consumer_position - 1
    assert await high_water(pool) > newest


async def test_metrics_tell_how_long_committed_changes_wait_for_the_high_water(
    pool: asyncpg.Pool, store: SyncStore
) -> None:
    """While a writing transaction stays open, a change committed after it waits above the
    high water: /metrics' syncer_change_feed_waiting_seconds grows; once the transaction
    ends it is back to 0."""
    assert (await store.freshness(["shop"], 60)).feed_waiting_seconds == 0
    async with pool.acquire() as writer, writer.transaction():
        await writer.execute("CREATE TEMP TABLE scratch (x int)")  # takes a transaction id
        await pool.execute("INSERT INTO sync_changes (change_id) SELECT current_change_id()")
        await asyncio.sleep(0.3)
        waiting = (await store.freshness(["shop"], 60)).feed_waiting_seconds
        assert waiting >= 0.25
    metrics = Metrics()
    metrics.refresh_state(utc_now(), {}, {}, {}, ["shop"], feed_waiting_seconds=waiting)
    assert f"syncer_change_feed_waiting_seconds {waiting}" in metrics.render().decode()

    deadline = asyncio.get_running_loop().time() + 30
    while (await store.freshness(["shop"], 60)).feed_waiting_seconds > 0:
        assert asyncio.get_running_loop().time() < deadline, "the change never became readable"
        await asyncio.sleep(0.05)
