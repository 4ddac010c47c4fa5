"""structlog, configured in one place: JSON when stderr is not a TTY, console otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


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
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    """A logger with `context` bound (e.g. source=..., run_id=...)."""
    return structlog.get_logger("syncer").bind(**context)


log_context = structlog.contextvars.bound_contextvars
"""`with log_context(run_id=...)`: bind keys to every log line of this task until exit."""
