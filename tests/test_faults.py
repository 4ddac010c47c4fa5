"""The fault matrix: every way Mirakl can misbehave ends with the database equal to the
truth, or with a loud failure, the watermark unmoved and nothing partial visible,
followed by a run that succeeds."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from syncer.commands import run_source
from syncer.config import Config, HttpConfig
from syncer.errors import ChunkInvalid, MiraklUnavailable, StreamBroken, SyncerError
from syncer.pipeline.window import settled_watermark
from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.simulator.app import SimExport
from syncer.store.sync_store import SyncStore
from tests.truth import assert_matches_truth, staging_left

FAST_HTTP = HttpConfig(
    timeout_seconds=0.5,
    max_attempts=4,
    backoff_base_seconds=0.01,
    backoff_max_seconds=0.05,
    retry_after_max_seconds=1,
)


@dataclass
class Case:
    endpoint: str
    fault: dict[str, Any]
    error: type[SyncerError] | None = None  # None: the run absorbs the fault and succeeds
    match: str = ""

    def __str__(self) -> str:
        shown = ",".join(f"{k}={v!r}"[:30] for k, v in self.fault.items())
        return f"{self.endpoint}[{shown}]"


BAD_ORDER = b'{"orders":[{"order_id":"Order_X-A","last_updated_date":"2026-01-01T00:00:00Z"},{"commercial_id":"Y"}]}'
CASES = [
    # Rate limits and server errors: waited out or retried.
    Case("OR13", {"status": 429, "retry_after": 0.05}),
    Case("OR14", {"status": 429, "retry_after": 0.05}),
    Case("OR15", {"status": 429, "retry_after": 0.05}),
    Case("OR14", {"status": 500}),
    Case("OR14", {"status": 502}),
    Case("OR14", {"status": 503, "times": 3}),
    Case("OR15", {"status": 500}),
    Case("OR15", {"status": 502}),
    Case("OR15", {"status": 503, "times": 3}),
    # OR13 is not blindly retried: a 5xx or a reset might have started an export.
    Case("OR13", {"status": 500}, MiraklUnavailable, "OR13 answered 500; not retried"),
    Case("OR13", {"status": 503}, MiraklUnavailable, "OR13 answered 503; not retried"),
    Case("OR13", {"drop": True}, MiraklUnavailable, "OR13 failed"),
    Case("OR13", {"delay_seconds": 1.0}, MiraklUnavailable, "OR13 failed: timed out"),
    # Connection resets and slow answers on idempotent reads: retried.
    Case("OR14", {"drop": True, "times": 2}),
    Case("OR15", {"drop": True}),
    Case("OR14", {"delay_seconds": 1.0}),
    Case("OR15", {"delay_seconds": 1.0}),
    Case("OR15", {"cut_after_bytes": 3000}),
    Case("OR15", {"truncate_after_bytes": 5000}),
    Case("OR15", {"cut_after_bytes": 3000, "times": 10}, StreamBroken, "download broke"),
    Case("OR15", {"truncate_after_bytes": 5000, "times": 10}, StreamBroken, "ended early"),
    # Retries exhausted: the run fails loudly and the next one succeeds.
    Case("OR14", {"status": 503, "times": 10}, MiraklUnavailable, "still failing after 4 attempts"),
    # Export states.
    Case("OR14", {"export_status": "FAILED"}, SyncerError, "ended FAILED"),
    Case("OR14", {"export_status": "CANCELED"}, SyncerError, "ended CANCELED"),
    Case("OR14", {"export_status": "REVIEWING", "times": 2}),  # an unknown status: keep polling
    # The export vanished (expired): it is requested again within the run.
    Case("OR14", {"forget_export": True}),
    Case("OR15", {"status": 404}),
    Case("OR15", {"status": 410}),
    Case("OR15", {"status": 410, "times": 10}, SyncerError, "410"),
    # Bad data: named, recorded, nothing partial.
    Case(
        "OR15",
        {"body": b'{"orders":[{"order_id":"A",' + b'"x":}]}'},
        ChunkInvalid,
        "at order #0: malformed JSON",
    ),
    Case("OR15", {"body": b'{"data": []}'}, ChunkInvalid, 'no "orders" array'),
    Case("OR15", {"body": b'[{"order_id": "A"}]'}, ChunkInvalid, "not a JSON object"),
    Case("OR15", {"body": BAD_ORDER}, ChunkInvalid, "at order #1: order has no order_id"),
    Case(
        "OR15",
        {"body": b'{"orders":[{"order_id":"A"}]}'},
        ChunkInvalid,
        "order A has no last_updated_date",
    ),
]


@pytest.fixture
def loaded(make_config: Callable[..., Config], sim_state: SimulatorState) -> Callable[[], Config]:
    sim_state.config.max_items_per_chunk = 20
    sim_state.seed_orders(100, days=40)
    return lambda: make_config(http=FAST_HTTP)


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_fault_ends_in_truth_or_a_loud_failure_then_truth(
    case: Case,
    loaded: Callable[[], Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """Each fault: the run absorbs it, or fails loudly with nothing moved; the next run converges."""
    config = loaded()
    source = config.sources[0]
    await run_source(config, store, source, "full")
    sim_state.update_orders(30)
    sim_state.create_orders(10)  # the differential export has three chunks
    mark = await store.watermark("shop")
    before = await pool.fetch("SELECT order_id, raw FROM orders ORDER BY order_id")
    sim_state.inject(case.endpoint, **case.fault)

    if case.error is None:
        summary = await run_source(config, store, source, "differential")
        assert summary.status == "succeeded"
    else:
        with pytest.raises(case.error, match=case.match) as caught:
            await run_source(config, store, source, "differential")
        assert sim_state.config.api_key not in str(caught.value)
        assert "token=" not in str(caught.value), "chunk URLs are shown without their query"
        assert await store.watermark("shop") == mark
        assert await pool.fetch("SELECT order_id, raw FROM orders ORDER BY order_id") == before
        assert await staging_left(pool) == (0, 0)
        run = await pool.fetchrow(
            "SELECT status, error FROM sync_runs ORDER BY run_id DESC LIMIT 1"
        )
        assert run["status"] == "failed" and run["error"]
        sim_state.faults.clear()
        summary = await run_source(config, store, source, "differential")
        assert summary.status == "succeeded"
    await assert_matches_truth(pool, sim_state)
    assert await store.watermark("shop") == settled_watermark(summary.window.end)
    assert await store.in_flight_export("shop") is None


async def test_connection_refused_is_retried_until_mirakl_is_back(
    make_config: Callable[..., Config], store: SyncStore, pool: asyncpg.Pool
) -> None:
    """Nothing listens yet (connection refused): OR13 is retried, then the run succeeds."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = SimulatorState(SimulatorConfig(pending_polls=1))
    state.seed_orders(30, days=10)
    config = make_config(
        base_url=f"http://127.0.0.1:{port}",
        http=HttpConfig(
            timeout_seconds=2, max_attempts=8, backoff_base_seconds=0.1, backoff_max_seconds=0.2
        ),
    )
    run = asyncio.create_task(run_source(config, store, config.sources[0], "full"))
    await asyncio.sleep(0.3)
    assert not run.done()
    async with serve(state, port=port):
        summary = await run
    assert summary.orders == 30
    await assert_matches_truth(pool, state)


