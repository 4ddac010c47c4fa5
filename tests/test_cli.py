"""The CLI as people use it: real subprocesses, real config files, real exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from syncer.simulator import SimulatorState
from tests.conftest import write_config
from tests.truth import assert_matches_truth


async def syncer(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run `python -m syncer ARGS` to completion; return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncer",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


run_syncer = syncer  # for tests that wrap it


def assert_one_clear_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


BASE = """
[[sources]]
name = "shop"
base_url = "http://127.0.0.1:1"
api_key = "k"
"""


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "[export]\npoll_interval_seconds = 'fast'\n" + BASE,
            ["export.poll_interval_seconds", "must be a number, got string"],
        ),
        (
            "[export]\nitems_per_chunk = 5\n" + BASE,
            ["export.items_per_chunk", "between 10000 and 1000000"],
        ),
        ("[database]\nschema = 'Bad-Name'\n" + BASE, ["database.schema"]),
        ("[database]\nport = 5\n" + BASE, ["database.port", "unknown key"]),
        ('[[sources]]\nname = "shop"\napi_key = "k"\n', ["sources.shop.base_url", "missing"]),
        (
            '[[sources]]\nname = "shop"\nbase_url = "http://x"\n',
            ["sources.shop.api_key", "missing"],
        ),
        (BASE + 'auth = "basic"\n', ["sources.shop.auth", '"shop" or "bearer"']),
        (BASE + 'start_date = "last year"\n', ["sources.shop.start_date", "2024-01-01T00:00:00Z"]),
        (BASE + "interval_minutes = true\n", ["sources.shop.interval_minutes", "must be a number"]),
        ("this is = not toml [", ["invalid TOML"]),
        (BASE + BASE, ["sources", "used twice"]),
    ],
)
async def test_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    """Wrong types, missing or unknown keys: exit 2, one line that names the key, no traceback."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    code, _, err = await syncer("--config", str(path), "sync")
    assert code == 2
    assert_one_clear_line(err, *needles)


async def test_missing_config_file_is_named(tmp_path: Path) -> None:
    """No config file: the path is named."""
    code, _, err = await syncer("--config", str(tmp_path / "nope.toml"), "status")
    assert code == 2
    assert_one_clear_line(err, "config file not found", "nope.toml")


async def test_default_config_comes_from_env_then_cwd(tmp_path: Path) -> None:
    """Without --config, $SYNCER_CONFIG is used, else ./config.toml."""
    code, _, err = await syncer("status", env={"SYNCER_CONFIG": str(tmp_path / "env.toml")})
    assert code == 2 and "env.toml" in err
    code, _, err = await syncer("status", cwd=tmp_path)
    assert code == 2 and "config.toml" in err


async def test_unknown_source_and_unset_key_env(tmp_path: Path) -> None:
    """An unknown --source lists the known ones; an unset api_key_env names the variable."""
    path = tmp_path / "c.toml"
    path.write_text(BASE)
    code, _, err = await syncer("--config", str(path), "sync", "--source", "other")
    assert code == 2
    assert_one_clear_line(err, "unknown source 'other'", "configured: shop")
    path.write_text(BASE.replace('api_key = "k"', 'api_key_env = "SYNCER_TEST_UNSET_KEY"'))
    code, _, err = await syncer("--config", str(path), "sync")
    assert code == 2
    assert_one_clear_line(err, "SYNCER_TEST_UNSET_KEY is not set")


async def test_wrong_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    """resync without --full, or a bad --since, is refused in one line."""
    code, _, err = await syncer("resync")
    assert code == 2
    assert_one_clear_line(err, "--full")
    path = tmp_path / "c.toml"
    path.write_text(BASE)
    code, _, err = await syncer(
        "--config", str(path), "resync", "--full", "--since", "last tuesday"
    )
    assert code == 2
    assert_one_clear_line(err, "--since", "last tuesday")


async def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    """A database that does not answer: exit 1, one line naming it, password hidden."""
    path = tmp_path / "c.toml"
    path.write_text('[database]\ndsn = "postgresql://u:hunter2@127.0.0.1:1/db"\n' + BASE)
    code, _, err = await syncer("--config", str(path), "status")
    assert code == 1
    assert_one_clear_line(err, "cannot connect to PostgreSQL", "127.0.0.1:1")
    assert "hunter2" not in err


async def test_migrate_sync_status_from_the_command_line(
    tmp_path: Path, pg_dsn: str, sim_url: str, sim_state: SimulatorState
) -> None:
    """migrate, sync and status as subprocesses: data lands, status shows it, the key never shows."""
    schema = f"cli_{os.getpid()}"
    sim_state.seed_orders(120, days=200)
    seen: list[str] = []

    async def syncer(*args: str) -> tuple[int, str, str]:
        code, out, err = await run_syncer(*args)
        seen.extend((out, err))
        return code, out, err

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
        code, out, err = await syncer("--config", str(path), "sync")
        assert code == 1 and "pending migration" in err
        code, out, _ = await syncer("--config", str(path), "migrate")
        assert code == 0 and "applied 001_initial" in out
        code, out, _ = await syncer("--config", str(path), "migrate")
        assert code == 0 and "up to date" in out
        code, out, err = await syncer("--config", str(path), "sync")
        assert code == 0, err
        assert "shop: full run 1 succeeded: 120 orders" in out
        sim_state.update_orders(7)
        code, out, err = await syncer("--config", str(path), "sync", "--source", "shop")
        assert code == 0 and "differential run 2 succeeded" in out
        code, out, err = await syncer("--config", str(path), "status")
        assert code == 0
        header, row = out.splitlines()
        assert header.split()[:3] == ["SOURCE", "WATERMARK", "LAG"]
        assert row.startswith("shop") and "succeeded" in row and "120" in row
        code, out, err = await syncer(
            "--config", str(path), "resync", "--full", "--since", "2026-01-01"
        )
        assert code == 0 and "full run 3 succeeded" in out
        db = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
        try:
            await assert_matches_truth(db, sim_state)
        finally:
            await db.close()
        for text in seen:
            assert sim_state.config.api_key not in text, "the API key leaked into output or logs"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def test_a_refused_key_says_so_without_the_key(
    tmp_path: Path, pg_dsn: str, schema: str, sim_url: str
) -> None:
    """401: exit 1, the message says the key was refused; the key is not printed or logged."""
    path = write_config(
        tmp_path / "c.toml", dsn=pg_dsn, schema=schema, base_url=sim_url, api_key="not-the-key-42"
    )
    code, out, err = await syncer("--config", str(path), "sync")
    assert code == 1
    assert "refused the API key of source shop (401)" in out
    assert "not-the-key-42" not in out + err


async def test_run_service_syncs_on_schedule_and_stops_on_sigterm(
    sim_config: Callable[..., Path],
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    sim_state: SimulatorState,
) -> None:
    """`syncer run` runs each source at start and every interval; SIGTERM stops it cleanly."""
    sim_state.seed_orders(40, days=20)
    path = sim_config(
        extra="interval_minutes = 0.02\n",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncer",
        "--config",
        str(path),
        "--log-format",
        "json",
        "run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        for _ in range(200):
            done = await conn.fetchval("SELECT count(*) FROM sync_runs WHERE status = 'succeeded'")
            if done >= 2:
                break
            await asyncio.sleep(0.1)
        assert done >= 2, "expected the first run and at least one scheduled repeat"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
        assert '"event": "service_stopped"' in err.decode()
        assert await conn.fetchval("SELECT count(*) FROM sync_runs WHERE status = 'running'") == 0
        assert await conn.fetchval("SELECT count(*) FROM orders") == 40
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await conn.close()
