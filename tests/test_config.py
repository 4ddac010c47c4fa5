"""Config as people write it: start_date as a TOML date or as a quoted ISO 8601 string."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncer.config import load_config
from syncer.errors import ConfigError


def config_with(tmp_path: Path, start_date: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[database]
dsn = "postgresql://postgres@127.0.0.1:5432/postgres"

[[sources]]
name = "shop"
base_url = "https://shop.example.com"
api_key = "k"
start_date = {start_date}
"""
    )
    return path


MIDNIGHT = datetime(2026, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-10-15", MIDNIGHT),
        ("2026-10-15T00:00:00Z", MIDNIGHT),
        ("2026-10-15T02:00:00+02:00", MIDNIGHT),
        ("2026-10-15T00:00:00", MIDNIGHT),
        ('"2026-10-15"', MIDNIGHT),
        ('"2026-10-15T00:00:00Z"', MIDNIGHT),
        ('"2026-10-15T02:00:00+02:00"', MIDNIGHT),
        ('"2026-10-15T00:00:00.000Z"', MIDNIGHT),
        ('"2026-10-15T00:00:00"', MIDNIGHT),
        ('"2026-10-15 00:00:00Z"', MIDNIGHT),
    ],
)
def test_start_date_accepts_toml_and_iso_8601_strings(
    tmp_path: Path, written: str, expected: datetime
) -> None:
    """A TOML date/date-time or a quoted ISO 8601 one is the same UTC instant; naive means UTC."""
    [source] = load_config(config_with(tmp_path, written), env={}).sources
    assert source.start_date == expected
    assert source.start_date.tzinfo is not None


@pytest.mark.parametrize(
    "written",
    ['"yesterday"', '"15/10/2026"', '"2026-13-01"', '""', '"2026-10-15T25:00:00Z"', "20261015"],
)
def test_start_date_refuses_anything_else_in_one_line_naming_the_key(
    tmp_path: Path, written: str
) -> None:
    """Not a date: one ConfigError line naming sources.NAME.start_date and the expected form."""
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, written), env={})
    message = str(caught.value)
    assert message.startswith("sources.shop.start_date: ")
    assert "2024-01-01T00:00:00Z" in message and "\n" not in message


def test_config_check_accepts_a_quoted_start_date(tmp_path: Path) -> None:
    """`syncer config check` exits 0 on a quoted date-time and prints it resolved in UTC."""
    path = config_with(tmp_path, '"2026-10-15T00:00:00Z"')
    done = subprocess.run(
        [sys.executable, "-m", "syncer", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2026-10-15T00:00:00+00:00" in done.stdout
