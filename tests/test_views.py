"""The warehouse views, queried after a sync, agree with the simulator's truth."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal

import asyncpg

from syncer.commands import run_source
from syncer.config import Config
from syncer.dates import parse_instant
from syncer.simulator import SimulatorState
from syncer.store.sync_store import SyncStore
from tests.truth import dec


async def test_views_match_the_truth(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """order_lines_flat, refunds, cancelations and daily_sales are what the orders say."""
    sim_state.seed_orders(400, days=50)
    config = make_config()
    await run_source(config, store, config.sources[0], "full")
    orders = sim_state.orders.values()

    lines = [(o, line) for o in orders for line in o["order_lines"]]
    flat = await pool.fetch("SELECT * FROM order_lines_flat")
    assert len(flat) == len(lines)
    by_id = {r["order_line_id"]: r for r in flat}
    for order, line in lines:
        row = by_id[line["order_line_id"]]
        assert (row["commercial_id"], row["currency_iso_code"], row["order_state"]) == (
            order["commercial_id"],
            order["currency_iso_code"],
            order["order_state"],
        )
        assert row["total_price"] == dec(line["total_price"])

    refunds = [r for _, line in lines for r in line["refunds"]]
    cancelations = [c for _, line in lines for c in line["cancelations"]]
    assert refunds and cancelations, "the simulator's data exercises both views"
    got = await pool.fetch("SELECT refund_id, amount, reason_code FROM order_line_refunds")
    assert sorted((r["refund_id"], r["amount"]) for r in got) == sorted(
        (r["id"], dec(r["amount"])) for r in refunds
    )
    got = await pool.fetch("SELECT cancelation_id, quantity FROM order_line_cancelations")
    assert sorted((c["cancelation_id"], c["quantity"]) for c in got) == sorted(
        (c["id"], c["quantity"]) for c in cancelations
    )

    expected: dict[tuple[str, object], list[Decimal]] = defaultdict(
        lambda: [Decimal(0), Decimal(0)]
    )
    for order in orders:
        if order["order_state"] in ("REFUSED", "CANCELED"):
            continue
        key = (order["currency_iso_code"], parse_instant(order["created_date"]).date())
        expected[key][0] += 1
        expected[key][1] += Decimal(str(order["total_price"]))
    rows = await pool.fetch("SELECT currency_iso_code, day, orders, total_amount FROM daily_sales")
    assert {
        (r["currency_iso_code"], r["day"]): [r["orders"], r["total_amount"]] for r in rows
    } == dict(expected)
