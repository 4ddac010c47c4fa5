"""The fast lane (OR11) against the simulator over loopback and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import signal
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from syncer.commands import run_source
from syncer.config import Config, FastLaneConfig
from syncer.errors import RunSkipped
from syncer.pipeline.fastlane import lane_source
from syncer.scheduler import run_service
from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.simulator.orders import dumps, iso_seconds
from syncer.store.lease import LANE, LeaseKeeper
from syncer.store.sync_store import SyncStore
from tests.workers import start

WAITING = "WAITING_ACCEPTANCE"


def waiting_orders(sim: SimulatorState, count: int) -> list[str]:
    """`count` new orders, created now, waiting for the shop's acceptance."""
    ids = sim.create_orders(count)
    for order_id in ids:
        order = sim.orders[order_id]
        order["order_state"] = WAITING
        for line in order["order_lines"]:
            line["order_line_state"] = WAITING
        sim.changed(order_id)
    return ids


def lane_config(make_config: Callable[..., Config], **lane: object) -> Config:
    config = make_config()
    fast = FastLaneConfig(enabled=True, interval_seconds=0.2, **lane)  # type: ignore[arg-type]
    return replace(config, fast_lane=fast)


@pytest.fixture(autouse=True)
def no_or11_limit(sim_state: SimulatorState) -> None:
    sim_state.config.or11_min_interval_seconds = None


async def stored(db: asyncpg.Connection, ids: list[str]) -> int:
    return int(await db.fetchval("SELECT count(*) FROM orders WHERE order_id = ANY($1)", ids))


async def wait_for(check: Callable[[], object], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():  # type: ignore[misc]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_new_order_arrives_by_the_lane_without_export_or_watermark_move(
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """Under the service, a new WAITING_ACCEPTANCE order reaches PostgreSQL within a lane
    interval while no export runs, and the export watermark stays where it was."""
    sim_state.seed_orders(30, days=5)
    config = lane_config(make_config)
    config = replace(config, sources=(replace(config.sources[0], interval_minutes=600),))
    stop = asyncio.Event()
    service = asyncio.create_task(run_service(config, store, stop))
    try:
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 1 FROM sync_runs WHERE status = 'succeeded'")
        )
        watermark = await db.fetchval("SELECT watermark FROM sync_state WHERE source = 'shop'")
        exports = sim_state.calls["OR13"]
        ids = waiting_orders(sim_state, 2)

        async def arrived() -> bool:
            return await stored(db, ids) == 2

        await wait_for(arrived, 10)
        assert sim_state.calls["OR13"] == exports
        assert (
            await db.fetchval("SELECT watermark FROM sync_state WHERE source = 'shop'") == watermark
        )
        assert await db.fetchval(
            "SELECT count(*) FROM order_lines WHERE order_id = ANY($1)", ids
        ) == sum(len(sim_state.orders[i]["order_lines"]) for i in ids)
        assert await db.fetchval("SELECT cursor IS NOT NULL FROM sync_lanes WHERE source = 'shop'")
        # The lane's merge is a change like an export's: listed (no run), history kept.
        lane_change = await db.fetchrow(
            "SELECT o.change_id, c.run_id, c.orders_changed FROM orders o"
            " JOIN sync_changes c USING (change_id) WHERE o.order_id = $1",
            ids[0],
        )
        assert lane_change["run_id"] is None and lane_change["orders_changed"] >= 1
        history = await db.fetch(
            "SELECT h.order_id FROM order_history h JOIN orders o"
            " USING (source, order_id, last_updated_date, change_id) WHERE order_id = ANY($1)",
            ids,
        )
        assert sorted(r["order_id"] for r in history) == sorted(ids)
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)


