"""SIGKILL a real `syncer sync` / `syncer resync --full` at many points, then rerun until it
succeeds: the tables end equal to the truth, and the watermark is never ahead of the data."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from syncer.dates import parse_instant
from syncer.simulator import SimulatorState
from tests.truth import assert_matches_truth, staging_left
from tests.workers import rerun_until_success, start

APP = "mirakl-order-sync"


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def assert_watermark_not_ahead(conn: asyncpg.Connection, state: SimulatorState) -> None:
    """Every order Mirakl updated at or before the watermark is stored at exactly that version."""
    mark = await conn.fetchval("SELECT watermark FROM sync_state WHERE source = 'shop'")
    if mark is None:
        return
    stored = {
        r["order_id"]: r["last_updated_date"]
        for r in await conn.fetch("SELECT order_id, last_updated_date FROM orders")
    }
    for order_id, order in state.orders.items():
        updated = parse_instant(order["last_updated_date"])
        if updated <= mark:
            assert stored.get(order_id) == updated, f"{order_id} missing below the watermark"


async def lock_wait(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
            APP,
        )
    )


POINTS = ["or13", "polling", "download", "merge", "commit"]


@pytest.mark.parametrize("command", ["resync", "sync"])
@pytest.mark.parametrize("point", POINTS)
async def test_kill_at_each_stage_then_rerun_converges(
    point: str,
    command: str,
    config_file: Path,
    db: asyncpg.Connection,
    crash_sim: SimulatorState,
    pg_dsn: str,
    schema: str,
) -> None:
    """SIGKILL during OR13, polling, download/COPY, merge, and just before commit; reruns converge."""
    if command == "sync":  # a loaded database, then changes, then a differential run
        assert await rerun_until_success(config_file, ("resync", "--full")) == 1
        crash_sim.update_orders(40)
        crash_sim.create_orders(10)
        args: tuple[str, ...] = ("sync",)
    else:
        args = ("resync", "--full")
    calls = crash_sim.calls.copy()
    blocker: asyncpg.Connection | None = None
    if point == "or13":
        crash_sim.inject("OR13", delay_seconds=0.5)
    if point in ("merge", "commit"):
        blocker = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
        await blocker.execute("BEGIN")
        # orders: the merge's first write; sync_state: its last statement before COMMIT.
        await blocker.execute(
            f"LOCK TABLE {'orders' if point == 'merge' else 'sync_state'} IN SHARE MODE"
        )
    proc = await start(config_file, *args)
    try:
        if point == "or13":
            await wait_until(lambda: _gt(crash_sim.calls["OR13"], calls["OR13"]), "OR13")
        elif point == "polling":
            await wait_until(lambda: _gt(crash_sim.calls["OR14"], calls["OR14"] + 1), "polling")
        elif point == "download":
            await wait_until(lambda: _gt(crash_sim.calls["OR15"], calls["OR15"]), "a download")
            await asyncio.sleep(0.05)
        else:
            await wait_until(lambda: lock_wait(db), "the merge to block")
        proc.kill()
        await proc.wait()
    finally:
        if blocker is not None:
            await blocker.execute("ROLLBACK")
            await blocker.close()
    assert proc.returncode == -signal.SIGKILL
    await assert_watermark_not_ahead(db, crash_sim)
    assert (await staging_left(db))[1] == 1, "the killed run's staging table is left behind"
    or13_before_rerun = crash_sim.calls["OR13"]
    await rerun_until_success(config_file, args)
    if point in ("polling", "download", "merge", "commit") and command == "sync":
        assert crash_sim.calls["OR13"] == or13_before_rerun, "the export in flight was resumed"
    await assert_watermark_not_ahead(db, crash_sim)
    await assert_matches_truth(db, crash_sim)
    dead = await db.fetchval("SELECT count(*) FROM sync_runs WHERE status = 'interrupted'")
    assert dead >= 1, "the killed run is closed as interrupted by the next one"
    assert await db.fetchval("SELECT count(*) FROM sync_runs WHERE status = 'running'") == 0
    assert await staging_left(db) == (0, 0), "the next run dropped it"


async def _gt(value: int, than: int) -> bool:
    return value > than


@pytest.mark.parametrize("seed", range(8))
async def test_kill_at_random_moments_never_loses_or_duplicates(
    seed: int,
    config_file: Path,
    db: asyncpg.Connection,
    crash_sim: SimulatorState,
    pg_dsn: str,
    schema: str,
) -> None:
    """Kills at random times across a full resync and two differential runs; then reruns."""
    rng = random.Random(seed)
    for step, args in enumerate([("resync", "--full"), ("sync",), ("sync",)]):
        if step:
            crash_sim.update_orders(30)
            crash_sim.create_orders(5)
        proc = await start(config_file, *args)
        await asyncio.sleep(rng.uniform(0.05, 1.6 if step == 0 else 0.9))
        proc.kill()
        await proc.wait()
        await assert_watermark_not_ahead(db, crash_sim)
        await rerun_until_success(config_file, args)
        await assert_watermark_not_ahead(db, crash_sim)
    await assert_matches_truth(db, crash_sim)


async def test_sigterm_during_a_run_ends_it_cleanly(
    config_file: Path, db: asyncpg.Connection, crash_sim: SimulatorState, pg_dsn: str, schema: str
) -> None:
    """SIGTERM mid-download: exit 143, run row 'interrupted' with the reason, nothing half-merged."""
    proc = await start(config_file, "resync", "--full")
    await wait_until(lambda: _gt(crash_sim.calls["OR15"], 0), "a download")
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err.decode().splitlines()[-1]
    run = await db.fetchrow("SELECT status, error FROM sync_runs ORDER BY run_id DESC LIMIT 1")
    assert run["status"] == "interrupted" and run["error"] == "interrupted by shutdown"
    assert await staging_left(db) == (0, 1), "left for the next run: a shutdown waits for no lock"
    assert await db.fetchval("SELECT watermark FROM sync_state") is None
    await rerun_until_success(config_file, ("resync", "--full"))
    await assert_matches_truth(db, crash_sim)
    assert await staging_left(db) == (0, 0)


async def test_a_resync_killed_after_window_k_resumes_there(
    config_file: Path, db: asyncpg.Connection, crash_sim: SimulatorState, pg_dsn: str, schema: str
) -> None:
    """SIGKILL once two windows of a full resync are merged: the rerun asks Mirakl for no
    window before the third, says where it resumed in its run row, and converges."""
    proc = await start(config_file, "resync", "--full")

    async def two_windows_merged() -> bool:
        merged = await db.fetchval("SELECT count(*) FROM sync_exports WHERE status = 'merged'")
        return bool(merged >= 2)

    await wait_until(two_windows_merged, "two merged windows", within_s=60)
    proc.kill()
    await proc.wait()
    windows = sorted(start for _, start, _ in crash_sim.or13_log if start is not None)
    assert len(windows) >= 2, "the resync spans at least three windows"
    merged_before = await db.fetchval("SELECT count(*) FROM sync_exports WHERE status = 'merged'")
    crash_sim.or13_log.clear()

    await rerun_until_success(config_file, ("resync", "--full"))

    asked = [start for _, start, _ in crash_sim.or13_log if start is not None]
    assert all(start > windows[merged_before - 1] for start in asked), (
        "a merged window was asked for again"
    )
    resumed = await db.fetchval(
        "SELECT resumed_from FROM sync_runs WHERE status = 'succeeded' ORDER BY run_id DESC LIMIT 1"
    )
    assert resumed == merged_before + 1
    await assert_matches_truth(db, crash_sim)
