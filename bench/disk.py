"""What a load leaves on disk: each table of a schema, split into heap, TOAST and indexes.

Tables are listed from the catalog (every table and materialised view of the schema, the
bookkeeping ones too), so the same code measures whatever tables a version of the schema
has. `heap` is the table's own forks (main, free space map, visibility map), `toast` its
TOAST table with that table's index, `indexes` the table's indexes; they add up to
`pg_total_relation_size`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

SIZES_SQL = """
SELECT c.relname AS name,
       pg_table_size(c.oid) - coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0)
           AS heap,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast,
       pg_indexes_size(c.oid) AS indexes,
       pg_total_relation_size(c.oid) AS total
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')
ORDER BY total DESC, name
"""


@dataclass(frozen=True)
class TableSize:
    name: str
    heap: int
    toast: int
    indexes: int
    total: int


async def table_sizes(conn: asyncpg.Connection, schema: str) -> list[TableSize]:
    """Every table of `schema`, largest first (empty when the schema does not exist)."""
    return [TableSize(**dict(row)) for row in await conn.fetch(SIZES_SQL, schema)]


def schema_sizes(dsn: str, schema: str) -> list[TableSize]:
    """`table_sizes` on a connection of its own (for the synchronous benchmark driver)."""

    async def measure() -> list[TableSize]:
        conn = await asyncpg.connect(dsn)
        try:
            return await table_sizes(conn, schema)
        finally:
            await conn.close()

    return asyncio.run(measure())


def total(sizes: list[TableSize], name: str = "all tables") -> TableSize:
    return TableSize(
        name,
        sum(s.heap for s in sizes),
        sum(s.toast for s in sizes),
        sum(s.indexes for s in sizes),
        sum(s.total for s in sizes),
    )


def disk_table(
    sizes: list[TableSize], orders: int, json_bytes: float, dlt: TableSize | None = None
) -> str:
    """Markdown: one row per table, the total, and dlt's tables' total when given; sizes in
    MB (10^6 bytes), then bytes per order and the ratio to the JSON downloaded and to dlt."""
    lines = [
        "| table | heap MB | TOAST MB | indexes MB | total MB | bytes/order | vs JSON | vs dlt |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*sizes, total(sizes, "**syncer, all tables**")]
    if dlt is not None:
        rows.append(dlt)
    for s in rows:
        vs_dlt = f"{s.total / dlt.total:.2f}" if dlt is not None and dlt.total else "-"
        lines.append(
            f"| {s.name} | {s.heap / 1e6:,.1f} | {s.toast / 1e6:,.1f} | {s.indexes / 1e6:,.1f} | "
            f"{s.total / 1e6:,.1f} | {s.total / max(orders, 1):,.0f} | "
            f"{s.total / json_bytes:.2f} | {vs_dlt} |"
        )
    return "\n".join(lines)
