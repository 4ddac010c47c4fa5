"""The count audit: per day, the mirror's order count against OR11's total_count; it flags a
day an export silently missed, the re-scan repairs it, a 429 defers it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from syncer.commands import run_source
from syncer.config import AuditConfig, Config
from syncer.dates import utc_now
from syncer.metrics import METRICS
from syncer.pipeline.audit import audit_source
from syncer.simulator import SimulatorState
from syncer.simulator.orders import iso_seconds
from syncer.store.sync_store import SyncStore
from tests.test_cli import syncer

# The simulator subtracts 5 s from start_update_date, as Mirakl subtracts its delta.
AUDIT = AuditConfig(days=12, call_spacing_seconds=0, start_delta_seconds=5)


@pytest.fixture(autouse=True)
def no_or11_limit(sim_state: SimulatorState) -> None:
    sim_state.config.or11_min_interval_seconds = None


def audit_config(make_config: Callable[..., Config]) -> Config:
    return replace(make_config(), audit=AUDIT)


# AUDIT, as a config file says it (for the CLI tests' `sim_config`).
AUDIT_TOML = "\n[audit]\ndays = 12\ncall_spacing_seconds = 0\nstart_delta_seconds = 5\n"


async def drop_one(config: Config, store: SyncStore, sim: SimulatorState) -> str:
    """A full run, then a differential export that silently leaves out one new order dated
    seconds before the export's end (below the watermark). Returns its day."""
    source = config.sources[0]
    await run_source(config, store, source, "full")
    (missed,) = sim.create_orders(1)
    created = utc_now() - timedelta(seconds=5)
    for key in ("created_date", "last_updated_date"):
        sim.orders[missed][key] = iso_seconds(created)
    sim.drop_from_next_export = {missed}
    assert (await run_source(config, store, source, "differential")).status == "succeeded"
    return created.date().isoformat()


async def test_a_complete_mirror_audits_ok(
    sim_config: Callable[..., Path],
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """Every day of a complete mirror matches Mirakl: audit ok, recorded, status says ok."""
    sim_state.seed_orders(40, days=10)
    config = audit_config(make_config)
    await run_source(config, store, config.sources[0], "full")

    summary = await audit_source(config, store, config.sources[0])

    assert summary.status == "ok", summary.describe()
    assert len(summary.details) == 12
    assert sum(d["mirakl"] for d in summary.details) == 40, "every order counted once"
    row = await pool.fetchrow(
        "SELECT status, days, mismatched_days FROM sync_audits WHERE audit_id = $1",
        summary.audit_id,
    )
    assert dict(row) == {"status": "ok", "days": 12, "mismatched_days": 0}
    assert METRICS.audit_mismatched_days.labels("shop")._value.get() == 0
    path = sim_config(extra=AUDIT_TOML)
    code, out, err = await syncer("status", "--json", "--config", str(path))
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["last_audit"]["status"] == "ok"
    assert record["last_audit"]["audit_id"] == summary.audit_id


async def test_an_order_a_differential_export_dropped_is_a_mismatch_until_the_rescan(
    sim_config: Callable[..., Path],
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """A dropped order shows on its day (mirror n-1, Mirakl n) in the audit row, status and
    metric; after `syncer rescan` the audit is ok again."""
    sim_state.seed_orders(30, days=10)
    config = audit_config(make_config)
    day = await drop_one(config, store, sim_state)

    summary = await audit_source(config, store, config.sources[0])

    assert summary.status == "mismatch", summary.describe()
    (bad,) = summary.mismatched
    assert bad["day"] == day
    assert bad["mirror"] == bad["mirakl"] - 1
    row = await pool.fetchrow(
        "SELECT status, mismatched_days, details::text FROM sync_audits WHERE audit_id = $1",
        summary.audit_id,
    )
    assert row["status"] == "mismatch" and row["mismatched_days"] == 1
    assert bad in json.loads(row["details"])
    assert METRICS.audit_mismatched_days.labels("shop")._value.get() == 1
    path = sim_config(extra=AUDIT_TOML)
    code, out, err = await syncer("status", "--config", str(path), env={"COLUMNS": "400"})
    assert code == 0, err
    assert "AUDIT" in out and "MISMATCH 1 day(s)" in out

    code, out, err = await syncer("rescan", "--config", str(path))
    assert code == 0, out + err

    again = await audit_source(config, store, config.sources[0])
    assert again.status == "ok", again.describe()
    assert METRICS.audit_mismatched_days.labels("shop")._value.get() == 0


async def test_a_429_from_or11_defers_the_audit(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """OR11 once a minute: without spacing, the second day's call gets 429 and the audit is
    recorded as deferred (not failed, no mismatch)."""
    sim_state.seed_orders(10, days=3)
    config = audit_config(make_config)
    await run_source(config, store, config.sources[0], "full")
    sim_state.config.or11_min_interval_seconds = 60

    summary = await audit_source(config, store, config.sources[0])

    assert summary.status == "deferred"
    assert len(summary.details) == 1, "the first day was counted before the 429"
    status = await pool.fetchval(
        "SELECT status FROM sync_audits WHERE audit_id = $1", summary.audit_id
    )
    assert status == "deferred"


async def test_syncer_audit_exits_1_with_one_line_naming_the_day(
    sim_config: Callable[..., Path],
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
) -> None:
    """`syncer audit` prints one line per source: exit 0 when ok, 1 naming the mismatched day."""
    sim_state.seed_orders(20, days=5)
    config = audit_config(make_config)
    await run_source(config, store, config.sources[0], "full")
    path = sim_config(extra=AUDIT_TOML)
    code, out, err = await syncer("audit", "--config", str(path))
    assert code == 0, out + err
    assert out.strip().startswith("shop: audit") and "ok" in out

    day = await drop_one(config, store, sim_state)
    code, out, err = await syncer("audit", "--source", "shop", "--config", str(path))

    assert code == 1, out + err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert "MISMATCH" in lines[0] and day in lines[0]
