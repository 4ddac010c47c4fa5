"""Real PostgreSQL (SYNCER_TEST_DSN, else an embedded one) and the simulator over loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from syncer.config import (
    Config,
    DatabaseConfig,
    ExportConfig,
    HttpConfig,
    PushConfig,
    Secret,
    SourceConfig,
)
from syncer.dates import utc_now
from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.store.embedded import embedded_dsn
from syncer.store.migrate import migrate
from syncer.store.sync_store import SyncStore

TEST_DSN = os.environ.get("SYNCER_TEST_DSN")
for _name in [n for n in os.environ if n.startswith("SYNCER_")]:
    del os.environ[_name]  # tests never inherit the developer's config


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SYNCER_TEST_DSN when set (CI: the local server), else an embedded PostgreSQL."""
    if TEST_DSN:
        yield TEST_DSN
        return
    # The product's own start-up (stopped at exit by the package); no warnings leak.
    yield embedded_dsn(tmp_path_factory.mktemp("pgdata"))


@pytest.fixture
async def schema(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated schema for this test alone; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await migrate(conn, name)
        yield name
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()


@pytest.fixture
async def pool(pg_dsn: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        pg_dsn, min_size=1, max_size=4, server_settings={"search_path": schema}
    )
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool, schema: str) -> SyncStore:
    return SyncStore(pool, schema)


@pytest.fixture
def sim_state() -> SimulatorState:
    return SimulatorState(SimulatorConfig(pending_polls=1, seed=11))


@pytest.fixture
async def sim_url(sim_state: SimulatorState) -> AsyncIterator[str]:
    async with serve(sim_state) as url:
        yield url


@pytest.fixture
def make_config(
    pg_dsn: str, schema: str, sim_url: str, sim_state: SimulatorState
) -> Callable[..., Config]:
    """A Config for the test database and simulator; keywords override source fields."""

    def build(
        *,
        http: HttpConfig | None = None,
        export: ExportConfig | None = None,
        push: PushConfig | None = None,
        **source_fields: Any,
    ) -> Config:
        source = SourceConfig(
            name="shop",
            base_url=sim_url,
            api_key=Secret(sim_state.config.api_key),
            start_date=utc_now() - timedelta(days=60),
            overlap_minutes=5,
        )
        return Config(
            database=DatabaseConfig(dsn=pg_dsn, schema=schema),
            # Small batches: every export is merged in several batches, duplicates across them.
            export=export
            or ExportConfig(
                poll_interval_seconds=0.02,
                poll_timeout_minutes=1,
                batch_orders=13,
                full_export_spacing_minutes=0,
                differential_spacing_minutes=0,
            ),
            http=http
            or HttpConfig(
                timeout_seconds=10,
                max_attempts=4,
                backoff_base_seconds=0.01,
                backoff_max_seconds=0.05,
            ),
            push=push or PushConfig(min_interval_seconds=0.3, interval_seconds=1, max_attempts=3),
            sources=(replace(source, **source_fields),),
        )

    return build


def write_config(
    path: Path,
    *,
    dsn: str,
    schema: str,
    base_url: str,
    api_key: str,
    extra: str = "",
    metrics_port: int = 0,
) -> Path:
    """A TOML config file as a person would write it."""
    path.write_text(
        f"""
[database]
dsn = "{dsn}"
schema = "{schema}"
# A killed worker's lease is free after this (crash tests rerun at once).
lease_ttl_seconds = 4

[export]
full_export_spacing_minutes = 0
differential_spacing_minutes = 0
poll_interval_seconds = 0.05
poll_timeout_minutes = 1
batch_orders = 25

[push]
min_interval_seconds = 0.3

[service]
metrics_host = "127.0.0.1"
metrics_port = {metrics_port}

[http]
max_attempts = 3
backoff_base_seconds = 0.01
backoff_max_seconds = 0.05

[[sources]]
name = "shop"
base_url = "{base_url}"
api_key = "{api_key}"
start_date = 2024-01-01
{extra}
"""
    )
    return path


@pytest.fixture
def sim_config(
    tmp_path: Path, pg_dsn: str, schema: str, sim_url: str, sim_state: SimulatorState
) -> Callable[..., Path]:
    """Writes `c.toml` for this test's database and simulator; keywords as `write_config`'s."""

    def build(**options: Any) -> Path:
        return write_config(
            tmp_path / "c.toml",
            dsn=pg_dsn,
            schema=schema,
            base_url=sim_url,
            api_key=sim_state.config.api_key,
            **options,
        )

    return build


@pytest.fixture
async def db(pg_dsn: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    yield conn
    await conn.close()


@pytest.fixture
def crash_sim(sim_state: SimulatorState) -> SimulatorState:
    """Slow enough to be caught at each stage: exports take a while, chunks stream in pieces."""
    config = sim_state.config
    config.pending_polls = 10**6
    config.pending_seconds = 0.6
    config.max_items_per_chunk = 60
    config.chunk_piece_bytes = 16 * 1024
    config.chunk_piece_delay_seconds = 0.01
    sim_state.seed_orders(240, days=700)
    return sim_state


@pytest.fixture
def config_file(
    tmp_path: Path, pg_dsn: str, schema: str, sim_url: str, crash_sim: SimulatorState
) -> Path:
    return write_config(
        tmp_path / "c.toml",
        dsn=pg_dsn,
        schema=schema,
        base_url=sim_url,
        api_key=crash_sim.config.api_key,
    )
