"""One bad outbox row never blocks the others (poison patches, oversize calls, backoff)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from syncer.commands import push_source
from syncer.config import Config, PushConfig, load_config
from syncer.dates import utc_now
from syncer.errors import ConfigError, MiraklUnavailable
from syncer.simulator import SimulatorState
from syncer.store.migrate import _apply, load_migrations
from syncer.store.outbox_store import OutboxStore
from tests.workers import start

INSERT_RAW = (
    "INSERT INTO order_patches (source, order_id, patch)"
    " VALUES ('shop', $1, $2::jsonb) RETURNING patch_id"
)


async def queue(pool: asyncpg.Pool, order_id: str, patch: dict[str, Any]) -> int:
    return await queue_raw(pool, order_id, orjson.dumps(patch).decode())


async def queue_raw(pool: asyncpg.Pool, order_id: str, text: str) -> int:
    return int(await pool.fetchval(INSERT_RAW, order_id, text))


async def queued_before_008(pool: asyncpg.Pool, order_id: str, text: str) -> int:
    """A row that migration 008's CHECK would refuse today, as if queued before it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "ALTER TABLE order_patches DROP CONSTRAINT IF EXISTS order_patches_patch_is_object"
        )
        patch_id = await queue_raw(conn, order_id, text)  # type: ignore[arg-type]
        await conn.execute(
            "ALTER TABLE order_patches ADD CONSTRAINT order_patches_patch_is_object"
            " CHECK (jsonb_typeof(patch) = 'object' OR status = 'rejected') NOT VALID"
        )
    return patch_id


async def rows(pool: asyncpg.Pool) -> dict[int, asyncpg.Record]:
    return {
        r["patch_id"]: r for r in await pool.fetch("SELECT * FROM order_patches ORDER BY patch_id")
    }


def seller_ref(sim_state: SimulatorState, order_id: str) -> Any:
    return sim_state.orders[order_id]["references"]["order_reference_for_seller"]


def ref_patch(value: str) -> dict[str, Any]:
    return {"references": {"order_reference_for_seller": value}}


def first_error(row: asyncpg.Record) -> dict[str, Any]:
    errors = orjson.loads(row["errors"])
    assert all(set(e) == {"code", "field", "message"} for e in errors), errors
    return dict(errors[0])


@pytest.fixture
def orders(sim_state: SimulatorState) -> list[str]:
    sim_state.config.or04_min_interval_seconds = 0.3
    return sorted(sim_state.seed_orders(120, days=20))


@pytest.mark.parametrize("text", ['"hello"', "[1, 2]", "42", "null", "true"])
async def test_a_non_object_patch_between_two_good_ones_blocks_neither(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
    text: str,
) -> None:
    """A non-object patch is rejected alone; the good ones around it go out in the same push."""
    config = make_config()
    good_1 = await queue(pool, orders[0], ref_patch("G1"))
    bad = await queued_before_008(pool, orders[1], text)
    good_2 = await queue(pool, orders[2], ref_patch("G2"))
    summary = await push_source(config, pool, config.sources[0])
    assert (summary.calls, summary.applied, summary.rejected) == (1, 2, 1)
    assert summary.rejected_locally == 1
    state = await rows(pool)
    assert [state[p]["status"] for p in (good_1, bad, good_2)] == ["applied", "rejected", "applied"]
    assert first_error(state[bad])["code"] == "INVALID_TYPE"
    assert (seller_ref(sim_state, orders[0]), seller_ref(sim_state, orders[2])) == ("G1", "G2")


@pytest.mark.parametrize("depth", [1000, 1500])
async def test_a_deeply_nested_patch_is_rejected_alone(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
    depth: int,
) -> None:
    """A patch nested 1,000 or 1,500 levels deep is rejected alone (TOO_DEEP); the rest apply."""
    config = make_config()
    good_1 = await queue(pool, orders[0], ref_patch("D1"))
    deep = await queue_raw(pool, orders[1], '{"customer": ' * depth + "{}" + "}" * depth)
    good_2 = await queue(pool, orders[2], ref_patch("D2"))
    summary = await push_source(config, pool, config.sources[0])
    assert (summary.calls, summary.applied, summary.rejected) == (1, 2, 1)
    state = await rows(pool)
    assert [state[p]["status"] for p in (good_1, deep, good_2)] == [
        "applied",
        "rejected",
        "applied",
    ]
    assert first_error(state[deep])["code"] == "TOO_DEEP"


