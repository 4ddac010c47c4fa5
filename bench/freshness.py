"""Freshness: how long until a change on Mirakl is visible in PostgreSQL.

    python -m bench.freshness [--scale 60] [--minutes 60] [--rate 2] [--dsn ...]
                              [--lane both|off|on]

A scenario on a compressed clock: Mirakl's limits and the worker's intervals divided by
`scale` (60: OR11 once a minute -> once a second, a differential export every 15 min ->
every 15 s and never closer than 5 min -> 5 s, an export ready after 30-60 s -> 0.5-1 s).
The simulator runs in this process (loopback), `syncer run` as a subprocess against a
fresh schema (dropped at the end). For `minutes` simulated minutes, at random moments
(about `rate` a simulated minute) the bench creates an order in WAITING_ACCEPTANCE or
updates another one, and polls PostgreSQL every 50 ms for the moment the stored
last_updated_date reaches the changed one. Lags are measured on this process's monotonic
clock (order dates are whole seconds: a simulated minute) and reported back in
real-Mirakl minutes (x scale), with the fast lane off and on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.simulator.orders import touch_order

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WAITING = "WAITING_ACCEPTANCE"
POLL_SECONDS = 0.05
SEED_ORDERS = 2000
# Mirakl's real limits and the worker's production intervals, in real seconds.
OR11_EVERY_S = 60.0
OR13_EVERY_S = 300.0
EXPORT_READY_S = (30.0, 60.0)
EXPORT_INTERVAL_S = 15 * 60.0
OR14_POLL_S = 10.0
OVERLAP_S = 300.0  # sources[].overlap_minutes' default: exports and lane passes re-read this

STORED_SQL = "SELECT order_id, last_updated_date FROM orders WHERE order_id = ANY($1::text[])"


@dataclass
class Change:
    order_id: str
    stamp: datetime  # the order's new last_updated_date: the change's identity
    waiting: bool  # its new state is WAITING_ACCEPTANCE
    at: float  # time.monotonic() when it was made
    seen: float | None = None  # time.monotonic() of the first poll that saw it


@dataclass(frozen=True)
class Scenario:
    scale: float
    minutes: float
    rate_per_minute: float
    dsn: str
    lane: bool
    seed: int
    log_path: Path  # the worker's output
    lane_every_s: float = OR11_EVERY_S  # fast_lane.interval_seconds, real seconds


def config_text(scenario: Scenario, schema: str, base_url: str, api_key: str) -> str:
    s = scenario.scale
    # One export window for the initial load (the seeded orders are at most 30 days old).
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 40 * 86400))
    lane = (
        f"[fast_lane]\nenabled = true\ninterval_seconds = {scenario.lane_every_s / s:g}\n"
        if scenario.lane
        else ""
    )
    return (
        f'[database]\ndsn = "{scenario.dsn}"\nschema = "{schema}"\n'
        f"[export]\npoll_interval_seconds = {OR14_POLL_S / s:g}\n"
        f"differential_spacing_minutes = {OR13_EVERY_S / 60 / s:g}\n"
        "full_export_spacing_minutes = 0\n"
        '[service]\nmetrics_host = "127.0.0.1"\nmetrics_port = 0\n'
        f'[[sources]]\nname = "shop"\nbase_url = "{base_url}"\napi_key = "{api_key}"\n'
        f"start_date = {since}\ninterval_minutes = {EXPORT_INTERVAL_S / 60 / s:g}\n"
        f"overlap_minutes = {OVERLAP_S / 60 / s:g}\n"
        f"{lane}"
    )


def make_change(sim: SimulatorState, rng: random.Random, pending: set[str]) -> Change:
    """Half the time a new order awaiting acceptance, else an update of an order whose last
    change is already visible (two changes within one whole second would share a stamp)."""
    if rng.random() < 0.5:
        (order_id,) = sim.create_orders(1)
        order = sim.orders[order_id]
        order["order_state"] = WAITING
        for line in order["order_lines"]:
            line["order_line_state"] = WAITING
    else:
        order_id = rng.choice([i for i in sim.orders if i not in pending])
        order = sim.orders[order_id]
        touch_order(rng, order, sim.now())
    sim.changed(order_id)
    stamp = datetime.fromisoformat(order["last_updated_date"])
    return Change(order_id, stamp, order["order_state"] == WAITING, time.monotonic())


async def watch(db: asyncpg.Connection, changes: list[Change], done: asyncio.Event) -> None:
    """Every POLL_SECONDS, mark the changes PostgreSQL now shows."""
    while True:
        open_changes = [c for c in changes if c.seen is None]
        if open_changes:
            rows = await db.fetch(STORED_SQL, sorted({c.order_id for c in open_changes}))
            now = time.monotonic()
            stored = {r["order_id"]: r["last_updated_date"] for r in rows}
            for change in open_changes:
                have = stored.get(change.order_id)
                if have is not None and have >= change.stamp:
                    change.seen = now
        if done.is_set() and all(c.seen is not None for c in changes):
            return
        await asyncio.sleep(POLL_SECONDS)


async def wait_ready(
    db: asyncpg.Connection, proc: asyncio.subprocess.Process, limit_s: float
) -> None:
    """Until the first differential export (the initial load) has succeeded."""
    deadline = time.monotonic() + limit_s
    query = "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'"
    while True:
        if proc.returncode is not None:
            raise SystemExit(f"syncer run exited early ({proc.returncode})")
        try:
            if await db.fetchval(query):
                return
        except asyncpg.UndefinedTableError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the initial load did not finish in time")
        await asyncio.sleep(0.1)


async def vary_export_time(sim: SimulatorState, rng: random.Random, scale: float) -> None:
    """Each export is ready after a time drawn from EXPORT_READY_S (scaled)."""
    low, high = EXPORT_READY_S
    while True:
        sim.config.pending_seconds = rng.uniform(low, high) / scale
        await asyncio.sleep(0.2)


async def run_scenario(scenario: Scenario) -> tuple[list[Change], dict[str, int]]:
    s = scenario.scale
    rng = random.Random(scenario.seed)
    sim = SimulatorState(
        SimulatorConfig(
            pending_polls=10**6,
            pending_seconds=sum(EXPORT_READY_S) / 2 / s,
            or11_min_interval_seconds=OR11_EVERY_S / s,
            or13_min_interval_seconds=OR13_EVERY_S / s,
            seed=scenario.seed,
        )
    )
    sim.seed_orders(SEED_ORDERS, days=30)
    begun = time.monotonic()
    schema = f"fresh_{uuid.uuid4().hex[:10]}"
    changes: list[Change] = []
    async with serve(sim) as base_url:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "freshness.toml"
            path.write_text(config_text(scenario, schema, base_url, sim.config.api_key))
            base = [sys.executable, "-m", "syncer", "--config", str(path), "--log-format", "json"]
            migrate = await asyncio.create_subprocess_exec(
                *base, "migrate", stdout=asyncio.subprocess.DEVNULL
            )
            if await asyncio.wait_for(migrate.wait(), 60) != 0:
                raise SystemExit("syncer migrate failed")
            db = await asyncpg.connect(scenario.dsn, server_settings={"search_path": schema})
            with scenario.log_path.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    *base, "run", stdout=log, stderr=asyncio.subprocess.STDOUT
                )
                varying = asyncio.create_task(vary_export_time(sim, rng, s))
                try:
                    await wait_ready(db, proc, 60)
                    ready = time.monotonic()
                    calls_before = dict(sim.calls)
                    done = asyncio.Event()
                    watcher = asyncio.create_task(watch(db, changes, done))
                    end = time.monotonic() + scenario.minutes * 60 / s
                    gap_s = 60 / s / scenario.rate_per_minute
                    while (now := time.monotonic()) < end:
                        await asyncio.sleep(min(rng.expovariate(1 / gap_s), end - now))
                        pending = {c.order_id for c in changes if c.seen is None}
                        changes.append(make_change(sim, rng, pending))
                    done.set()
                    # Long enough for two more exports; what is still unseen is reported.
                    drain_s = 2 * (EXPORT_INTERVAL_S + EXPORT_READY_S[1]) / s + 5
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(watcher, drain_s)
                    drained = time.monotonic()
                    calls = {k: sim.calls[k] - calls_before.get(k, 0) for k in sim.calls}
                    print(
                        f"initial load {ready - begun:.1f} s, scenario {end - ready:.1f} s, "
                        f"drain {drained - end:.1f} s (real)",
                        file=sys.stderr,
                    )
                finally:
                    varying.cancel()
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(proc.wait(), 60)
                    await db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                    await db.close()
    return changes, calls


def lag_minutes(changes: list[Change], scale: float) -> list[float]:
    """Seen-minus-made, in real-Mirakl minutes."""
    return sorted((c.seen - c.at) * scale / 60 for c in changes if c.seen is not None)


def percentile(values: list[float], fraction: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def rows(label: str, changes: list[Change], scale: float) -> list[str]:
    out = []
    for kind, picked in (
        ("WAITING_ACCEPTANCE", [c for c in changes if c.waiting]),
        ("all orders", changes),
    ):
        lags = lag_minutes(picked, scale)
        unseen = sum(c.seen is None for c in picked)
        if not lags:
            out.append(f"| {label} | {kind} | {len(picked)} | - | - | - | {unseen} |")
            continue
        out.append(
            f"| {label} | {kind} | {len(picked)} | {percentile(lags, 0.5):.1f} | "
            f"{percentile(lags, 0.95):.1f} | {lags[-1]:.1f} | {unseen} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=60.0)
    parser.add_argument("--minutes", type=float, default=60.0, help="simulated minutes per run")
    parser.add_argument("--rate", type=float, default=2.0, help="changes per simulated minute")
    parser.add_argument("--lane", choices=["both", "off", "on"], default="both")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--lane-every",
        type=float,
        default=OR11_EVERY_S,
        help="fast_lane.interval_seconds in real seconds (OR11's limit is 60)",
    )
    parser.add_argument("--dsn", default=os.environ.get("SYNCER_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--log", help="the worker's log (the last run's), else a temp file")
    args = parser.parse_args()
    modes = {"both": [False, True], "off": [False], "on": [True]}[args.lane]
    table = [
        "| fast lane | orders | changes | p50 min | p95 min | max min | unseen |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    log_path = Path(args.log or tempfile.mkstemp(prefix="freshness-", suffix=".log")[1])
    for lane in modes:
        scenario = Scenario(
            args.scale,
            args.minutes,
            args.rate,
            args.dsn,
            lane,
            args.seed,
            log_path,
            args.lane_every,
        )
        started = time.monotonic()
        changes, calls = asyncio.run(run_scenario(scenario))
        label = "on" if lane else "off"
        if "scheduled_run_failed" in log_path.read_text():
            print(f"note: a scheduled run failed with the lane {label}", file=sys.stderr)
        table += rows(label, changes, args.scale)
        print(
            f"lane {label}: {time.monotonic() - started:.0f} s real; Mirakl calls during the "
            f"scenario: {', '.join(f'{k} {v}' for k, v in sorted(calls.items()) if v)}",
            file=sys.stderr,
        )
    print(
        f"scale {args.scale:g}, {args.minutes:g} simulated minutes a run, lane every "
        f"{args.lane_every:g} s, lags in real minutes"
    )
    print("\n".join(table))


if __name__ == "__main__":
    main()
