"""The re-scan catches what a differential export silently missed, without moving the
watermark; status and /metrics show never-succeeded sources and stalled watermarks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from syncer.commands import run_source
from syncer.config import Config
from syncer.dates import utc_now
from syncer.errors import RunDeferred
from syncer.health import build_health_app, serve_health
from syncer.metrics import METRICS, Metrics
from syncer.simulator import SimulatorState
from syncer.simulator.orders import iso_seconds
from syncer.store.sync_store import SyncStore
from tests.test_cli import syncer
from tests.test_service import metric
from tests.truth import assert_matches_truth


async def _scrape(store: SyncStore, metrics: Metrics, stale_after_minutes: float = 60.0) -> str:
    app = build_health_app(
        store, ["shop"], metrics, lambda: True, stale_after_minutes=stale_after_minutes
    )
    async with (
        serve_health(app, "127.0.0.1", 0) as port,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


async def _status_json(sim_config: Callable[..., Path]) -> dict:
    """`syncer status --json` on the test's config file (tmp_path / "c.toml"): its one record."""
    path = sim_config()
    code, out, err = await syncer("status", "--json", "--config", str(path))
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 1
    return records[0]


async def test_rescan_finds_an_order_a_differential_export_dropped(
    tmp_path: Path,
    sim_config: Callable[..., Path],
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """An order silently left out of one differential export is loaded by the re-scan
    (corrected 1), then matches Mirakl; status and the metric say so; the watermark stays."""
    sim_state.seed_orders(30, days=10)
    config = make_config()
    source = config.sources[0]
    await run_source(config, store, source, "full")
    sim_state.update_orders(2)
    (missed,) = sim_state.create_orders(1)
    # Seconds before the export's end: below the watermark, which stops short of the end's
    # own second (an update in that second is the next differential's, not a correction).
    created = utc_now() - timedelta(seconds=5)
    for key in ("created_date", "last_updated_date"):
        sim_state.orders[missed][key] = iso_seconds(created)
    sim_state.drop_from_next_export = {missed}
    differential = await run_source(config, store, source, "differential")
    assert differential.status == "succeeded"
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE order_id = $1", missed) == 0
    watermark = await store.watermark("shop")
    before = METRICS.rescan_corrections.labels("shop")._value.get()

    summary = await run_source(config, store, source, "rescan")

    assert summary.status == "succeeded"
    assert summary.mode == "rescan"
    assert summary.orders_changed == 1, "exactly the missed order was corrected"
    await assert_matches_truth(pool, sim_state)
    assert await store.watermark("shop") == watermark, "the re-scan moves no watermark"
    row = await pool.fetchrow(
        "SELECT mode, status, orders_changed FROM sync_runs WHERE run_id = $1", summary.run_id
    )
    assert dict(row) == {"mode": "rescan", "status": "succeeded", "orders_changed": 1}
    assert METRICS.rescan_corrections.labels("shop")._value.get() == before + 1
    text = await _scrape(store, METRICS)
    assert metric(text, "syncer_rescan_corrections_total", source="shop") == before + 1
    record = await _status_json(sim_config)
    assert record["last_rescan"]["run_id"] == summary.run_id
    assert record["last_rescan"]["corrected"] == 1
    assert record["never_succeeded"] is False
    code, out, err = await syncer(
        "status", "--config", str(tmp_path / "c.toml"), env={"COLUMNS": "400"}
    )
    assert code == 0, err
    assert "LAST RESCAN" in out and "corrected 1" in out


async def test_rescan_of_a_complete_mirror_corrects_nothing(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """A re-scan of a mirror that misses nothing changes no order and no watermark."""
    sim_state.seed_orders(25, days=2)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    watermark = await store.watermark("shop")
    synced = await pool.fetchval("SELECT max(synced_at) FROM orders")

    summary = await run_source(config, store, config.sources[0], "rescan")

    assert summary.status == "succeeded"
    assert summary.orders == 25, "the re-scan did read the last days' orders"
    assert summary.orders_changed == 0
    assert await store.watermark("shop") == watermark
    assert await pool.fetchval("SELECT max(synced_at) FROM orders") == synced
    await assert_matches_truth(pool, sim_state)


async def test_rescan_never_moves_the_watermark_backwards_nor_forwards(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """The re-scan window ends at the watermark: orders updated after it are the next
    differential's, and the watermark is where it was."""
    sim_state.seed_orders(10, days=2)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    watermark = await store.watermark("shop")
    assert watermark is not None
    await asyncio.sleep(1.1)  # Mirakl stamps whole seconds: the updates come after it
    sim_state.update_orders(3)

    summary = await run_source(config, store, config.sources[0], "rescan")

    assert summary.window.end == watermark
    assert summary.orders_changed == 0, "updates after the watermark are no corrections"
    assert await store.watermark("shop") == watermark
    later = await run_source(config, store, config.sources[0], "differential")
    assert later.orders_changed == 3
    assert (await store.watermark("shop") or watermark) > watermark
    await assert_matches_truth(pool, sim_state)


async def test_rescan_of_a_never_synced_source_is_deferred(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """With no watermark there is nothing to re-scan: the run is skipped, not a success."""
    config = make_config()
    with pytest.raises(RunDeferred, match="never synced"):
        await run_source(config, store, config.sources[0], "rescan")
    assert sim_state.calls["OR13"] == 0
    assert await pool.fetchval("SELECT count(*) FROM sync_runs") == 0


async def test_stalled_watermark_is_reported(
    tmp_path: Path,
    sim_config: Callable[..., Path],
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """A watermark that has not moved for longer than the threshold while a run started
    since succeeded is STALLED in status --json and syncer_watermark_stalled is 1."""
    sim_state.seed_orders(10, days=2)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    fresh = await _scrape(store, Metrics())
    assert metric(fresh, "syncer_watermark_stalled", source="shop") == 0
    assert (await _status_json(sim_config))["stalled"] is False
    # The watermark last moved two hours ago; a run (the re-scan) succeeds without moving it.
    await pool.execute("UPDATE sync_state SET moved_at = now() - interval '2 hours'")
    summary = await run_source(config, store, config.sources[0], "rescan")
    assert summary.status == "succeeded"

    record = await _status_json(sim_config)
    assert record["stalled"] is True
    text = await _scrape(store, Metrics())
    assert metric(text, "syncer_watermark_stalled", source="shop") == 1
    not_yet = await _scrape(store, Metrics(), stale_after_minutes=180)
    assert metric(not_yet, "syncer_watermark_stalled", source="shop") == 0
    code, out, err = await syncer(
        "status", "--config", str(tmp_path / "c.toml"), env={"COLUMNS": "400"}
    )
    assert code == 0, err
    assert "STALLED" in out.splitlines()[1]


async def test_never_succeeded_source_is_reported(
    tmp_path: Path,
    sim_config: Callable[..., Path],
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """A source whose only run failed is `never` succeeded in status and 1 in
    syncer_source_never_succeeded; its failed run is not shown as a success."""
    sim_state.seed_orders(5, days=2)
    sim_state.inject("OR13", status=400)
    config = make_config()
    with pytest.raises(Exception, match="400"):
        await run_source(config, store, config.sources[0], "full")
    text = await _scrape(store, Metrics())
    assert metric(text, "syncer_source_never_succeeded", source="shop") == 1
    record = await _status_json(sim_config)
    assert record["never_succeeded"] is True
    assert record["last_success"] is None
    assert record["last_run"]["result"] == "failed"
    code, out, err = await syncer(
        "status", "--config", str(tmp_path / "c.toml"), env={"COLUMNS": "400"}
    )
    assert code == 0, err
    assert "never" in out.splitlines()[1]

    await run_source(config, store, config.sources[0], "full")
    text = await _scrape(store, Metrics())
    assert metric(text, "syncer_source_never_succeeded", source="shop") == 0
