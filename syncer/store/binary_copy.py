"""Staged rows in PostgreSQL's binary COPY format, written in one pass.

An order's bytes go into the `jsonb` column as they were received: asyncpg's own
record encoder wants a `str` for `jsonb`, which cost a UTF-8 decode per order and an
encode back (the orders hold non-ASCII text), plus an introspection round trip per
COPY. Measured in docs/benchmarks.md.

Format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format"): a
header, then per row the field count and each field as a length and its bytes in the
type's binary form, then a trailer. `timestamptz` is microseconds since 2000-01-01 UTC;
`jsonb` is a version byte (1) followed by the document's text.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, datetime

StagedRow = tuple[int, int, int, str, datetime, bytes]

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # signature, flags, no extension
TRAILER = struct.pack("!h", -1)
FLUSH_BYTES = 512 * 1024

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# 6 fields: run_id int8, batch int4, position int4, then the length of order_id.
_KEYS = struct.Struct("!hiqiiiii")
# last_updated_date as int8, then the length of the jsonb value (version byte included).
_WHEN_AND_RAW = struct.Struct("!iqi")
_JSONB_VERSION = b"\x01"


def row_pieces(row: StagedRow) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """One staged row (run_id, batch, position, order_id, last_updated_date, raw) as the
    pieces of its COPY tuple, joined later with its neighbours (one copy of `raw`)."""
    run_id, batch, position, order_id, updated, raw = row
    key = order_id.encode()
    since = updated - _EPOCH
    micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    return (
        _KEYS.pack(6, 8, run_id, 4, batch, 4, position, len(key)),
        key,
        _WHEN_AND_RAW.pack(8, micros, len(raw) + 1),
        _JSONB_VERSION,
        raw,
    )


async def copy_data(rows: AsyncIterable[StagedRow] | Sequence[StagedRow]) -> AsyncIterator[bytes]:
    """The COPY stream for `rows`, in pieces of about FLUSH_BYTES."""
    pending = [HEADER]
    size = 0
    async for row in rows if isinstance(rows, AsyncIterable) else _each(rows):
        pending += row_pieces(row)
        size += len(row[5])
        if size >= FLUSH_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(TRAILER)
    yield b"".join(pending)


async def _each(rows: Sequence[StagedRow]) -> AsyncIterator[StagedRow]:
    for row in rows:
        yield row
