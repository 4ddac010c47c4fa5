"""The benchmark: one command, one table.

    python -m bench.run [--orders 100000] [--skip-dlt] [--big-chunk] [--repeat N]

Seeds the simulator (its own process, on loopback) with N orders, then runs on
the same export and the same PostgreSQL, each in its own process:
  syncer     `syncer resync --full` end to end (HTTP -> stream parse -> COPY -> merge)
  ceiling    the same rows pre-built in memory, COPY + the same merge SQL
  naive      json.loads + executemany upserts
  dlt        dlt (merge on order_id, default normalisation)
and prints orders/s, MB/s, peak RSS and the ratios (with --repeat N, of each
contender's median over N interleaved rounds), then the disk the syncer's load
takes, table by table (heap, TOAST, indexes), against the JSON downloaded and
dlt's tables. `--big-chunk` also loads one export cut as a single chunk of
about 1 GB and reports the worker's peak RSS.
Numbers swing run to run on shared machines: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg  # noqa: F401  (fail early if the project is not installed)

from bench.disk import disk_table, schema_sizes, total

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure_child(command: list[str], env: dict[str, str] | None = None) -> tuple[str, str, float]:
    """Run a child to completion; return (stdout, stderr, its peak RSS in MB).

    The peak is /proc's VmHWM polled while it runs, not wait4's ru_maxrss: Linux carries
    the parent's own peak into the child across fork+exec.
    """
    with (
        tempfile.TemporaryFile(mode="w+") as out_file,
        tempfile.TemporaryFile(mode="w+") as err_file,
    ):
        proc = subprocess.Popen(command, stdout=out_file, stderr=err_file, text=True, env=env)
        peak_kb = 0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(0.02)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:5])} failed ({proc.returncode}):\n{err[-3000:]}")
    return out, err, peak_kb / 1024


def start_simulator(
    orders: int, days: float, extra: list[str]
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncer", "simulator", "--port", str(port), "--orders", str(orders),
         "--days", str(days), "--pending-polls", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        raise SystemExit(
            f"simulator did not start: {line}{proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, f"http://127.0.0.1:{port}"


def fresh_schema(dsn: str, schema: str) -> None:
    subprocess.run(
        ["psql", dsn, "-qc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
        check=True,
        capture_output=True,
    )


def write_config(
    path: Path, dsn: str, schema: str, sim: str, since: str, mb_per_chunk: int | None
) -> None:
    chunking = f"megabytes_per_chunk = {mb_per_chunk}\n" if mb_per_chunk else ""
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nschema = "{schema}"\n'
        # The simulator has no call limit: a resync's windows need no spacing.
        f"[export]\npoll_interval_seconds = 0.2\nfull_export_spacing_minutes = 0\n{chunking}"
        "[service]\nmetrics_port = 0\n"
        f'[[sources]]\nname = "bench"\nbase_url = "{sim}"\napi_key = "sim-secret-key"\n'
        f"start_date = {since}\n"
    )


def syncer_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "syncer", "--config", str(config), "--log-format", "json"]


def resync_full(config: Path) -> dict[str, Any]:
    """`syncer resync --full` as a child, with what its summary line and logs say: orders,
    changed orders (None if the line does not say), seconds and bytes (the run's own), peak
    RSS, and the stage timings."""
    out, err, rss = measure_child([*syncer_command(config), "resync", "--full"])
    match = re.search(r"(\d+) orders .* ([\d.]+) MB in ([\d.]+)s", out)
    if not match:
        raise SystemExit(f"unexpected output: {out}")
    changed = re.search(r"\((\d+) changed\)", out)
    stages = {}
    for line in err.splitlines():
        if '"export_merged"' in line or '"run_finished"' in line:
            stages.update({k: v for k, v in json.loads(line).items() if k.endswith("_s")})
    return {
        "orders": int(match.group(1)),
        "changed": int(changed.group(1)) if changed else None,
        "seconds": float(match.group(3)),
        "bytes": float(match.group(2)) * 1e6,
        "rss_mb": rss,
        "stages": stages,
    }


def since_date(days: float) -> str:
    """The start_date that covers everything the simulator seeded over `days` days."""
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - (days + 1) * 86400))


def syncer_e2e(
    dsn: str, schema: str, sim: str, days: float, mb_per_chunk: int | None = None
) -> dict[str, Any]:
    """A fresh schema, migrated, one full resync; the schema is left as loaded (measured)."""
    fresh_schema(dsn, schema)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        write_config(config, dsn, schema, sim, since_date(days), mb_per_chunk)
        measure_child([*syncer_command(config), "migrate"])
        result = resync_full(config)
    return {"name": "syncer", **result, "disk": schema_sizes(dsn, schema)}


def contender(name: str, dsn: str, schema: str, sim: str, days: float) -> dict[str, Any]:
    fresh_schema(dsn, schema)
    if name == "ceiling":  # the syncer's tables and merge; naive and dlt create their own
        measure_child([sys.executable, "-m", "syncer", "--config", "/dev/null", "migrate"],
                      env={**os.environ, "SYNCER_DATABASE_DSN": dsn, "SYNCER_DATABASE_SCHEMA": schema})  # fmt: skip
    out, _, rss = measure_child(
        [
            sys.executable,
            "-m",
            "bench.contenders",
            name,
            "--dsn",
            dsn,
            "--schema",
            schema,
            "--sim",
            sim,
            "--days",
            str(days),
        ]
    )
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["rss_mb"] = rss
    if name == "dlt":  # its dataset, and the staging dataset its merge leaves filled
        result["disk"] = schema_sizes(dsn, schema)
        result["disk_staging"] = schema_sizes(dsn, f"{schema}_staging")
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def table(results: list[dict[str, Any]]) -> str:
    by = {r["name"]: r for r in results}
    ceiling = by.get("ceiling")
    dlt = by.get("dlt")
    lines = [
        "| contender | orders | seconds | orders/s | MB/s | peak RSS MB | vs ceiling | vs dlt |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rate = r["orders"] / r["seconds"]
        vs_ceiling = f"{rate / (ceiling['orders'] / ceiling['seconds']):.0%}" if ceiling else "-"
        vs_dlt = f"{rate / (dlt['orders'] / dlt['seconds']):.1f}x" if dlt else "-"
        lines.append(
            f"| {r['name']} | {r['orders']:,} | {r['seconds']:.1f} | {rate:,.0f} | "
            f"{r['bytes'] / 1e6 / r['seconds']:.1f} | {r['rss_mb']:.0f} | {vs_ceiling} | {vs_dlt} |"
        )
    return "\n".join(lines)


def disk_report(results: list[dict[str, Any]]) -> str:
    """The syncer's tables after its (median) load, against the JSON it downloaded and, when
    dlt ran, dlt's tables after its load."""
    by = {r["name"]: r for r in results}
    syncer = by["syncer"]
    dlt = by.get("dlt")
    dlt_total = total(dlt["disk"], "dlt, all tables") if dlt else None
    text = (
        f"\nsyncer's tables after its load ({syncer['orders']:,} orders, "
        f"{syncer['bytes'] / 1e6:,.1f} MB of JSON downloaded; MB are 10^6 bytes):\n\n"
        + disk_table(syncer["disk"], syncer["orders"], syncer["bytes"], dlt_total)
    )
    if dlt:
        staging = total(dlt["disk_staging"]).total
        text += f"\n\n(dlt's staging dataset, not counted above: {staging / 1e6:,.1f} MB)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--dsn", default=os.environ.get("SYNCER_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every contender, interleaved; the table shows each one's median",
    )
    parser.add_argument("--big-chunk", action="store_true", help="also a ~1 GB single-chunk export")
    parser.add_argument(
        "--big-orders", type=int, default=190_000, help="orders for --big-chunk (~1 GB)"
    )
    args = parser.parse_args()
    days = 300.0

    started = time.perf_counter()
    sim, url = start_simulator(args.orders, days, [])
    print(
        f"simulator: {args.orders:,} orders ready in {time.perf_counter() - started:.0f}s",
        file=sys.stderr,
    )
    names = ["syncer", "ceiling", "naive"] + ([] if args.skip_dlt else ["dlt"])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        for round_ in range(1, args.repeat + 1):
            for name in names:  # interleaved: a slow spell of the machine hits every contender
                if name == "syncer":
                    result = syncer_e2e(args.dsn, "bench_syncer", url, days)
                else:
                    result = contender(name, args.dsn, f"bench_{name}", url, days)
                runs[name].append(result)
                logged = {k: v for k, v in result.items() if not k.startswith("disk")}
                print(f"round {round_} {name}: {logged}", file=sys.stderr)
    finally:
        sim.terminate()
        sim.wait()
    results = [median_run(runs[name]) for name in names]
    if args.repeat > 1:
        print(f"median of {args.repeat} interleaved rounds; seconds of each round:")
        for name in names:
            seconds = ", ".join(f"{run['seconds']:.1f}" for run in runs[name])
            print(f"  {name}: {seconds}")
    print(table(results))
    stages = results[0]["stages"]
    print(f"\nsyncer stages (s): {json.dumps(stages)}")
    print(disk_report(results))

    if args.big_chunk:
        sim, url = start_simulator(args.big_orders, days, [])
        try:
            big = syncer_e2e(args.dsn, "bench_big", url, days, mb_per_chunk=1024)
        finally:
            sim.terminate()
            sim.wait()
        print(
            f"\none chunk of {big['bytes'] / 1e6:,.0f} MB ({big['orders']:,} orders): "
            f"{big['orders'] / big['seconds']:,.0f} orders/s, worker peak RSS {big['rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
