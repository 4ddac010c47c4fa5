"""What `status` and `runs` print: aligned tables for people, JSON for programs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def human_duration(delta: timedelta | float | None) -> str:
    if delta is None:
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else delta
    if seconds < 120:
        return f"{seconds:.1f}s" if seconds < 10 else f"{int(seconds)}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}m"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def moment(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def to_json(rows: Sequence[dict[str, Any]] | dict[str, Any]) -> str:
    """JSON with ISO dates and durations in seconds."""

    def default(value: object) -> object:
        if isinstance(value, timedelta):
            return value.total_seconds()
        raise TypeError

    return orjson.dumps(
        rows if isinstance(rows, dict) else list(rows),
        default=default,
        option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC,
    ).decode()