async def test_bad_and_valid_patches_of_one_order_only_the_bad_ones_are_rejected(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
) -> None:
    """Invalid rows of an order are rejected alone; its valid rows merge, in order, and apply."""
    config = make_config()
    order_id = orders[5]
    first = await queue(pool, order_id, {"customer": {"billing_address": {"city": "A"}}})
    unknown = await queue(pool, order_id, {"shipping_method": "EXP"})
    not_object = await queued_before_008(pool, order_id, '"oops"')
    wrong_type = await queue(pool, order_id, {"shop_statistics": {"excluded": "yes"}})
    last = await queue(
        pool, order_id, {"customer": {"billing_address": {"city": "B", "street_2": "2nd"}}}
    )
    summary = await push_source(config, pool, config.sources[0])
    assert (summary.calls, summary.applied, summary.rejected) == (1, 1, 3)
    assert sim_state.or04_batches[0][1] == 1, "the two valid rows go out as one OR04 entry"
    state = await rows(pool)
    assert [state[p]["status"] for p in (first, unknown, not_object, wrong_type, last)] == [
        "applied",
        "rejected",
        "rejected",
        "rejected",
        "applied",
    ]
    assert first_error(state[unknown])["code"] == "UNKNOWN_FIELD"
    assert first_error(state[wrong_type])["field"] == "shop_statistics.excluded"
    address = sim_state.orders[order_id]["customer"]["billing_address"]
    assert (address["city"], address["street_2"]) == ("B", "2nd"), "later rows still win"
    assert "shop_statistics" not in sim_state.orders[order_id] or (
        sim_state.orders[order_id]["shop_statistics"].get("excluded") != "yes"
    )


async def test_a_20_mb_patch_among_99_good_ones_is_rejected_alone(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
) -> None:
    """A 20 MB patch is rejected alone, with its size; the 99 others go out in one call."""
    config = make_config()  # push.max_patch_bytes and max_request_bytes: the defaults
    for order_id in orders[:50]:
        await queue(pool, order_id, ref_patch(f"B-{order_id}"))
    huge = int(
        await pool.fetchval(
            "INSERT INTO order_patches (source, order_id, patch) VALUES ('shop', $1,"
            " jsonb_build_object('customer', jsonb_build_object('billing_address',"
            " jsonb_build_object('street_2', repeat('x', 20000000))))) RETURNING patch_id",
            orders[50],
        )
    )
    for order_id in orders[51:100]:
        await queue(pool, order_id, ref_patch(f"B-{order_id}"))
    summary = await push_source(config, pool, config.sources[0])
    assert (summary.calls, summary.applied, summary.rejected) == (1, 99, 1)
    state = await rows(pool)
    error = first_error(state[huge])
    assert error["code"] == "TOO_LARGE" and "2000" in error["message"], error
    assert "push.max_patch_bytes" in error["message"]
    assert sum(r["status"] == "applied" for r in state.values()) == 99
    assert all(seller_ref(sim_state, o) == f"B-{o}" for o in orders[:50] + orders[51:100])


async def test_patches_over_max_patch_bytes_are_rejected_and_calls_fit_max_request_bytes(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
) -> None:
    """A patch over push.max_patch_bytes is rejected alone; calls are cut under max_request_bytes."""
    sim_state.config.or04_max_body_bytes = 2048
    config = make_config(
        push=PushConfig(
            min_interval_seconds=0.3, max_attempts=3, max_request_bytes=2048, max_patch_bytes=512
        )
    )
    targets = orders[:30]
    ids = [await queue(pool, o, ref_patch(f"S-{o}")) for o in targets]
    big = await queue(pool, orders[30], {"customer": {"billing_address": {"street_2": "y" * 600}}})
    summary = await push_source(config, pool, config.sources[0])
    state = await rows(pool)
    assert state[big]["status"] == "rejected"
    assert "bytes" in first_error(state[big])["message"]
    assert [state[p]["status"] for p in ids] == ["applied"] * 30
    assert summary.calls == len(sim_state.or04_batches) >= 2, "cut into calls under 2048 bytes"
    assert sim_state.calls["OR04"] == summary.calls, "no call was refused (413 or 429)"


async def test_a_call_refused_whole_with_413_is_split_until_the_culprit_is_alone(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
) -> None:
    """413 for the whole call: halves are resent at the allowed pace; only the culprit is rejected."""
    sim_state.config.or04_max_body_bytes = 3000
    config = make_config()  # the culprit is under the default push.max_patch_bytes
    good = [await queue(pool, o, ref_patch(f"H-{o}")) for o in orders[:3]]
    culprit = await queue(
        pool, orders[3], {"customer": {"billing_address": {"street_2": "z" * 4000}}}
    )
    good += [await queue(pool, o, ref_patch(f"H-{o}")) for o in orders[4:8]]
    summary = await push_source(config, pool, config.sources[0])
    state = await rows(pool)
    assert [state[p]["status"] for p in good] == ["applied"] * 7
    assert all(state[p]["attempts"] == 1 for p in good), "split resends spend no attempt"
    assert state[culprit]["status"] == "rejected"
    error = first_error(state[culprit])
    assert error["code"] == "HTTP_413" and "too large" in error["message"], error
    assert summary.applied == 7 and summary.rejected == 1 and summary.split_calls == 3
    calls = await pool.fetch("SELECT status, started_at FROM push_calls ORDER BY call_id")
    assert len(calls) == summary.calls == sim_state.calls["OR04"] == 7
    assert [c["status"] for c in calls].count("failed") == 4  # 3 splits, the lone culprit
    assert all(
        (later - earlier).total_seconds() >= 0.29
        for earlier, later in itertools.pairwise(c["started_at"] for c in calls)
    ), "one call per push.min_interval_seconds, splits included"
    assert all(seller_ref(sim_state, o) == f"H-{o}" for o in orders[:3] + orders[4:8])


