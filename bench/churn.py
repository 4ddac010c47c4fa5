"""Write amplification of re-delivery: what receiving the same orders again costs the store.

    python -m bench.churn [--orders 20000] [--edit 0.10] [--line-share 0.3] [--keep]

One simulator (its own process) and one schema (`bench_churn`), three `syncer resync
--full` of the same window, each measured on its own:

  initial   the first load, into empty tables
  same      the same export again: every order identical to what is stored
  edited    again, after `--edit` of the orders changed state (one typed field, and
            last_updated_date) and about `--line-share` of those also gained or lost one
            line, the other lines untouched (the simulator's `POST /_sim/mutate
            {"edit": n, "line_share": f}`)

Per phase: the run's own seconds; the WAL written (pg_current_wal_lsn before and after)
and its full-page images (pg_stat_wal); for `orders` and `order_lines`, per primary key,
the rows whose xmin changed (rewritten: updated, or deleted and inserted again), those
only locked (xmin kept, xmax changed), the new and the gone; for every table of the schema the pg_stat_user_tables deltas (inserted,
updated, HOT-updated, deleted); the schema's size after it. Tables are listed from the
catalog, so the same command measures any version of the schema.

A CHECKPOINT before each phase makes each one pay its full-page images the same way (on
the first change of each page after it). WAL and pg_stat_wal are the whole cluster's:
keep the machine quiet while this runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.disk import TableSize, table_sizes, total
from bench.run import (
    DEFAULT_DSN,
    fresh_schema,
    measure_child,
    resync_full,
    since_date,
    start_simulator,
    syncer_command,
    write_config,
)

DAYS = 300.0
# The tables whose rows are followed one by one (xmin per primary key), when present.
ROW_TABLES = ("orders", "order_lines")
COUNTERS = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")

STATS_SQL = f"""
SELECT relname, {", ".join(COUNTERS)} FROM pg_stat_user_tables WHERE schemaname = $1
"""
PRIMARY_KEY_SQL = """
SELECT a.attname
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = to_regclass($1) AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)
"""

Counters = dict[str, tuple[int, ...]]  # table -> COUNTERS


@dataclass(frozen=True)
class Rows:
    """One table's rows across a phase, by primary key."""

    before: int
    kept: int  # same xmin: not rewritten (`locked` of them had their xmax set, a row lock)
    locked: int
    rewritten: int  # another xmin: updated (HOT or not), or deleted and inserted again
    new: int
    gone: int

    @property
    def after(self) -> int:
        return self.kept + self.rewritten + self.new


@dataclass(frozen=True)
class Phase:
    name: str
    run: dict[str, Any]  # resync_full's
    wal_bytes: int
    wal_fpi: int
    counters: Counters  # deltas
    rows: dict[str, Rows | None]  # None: the table is absent or has no primary key
    sizes: list[TableSize]  # after the phase


async def counters(conn: asyncpg.Connection, schema: str) -> Counters:
    await conn.execute("SELECT pg_stat_clear_snapshot()")  # never a cached read
    rows = await conn.fetch(STATS_SQL, schema)
    return {row["relname"]: tuple(row[c] for c in COUNTERS) for row in rows}


async def settled_counters(
    conn: asyncpg.Connection, schema: str, steady_s: float = 1.0, limit_s: float = 30.0
) -> Counters:
    """The schema's counters once every backend that wrote has reported.

    PostgreSQL 15 backends flush their counters to shared memory at most once a second and
    when they exit (pg_stat_force_next_flush(), from 16, flushes only the caller's own).
    The syncer's backends exit with it; this waits until the counters stay still.
    """
    deadline = time.monotonic() + limit_s
    last = await counters(conn, schema)
    still_since = time.monotonic()
    while time.monotonic() - still_since < steady_s:
        if time.monotonic() > deadline:
            print("warning: statistics still moving; deltas may be short", file=sys.stderr)
            break
        await asyncio.sleep(0.25)
        now = await counters(conn, schema)
        if now != last:
            last, still_since = now, time.monotonic()
    return last


