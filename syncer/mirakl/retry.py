"""Retry timing: Retry-After for 429, capped exponential backoff with full jitter otherwise."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_seconds: float
    max_seconds: float
    retry_after_max_seconds: float

    def delay_seconds(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        if retry_after is not None:
            seconds = parse_retry_after(retry_after)
            if seconds is not None:
                return min(seconds, self.retry_after_max_seconds)
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str) -> float | None:
    """Retry-After in seconds (Mirakl sends delta-seconds); None when unreadable."""
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)
