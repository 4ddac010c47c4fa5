"""Every HTTP wait ends: a chunk download has a total deadline, Retry-After is always a finite,
capped delay (delta-seconds or HTTP-date), anything unreadable falls back to backoff."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.commands import run_source
from syncer.config import Config, HttpConfig
from syncer.errors import StreamBroken
from syncer.mirakl.retry import Backoff, parse_retry_after
from syncer.simulator import SimulatorState
from syncer.store.sync_store import SyncStore
from tests.truth import assert_matches_truth

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


async def test_a_dribbling_chunk_fails_by_the_chunk_deadline_naming_the_key(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """A chunk sent one byte every 0.2 s (never a read stall): each attempt ends at
    http.chunk_timeout_seconds, then the run fails naming the key; nothing is merged."""
    sim_state.seed_orders(30, days=10)
    sim_state.inject("OR15", dribble_seconds=0.2, times=10)
    http = HttpConfig(
        timeout_seconds=5,  # sock_read: far above the 0.2 s between bytes
        chunk_timeout_seconds=1,
        max_attempts=2,
        backoff_base_seconds=0.01,
        backoff_max_seconds=0.05,
    )
    config = make_config(http=http)
    started = time.monotonic()
    with pytest.raises(StreamBroken, match=r"http\.chunk_timeout_seconds \(1 s\)"):
        await asyncio.wait_for(run_source(config, store, config.sources[0], "full"), 60)
    assert time.monotonic() - started < 30
    assert sim_state.calls["OR15"] == 2, "retried once, then failed"
    assert await pool.fetchval("SELECT count(*) FROM orders") == 0
    run = await pool.fetchrow("SELECT status, error FROM sync_runs ORDER BY run_id DESC LIMIT 1")
    assert run["status"] == "failed" and "chunk_timeout_seconds" in run["error"]


async def test_retry_after_as_an_http_date_is_waited_out(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """OR14 answers 429 with Retry-After as an HTTP-date 3 s ahead: the worker waits for it
    (not its 0.05 s backoff), then succeeds."""
    sim_state.seed_orders(20, days=10)
    when = datetime.now(UTC) + timedelta(seconds=3)
    sim_state.inject("OR14", status=429, retry_after_text=format_datetime(when, usegmt=True))
    config = make_config()
    started = time.monotonic()
    summary = await run_source(config, store, config.sources[0], "full")
    assert summary.status == "succeeded"
    assert time.monotonic() - started >= 1.5, "the HTTP-date (>= 2 s away) was honoured"
    await assert_matches_truth(pool, sim_state)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0.25 ", 0.25),
        ("0", 0.0),
        ("5000", 900.0),  # capped
        ("9" * 400, 900.0),  # a huge delta is the cap, not inf
        ("Sun, 01 Mar 2026 12:01:00 GMT", 60.0),
        ("Sun, 01 Mar 2026 12:00:30 -0000", 30.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # already past
        ("Sun, 01 Mar 2099 12:00:00 GMT", 900.0),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-inf", None),
        ("-5", None),
        ("1e3", None),
        ("", None),
        ("soon", None),
        ("Sun, 01 Mar 99999 12:00:00 GMT", None),
    ],
)
def test_parse_retry_after(header: str, expected: float | None) -> None:
    """delta-seconds and HTTP-date are read; non-finite or unreadable is None; capped to max."""
    assert parse_retry_after(header, 900.0, now=NOW) == expected


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(), st.floats(min_value=0, max_value=86400))
def test_parse_retry_after_is_finite_and_in_range(header: str, max_seconds: float) -> None:
    """Any Retry-After text: None, or a finite number of seconds in [0, max]."""
    seconds = parse_retry_after(header, max_seconds, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= max_seconds)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), st.text()), st.integers(min_value=1, max_value=10_000))
def test_backoff_delay_is_finite_and_capped(header: str | None, attempt: int) -> None:
    """The delay before a retry is finite and within the backoff or Retry-After cap."""
    delay = Backoff(1.0, 60.0, 900.0).delay_seconds(attempt, header)
    assert math.isfinite(delay) and 0 <= delay <= 900.0
