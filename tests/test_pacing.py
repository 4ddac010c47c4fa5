"""Mirakl's OR13 rules: a busy answer (400 or 409) is waited out, exports are spaced, a long
Retry-After pauses the source, and a full resync goes on from its first unmerged window."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from syncer.commands import run_source
from syncer.config import Config, ExportConfig
from syncer.dates import utc_now
from syncer.errors import MiraklError, RunDeferred
from syncer.mirakl.client import _BUSY_MESSAGE
from syncer.pipeline.window import full_windows
from syncer.simulator import SimulatorState
from syncer.simulator.app import SimExport
from syncer.store.sync_store import SyncStore
from tests.conftest import write_config
from tests.test_cli import run_syncer
from tests.truth import assert_matches_truth

FAST = ExportConfig(
    poll_interval_seconds=0.02,
    poll_timeout_minutes=1,
    batch_orders=13,
    full_export_spacing_minutes=0,
    differential_spacing_minutes=0,
)


@pytest.mark.parametrize("busy_status", [400, 409])
async def test_busy_as_400_or_409_is_waited_out(
    busy_status: int,
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """OR13 refused because another export runs, answered 400 or 409: wait, then succeed."""
    sim_state.config.busy_status = busy_status
    sim_state.seed_orders(20, days=10)
    sim_state.exports["orphan"] = SimExport("orphan", [])  # started by someone else
    config = make_config()
    store = SyncStore(pool, config.database.schema)
    task = asyncio.create_task(run_source(config, store, config.sources[0], "full"))
    for _ in range(500):
        if sim_state.calls["OR13"] >= 2 or task.done():
            break
        await asyncio.sleep(0.01)
    assert not task.done(), "the run must not fail on a busy answer"
    assert sim_state.calls["OR13"] >= 2, "refused and asked again"
    sim_state.exports["orphan"].status = "COMPLETED"
    summary = await asyncio.wait_for(task, 30)
    assert summary.status == "succeeded"
    await assert_matches_truth(pool, sim_state)


async def test_another_400_fails_fast_with_mirakls_message(
    make_config: Callable[..., Config], store: SyncStore, sim_state: SimulatorState
) -> None:
    """An OR13 400 that does not say an export is in progress fails at once, with its message."""
    sim_state.inject("OR13", status=400)
    config = make_config()
    with pytest.raises(MiraklError, match="OR13 answered 400: simulated fault 400"):
        await asyncio.wait_for(run_source(config, store, config.sources[0], "full"), 30)
    assert sim_state.calls["OR13"] == 1


@pytest.mark.parametrize(
    ("message", "busy"),
    [
        ("An export is already in progress for this account", True),
        ("Export already exists for this shop", True),
        ("There is already an export running", True),
        ("AN EXPORT IS CURRENTLY PENDING", True),
        ("Only one export request can be created for the same shop account", True),
        (
            "The interval between the start date and the end date can't be greater than a year",
            False,
        ),
        ("start_update_date must be used with end_update_date", False),
        ("items_per_chunk must be between 10000 and 1000000", False),
    ],
)
def test_busy_phrasings(message: str, busy: bool) -> None:
    """The plausible wordings of 'an export is in progress' are busy; date/field errors are not."""
    assert bool(_BUSY_MESSAGE.search(message)) is busy


async def test_resync_windows_are_spaced(
    make_config: Callable[..., Config], pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """A resync of several one-year windows leaves export.full_export_spacing_minutes
    between its OR13 calls (the simulator's log of call times)."""
    sim_state.seed_orders(40, days=1000)
    spacing_s = 1.2
    config = make_config(
        export=replace(FAST, full_export_spacing_minutes=spacing_s / 60),
        start_date=utc_now() - timedelta(days=1000),
    )
    store = SyncStore(pool, config.database.schema)
    summary = await asyncio.wait_for(run_source(config, store, config.sources[0], "full"), 60)
    assert summary.status == "succeeded" and summary.exports == 3
    times = [when for when, _start, _end in sim_state.or13_log]
    assert len(times) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= spacing_s, gaps
    await assert_matches_truth(pool, sim_state)


async def test_differential_runs_closer_than_the_spacing_are_skipped(
    make_config: Callable[..., Config], store: SyncStore, sim_state: SimulatorState
) -> None:
    """A differential run within export.differential_spacing_minutes of the last
    differential OR13 is skipped with the reason, without calling OR13."""
    sim_state.seed_orders(10, days=10)
    config = make_config(export=replace(FAST, differential_spacing_minutes=5))
    source = config.sources[0]
    await run_source(config, store, source, "full")
    await run_source(config, store, source, "differential")
    calls = sim_state.calls["OR13"]
    with pytest.raises(RunDeferred, match="differential_spacing_minutes") as caught:
        await run_source(config, store, source, "differential")
    assert caught.value.exit_code == 3
    assert sim_state.calls["OR13"] == calls


async def test_resync_failed_at_window_k_resumes_at_window_k(
    make_config: Callable[..., Config], pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """A resync whose window 3 of 4 fails on Mirakl's side: the next resync asks for
    windows 3 and 4 only, says so in its run row, and the data converges."""
    sim_state.seed_orders(60, days=1300)
    sim_state.config.pending_polls = 10
    start = utc_now() - timedelta(days=1300)
    config = make_config(export=FAST, start_date=start)
    store = SyncStore(pool, config.database.schema)
    source = config.sources[0]

    async def fail_third_window() -> None:
        for _ in range(6000):  # 30 s at most
            if len(sim_state.or13_log) >= 3:
                sim_state.inject("OR14", export_status="FAILED")
                return
            await asyncio.sleep(0.005)

    saboteur = asyncio.create_task(fail_third_window())
    with pytest.raises(Exception, match="FAILED"):
        await asyncio.wait_for(run_source(config, store, source, "full"), 60)
    await saboteur
    assert len(sim_state.or13_log) == 3
    first_starts = [s for _, s, _ in sim_state.or13_log]
    sim_state.or13_log.clear()

    summary = await asyncio.wait_for(run_source(config, store, source, "full"), 60)
    assert summary.status == "succeeded" and summary.resumed_from == 3
    resumed_starts = [s for _, s, _ in sim_state.or13_log]
    assert len(resumed_starts) == 2 and resumed_starts[0] == first_starts[2]
    assert resumed_starts[1] is not None and resumed_starts[1] > resumed_starts[0]
    row = await pool.fetchrow(
        "SELECT resumed_from, exports_total FROM sync_runs WHERE run_id = $1", summary.run_id
    )
    assert (row["resumed_from"], row["exports_total"]) == (3, 2)
    assert await pool.fetchval("SELECT status FROM sync_resyncs") == "done"
    await assert_matches_truth(pool, sim_state)

    sim_state.or13_log.clear()
    again = await asyncio.wait_for(run_source(config, store, source, "full", restart=True), 60)
    assert again.resumed_from is None and len(sim_state.or13_log) == len(
        full_windows(start, utc_now())
    ), "--restart starts over from the first window"


async def test_spacing_too_long_for_the_run_defers_and_the_next_run_goes_on(
    make_config: Callable[..., Config], pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """When the spacing does not fit in the run, it stops 'deferred' after window 1,
    records not_before, later runs skip until then, and the resync goes on at window 2."""
    sim_state.seed_orders(30, days=700)  # two windows
    config = make_config(
        export=replace(FAST, full_export_spacing_minutes=10, run_timeout_minutes=0.5),
        start_date=utc_now() - timedelta(days=700),
    )
    store = SyncStore(pool, config.database.schema)
    source = config.sources[0]
    with pytest.raises(RunDeferred, match="full_export_spacing_minutes"):
        await asyncio.wait_for(run_source(config, store, source, "full"), 60)
    assert len(sim_state.or13_log) == 1
    row = await pool.fetchrow("SELECT status, exports_done FROM sync_runs")
    assert (row["status"], row["exports_done"]) == ("deferred", 1)
    with pytest.raises(RunDeferred, match="no export before"):
        await run_source(config, store, source, "differential")
    assert (
        len(sim_state.or13_log) == 1 and await pool.fetchval("SELECT count(*) FROM sync_runs") == 1
    )
    # Ten minutes later (database clock): the pause is over, the spacing respected.
    await pool.execute("UPDATE source_pacing SET not_before = now() - interval '1 second'")
    await pool.execute("UPDATE sync_exports SET requested_at = requested_at - interval '11 min'")
    summary = await asyncio.wait_for(run_source(config, store, source, "differential"), 60)
    assert summary.status == "succeeded" and summary.mode == "full"
    assert summary.resumed_from == 2 and len(sim_state.or13_log) == 2
    await assert_matches_truth(pool, sim_state)


async def test_long_retry_after_pauses_the_source_from_the_command_line(
    tmp_path: Path,
    pg_dsn: str,
    sim_url: str,
    sim_state: SimulatorState,
) -> None:
    """OR13 429 with a Retry-After over http.retry_after_max_seconds: the run stops at once
    (exit 3, 'deferred'), not_before is recorded, the next `sync` is skipped with the reason
    (exit 3, no OR13), and `status` shows NOT BEFORE."""
    schema = f"pace_{os.getpid()}"
    sim_state.seed_orders(30, days=300)
    sim_state.config.or13_min_interval_seconds = 3600
    sim_state.config.or13_retry_after_seconds = 7200
    # Its own schema, which `migrate` creates: not the fixture's, already migrated.
    path = write_config(
        tmp_path / "c.toml",
        dsn=pg_dsn,
        schema=schema,
        base_url=sim_url,
        api_key=sim_state.config.api_key,
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        code, _, err = await run_syncer("--config", str(path), "migrate")
        assert code == 0, err
        code, out, err = await run_syncer("--config", str(path), "resync", "--full")
        assert code == 3, (out, err)
        assert "skipped" in out and "Retry-After" in out and "Traceback" not in err
        assert sim_state.calls["OR13"] == 2  # window 1 accepted, window 2 refused: no retry
        code, out, err = await run_syncer("--config", str(path), "sync")
        assert code == 3 and "no export before" in out and "Traceback" not in err
        assert sim_state.calls["OR13"] == 2
        code, out, err = await run_syncer("--config", str(path), "status", "--json")
        assert code == 0, err
        (record,) = orjson.loads(out)
        assert "Retry-After" in record["not_before"]["reason"]
        assert record["last_run"]["result"] == "deferred"
        assert record["resync"]["windows_merged"] == 1
        code, out, err = await run_syncer("--config", str(path), "status")
        header = out.splitlines()[0]
        assert "NOT BEFORE" in header and "RESYNC" in header
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
