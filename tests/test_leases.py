"""Several sources in one service, leases instead of session locks, and a deadline on every
database wait: real PostgreSQL, the simulator over loopback, real `syncer` subprocesses."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from syncer.commands import run_source
from syncer.config import Config, ExportConfig
from syncer.errors import DatabaseError, LeaseLost, RunSkipped, RunTimeout
from syncer.health import build_health_app, serve_health
from syncer.metrics import Metrics
from syncer.scheduler import Liveness
from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.store.db import Database
from syncer.store.lease import LeaseKeeper
from syncer.store.sync_store import SyncStore
from tests.conftest import write_config
from tests.test_cli import assert_one_clear_line, syncer
from tests.test_service import free_port
from tests.workers import start


async def wait_until(check: Callable[[], object], what: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def sources_toml(urls: list[str], api_key: str) -> str:
    return "".join(
        f'\n[[sources]]\nname = "shop{i}"\nbase_url = "{url}"\napi_key = "{api_key}"\n'
        "start_date = 2024-01-01\n"
        for i, url in enumerate(urls)
    )


@pytest.mark.parametrize("sources", [1, 2, 5, 20])
async def test_run_with_many_sources_syncs_every_one_with_bounded_concurrency(
    sources: int, tmp_path: Path, pg_dsn: str, schema: str, db: asyncpg.Connection
) -> None:
    """`syncer run` with N sources: every source gets a run, never more than
    service.max_concurrent_runs at once, and no start-up deadlock."""
    async with AsyncExitStack() as stack:
        states = [SimulatorState(SimulatorConfig(pending_polls=1, seed=i)) for i in range(sources)]
        for state in states:
            state.seed_orders(5, days=5)
        urls = [await stack.enter_async_context(serve(state)) for state in states]
        path = write_config(
            tmp_path / "c.toml", dsn=pg_dsn, schema=schema, base_url=urls[0], api_key="unused"
        )
        text = path.read_text()
        text = text[: text.index("[[sources]]")].replace(
            "[service]\n", "[service]\nmax_concurrent_runs = 3\nmax_concurrent_pushes = 2\n"
        )
        path.write_text(text + sources_toml(urls, states[0].config.api_key))
        service = await start(path, "run")
        try:

            async def all_synced() -> bool:
                done = await db.fetchval(
                    "SELECT count(DISTINCT source) FROM sync_runs WHERE status = 'succeeded'"
                )
                return int(done) == sources

            await wait_until(all_synced, f"a successful run of each of {sources} sources", 120)
        finally:
            service.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(service.communicate(), timeout=30)
        assert service.returncode == 0, err.decode()[-3000:]
    runs = await db.fetch(
        "SELECT started_at, finished_at FROM sync_runs WHERE finished_at IS NOT NULL"
    )
    for run in runs:
        at_once = sum(1 for r in runs if r["started_at"] <= run["started_at"] < r["finished_at"])
        assert at_once <= 3, "more runs at once than service.max_concurrent_runs"


async def test_a_pool_smaller_than_the_limits_is_refused(tmp_path: Path) -> None:
    """database.pool_size below max_concurrent_runs x 3 + pushes + 2: exit 2 naming the key."""
    path = tmp_path / "c.toml"
    path.write_text(
        "[database]\npool_size = 5\n[service]\nmax_concurrent_runs = 2\n"
        '[[sources]]\nname = "a"\nbase_url = "http://x"\napi_key = "k"\n'
    )
    code, _, err = await syncer("--config", str(path), "run")
    assert code == 2
    assert_one_clear_line(err, "database.pool_size")
    assert "at least 10" in err


async def test_waiting_for_a_pool_connection_ends_in_a_named_error(pg_dsn: str) -> None:
    """A pool whose connections are all busy: acquire fails after its timeout, naming the key."""
    raw = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    db = Database(raw, acquire_timeout_seconds=0.3)
    try:
        async with db.acquire():
            started = time.monotonic()
            with pytest.raises(DatabaseError, match=r"database\.acquire_timeout_seconds"):
                await db.fetchval("SELECT 1")
            assert time.monotonic() - started < 5
    finally:
        await raw.close()


@pytest.fixture
def slow_sim(sim_state: SimulatorState) -> SimulatorState:
    """Exports that take seconds: chunks stream in small, slow pieces."""
    sim_state.seed_orders(120, days=30)
    sim_state.config.max_items_per_chunk = 30
    sim_state.config.chunk_piece_bytes = 4 * 1024
    sim_state.config.chunk_piece_delay_seconds = 0.03
    return sim_state


async def steal(conn: asyncpg.Connection, kind: str = "run") -> None:
    """Another process takes the lease over (as if it had expired)."""
    await conn.execute(
        "UPDATE leases SET holder = 'thief', token = token + 1,"
        " expires_at = clock_timestamp() + interval '1 hour' WHERE kind = $1",
        kind,
    )


async def test_a_stolen_lease_stops_the_run_before_it_commits(
    make_config: Callable[..., Config],
    store: SyncStore,
    slow_sim: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """Lease taken over mid-download (no heartbeat in time): the merge's commit checks it,
    rolls back, the run fails with LeaseLost, the watermark does not move."""
    config = make_config()
    run = asyncio.create_task(run_source(config, store, config.sources[0], "full"))
    await wait_until(lambda: slow_sim.calls["OR15"] > 0, "a download")
    await steal(db)
    with pytest.raises(LeaseLost, match="lease was lost"):
        await run
    assert await db.fetchval("SELECT watermark FROM sync_state") is None
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    row = await db.fetchrow("SELECT status, error FROM sync_runs")
    assert row["status"] == "failed" and "lease was lost" in row["error"]
    assert await db.fetchval("SELECT holder FROM leases WHERE kind = 'run'") == "thief"


async def test_the_heartbeat_notices_a_lost_lease_and_stops_the_run(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    schema: str,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """While the run only polls (nothing to commit), a lease taken over is noticed by the
    next renewal: the run fails with LeaseLost and its export stays in flight."""
    sim_state.seed_orders(10, days=5)
    sim_state.config.pending_polls = 10**6
    store = SyncStore(pool, schema, leases=LeaseKeeper(Database(pool), ttl_seconds=3))
    config = make_config()
    run = asyncio.create_task(run_source(config, store, config.sources[0], "full"))
    await wait_until(lambda: sim_state.calls["OR14"] > 2, "polling")
    await steal(db)
    started = time.monotonic()
    with pytest.raises(LeaseLost, match="expired or taken over"):
        await run
    assert time.monotonic() - started < 10
    row = await db.fetchrow("SELECT status, error FROM sync_runs")
    assert row["status"] == "failed" and "lease was lost" in row["error"]
    assert await db.fetchval("SELECT status FROM sync_exports") == "requested"
    assert await db.fetchval("SELECT watermark FROM sync_state") is None


@pytest.fixture
async def tagged_pool(pg_dsn: str, schema: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A pool whose sessions the test can find (and kill) by application_name."""
    tag = f"lease-test-{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(
        pg_dsn,
        min_size=1,
        max_size=4,
        server_settings={"search_path": schema, "application_name": tag},
    )
    try:
        yield pool, tag
    finally:
        await pool.close()


