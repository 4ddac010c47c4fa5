"""PostgreSQL killed under a run or the service: one readable line, no traceback, metrics
that keep telling the truth. A throwaway cluster (tests/killable.py) is killed for real."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from syncer.config import DatabaseConfig, ExportConfig, HttpConfig, Secret, SourceConfig
from syncer.dates import utc_now
from syncer.errors import DatabaseError
from syncer.mirakl import open_client
from syncer.pipeline.run import SyncRun
from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.store.db import open_pool
from syncer.store.migrate import migrate
from syncer.store.sync_store import SyncStore
from tests.conftest import write_config
from tests.killable import KillableCluster, killable_cluster
from tests.test_service import free_port, metric
from tests.workers import start

SCHEMA = "mirakl"


@pytest.fixture
async def cluster() -> AsyncIterator[KillableCluster]:
    with killable_cluster() as made:
        conn = await asyncpg.connect(made.dsn)
        try:
            await migrate(conn, SCHEMA)
        finally:
            await conn.close()
        yield made


def slow_sim(pending_seconds: float = 0.1, piece_delay_seconds: float = 0.01) -> SimulatorState:
    """Like crash_sim: a few chunks that stream in pieces, slowly enough to be caught mid-way."""
    state = SimulatorState(SimulatorConfig(pending_polls=2, seed=11))
    state.config.pending_seconds = pending_seconds
    state.config.max_items_per_chunk = 60
    state.config.chunk_piece_bytes = 4 * 1024
    state.config.chunk_piece_delay_seconds = piece_delay_seconds
    state.seed_orders(240, days=700)
    return state


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def assert_json_lines_only(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line is a JSON log line: no traceback, no stdlib logging text."""
    assert "Traceback" not in stderr, stderr
    events = []
    for line in stderr.splitlines():
        if line.strip():
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                raise AssertionError(f"not a JSON log line: {line!r}\n{stderr}") from None
    return events


async def test_database_killed_during_a_sync_is_one_readable_line(
    tmp_path: Path, cluster: KillableCluster
) -> None:
    """kill -9 of PostgreSQL while `syncer resync --full` streams chunks: exit 1, one line
    saying the connection was lost, stderr only JSON log lines (asyncpg's own included)."""
    state = slow_sim()
    async with serve(state) as url:
        path = write_config(
            tmp_path / "c.toml",
            dsn=cluster.dsn,
            schema=SCHEMA,
            base_url=url,
            api_key=state.config.api_key,
        )
        proc = await start(path, "resync", "--full")
        try:
            await wait_until(lambda: _true(state.calls["OR15"] >= 2), "a chunk download")
            await asyncio.sleep(0.05)
            cluster.kill()
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 1, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shop: failed: PostgreSQL connection lost"), out
    assert "__aexit__" not in lines[0]
    events = assert_json_lines_only(err.decode())
    failed = [e for e in events if e["event"] == "run_failed"]
    assert failed and "PostgreSQL connection lost" in failed[0]["error"], events


async def _true(value: bool) -> bool:
    return value


async def test_database_killed_during_the_merge_leaves_no_unretrieved_task_error(
    cluster: KillableCluster,
) -> None:
    """PostgreSQL dies while the merger is inside a batch and the next batch is being staged:
    the run fails with DatabaseError ("connection lost") and no task's exception is left for
    asyncio to report ("Task exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    state = slow_sim(piece_delay_seconds=0.2)
    blocker = await asyncpg.connect(cluster.dsn, server_settings={"search_path": SCHEMA})
    try:
        async with (
            serve(state) as url,
            open_pool(DatabaseConfig(dsn=cluster.dsn, schema=SCHEMA)) as pool,
        ):
            source = SourceConfig(
                name="shop", base_url=url, api_key=Secret(state.config.api_key), start_date=None
            )
            http = HttpConfig(timeout_seconds=10, max_attempts=2, backoff_base_seconds=0.01)
            export = ExportConfig(
                poll_interval_seconds=0.02, poll_timeout_minutes=1, batch_orders=5
            )
            async with open_client(source, http) as client:
                run = SyncRun(source, export, http, client, SyncStore(pool, SCHEMA))
                await blocker.execute("BEGIN")
                await blocker.execute("LOCK TABLE orders IN SHARE MODE")  # the merger's 1st write
                task = asyncio.create_task(run.run("full", since=_days_ago(700)))
                await wait_until(lambda: _merge_blocked(blocker), "the merger to block")
                await asyncio.sleep(0.3)  # the producer is staging the next batches
                cluster.kill()
                with pytest.raises(DatabaseError, match="PostgreSQL connection lost"):
                    await asyncio.wait_for(task, timeout=60)
    finally:
        blocker.terminate()
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
        loop.set_exception_handler(previous)
    never_retrieved = [c for c in reported if "never retrieved" in str(c.get("message"))]
    assert not never_retrieved, never_retrieved


async def _merge_blocked(conn: asyncpg.Connection) -> bool:
    """A session waits for the lock on `orders` (pg_locks: pg_stat_activity would show the
    blocker's transaction a snapshot taken at its first read)."""
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'orders'::regclass"
        )
    )


def _days_ago(days: int) -> datetime:
    return utc_now() - timedelta(days=days)


async def test_metrics_keep_telling_the_truth_while_the_database_is_down(
    tmp_path: Path, cluster: KillableCluster
) -> None:
    """`syncer run`, then PostgreSQL killed: /metrics still answers, syncer_state_fresh is 0,
    the lag grows between two scrapes, and the scheduled run that failed before it could
    write a run row is counted as failed."""
    state = SimulatorState(SimulatorConfig(pending_polls=0, seed=5))
    state.seed_orders(20, days=5)
    port = free_port()
    async with serve(state) as url:
        path = write_config(
            tmp_path / "c.toml",
            dsn=cluster.dsn,
            schema=SCHEMA,
            base_url=url,
            api_key=state.config.api_key,
            metrics_port=port,
            extra="interval_minutes = 0.02\n",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syncer", "--config", str(path), "--log-format", "json", "run",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with aiohttp.ClientSession() as http:

                async def scrape() -> str:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        assert resp.status == 200
                        return await resp.text()

                page = ""

                async def succeeded() -> bool:
                    nonlocal page
                    try:
                        page = await scrape()
                    except aiohttp.ClientConnectionError:
                        return False
                    return bool(metric(page, "syncer_runs_total", **_labels("succeeded")))

                await wait_until(succeeded, "a successful scheduled run", within_s=60)
                assert metric(page, "syncer_state_fresh") == 1
                cluster.kill()

                async def stale() -> bool:
                    nonlocal page
                    page = await scrape()
                    return metric(page, "syncer_state_fresh") == 0

                await wait_until(stale, "a scrape that cannot read PostgreSQL")
                first = metric(page, "syncer_watermark_lag_seconds", source="shop")
                assert first is not None
                await asyncio.sleep(2.5)
                page = await scrape()
                second = metric(page, "syncer_watermark_lag_seconds", source="shop")
                assert second is not None and second >= first + 2, (first, second)

                async def failure_counted() -> bool:
                    nonlocal page
                    page = await scrape()
                    return bool(metric(page, "syncer_runs_total", **_labels("failed")))

                await wait_until(failure_counted, "the failed scheduled run in syncer_runs_total")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    events = assert_json_lines_only(err.decode())
    assert any(e["event"] == "scheduled_run_failed" for e in events), events


def _labels(result: str) -> dict[str, str]:
    return {"source": "shop", "mode": "differential", "result": result}
