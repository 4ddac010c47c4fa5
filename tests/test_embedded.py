"""The embedded PostgreSQL (the `embedded` extra): started once, off the event loop, quietly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from syncer.errors import ConfigError
from syncer.store.embedded import bundled_major, embedded_dsn

# Two pools on one data dir, with a ticker measuring whether the loop ran during start-up.
SCRIPT = """
import asyncio, sys
from pathlib import Path
from syncer.config import DatabaseConfig
from syncer.log import configure_logging
from syncer.store.db import open_pool

async def main():
    configure_logging(json=True)
    config = DatabaseConfig(dsn=None, schema="public", data_dir=Path(sys.argv[1]))
    ticks = 0
    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1
    ticker = asyncio.create_task(tick())
    async with open_pool(config, size=1) as pool:
        first = await pool.fetchval("SELECT current_setting('server_version_num')::int")
    ticker.cancel()
    async with open_pool(config, size=1) as pool:
        second = await pool.fetchval("SELECT 1")
    print(first // 10000, second, ticks)

asyncio.run(main())
"""


def test_embedded_server_starts_once_per_process_off_the_loop_without_warnings(
    tmp_path: Path,
) -> None:
    """No DSN: one `embedded_postgres_starting` for two pools, the loop keeps running, no warning."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, str(tmp_path / "pgdata")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    major, second, ticks = done.stdout.split()
    assert (major, second) == (bundled_major(), "1")
    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert events == ["embedded_postgres_starting"], done.stderr[-2000:]
    # Start-up takes a second or more (initdb, pg_ctl); a blocked loop would not tick at all.
    assert int(ticks) >= 3


def test_data_dir_of_another_postgresql_major_is_one_config_error(tmp_path: Path) -> None:
    """A data dir left by another PostgreSQL major (e.g. pgserver's 16) is named, not started."""
    data_dir = tmp_path / "old-pgdata"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("16\n")
    with pytest.raises(ConfigError, match=r"^database\.data_dir: .* holds PostgreSQL 16 data"):
        embedded_dsn(data_dir)
    assert not (data_dir / "postmaster.pid").exists()
