"""Date helpers shared by every layer: Mirakl's ISO-8601 in, UTC out."""

from __future__ import annotations

from datetime import UTC, date, datetime


def utc_now() -> datetime:
    """The current time in UTC, truncated to milliseconds (Mirakl's precision)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def parse_instant(text: str) -> datetime:
    """Parse `YYYY-MM-DD[Thh:mm:ss[.SSS]](Z|±hh:mm)`; a bare date or naive time is UTC.

    Raises ValueError naming the text when it is not a date.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"not an ISO-8601 date: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_instant(value: date | datetime) -> datetime:
    """A TOML date or datetime as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def format_instant(moment: datetime) -> str:
    """Format as Mirakl expects: `2024-05-01T10:00:00.123Z`."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