async def test_503_makes_rows_wait_with_backoff_and_fail_after_max_attempts(
    make_config: Callable[..., Config],
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
) -> None:
    """OR04 503: rows go back to pending, due later (not failed), other orders still go; after
    push.max_attempts sends they end failed, counted in the backlog."""
    config = make_config()
    sim_state.inject("OR04", status=503, times=1000)
    waiting = await queue(pool, orders[0], ref_patch("W"))
    with pytest.raises(MiraklUnavailable):
        await push_source(config, pool, config.sources[0])
    row = (await rows(pool))[waiting]
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["next_attempt_at"] > utc_now() + timedelta(seconds=25), row["next_attempt_at"]
    assert "503" in row["last_error"]

    sim_state.faults.clear()
    other = await queue(pool, orders[1], ref_patch("O"))
    summary = await push_source(config, pool, config.sources[0])
    assert (summary.calls, summary.applied) == (1, 1), "the waiting order holds no other back"
    state = await rows(pool)
    assert state[other]["status"] == "applied" and state[waiting]["status"] == "pending"
    assert seller_ref(sim_state, orders[0]) != "W"

    sim_state.inject("OR04", status=503, times=1000)
    for attempts, status in ((2, "pending"), (3, "failed")):
        await pool.execute(
            "UPDATE order_patches SET next_attempt_at = now() - interval '1 second'"
            " WHERE status = 'pending'"
        )
        with pytest.raises(MiraklUnavailable):
            await push_source(config, pool, config.sources[0])
        row = (await rows(pool))[waiting]
        assert (row["status"], row["attempts"]) == (status, attempts)
        if status == "pending":  # the wait doubles: at least half of 60 * 2^1
            assert row["next_attempt_at"] > utc_now() + timedelta(seconds=55)
    assert row["next_attempt_at"] is None and row["finished_at"] is not None
    assert (await OutboxStore(pool).backlog(["shop"]))["shop"]["failed"] == 1


async def test_migrate_adds_the_object_check_over_rows_that_break_it(
    sim_config: Callable[..., Path],
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    orders: list[str],
) -> None:
    """`syncer migrate` applies 008 over non-object rows; new ones are refused at insert, old
    ones are rejected by the next `syncer push` (exit 0, no traceback) while a good one applies."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await _apply(conn, schema, [m for m in load_migrations() if m.version < 8])
        insert = f"INSERT INTO {schema}.order_patches (source, order_id, patch) VALUES ('shop', $1, $2::jsonb)"
        await conn.execute(insert, orders[0], '"hello"')
        await conn.execute(insert, orders[1], "[1, 2, 3]")
        await conn.execute(insert, orders[2], orjson.dumps(ref_patch("M")).decode())
    finally:
        await conn.close()
    path = sim_config()
    proc = await start(path, "migrate")
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "008_outbox_retry" in out.decode()
    with pytest.raises(asyncpg.CheckViolationError):
        await queue_raw(pool, orders[3], '"new"')

    proc = await start(path, "push")
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "1 OR04 call(s), 1 order(s) applied, 2 rejected" in out.decode()
    assert "Traceback" not in err.decode()
    statuses = [r["status"] for r in (await rows(pool)).values()]
    assert statuses == ["rejected", "rejected", "applied"]


@pytest.mark.parametrize(
    ("lines", "key"),
    [
        ("max_request_bytes = 100", "push.max_request_bytes"),
        ("max_request_bytes = 2048\nmax_patch_bytes = 4096", "push.max_patch_bytes"),
        ("retry_base_seconds = 120\nretry_max_seconds = 60", "push.retry_max_seconds"),
        ("retry_max_seconds = 1e9", "push.retry_max_seconds"),
        ("max_attempts = 1000", "push.max_attempts"),
    ],
)
def test_push_limits_out_of_range_name_the_key(tmp_path: Path, lines: str, key: str) -> None:
    """Each new [push] key has a finite range; a value outside it is refused, naming the key."""
    path = tmp_path / "c.toml"
    path.write_text(f"[push]\n{lines}\n")
    with pytest.raises(ConfigError, match=rf"^{key}: must be"):
        load_config(path, env={})


def test_push_limits_defaults(tmp_path: Path) -> None:
    """max_patch_bytes defaults to 32 KiB, or half of a smaller max_request_bytes."""
    assert (PushConfig().max_request_bytes, PushConfig().max_patch_bytes) == (1024**2, 32768)
    path = tmp_path / "c.toml"
    path.write_text("[push]\nmax_request_bytes = 4096\n")
    assert load_config(path, env={}).push.max_patch_bytes == 2048
