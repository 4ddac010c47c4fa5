"""Orders in the shapes real Mirakl sends (tests/fixtures/, see docs/mirakl.md), through full
and differential runs against the simulator serving them byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg

from syncer.commands import run_source
from syncer.config import Config
from syncer.dates import utc_now
from syncer.pipeline.chunks import split_orders
from syncer.simulator import SimulatorState
from syncer.simulator.orders import iso_seconds
from syncer.store.sync_store import SyncStore

FIXTURES = Path(__file__).parent / "fixtures"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def documents(name: str, **placeholders: str) -> list[bytes]:
    """The order objects of a fixture file, as the bytes it holds them."""
    data = (FIXTURES / name).read_bytes()
    for key, value in placeholders.items():
        data = data.replace(f"@{key}@".encode(), value.encode())
    return list(split_orders(iter([data])))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_seller_full_then_differential_keep_real_fields_exactly(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """Seller view: typed columns exact (money at the sender's scale, whole-second and
    millisecond dates, null channel and addresses), shop_id from the configured shop,
    refunds by refund_state; a differential run brings the accepted version."""
    sim_state.add_documents(documents("seller_orders.json"))
    config = make_config(shop_id=4242, start_date=SINCE)
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.status == "succeeded" and summary.orders == 2

    rows = {r["order_id"]: r for r in await pool.fetch("SELECT * FROM orders")}
    received = rows["7301549877-A"]
    assert received["shop_id"] == "4242", "a seller's order carries no shop_id: the configured one"
    assert (received["order_state"], received["order_state_reason_code"]) == (
        "RECEIVED",
        "AUTO_RECEIVED",
    )
    assert received["channel_code"] == "FR"
    assert str(received["total_price"]) == "210.00" and str(received["shipping_price"]) == "0.00"
    assert str(received["total_commission"]) == "30.24"
    assert received["created_date"] == at("2026-01-05T09:58:03+00:00")
    assert received["last_updated_date"] == at("2026-01-19T16:40:05+00:00")
    assert received["customer_debited_date"] == at("2026-01-05T10:04:00+00:00")
    assert received["acceptance_decision_date"] == at("2026-01-05T10:02:11.460+00:00")
    assert received["shipping_deadline"] == at("2026-01-07T22:59:59.999+00:00")
    waiting = rows["7301550021-A"]
    assert waiting["shop_id"] == "4242" and waiting["channel_code"] is None
    assert waiting["customer_id"] == "jo.bloggs@example.net"
    assert waiting["acceptance_decision_date"] is None and waiting["customer_debited_date"] is None
    assert waiting["order_state"] == "WAITING_ACCEPTANCE"

    lines = {r["order_line_id"]: r for r in await pool.fetch("SELECT * FROM order_lines")}
    assert set(lines) == {"95", "139", "3f2b8c1e-6d0a-4c39-9e55-0b7a2d41c9aa"}
    rug = lines["3f2b8c1e-6d0a-4c39-9e55-0b7a2d41c9aa"]
    assert (str(rug["price_unit"]), rug["quantity"], rug["offer_id"]) == ("100.00", 2, "9001")
    assert rug["received_date"] == at("2026-01-09T18:00:12+00:00")
    assert lines["139"]["order_line_state"] == "REFUSED"

    refunds = await pool.fetch("SELECT * FROM order_line_refunds")
    assert len(refunds) == 1
    refund = refunds[0]
    assert refund["refund_state"] == refund["state"] == "WAITING_REFUND_TAX_CONFIRMATION"
    assert refund["order_refund_id"] == "RF-7301549877-1" and refund["refund_id"] == "5501"
    assert (str(refund["amount"]), str(refund["commission_total_amount"])) == ("100.00", "14.40")
    assert refund["shop_id"] == "4242"
    assert await pool.fetchval("SELECT count(*) FROM daily_sales WHERE shop_id = '4242'") == 2

    stamp = iso_seconds(utc_now())
    sim_state.add_documents(documents("seller_orders_updated.json", UPDATED=stamp))
    summary = await run_source(config, store, config.sources[0], "differential")
    assert summary.status == "succeeded" and summary.orders_changed == 1
    row = await pool.fetchrow("SELECT * FROM orders WHERE order_id = '7301550021-A'")
    assert row["order_state"] == "SHIPPING" and row["shop_id"] == "4242"
    assert row["last_updated_date"] == at(stamp) and row["channel_code"] is None
    assert row["acceptance_decision_date"] == at("2026-01-12T09:01:30+00:00")
    line = await pool.fetchrow("SELECT * FROM order_lines WHERE order_line_id = '95'")
    assert line["order_line_state"] == "SHIPPING" and line["last_updated_date"] == at(stamp)
    kept = await pool.fetchrow("SELECT * FROM orders WHERE order_id = '7301549877-A'")
    assert kept["last_updated_date"] == received["last_updated_date"]


async def test_operator_view_keeps_the_orders_own_shop_id(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """Operator view (Bearer): shop_id comes from the order itself, cancelations and refunds
    read their real fields, money keeps two decimals."""
    sim_state.config.auth = "bearer"
    sim_state.add_documents(documents("operator_orders.json"))
    config = make_config(auth="bearer", start_date=SINCE)
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.status == "succeeded" and summary.orders == 1

    row = await pool.fetchrow("SELECT * FROM orders")
    assert (row["shop_id"], row["currency_iso_code"], row["customer_id"]) == (
        "2000",
        "GBP",
        "900117",
    )
    assert (str(row["price"]), str(row["total_price"])) == ("31.00", "33.99")
    assert row["total_price"] == Decimal("33.99")
    refund = await pool.fetchrow("SELECT * FROM order_line_refunds")
    assert (refund["refund_state"], refund["shop_id"], str(refund["amount"])) == (
        "REFUNDED",
        "2000",
        "15.50",
    )
    cancelation = await pool.fetchrow("SELECT * FROM order_line_cancelations")
    assert (cancelation["cancelation_id"], str(cancelation["amount"]), cancelation["quantity"]) == (
        "C-86-1",
        "15.50",
        1,
    )
    flat = await pool.fetchrow("SELECT * FROM order_lines_flat")
    assert (flat["shop_id"], str(flat["price_unit"]), flat["order_line_state"]) == (
        "2000",
        "15.50",
        "SHIPPED",
    )


async def test_configured_shop_id_never_overrides_the_orders_own(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """An order that names its shop keeps it, whatever shop_id the source is configured with."""
    sim_state.config.auth = "bearer"
    sim_state.add_documents(documents("operator_orders.json"))
    config = make_config(auth="bearer", shop_id=1, start_date=SINCE)
    await run_source(config, store, config.sources[0], "full")
    assert await pool.fetchval("SELECT shop_id FROM orders") == "2000"