async def test_killed_sessions_do_not_free_the_source_for_another_run(
    make_config: Callable[..., Config],
    tagged_pool: tuple[asyncpg.Pool, str],
    pool: asyncpg.Pool,
    schema: str,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """pg_terminate_backend on every idle session of a running worker: its lease stays, a
    second worker's run is skipped, and the first run ends well with its staging intact."""
    sim_state.seed_orders(20, days=5)
    sim_state.config.pending_polls = 30
    first_pool, tag = tagged_pool
    first = SyncStore(first_pool, schema, leases=LeaseKeeper(Database(first_pool), ttl_seconds=3))
    second = SyncStore(pool, schema, leases=LeaseKeeper(Database(pool), ttl_seconds=3))
    config = replace(make_config(), export=ExportConfig(poll_interval_seconds=0.1, batch_orders=13))
    run = asyncio.create_task(run_source(config, first, config.sources[0], "full"))
    await wait_until(lambda: sim_state.calls["OR14"] > 2, "polling")
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1 AND state = 'idle'",
        tag,
    )
    assert killed >= 1
    await asyncio.sleep(1.5)  # past a renewal, on a new connection
    with pytest.raises(RunSkipped, match="another run holds the lock"):
        await run_source(config, second, config.sources[0], "full")
    summary = await run
    assert summary.status == "succeeded" and summary.orders == 20
    rows = await db.fetch("SELECT status FROM sync_runs")
    assert [r["status"] for r in rows] == ["succeeded"]


