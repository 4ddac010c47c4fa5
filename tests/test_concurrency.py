"""Two `sync` processes and a `run` service on the same source and database at once."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path

import asyncpg
import orjson

from syncer.simulator import SimulatorState
from tests.truth import assert_matches_truth
from tests.workers import rerun_until_success, start


async def test_exactly_one_run_per_source_at_a_time(
    config_file: Path, db: asyncpg.Connection, crash_sim: SimulatorState, pg_dsn: str, schema: str
) -> None:
    """Runs never overlap: the source's lease makes the others skip with a clear line."""
    assert await rerun_until_success(config_file, ("resync", "--full")) == 1
    crash_sim.update_orders(50)
    text = config_file.read_text().replace(
        "start_date = 2024-01-01", "start_date = 2024-01-01\ninterval_minutes = 0.01"
    )
    config_file.write_text(text)
    service = await start(config_file, "run")
    syncs = [await start(config_file, "sync") for _ in range(2)]
    results = [await asyncio.wait_for(p.communicate(), timeout=60) for p in syncs]
    codes = [p.returncode for p in syncs]
    assert set(codes) <= {0, 3}, results
    for proc, (out, _) in zip(syncs, results, strict=True):
        if proc.returncode == 3:
            assert "another run holds the lock; skipped" in out.decode()
    await asyncio.sleep(1.5)
    service.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(service.communicate(), timeout=30)
    assert service.returncode == 0
    events = [orjson.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert 3 in codes or any(e["event"] == "run_skipped" for e in events), "some run had to skip"
    runs = await db.fetch(
        "SELECT run_id, started_at, finished_at, status FROM sync_runs ORDER BY started_at"
    )
    assert all(r["status"] in ("succeeded", "interrupted") for r in runs)
    for earlier, later in itertools.pairwise(runs):
        assert earlier["finished_at"] <= later["started_at"], "two runs of one source overlapped"
    await rerun_until_success(config_file, ("sync",))
    await assert_matches_truth(db, crash_sim)
