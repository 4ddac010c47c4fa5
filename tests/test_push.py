"""Order corrections: outbox in PostgreSQL -> OR04 -> Mirakl -> next sync shows them."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from syncer.commands import push_source, run_source
from syncer.config import Config
from syncer.simulator import SimulatorState
from syncer.store.sync_store import SyncStore
from tests.workers import rerun_until_success, start

INSERT = (
    "INSERT INTO order_patches (source, order_id, patch) VALUES ('shop', $1, $2) RETURNING patch_id"
)


async def queue(pool: asyncpg.Pool, order_id: str, patch: dict[str, Any]) -> int:
    return int(await pool.fetchval(INSERT, order_id, orjson.dumps(patch).decode()))


async def rows(pool: asyncpg.Pool) -> dict[int, asyncpg.Record]:
    return {
        r["patch_id"]: r for r in await pool.fetch("SELECT * FROM order_patches ORDER BY patch_id")
    }


@pytest.fixture
async def synced(
    make_config: Callable[..., Config], store: SyncStore, sim_state: SimulatorState
) -> Config:
    sim_state.config.or04_min_interval_seconds = 0.3
    sim_state.seed_orders(300, days=20)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    return config


async def test_patch_round_trip_shows_up_in_the_next_sync(
    synced: Config, store: SyncStore, pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """A queued patch is applied by OR04 and the next differential sync brings it into orders."""
    order_id = sorted(sim_state.orders)[0]
    await queue(
        pool, order_id, {"customer": {"billing_address": {"city": "Lille", "zip_code": "59000"}}}
    )
    await queue(pool, order_id, {"shop_statistics": {"excluded": True, "reason": "test order"}})
    summary = await push_source(synced, pool, synced.sources[0])
    assert (summary.calls, summary.applied, summary.rejected) == (1, 1, 0)
    assert sim_state.or04_batches[0][1] == 1, "two patches of one order go out as one OR04 entry"
    assert sim_state.orders[order_id]["customer"]["billing_address"]["city"] == "Lille"
    assert [r["status"] for r in (await rows(pool)).values()] == ["applied", "applied"]

    await run_source(synced, store, synced.sources[0], "differential")
    raw = orjson.loads(await pool.fetchval("SELECT raw FROM orders WHERE order_id = $1", order_id))
    assert raw["customer"]["billing_address"]["city"] == "Lille"
    assert raw["shop_statistics"] == {"excluded": True, "reason": "test order"}


async def test_later_patches_win_field_by_field(
    synced: Config, pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """Several patches to one order merge in order; null removes a value."""
    order_id = sorted(sim_state.orders)[1]
    await queue(pool, order_id, {"customer": {"billing_address": {"city": "A", "street_2": "x"}}})
    await queue(pool, order_id, {"customer": {"billing_address": {"city": "B", "street_2": None}}})
    await push_source(synced, pool, synced.sources[0])
    address = sim_state.orders[order_id]["customer"]["billing_address"]
    assert address["city"] == "B" and address["street_2"] is None


async def test_250_orders_go_out_as_3_calls_spaced_by_the_rate_limit(
    synced: Config, pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """250 queued orders: calls of 100, 100 and 50, at least min_interval_seconds apart."""
    for order_id in sorted(sim_state.orders)[:250]:
        await queue(pool, order_id, {"references": {"order_reference_for_seller": f"R-{order_id}"}})
    summary = await push_source(synced, pool, synced.sources[0])
    assert summary.calls == 3 and summary.applied == 250
    assert [size for _, size in sim_state.or04_batches] == [100, 100, 50]
    times = [moment for moment, _ in sim_state.or04_batches]
    assert all(later - earlier >= 0.29 for earlier, later in itertools.pairwise(times))
    assert sim_state.calls["OR04"] == 3, "no call was refused with 429: the pusher kept the pace"
    assert await pool.fetchval("SELECT count(*) FROM push_calls WHERE status = 'answered'") == 3
    assert await pool.fetchval("SELECT count(*) FROM order_patches WHERE status = 'applied'") == 250


@pytest.mark.parametrize(
    ("patch", "field", "code"),
    [
        ({"shipping_method": "EXP"}, "shipping_method", "UNKNOWN_FIELD"),
        ({"shop_statistics": {"excluded": None}}, "shop_statistics.excluded", "REQUIRED"),
        ({"shop_statistics": {"reason": "late"}}, "shop_statistics.excluded", "REQUIRED"),
        (
            {"shop_statistics": {"excluded": True, "reason": "x" * 101}},
            "shop_statistics.reason",
            "TOO_LONG",
        ),
        (
            {"customer": {"organization": {"address": {"country_iso_code": "FRA"}}}},
            "customer.organization.address.zip_code",
            "REQUIRED",
        ),
        (
            {"customer": {"billing_address": {"country_iso_code": "FR"}}},
            "customer.billing_address.country_iso_code",
            "INVALID_VALUE",
        ),
        (
            {"customer": {"billing_address": {"country_iso_code": "XXX"}}},
            "customer.billing_address.country_iso_code",
            "INVALID_VALUE",
        ),
        (
            {"payment_destination": {"payment_reference": "R1"}},
            "payment_destination.@type",
            "REQUIRED",
        ),
        (
            {"references": {"order_reference_for_seller": "  "}},
            "references.order_reference_for_seller",
            "BLANK",
        ),
        (
            {"references": {"order_reference_for_customer": None}},
            "references.order_reference_for_customer",
            "BLANK",
        ),
        ({"payment_workflow": "PAY_ON_DUE_DATE"}, "payment_workflow", "INVALID_VALUE"),
        ({"payment_workflow": "PAY_ON_ACCEPTANCE"}, "payment_workflow", "INVALID_CHANGE"),
        ({"shop_statistics": {"excluded": "yes"}}, "shop_statistics.excluded", "INVALID_TYPE"),
        (
            {"invoice_details": {"payment_terms": {"days": "30"}}},
            "invoice_details.payment_terms.days",
            "INVALID_TYPE",
        ),
        ({"shipping_deadline": "next week"}, "shipping_deadline", "INVALID_VALUE"),
        (
            {"order_id": "Someone_else-A", "shipping_deadline": "2026-12-01T00:00:00Z"},
            "order_id",
            "ORDER_ID_MISMATCH",
        ),
    ],
)
async def test_invalid_patches_are_rejected_locally_with_the_reason(
    synced: Config,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
    patch: dict[str, Any],
    field: str,
    code: str,
) -> None:
    """A patch that breaks an OR04 rule is refused before sending; its row says why."""
    order_id = sorted(sim_state.orders)[0]  # synced orders are PAY_ON_ACCEPTANCE already
    patch_id = await queue(pool, order_id, patch)
    summary = await push_source(synced, pool, synced.sources[0])
    assert summary.rejected == 1 and summary.calls == 0
    assert sim_state.calls["OR04"] == 0
    row = (await rows(pool))[patch_id]
    assert row["status"] == "rejected"
    errors = orjson.loads(row["errors"])
    assert {"code": code, "field": field} in [
        {"code": e["code"], "field": e["field"]} for e in errors
    ], errors


async def test_partial_failure_keeps_each_orders_errors_and_applies_the_rest(
    synced: Config, pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """Mirakl refuses one order (anonymized customer) and one unknown order; the rest apply."""
    ids = sorted(sim_state.orders)[:4]
    sim_state.anonymized.add(ids[0])
    patch = {"customer": {"billing_address": {"city": "Nantes"}}}
    queued = [await queue(pool, order_id, patch) for order_id in [*ids, "Order_99999999-A"]]
    summary = await push_source(synced, pool, synced.sources[0])
    assert (summary.calls, summary.applied, summary.rejected) == (1, 3, 2)
    state = await rows(pool)
    assert state[queued[0]]["status"] == "rejected"
    assert orjson.loads(state[queued[0]]["errors"])[0]["code"] == "CUSTOMER_ANONYMIZED"
    assert orjson.loads(state[queued[4]]["errors"])[0]["code"] == "ORDER_NOT_FOUND"
    assert [state[p]["status"] for p in queued[1:4]] == ["applied"] * 3
    assert all(
        sim_state.orders[i]["customer"]["billing_address"]["city"] == "Nantes" for i in ids[1:]
    )
    assert sim_state.orders[ids[0]]["customer"]["billing_address"]["city"] != "Nantes"


async def test_429_and_5xx_on_or04_are_retried(
    synced: Config, pool: asyncpg.Pool, sim_state: SimulatorState
) -> None:
    """OR04 answering 429 (Retry-After) then 503 is retried; the patch applies once."""
    sim_state.inject("OR04", status=429, retry_after=0.05)
    sim_state.inject("OR04", status=503)
    order_id = sorted(sim_state.orders)[2]
    await queue(pool, order_id, {"references": {"order_reference_for_seller": "S-NEW"}})
    summary = await push_source(synced, pool, synced.sources[0])
    assert summary.applied == 1 and sim_state.calls["OR04"] == 3
    assert sim_state.orders[order_id]["references"]["order_reference_for_seller"] == "S-NEW"


async def test_kill_during_push_loses_nothing(
    sim_config: Callable[..., Path],
    synced: Config,
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """SIGKILL while OR04 is in flight: the rows stay 'sent', the next push sends them again."""

    config = sim_config()
    ids = sorted(sim_state.orders)[:150]
    for order_id in ids:
        await queue(pool, order_id, {"references": {"order_reference_for_seller": f"K-{order_id}"}})
    sim_state.inject(
        "OR04", delay_seconds=1.0
    )  # Mirakl applies the first call, but too late for the killed pusher
    proc = await start(config, "push")
    for _ in range(500):
        if sim_state.calls["OR04"]:
            break
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert await pool.fetchval("SELECT count(*) FROM order_patches WHERE status = 'sent'") == 100
    await asyncio.sleep(1.2)
    assert await rerun_until_success(config, ("push",)) == 1
    assert await pool.fetchval("SELECT count(*) FROM order_patches WHERE status = 'applied'") == 150
    assert all(
        sim_state.orders[i]["references"]["order_reference_for_seller"] == f"K-{i}" for i in ids
    )
    assert await pool.fetchval("SELECT count(*) FROM push_calls WHERE status = 'failed'") == 1
