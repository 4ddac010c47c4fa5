"""Staged rows written as hand-built binary COPY read back exactly as they were sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import orjson
import pytest

from syncer.store import binary_copy
from syncer.store import queries as q
from syncer.store.binary_copy import StagedRow
from syncer.store.sync_store import SyncStore

RUN = 41


def row(position: int, order_id: str, updated: datetime, raw: bytes) -> StagedRow:
    return (RUN, 3, position, order_id, updated, raw)


ROWS = [
    # non-ASCII text and exact digits pass as the bytes were received
    row(
        0,
        "Order-é-1",
        datetime(2026, 3, 1, 10, 11, 12, 123456, tzinfo=UTC),
        '{"order_id": "Order-é-1", "price": 12345678901234567.891, "city": "Zürich"}'.encode(),
    ),
    # an offset is the same instant in UTC; a date before 2000 is a negative count
    row(
        1,
        "B",
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
        b'{"order_id": "B", "last_updated_date": "1999-12-31T23:59:59.999999-05:00"}',
    ),
    # large enough to span several COPY messages
    row(
        2,
        "C" * 300,
        datetime(2026, 11, 26, tzinfo=UTC),
        orjson.dumps({"order_id": "C" * 300, "note": "x" * (3 * binary_copy.FLUSH_BYTES)}),
    ),
]


@pytest.fixture
async def staged(store: SyncStore, pool: asyncpg.Pool) -> AsyncIterator[None]:
    await pool.execute(
        "INSERT INTO sync_runs (run_id, source, mode, window_start, window_end)"
        " VALUES ($1, 'src', 'full', now(), now())",
        RUN,
    )
    await store.create_staging(RUN)
    yield
    await store.drop_staging(RUN)


async def rows_back(pool: asyncpg.Pool) -> list[tuple[object, ...]]:
    records = await pool.fetch(
        "SELECT run_id, batch, position, order_id, last_updated_date, raw::text"
        f" FROM {q.staging_table(RUN)} ORDER BY position"
    )
    return [tuple(r) for r in records]


@pytest.mark.parametrize("as_stream", [False, True])
async def test_rows_read_back_exactly(
    store: SyncStore, pool: asyncpg.Pool, staged: None, as_stream: bool
) -> None:
    async def stream() -> AsyncIterator[StagedRow]:
        for item in ROWS:
            yield item

    await store.stage_rows(RUN, stream() if as_stream else ROWS)
    back = await rows_back(pool)
    assert [b[:5] for b in back] == [r[:5] for r in ROWS]
    for (*_, text), sent in zip(back, ROWS, strict=True):
        # the same document: PostgreSQL parsed the bytes that were sent
        assert await pool.fetchval(
            "SELECT $1::text::jsonb = $2::text::jsonb", text, sent[5].decode()
        )
    assert "12345678901234567.891" in back[0][5]
    assert "Zürich" in back[0][5]
    # the instant is kept to the microsecond, whatever the offset it was given in
    assert back[1][4] == datetime(2000, 1, 1, 4, 59, 59, 999999, tzinfo=UTC)


async def test_a_failing_stream_stages_nothing(
    store: SyncStore, pool: asyncpg.Pool, staged: None
) -> None:
    async def broken() -> AsyncIterator[StagedRow]:
        yield ROWS[0]
        yield ROWS[2]
        raise RuntimeError("the download broke")

    with pytest.raises(RuntimeError, match="the download broke"):
        await store.stage_rows(RUN, broken())
    assert await rows_back(pool) == []
