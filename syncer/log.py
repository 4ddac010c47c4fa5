"""structlog, configured in one place: JSON when stderr is not a TTY, console otherwise."""

from __future__ import annotations

import logging
import re
import sys
import warnings
from typing import Any, TextIO

import structlog

from syncer.redact import scrub

_console_lines = True  # structlog's default before configure_logging is a console renderer


def console_lines() -> bool:
    """True when log lines are for a person (console renderer), False when they are JSON."""
    return _console_lines


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    """Send structured logs to stderr; `json=None` picks JSON unless stderr is a TTY."""
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        # 20: the event column's width (positional: the keyword's name changed in structlog 25.5)
        else structlog.dev.ConsoleRenderer(20, colors=sys.stderr.isatty(), sort_keys=False)
    )
    global _console_lines
    _console_lines = not use_json
    if not use_json:
        warnings.showwarning = _warning_as_log_line
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True)
            if use_json
            else structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.processors.format_exc_info
            if use_json
            else structlog.processors.StackInfoRenderer(),
            *(() if use_json else (_for_people,)),
            renderer,
            _scrubbed,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr)
        if use_json
        else _CurrentStderrLogger,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(renderer)


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `configure_logging` puts on the stdlib's root logger."""


def _route_stdlib_logging(renderer: Any) -> None:
    """asyncpg, aiohttp, asyncio ("Task exception was never retrieved"), APScheduler: their
    stdlib log records go out through the same renderer as ours (JSON stays JSON), warnings
    and up only, one line each: a traceback becomes `error="Type: message"`."""
    handler = _StdlibHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _one_line_record,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                _scrubbed,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def _scrubbed(_: Any, __: str, line: Any) -> Any:
    """The rendered line with every known secret masked (a last net: none should be there)."""
    return scrub(line) if isinstance(line, str) else line


def _one_line_record(_: Any, __: str, event_dict: Any) -> Any:
    event_dict["event"] = str(event_dict.get("event", "")).strip().split("\n", 1)[0]
    exc_info = event_dict.pop("exc_info", None)
    if isinstance(exc_info, tuple) and exc_info[1] is not None:
        error = exc_info[1]
        text = str(error).strip().split("\n", 1)[0]
        event_dict["error"] = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return event_dict


_SUBSECOND_UTC = re.compile(r"(T\d\d:\d\d:\d\d)(\.\d+)?\+00:00")


def _for_people(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Console lines a person reads: the facts in the order the code logs them, with the
    source and run id last; no export tracking id (the JSON logs keep it); instants to the
    second (`2026-12-01T08:19:39Z`)."""
    event.pop("tracking_id", None)
    for key in ("source", "run_id"):
        if key in event:
            event[key] = event.pop(key)
    for key, value in event.items():
        if isinstance(value, str) and key != "event":
            event[key] = _SUBSECOND_UTC.sub(r"\1Z", value)
    return event


class _CurrentStderrLogger:
    """Prints each console line to `sys.stderr` as it is at that moment, so while a live
    progress display redirects stderr (syncer/progress.py) the lines go above it."""

    def __init__(self, *_args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _warning_as_log_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A Python warning (e.g. from a library) as one console log line, not two raw lines."""
    get_logger().warning(f"{category.__name__}: {message}")


def get_logger(**context: Any) -> Any:
    """A logger with `context` bound (e.g. source=..., run_id=...)."""
    return structlog.get_logger("syncer").bind(**context)


log_context = structlog.contextvars.bound_contextvars
"""`with log_context(run_id=...)`: bind keys to every log line of this task until exit."""
