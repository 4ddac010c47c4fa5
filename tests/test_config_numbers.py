"""Every numeric config value is finite and within its documented range (TOML allows nan, inf)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from syncer.config import load_config, parse_config
from syncer.errors import ConfigError

# (table, key) of every numeric key; "sources" is the [[sources]] table.
NUMERIC_KEYS = [
    ("database", "pool_size"),
    ("database", "acquire_timeout_seconds"),
    ("database", "lock_timeout_seconds"),
    ("database", "statement_timeout_seconds"),
    ("database", "idle_in_transaction_timeout_seconds"),
    ("database", "command_timeout_seconds"),
    ("database", "lease_ttl_seconds"),
    ("export", "poll_interval_seconds"),
    ("export", "poll_timeout_minutes"),
    ("export", "items_per_chunk"),
    ("export", "megabytes_per_chunk"),
    ("export", "batch_orders"),
    ("export", "max_order_megabytes"),
    ("export", "run_timeout_minutes"),
    ("export", "full_export_spacing_minutes"),
    ("export", "differential_spacing_minutes"),
    ("export", "rescan_interval_hours"),
    ("export", "rescan_days"),
    ("http", "timeout_seconds"),
    ("http", "chunk_timeout_seconds"),
    ("http", "max_attempts"),
    ("http", "backoff_base_seconds"),
    ("http", "backoff_max_seconds"),
    ("http", "retry_after_max_seconds"),
    ("push", "min_interval_seconds"),
    ("push", "interval_seconds"),
    ("push", "max_attempts"),
    ("push", "max_request_bytes"),
    ("push", "max_patch_bytes"),
    ("push", "retry_base_seconds"),
    ("push", "retry_max_seconds"),
    ("fast_lane", "interval_seconds"),
    ("fast_lane", "max_pages"),
    ("audit", "days"),
    ("audit", "interval_hours"),
    ("audit", "call_spacing_seconds"),
    ("audit", "start_delta_seconds"),
    ("service", "metrics_port"),
    ("service", "max_concurrent_runs"),
    ("service", "max_concurrent_pushes"),
    ("service", "stale_after_minutes"),
    ("sources", "shop_id"),
    ("sources", "interval_minutes"),
    ("sources", "overlap_minutes"),
]
BAD_VALUES = ["nan", "inf", "-inf", "1e12", "-1"]


def document(table: str, key: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sources": [{"name": "shop", "base_url": "https://m.example", "api_key": "k"}]
    }
    if table == "sources":
        data["sources"][0][key] = value
    else:
        data[table] = {key: value}
    return data


def test_every_numeric_key_is_covered() -> None:
    """The list above names every numeric key of config.example.toml."""
    example_file = Path(__file__).resolve().parent.parent / "config.example.toml"
    example = tomllib.loads(example_file.read_text(encoding="utf-8"))
    numeric = {
        (table, key)
        for table, values in example.items()
        for row in (values if isinstance(values, list) else [values])
        for key, value in row.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    assert numeric <= set(NUMERIC_KEYS)


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize(("table", "key"), NUMERIC_KEYS, ids=lambda v: str(v))
def test_non_finite_or_out_of_range_numbers_are_refused(
    tmp_path: Path, table: str, key: str, bad: str
) -> None:
    """nan, inf, -inf, 1e12 and -1 in any numeric key: one ConfigError naming the key."""
    shop = '[[sources]]\nname = "shop"\nbase_url = "https://m.example"\napi_key = "k"\n'
    text = shop + f"{key} = {bad}\n" if table == "sources" else f"[{table}]\n{key} = {bad}\n{shop}"
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert key in str(caught.value)
    assert str(caught.value).count("\n") == 0


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("export", "poll_interval_seconds", 3600),
        ("export", "poll_timeout_minutes", 1440),
        ("http", "timeout_seconds", 86400),
        ("http", "chunk_timeout_seconds", 0.5),
        ("http", "max_attempts", 100),
        ("http", "backoff_max_seconds", 3600),
        ("push", "max_attempts", 1),
        ("sources", "interval_minutes", 10080),
        ("sources", "overlap_minutes", 0),
    ],
)
def test_the_range_bounds_are_accepted(table: str, key: str, value: float) -> None:
    """The documented bounds themselves are valid."""
    config = parse_config(document(table, key, value), env={})
    section = config.sources[0] if table == "sources" else getattr(config, table)
    assert getattr(section, key) == value
