"""End to end: simulator over loopback HTTP -> pipeline -> real PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import pytest

from syncer.commands import run_source
from syncer.config import Config, ExportConfig
from syncer.dates import parse_instant, utc_now
from syncer.errors import AuthRefused, ConfigError, ExportFailed, MiraklUnavailable, RunSkipped
from syncer.pipeline.window import settled_watermark
from syncer.simulator import SimulatorState
from syncer.simulator.orders import iso, touch_order
from syncer.store.sync_store import SyncStore
from tests.truth import assert_matches_truth, staging_left


async def test_full_resync_then_differentials_equal_the_truth(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """A full resync then differential runs with changes in between leave the database equal to Mirakl."""
    sim_state.seed_orders(600, days=780)
    config = make_config(start_date=utc_now() - timedelta(days=800))
    source = config.sources[0]
    full = await run_source(config, store, source, "full")
    assert full.status == "succeeded"
    assert full.exports == 3, "780 days need three windows of at most a year"
    assert full.orders == 600
    await assert_matches_truth(pool, sim_state)
    assert any("x_marketplace_future_field" in o for o in sim_state.orders.values())

    for _ in range(2):
        sim_state.update_orders(40)
        sim_state.create_orders(15)
        diff = await run_source(config, store, source, "differential")
        assert diff.mode == "differential" and diff.exports == 1
        assert diff.orders_changed >= 55
        await assert_matches_truth(pool, sim_state)
    assert await store.watermark("shop") == settled_watermark(diff.window.end)


async def test_repeat_runs_are_idempotent(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """Running again with nothing new changes no row (overlap windows repeat orders harmlessly)."""
    sim_state.seed_orders(100, days=30)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    sim_state.update_orders(10)
    await run_source(config, store, config.sources[0], "differential")
    before = await pool.fetch("SELECT order_id, synced_at, raw FROM orders ORDER BY order_id")
    lines_before = await pool.fetchval("SELECT count(*) FROM order_lines")
    again = await run_source(config, store, config.sources[0], "differential")
    assert again.orders == 10, "the overlap brings the last changes again"
    assert again.orders_changed == 0
    after = await pool.fetch("SELECT order_id, synced_at, raw FROM orders ORDER BY order_id")
    assert before == after
    assert await pool.fetchval("SELECT count(*) FROM order_lines") == lines_before
    await assert_matches_truth(pool, sim_state)


async def test_older_version_never_overwrites_newer(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """An export holding an order twice, the older version last, keeps the newer one."""
    ids = sim_state.seed_orders(20, days=10)
    old = copy.deepcopy(sim_state.orders[ids[0]])
    sim_state.update_orders(20)
    sim_state.replayed_versions.append(old)  # same order again, older, after the newer one
    config = make_config(start_date=utc_now() - timedelta(days=20))
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.exports == 1
    assert summary.orders == 20, "21 order objects, 20 distinct orders"
    await assert_matches_truth(pool, sim_state)

    # And across runs: an export that only has the old version changes nothing.
    sim_state.replayed_versions[:] = [old]
    stored = await pool.fetchval("SELECT raw FROM orders WHERE order_id = $1", ids[0])
    await run_source(config, store, config.sources[0], "differential")
    assert await pool.fetchval("SELECT raw FROM orders WHERE order_id = $1", ids[0]) == stored
    await assert_matches_truth(pool, sim_state)


async def test_an_order_changed_by_two_batches_of_an_export_counts_once(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """An order's newer version two batches after the first: stored as the newest, and the
    export counts 30 changed orders, not 31."""
    ids = sim_state.seed_orders(30, days=10)
    newer = copy.deepcopy(sim_state.orders[ids[0]])
    newer["last_updated_date"] = iso(
        parse_instant(newer["last_updated_date"]) + timedelta(seconds=1)
    )
    newer["order_state"] = "CLOSED"
    sim_state.replayed_versions.append(newer)  # position 30: batch 3 (batches of 13)
    config = make_config(start_date=utc_now() - timedelta(days=20))
    summary = await run_source(config, store, config.sources[0], "full")
    assert (summary.orders, summary.orders_changed) == (30, 30)
    stored = await pool.fetchval("SELECT order_state FROM orders WHERE order_id = $1", ids[0])
    assert stored == "CLOSED"
    run = await pool.fetchrow("SELECT orders, orders_changed FROM sync_runs ORDER BY run_id DESC")
    assert tuple(run) == (30, 30)


async def test_multi_chunk_export_loads_every_chunk(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """An export cut into many chunk files loads all of them."""
    sim_state.config.max_items_per_chunk = 37
    sim_state.seed_orders(400, days=100)
    config = make_config(start_date=utc_now() - timedelta(days=101))
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.chunks == 11
    assert sim_state.calls["OR15"] == 11
    await assert_matches_truth(pool, sim_state)


async def test_stage_times_cover_the_export_request(
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """export_wait includes OR13 (slow here), not only the OR14 polls after it."""
    sim_state.seed_orders(20, days=10)
    sim_state.inject("OR13", delay_seconds=0.5)
    config = make_config()
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.stage_seconds["export_wait"] >= 0.5
    assert set(summary.stage_seconds) == {
        "export_wait",
        "download_and_merge",
        "merge",
        "merge_tail",
        "commit",
    }


async def test_429_with_retry_after_then_success(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """429 on OR13, OR14 and OR15 is waited out (Retry-After) and the run succeeds."""
    sim_state.seed_orders(50, days=30)
    for endpoint in ("OR13", "OR14", "OR15"):
        sim_state.inject(endpoint, status=429, retry_after=0.05)
    config = make_config()
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.status == "succeeded"
    assert sim_state.calls["OR13"] == 2
    await assert_matches_truth(pool, sim_state)


async def test_5xx_exhausting_retries_fails_and_export_is_resumed(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """OR14 failing past max_attempts fails the run; the next run resumes the same export."""
    sim_state.seed_orders(50, days=30)
    sim_state.inject("OR14", status=503, times=10)
    config = make_config()
    with pytest.raises(MiraklUnavailable, match="OR14 still failing after 4 attempts: HTTP 503"):
        await run_source(config, store, config.sources[0], "full")
    assert await store.watermark("shop") is None
    in_flight = await store.in_flight_export("shop")
    assert in_flight is not None
    sim_state.faults.clear()
    summary = await run_source(config, store, config.sources[0], "differential")
    assert summary.status == "succeeded"
    assert sim_state.calls["OR13"] == 1, "the export in flight was resumed, not requested again"
    await assert_matches_truth(pool, sim_state)
    assert await store.in_flight_export("shop") is None


@pytest.mark.parametrize("final", ["FAILED", "CANCELED"])
async def test_failed_export_leaves_the_watermark(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    final: str,
) -> None:
    """An export ending FAILED/CANCELED fails the run, records why, and moves nothing."""
    sim_state.seed_orders(30, days=30)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    mark = await store.watermark("shop")
    sim_state.update_orders(5)
    sim_state.inject("OR14", export_status=final)
    with pytest.raises(ExportFailed, match=f"ended {final}"):
        await run_source(config, store, config.sources[0], "differential")
    assert await store.watermark("shop") == mark
    run = await pool.fetchrow("SELECT status, error FROM sync_runs ORDER BY run_id DESC LIMIT 1")
    assert run["status"] == "failed" and final in run["error"]
    assert await store.in_flight_export("shop") is None
    assert await staging_left(pool) == (0, 0)
    await run_source(config, store, config.sources[0], "differential")
    await assert_matches_truth(pool, sim_state)


async def test_poll_deadline_fails_and_keeps_export_in_flight(
    make_config: Callable[..., Config], store: SyncStore, sim_state: SimulatorState
) -> None:
    """An export PENDING past poll_timeout_minutes fails the run but stays resumable."""
    sim_state.seed_orders(10, days=5)
    sim_state.config.pending_polls = 10_000
    config = make_config(
        export=ExportConfig(poll_interval_seconds=0.01, poll_timeout_minutes=0.005)
    )
    with pytest.raises(ExportFailed, match="still PENDING"):
        await run_source(config, store, config.sources[0], "full")
    assert await store.in_flight_export("shop") is not None
    assert await store.watermark("shop") is None


async def test_refused_key_fails_fast_without_showing_it(
    make_config: Callable[..., Config], store: SyncStore, sim_state: SimulatorState
) -> None:
    """401 fails at once with a message that says the key was refused, never the key."""
    from syncer.config import Secret

    config = make_config(api_key=Secret("wrong-key-123"))
    with pytest.raises(AuthRefused) as caught:
        await run_source(config, store, config.sources[0], "full")
    assert "refused the API key" in str(caught.value)
    assert "wrong-key-123" not in str(caught.value)
    assert sim_state.calls["OR13"] == 1


async def test_one_run_per_source_at_a_time(
    make_config: Callable[..., Config], store: SyncStore, sim_state: SimulatorState
) -> None:
    """A second run of a source while one holds its lease is skipped."""
    sim_state.seed_orders(10, days=5)
    sim_state.config.pending_polls = 20
    config = make_config()
    first = asyncio.create_task(run_source(config, store, config.sources[0], "full"))
    await asyncio.sleep(0.1)
    with pytest.raises(RunSkipped, match="another run holds the lock"):
        await run_source(config, store, config.sources[0], "full")
    assert (await first).status == "succeeded"


async def test_first_differential_without_watermark_needs_a_start(
    make_config: Callable[..., Config], store: SyncStore
) -> None:
    """With no watermark and no start_date, a sync says which key to set."""
    config = make_config(start_date=None)
    with pytest.raises(ConfigError, match="start_date"):
        await run_source(config, store, config.sources[0], "differential")


async def test_differential_window_starts_overlap_before_watermark(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """The window is [watermark - overlap, now], and the watermark moves to its end."""
    sim_state.seed_orders(5, days=5)
    config = make_config(overlap_minutes=7)
    await run_source(config, store, config.sources[0], "full")
    mark = await store.watermark("shop")
    assert mark is not None
    diff = await run_source(config, store, config.sources[0], "differential")
    assert diff.window.start == mark - timedelta(minutes=7)
    assert await store.watermark("shop") == settled_watermark(diff.window.end)
    # a change stamped inside the overlap (a late writer on Mirakl's side) is still caught
    order = next(iter(sim_state.orders.values()))
    order["last_updated_date"] = iso(diff.window.end - timedelta(minutes=3))
    order["order_state"] = "CLOSED"
    await run_source(config, store, config.sources[0], "differential")
    row = await pool.fetchrow(
        "SELECT order_state, last_updated_date FROM orders WHERE order_id = $1", order["order_id"]
    )
    assert row["order_state"] == "CLOSED"
    assert row["last_updated_date"] == parse_instant(order["last_updated_date"])


async def test_an_update_in_the_window_ends_second_stays_above_the_watermark(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """Mirakl stamps whole seconds: an order updated after the export was cut, in the same
    second as the window's end, carries a date at or before that end. The watermark stops
    before that second, so it never claims the order; the next run brings it."""
    sim_state.seed_orders(20, days=5)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    diff = await run_source(config, store, config.sources[0], "differential")
    order_id = next(iter(sim_state.orders))
    touch_order(sim_state.rng, sim_state.orders[order_id], diff.window.end)
    sim_state.changed(order_id)
    stamped = parse_instant(sim_state.orders[order_id]["last_updated_date"])
    assert stamped <= diff.window.end, "the same second as the window's end"
    mark = await store.watermark("shop")
    assert mark is not None and mark < stamped, "the watermark claims an order it never saw"
    await run_source(config, store, config.sources[0], "differential")
    await assert_matches_truth(pool, sim_state)