async def row_versions(
    conn: asyncpg.Connection, schema: str, table: str
) -> dict[str, tuple[str, str]] | None:
    """Each row's (xmin, xmax) by primary key (None: no such table, or no primary key)."""
    qualified = f'"{schema}"."{table}"'
    key = [row["attname"] for row in await conn.fetch(PRIMARY_KEY_SQL, qualified)]
    if not key:
        return None
    columns = ", ".join(f'"{column}"' for column in key)
    rows = await conn.fetch(
        f"SELECT concat_ws(chr(31), {columns}), xmin::text, xmax::text FROM {qualified}"
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def compare(before: dict[str, tuple[str, str]], after: dict[str, tuple[str, str]]) -> Rows:
    both = before.keys() & after.keys()
    kept = [key for key in both if before[key][0] == after[key][0]]
    locked = sum(before[key][1] != after[key][1] for key in kept)
    return Rows(
        len(before),
        len(kept),
        locked,
        len(both) - len(kept),
        len(after) - len(both),
        len(before) - len(both),
    )


async def measure_phase(conn: asyncpg.Connection, schema: str, name: str, config: Path) -> Phase:
    # Read before the CHECKPOINT: the scan may set hint bits, whose pages it then writes.
    before_rows = {t: await row_versions(conn, schema, t) for t in ROW_TABLES}
    await conn.execute("CHECKPOINT")
    before = await settled_counters(conn, schema)
    fpi = await conn.fetchval("SELECT wal_fpi FROM pg_stat_wal")
    lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
    run = await asyncio.to_thread(resync_full, config)
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", lsn)
    after = await settled_counters(conn, schema)
    fpi = await conn.fetchval("SELECT wal_fpi FROM pg_stat_wal") - fpi
    zero = (0,) * len(COUNTERS)
    deltas = {
        table: tuple(
            a - b for a, b in zip(after.get(table, zero), before.get(table, zero), strict=True)
        )
        for table in sorted(after.keys() | before.keys())
    }
    rows: dict[str, Rows | None] = {}
    for table, old in before_rows.items():
        new = await row_versions(conn, schema, table)
        rows[table] = compare(old, new) if old is not None and new is not None else None
    sizes = await table_sizes(conn, schema)
    return Phase(name, run, int(wal), int(fpi), deltas, rows, sizes)


def edit_orders(sim: str, count: int, line_share: float) -> int:
    """Ask the simulator for its small edits (see syncer/simulator/orders.py `edit_order`)."""
    body = json.dumps({"edit": count, "line_share": line_share}).encode()
    request = urllib.request.Request(f"{sim}/_sim/mutate", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return len(json.load(response)["edited"])


def report(phases: list[Phase], edited: int, line_share: float) -> str:
    out = [
        "| phase | orders sent | changed (syncer) | seconds | WAL MB | WAL FPIs | "
        "WAL bytes/order sent | schema MB after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        sent = p.run["orders"]
        changed = p.run["changed"]
        out.append(
            f"| {p.name} | {sent:,} | {'-' if changed is None else f'{changed:,}'} | "
            f"{p.run['seconds']:.1f} | {p.wal_bytes / 1e6:,.1f} | {p.wal_fpi:,} | "
            f"{p.wal_bytes / max(sent, 1):,.0f} | {total(p.sizes).total / 1e6:,.1f} |"
        )
    out += [
        "",
        f"(edited: {edited:,} orders changed state; about {line_share:.0%} of them also "
        "gained or lost one line)",
        "",
        "Rows by primary key (rewritten: the xmin changed; locked: the xmin kept, the xmax "
        "changed, i.e. a row lock was written, as ON CONFLICT DO UPDATE ... WHERE false does):",
        "",
        "| phase | table | rows before | kept | of which locked | rewritten | new | gone | "
        "rows after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        for table, r in p.rows.items():
            if r is None:
                out.append(f"| {p.name} | {table} | (absent, or no primary key) |||||||")
                continue
            out.append(
                f"| {p.name} | {table} | {r.before:,} | {r.kept:,} | {r.locked:,} | "
                f"{r.rewritten:,} | "
                f"{r.new:,} | {r.gone:,} | {r.after:,} |"
            )
    written = sorted({t for p in phases for t, d in p.counters.items() if any(d)})
    out += [
        "",
        "pg_stat_user_tables deltas (tables with any write in any phase):",
        "",
        "| phase | table | inserted | updated | of which HOT | deleted |",
        "|---|---|---:|---:|---:|---:|",
    ]
    zero = (0,) * len(COUNTERS)
    for p in phases:
        for table in written:
            ins, upd, hot, dele = p.counters.get(table, zero)
            out.append(f"| {p.name} | {table} | {ins:,} | {upd:,} | {hot:,} | {dele:,} |")
    quiet = sorted({t for p in phases for t in p.counters} - set(written))
    if quiet:
        out += ["", f"No writes in any phase: {', '.join(quiet)}."]
    return "\n".join(out)


async def run(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    sim, url = start_simulator(args.orders, DAYS, [])
    print(
        f"simulator: {args.orders:,} orders ready in {time.perf_counter() - started:.0f}s",
        file=sys.stderr,
    )
    fresh_schema(args.dsn, args.schema)
    conn = await asyncpg.connect(args.dsn)
    phases: list[Phase] = []
    edited = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "churn.toml"
            write_config(config, args.dsn, args.schema, url, since_date(DAYS), None)
            measure_child([*syncer_command(config), "migrate"])
            for name in ("initial", "same", "edited"):
                if name == "edited":
                    edited = edit_orders(url, round(args.orders * args.edit), args.line_share)
                phases.append(await measure_phase(conn, args.schema, name, config))
                print(f"{name}: {phases[-1].run}", file=sys.stderr)
    finally:
        sim.terminate()
        sim.wait()
        if not args.keep:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        await conn.close()
    return report(phases, edited, args.line_share)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--edit", type=float, default=0.10, help="share of orders edited")
    parser.add_argument(
        "--line-share", type=float, default=0.3, help="share of edited orders with a line changed"
    )
    parser.add_argument("--dsn", default=os.environ.get("SYNCER_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--schema", default="bench_churn")
    parser.add_argument("--keep", action="store_true", help="leave the schema for inspection")
    args = parser.parse_args()
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
