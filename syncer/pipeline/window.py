"""Date windows of an export: differential from the watermark, full in slices of at most a year."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Mirakl refuses a range over one year; 365 days is within a calendar year in every case.
MAX_WINDOW = timedelta(days=365)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def settled_watermark(window_end: datetime) -> datetime:
    """Where the watermark may move once an export ending at `window_end` is merged: just
    before the second that holds `window_end`.

    Mirakl stamps `last_updated_date` in whole seconds. An order updated later in the same
    second as the window's end, after the export was cut, carries a date at or before
    `window_end` without being in the export; a watermark at `window_end` would claim it.
    Every date before that second belongs to an update made before `window_end`, so it is in
    the export. (The next window starts `overlap` earlier and brings such an order anyway.)
    """
    return window_end.replace(microsecond=0) - timedelta(microseconds=1)


def differential_window(watermark: datetime, now: datetime, overlap: timedelta) -> Window:
    """`[watermark - overlap, now]`: the overlap catches updates stamped late or by a skewed clock."""
    return Window(min(watermark - overlap, now), now)


def full_windows(since: datetime, now: datetime) -> list[Window]:
    """`[since, now]` cut into consecutive windows of at most a year, oldest first."""
    if since >= now:
        raise ValueError(f"the start {since.isoformat()} is not before now")
    windows = []
    start = since
    while start < now:
        end = min(start + MAX_WINDOW, now)
        windows.append(Window(start, end))
        start = end
    return windows
