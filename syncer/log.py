"""structlog, configured in one place: JSON when stderr is not a TTY, console otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from syncer.redact import scrub


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    """Send structured logs to stderr; `json=None` picks JSON unless stderr is a TTY."""
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info
            if use_json
            else structlog.processors.StackInfoRenderer(),
            renderer,
            _scrubbed,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
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


def get_logger(**context: Any) -> Any:
    """A logger with `context` bound (e.g. source=..., run_id=...)."""
    return structlog.get_logger("syncer").bind(**context)


log_context = structlog.contextvars.bound_contextvars
"""`with log_context(run_id=...)`: bind keys to every log line of this task until exit."""