async def test_an_export_we_did_not_record_is_waited_out(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """OR13 refused (409, export in progress, e.g. started before a crash): wait, then succeed."""
    sim_state.seed_orders(20, days=10)
    sim_state.config.pending_polls = 3
    # An export started by someone else (or by a worker killed before it stored the id).
    sim_state.exports["orphan"] = SimExport("orphan", [])
    config = make_config()
    task = asyncio.create_task(run_source(config, store, config.sources[0], "full"))
    await asyncio.sleep(0.2)
    assert sim_state.calls["OR13"] >= 2, "refused and asked again"
    sim_state.exports["orphan"].status = "COMPLETED"
    summary = await task
    assert summary.status == "succeeded"
    await assert_matches_truth(pool, sim_state)


async def test_empty_export_completes_and_moves_the_watermark(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """COMPLETED with no URL (nothing changed): the run succeeds and the watermark moves."""
    config = make_config()
    first = await run_source(config, store, config.sources[0], "full")
    assert first.chunks == 0 and first.orders == 0
    second = await run_source(config, store, config.sources[0], "differential")
    assert second.chunks == 0
    assert await store.watermark("shop") == settled_watermark(second.window.end)


async def test_duplicates_across_chunks_keep_the_newest(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """The same order in several chunks, older versions after newer ones: the newest wins."""
    import copy

    sim_state.config.max_items_per_chunk = 10
    ids = sim_state.seed_orders(30, days=10)
    olds = [copy.deepcopy(sim_state.orders[i]) for i in ids[:12]]
    sim_state.update_orders(30)
    sim_state.replayed_versions.extend(olds + olds)  # after the newer versions, across two chunks
    config = make_config()
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.chunks >= 5
    await assert_matches_truth(pool, sim_state)