async def test_lane_never_regresses_a_newer_version_from_an_export(
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """An order whose newer version came by export keeps it when the lane reads an older one."""
    (order_id,) = waiting_orders(sim_state, 1)
    newer = sim_state.orders[order_id]
    older = copy.deepcopy(newer)
    older["last_updated_date"] = iso_seconds(
        datetime.fromisoformat(newer["last_updated_date"]) - timedelta(hours=1)
    )
    older["shipping_price"] = 999.5
    config = lane_config(make_config)
    await run_source(config, store, config.sources[0], "full")
    kept = await db.fetchrow(
        "SELECT last_updated_date, raw FROM orders WHERE order_id = $1", order_id
    )
    sim_state.add_documents([dumps(older)])  # Mirakl now answers OR11 with the older version

    summary = await lane_source(config, store, config.sources[0])

    assert summary.orders_read == 1 and summary.orders_changed == 0
    row = await db.fetchrow(
        "SELECT last_updated_date, raw FROM orders WHERE order_id = $1", order_id
    )
    assert row == kept


@pytest.mark.parametrize("link", [True, False], ids=["link", "offset"])
async def test_lane_follows_pages_with_total_count_and_link(
    link: bool,
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """250 waiting orders are read in three OR11 pages of 100 (by the Link header, or by
    offset and total_count without one) and all stored; others are not."""
    sim_state.config.or11_link_header = link
    sim_state.seed_orders(40, days=5)
    others = [
        i for i, o in sim_state.orders.items() if o["order_state"] not in ("SHIPPING", WAITING)
    ]
    ids = waiting_orders(sim_state, 250)
    config = lane_config(make_config)

    summary = await lane_source(config, store, config.sources[0])

    assert summary.pages == 3 and not summary.truncated
    assert sim_state.calls["OR11"] == 3
    assert await stored(db, ids) == 250
    assert await stored(db, others) == 0
    assert await db.fetchval("SELECT count(*) FROM sync_state") == 0  # no watermark at all


async def test_lane_stops_at_max_pages_and_leaves_the_rest_to_the_export(
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Further behind than max_pages pages: the lane reads that many, logs it, and the next
    export brings the rest."""
    ids = waiting_orders(sim_state, 250)
    config = lane_config(make_config, max_pages=2)

    summary = await lane_source(config, store, config.sources[0])

    assert summary.pages == 2 and summary.truncated and summary.orders_read == 200
    assert sim_state.calls["OR11"] == 2
    assert await stored(db, ids) == 200
    assert await db.fetchval("SELECT truncated FROM sync_lanes WHERE source = 'shop'")
    logged = capsys.readouterr()
    assert "lane_truncated" in logged.out + logged.err + caplog.text
    await run_source(config, store, config.sources[0], "full")
    assert await stored(db, ids) == 250


async def test_lane_backs_off_on_429_until_its_next_interval(
    make_config: Callable[..., Config],
    store: SyncStore,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """OR11 answers 429: the pass ends without an error and keeps its cursor; a later pass
    (after Mirakl's interval) brings the order."""
    sim_state.config.or11_min_interval_seconds = 0.5
    config = lane_config(make_config)
    source = config.sources[0]
    await lane_source(config, store, source)
    cursor = await db.fetchval("SELECT cursor FROM sync_lanes WHERE source = 'shop'")
    ids = waiting_orders(sim_state, 1)

    limited = await lane_source(config, store, source)  # within the interval: 429

    assert limited.rate_limited and limited.pages == 0
    assert sim_state.calls["OR11"] == 2  # no retry within the pass
    assert await db.fetchval("SELECT cursor FROM sync_lanes WHERE source = 'shop'") == cursor
    assert await stored(db, ids) == 0
    await asyncio.sleep(0.6)
    later = await lane_source(config, store, source)
    assert not later.rate_limited and await stored(db, ids) == 1


async def test_lane_is_fenced_by_its_lease(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """While another process holds the source's lane lease, a pass is skipped, not doubled."""
    waiting_orders(sim_state, 1)
    config = lane_config(make_config)
    other = LeaseKeeper(store.pool)
    async with other.hold(LANE, "shop"):
        with pytest.raises(RunSkipped, match="another lane holds"):
            await lane_source(config, store, config.sources[0])
    assert sim_state.calls["OR11"] == 0


async def test_lane_under_syncer_run_with_two_sources(
    sim_config: Callable[..., Path],
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    sim_state: SimulatorState,
    db: asyncpg.Connection,
) -> None:
    """`syncer run` with [fast_lane] on and two sources: new waiting orders of both reach
    PostgreSQL with no further export, OR11's 429s (once per 0.5 s) do not stop the service."""
    sim_state.config.or11_min_interval_seconds = 0.5
    second = SimulatorState(SimulatorConfig(pending_polls=1, seed=12, api_key="other-key"))
    second.config.or11_min_interval_seconds = 0.5
    async with serve(second) as second_url:
        path = sim_config(
            extra=f"""
[[sources]]
name = "second"
base_url = "{second_url}"
api_key = "other-key"
start_date = 2024-01-01

[fast_lane]
enabled = true
interval_seconds = 0.2
""",
        )
        proc = await start(path, "run")
        try:
            await wait_for(
                lambda: db.fetchval(
                    "SELECT count(DISTINCT source) = 2 FROM sync_runs WHERE status = 'succeeded'"
                ),
                60,
            )
            exports = sim_state.calls["OR13"] + second.calls["OR13"]
            ids = waiting_orders(sim_state, 2) + waiting_orders(second, 2)

            async def arrived() -> bool:
                return await stored(db, ids) == 4

            await wait_for(arrived, 30)
            assert sim_state.calls["OR13"] + second.calls["OR13"] == exports
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM orders WHERE order_id = ANY($1) AND source = 'second'",
                    ids,
                )
                == 2
            )
            await asyncio.sleep(1.0)  # a few more passes, some of them answered 429
            assert proc.returncode is None
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "scheduled_lane_failed" not in err.decode()


def test_fast_lane_config_defaults_and_refusals() -> None:
    """[fast_lane] is off by default; unknown states and out-of-range numbers name the key."""
    from syncer.config import parse_config
    from syncer.errors import ConfigError

    sources = [{"name": "shop", "base_url": "https://m.example", "api_key": "k"}]
    default = parse_config({"sources": sources}, env={}).fast_lane
    assert not default.enabled and default.interval_seconds == 65
    assert default.states == ("WAITING_ACCEPTANCE", "SHIPPING") and default.max_pages == 10
    for table, key in (
        ({"states": ["WAITING"]}, "fast_lane.states"),
        ({"states": []}, "fast_lane.states"),
        ({"interval_seconds": 0}, "fast_lane.interval_seconds"),
        ({"max_pages": 0}, "fast_lane.max_pages"),
        ({"enabled": "yes"}, "fast_lane.enabled"),
        ({"every": 1}, "fast_lane.every"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config({"sources": sources, "fast_lane": table}, env={})
