"""Command line: migrate, sync, resync, rescan, audit, status, run, simulator, demo.

Every SyncerError becomes one line on stderr and a non-zero exit code:
1 run failed, 2 bad config or arguments, 3 skipped (another run holds the lock, or Mirakl's
call frequency: a run deferred). `syncer audit` exits 1 when a day's order count differs
from Mirakl's (a finding: its line names the days).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import NoReturn

from syncer.config import Config, config_path, load_config
from syncer.dates import parse_instant
from syncer.errors import ConfigError, RunSkipped, SyncerError
from syncer.log import configure_logging, get_logger
from syncer.redact import scrub


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="TOML config (default: $SYNCER_CONFIG, else ./config.toml)",
    )
    common.add_argument("--log-format", choices=("json", "console"), default=argparse.SUPPRESS)
    parser = _Parser(
        prog="syncer",
        description="Keep a PostgreSQL copy of Mirakl orders current.",
        parents=[common],
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    commands.add_parser("migrate", parents=[common], help="create or upgrade the tables")
    sync = commands.add_parser(
        "sync", parents=[common], help="one differential run per source, now"
    )
    sync.add_argument("--source", help="only this source")
    resync = commands.add_parser(
        "resync", parents=[common], help="reload everything since start_date"
    )
    resync.add_argument(
        "--full", action="store_true", required=True, help="required: a full resync"
    )
    resync.add_argument("--source", help="only this source")
    resync.add_argument("--since", help="ISO date to start from (default: the source's start_date)")
    resync.add_argument(
        "--restart",
        action="store_true",
        help="start over instead of going on from an unfinished resync's first unmerged window",
    )
    rescan = commands.add_parser(
        "rescan",
        parents=[common],
        help="re-export the last export.rescan_days days and load what earlier exports missed",
    )
    rescan.add_argument("--source", help="only this source")
    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="compare the mirror's order count per day with Mirakl's (OR11); exit 1 on a mismatch",
    )
    audit.add_argument("--source", help="only this source")
    push = commands.add_parser("push", parents=[common], help="send queued order patches (OR04)")
    push.add_argument("--source", help="only this source")
    status = commands.add_parser(
        "status", parents=[common], help="watermark, lag and last run per source"
    )
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    runs = commands.add_parser("runs", parents=[common], help="recent run history")
    runs.add_argument("--source", help="only this source")
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    runs.add_argument("--json", action="store_true", help="JSON instead of a table")
    config_cmd = commands.add_parser("config", parents=[common], help="check the configuration")
    config_sub = config_cmd.add_subparsers(
        dest="config_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    config_sub.add_parser(
        "check", parents=[common], help="validate and print the resolved config, secrets masked"
    )
    commands.add_parser("run", parents=[common], help="the long-running service (scheduler)")
    sim = commands.add_parser("simulator", parents=[common], help="serve the fake Mirakl")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--orders", type=int, default=1000, help="orders to seed (default 1000)")
    sim.add_argument("--api-key", default="sim-secret-key")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--days", type=float, default=730.0, help="spread orders over this many days")
    sim.add_argument("--pending-polls", type=int, default=2, help="OR14 polls answered PENDING")
    demo = commands.add_parser(
        "demo", parents=[common], help="simulator + embedded Postgres, end to end"
    )
    demo.add_argument("--orders", type=int, default=3000, help="orders to seed (default 3000)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        log_format = getattr(args, "log_format", None)
        configure_logging(json=None if log_format is None else log_format == "json")
        return asyncio.run(_dispatch_until_signal(args))
    except Interrupted as exc:
        print(f"syncer: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except RunSkipped as exc:
        print(f"syncer: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except SyncerError as exc:
        print(f"syncer: error: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("syncer: interrupted", file=sys.stderr)
        return 130


class Interrupted(SyncerError):
    """Raised when SIGTERM/SIGINT stopped a command; the run row says 'interrupted'."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}; the export in flight resumes on the next run")
        self.exit_code = 128 + signum


async def _dispatch_until_signal(args: argparse.Namespace) -> int:
    """Run the command; SIGTERM/SIGINT cancel it, so runs close their rows as interrupted."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await _dispatch(args)
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise


async def _dispatch(args: argparse.Namespace) -> int:
    from syncer import commands

    command: str = args.command
    if command == "simulator":
        await commands.simulator(
            args.host,
            args.port,
            args.orders,
            args.api_key,
            args.seed,
            args.days,
            args.pending_polls,
        )
        return 0
    if command == "demo":
        return await commands.demo(args.orders)
    config = _load(args)
    handlers: dict[str, Callable[[], Awaitable[int]]] = {
        "migrate": lambda: commands.migrate(config),
        "sync": lambda: commands.sync(config, args.source),
        "resync": lambda: commands.resync(config, args.source, _since(args.since), args.restart),
        "status": lambda: commands.status(config, args.json),
        "runs": lambda: commands.runs(config, args.source, args.limit, args.json),
        "config": lambda: commands.check_config(config),
        "push": lambda: commands.push(config, args.source),
        "rescan": lambda: commands.rescan(config, args.source),
        "audit": lambda: commands.audit(config, args.source),
        "run": lambda: commands.serve(config),
    }
    return await handlers[command]()


def _load(args: argparse.Namespace) -> Config:
    path = config_path(getattr(args, "config", None))
    config = load_config(path)
    get_logger().debug("config_loaded", path=str(path))
    return config


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        raise ConfigError(f"--since: {text!r} is not an ISO date (e.g. 2024-01-31)") from None


def tune_gc() -> None:
    """Parsing makes a few hundred short-lived containers per order, all freed by
    reference counting (none is cyclic); at the default threshold (700) the cyclic
    collector ran every few orders. Measured in four A/B pairs of a 100k-order resync:
    0.7-2.8 s less worker CPU out of 10-12 s (docs/benchmarks.md)."""
    gc.freeze()  # what the imports made is never garbage: out of every collection
    gc.set_threshold(100_000, 50, 100)


def entrypoint() -> None:
    tune_gc()
    sys.exit(main())
