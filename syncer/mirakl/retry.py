"""Retry timing: Retry-After for 429, capped exponential backoff with full jitter otherwise."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# RFC 9110 delta-seconds is digits only; a fraction is accepted too (the simulator's OR04 sends one).
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Backoff:
    base_seconds: float
    max_seconds: float
    retry_after_max_seconds: float

    def delay_seconds(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        if retry_after is not None:
            seconds = parse_retry_after(retry_after, self.retry_after_max_seconds)
            if seconds is not None:
                return seconds
        ceiling = min(self.max_seconds, self.base_seconds * 2.0 ** min(attempt - 1, 64))
        return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str, max_seconds: float, now: datetime | None = None) -> float | None:
    """Retry-After (delta-seconds or an HTTP-date) as seconds in [0, max_seconds].

    None when the value is unreadable (including nan, inf, negative numbers):
    the caller then falls back to its backoff.
    """
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)  # a very long digit string is inf: huge, so the cap
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP-dates are always GMT
            when = when.replace(tzinfo=UTC)
        try:
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        except OverflowError:
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), max_seconds)