async def test_idle_session_timeout_does_not_let_a_second_run_in(
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    crash_sim: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """With idle_session_timeout = 1 s on the worker's sessions, a second `syncer sync`
    started mid-run is skipped (exit 3); the first succeeds; the runs never overlap."""
    dsn = pg_dsn + ("&" if "?" in pg_dsn else "?") + "idle_session_timeout=1000"
    path = write_config(
        tmp_path / "c.toml",
        dsn=dsn,
        schema=schema,
        base_url=sim_url,
        api_key=crash_sim.config.api_key,
    )
    first = await start(path, "sync")
    await wait_until(lambda: crash_sim.calls["OR14"] > 4, "polling past the idle timeout")
    second = await start(path, "sync")
    out2, _ = await asyncio.wait_for(second.communicate(), timeout=60)
    out1, err1 = await asyncio.wait_for(first.communicate(), timeout=90)
    assert first.returncode == 0, (out1.decode(), err1.decode()[-3000:])
    assert second.returncode == 3, out2.decode()
    assert "another run holds the lock; skipped" in out2.decode()
    runs = await db.fetch("SELECT status FROM sync_runs ORDER BY run_id")
    assert [r["status"] for r in runs] == ["succeeded"]


async def test_the_run_deadline_fails_the_run_and_keeps_the_export(
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """Past export.run_timeout_minutes the run fails with one line naming the key; the
    export stays in flight for the next run."""
    sim_state.seed_orders(10, days=5)
    sim_state.config.pending_polls = 10**6
    config = make_config(
        export=ExportConfig(
            poll_interval_seconds=0.05, poll_timeout_minutes=5, run_timeout_minutes=0.05
        )
    )
    started = time.monotonic()
    with pytest.raises(RunTimeout, match=r"export\.run_timeout_minutes") as caught:
        await run_source(config, store, config.sources[0], "full")
    assert 2.5 < time.monotonic() - started < 20
    assert "\n" not in str(caught.value)
    row = await db.fetchrow("SELECT status, error FROM sync_runs")
    assert row["status"] == "failed" and "export.run_timeout_minutes" in row["error"]
    assert await db.fetchval("SELECT status FROM sync_exports") == "requested"
    assert await db.fetchval("SELECT count(*) FROM leases WHERE expires_at > now()") == 0


LOCKED_CONFIG = "lock_timeout_seconds = 1\n"


@pytest.mark.parametrize("command", ["sync", "status"])
async def test_an_analyst_lock_fails_the_command_within_the_lock_timeout(
    sim_config: Callable[..., Path],
    command: str,
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    sim_state: SimulatorState,
) -> None:
    """`LOCK TABLE orders IN ACCESS EXCLUSIVE MODE` held by someone else: `sync` and
    `status` fail after database.lock_timeout_seconds with one line naming orders and the
    key, instead of waiting for ever."""
    sim_state.seed_orders(10, days=5)
    path = sim_config()
    path.write_text(path.read_text().replace("[database]\n", "[database]\n" + LOCKED_CONFIG))
    analyst = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        await analyst.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        code, out, err = await asyncio.wait_for(syncer("--config", str(path), command), 60)
        elapsed = time.monotonic() - started
    finally:
        await analyst.execute("ROLLBACK")
        await analyst.close()
    text = (out + err).strip()
    assert code == 1, text
    assert elapsed < 30
    lines = text.splitlines()
    failure = [x for x in lines if "lock timeout" in x and not x.startswith("{")]
    assert len(failure) == 1, text  # the command's one line (the JSON log says it once too)
    assert sum(1 for x in lines if x.startswith("{") and "lock timeout" in x) <= 1
    assert "orders" in failure[0] and "database.lock_timeout_seconds" in failure[0]


async def test_readyz_answers_503_quickly_while_the_database_is_locked(
    sim_config: Callable[..., Path],
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    sim_state: SimulatorState,
) -> None:
    """A table /readyz reads is locked by someone else: /readyz says 503 within seconds,
    never hangs; /healthz (no database) stays 200."""
    port = free_port()
    path = sim_config(
        metrics_port=port,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncer", "--config", str(path), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    analyst = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"{base}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(ready, "the service to be ready", 40)
            await analyst.execute("BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
            statuses = []
            for _ in range(6):
                started = time.monotonic()
                async with http.get(f"{base}/readyz") as resp:
                    statuses.append((resp.status, await resp.json()))
                assert time.monotonic() - started < 5, "readyz must not hang"
                if resp.status == 503:
                    break
                await asyncio.sleep(1)
            assert statuses[-1][0] == 503, statuses
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
    finally:
        await analyst.execute("ROLLBACK")
        await analyst.close()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()[-3000:]


async def test_healthz_fails_when_no_job_progresses(pool: asyncpg.Pool, schema: str) -> None:
    """No job started or finished for longer than allowed: /healthz says 503 and why."""
    liveness = Liveness(stall_seconds=0.2)
    app = build_health_app(
        SyncStore(pool, schema), ["shop"], Metrics(), lambda: True, liveness=liveness
    )
    async with serve_health(app, "127.0.0.1", 0) as port, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        await asyncio.sleep(0.5)
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 503
            assert (await resp.json())["no_job_progress_seconds"] > 0.2


async def test_a_stolen_push_lease_sends_nothing_and_changes_no_row(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """The push lease taken over while the pusher waits for the rate limit: start_call's
    commit checks it, nothing is marked sent, no OR04 call goes out, LeaseLost."""
    from syncer.commands import push_source
    from syncer.config import PushConfig

    config = make_config(push=PushConfig(min_interval_seconds=3, interval_seconds=1))
    await db.execute(
        "INSERT INTO order_patches (source, order_id, patch) VALUES ('shop', 'Order_1-A',"
        ' \'{"shop_statistics": {"excluded": true, "reason": "test"}}\')'
    )
    await db.execute(
        "INSERT INTO push_calls (source, orders, status, finished_at)"
        " VALUES ('shop', 1, 'answered', clock_timestamp())"
    )
    push = asyncio.create_task(push_source(config, pool, config.sources[0]))
    await wait_until(
        lambda: db.fetchval("SELECT count(*) FROM leases WHERE kind = 'push'"), "the push lease"
    )
    await asyncio.sleep(0.5)
    await steal(db, "push")
    with pytest.raises(LeaseLost, match="push lease was lost"):
        await push
    assert sim_state.calls["OR04"] == 0
    assert await db.fetchval("SELECT status FROM order_patches") == "pending"
    assert await db.fetchval("SELECT count(*) FROM push_calls") == 1
