"""`status`, `runs` and `config check`, text and JSON, as people run them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import orjson

from syncer.config import (
    Config,
    DatabaseConfig,
    ExportConfig,
    HttpConfig,
    PushConfig,
    SourceConfig,
    load_config,
)
from syncer.simulator import SimulatorState
from tests.test_cli import assert_one_clear_line, syncer

ROOT = Path(__file__).resolve().parents[1]


async def test_status_and_runs_in_text_and_json(
    sim_config: Callable[..., Path],
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    sim_state: SimulatorState,
) -> None:
    """After two runs: status shows the source's watermark and last run; runs lists both."""
    sim_state.seed_orders(60, days=30)
    path = sim_config()
    assert (await syncer("--config", str(path), "sync"))[0] == 0
    sim_state.update_orders(5)
    assert (await syncer("--config", str(path), "sync"))[0] == 0

    code, out, _ = await syncer("--config", str(path), "status")
    assert code == 0
    header, row = out.splitlines()
    assert re.split(r"\s{2,}", header)[:5] == ["SOURCE", "WATERMARK", "LAG", "LAST RUN", "RESULT"]
    assert header.index("LAG") == row.index(row.split()[2]), "columns are aligned"
    assert "2 differential" in row and "succeeded" in row and "5 (5 changed)" in row

    code, out, _ = await syncer("--config", str(path), "status", "--json")
    [record] = orjson.loads(out)
    assert record["source"] == "shop" and record["orders_stored"] == 60
    assert (
        record["last_run"]["mode"] == "differential" and record["last_run"]["orders_changed"] == 5
    )
    assert record["export_in_flight"] is None and record["lag_seconds"] >= 0
    assert record["next_run_estimate"] > record["last_run"]["started_at"]

    code, out, _ = await syncer("--config", str(path), "runs", "--limit", "1")
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].split()[:4] == ["2", "shop", "differential", "succeeded"]
    code, out, _ = await syncer("--config", str(path), "runs", "--json", "--source", "shop")
    runs = orjson.loads(out)
    assert (
        [r["run_id"] for r in runs] == [2, 1]
        and runs[1]["mode"] == "full"
        and runs[1]["orders"] == 60
    )
    code, _, err = await syncer("--config", str(path), "runs", "--source", "nope")
    assert code == 2
    assert_one_clear_line(err, "unknown source 'nope'")


async def test_config_check_prints_the_resolved_config_with_secrets_masked(tmp_path: Path) -> None:
    """`config check` fills in defaults and masks the key and the DSN password."""
    secret = tmp_path / "key.txt"
    secret.write_text("s3cr3t-key-value\n")
    path = tmp_path / "c.toml"
    path.write_text(
        '[database]\ndsn = "postgresql://u:pa55word@db:5432/w"\n'
        '[[sources]]\nname = "a"\nbase_url = "https://x.mirakl.net"\napi_key_file = "key.txt"\n'
    )
    code, out, err = await syncer("--config", str(path), "config", "check")
    assert code == 0, err
    assert "s3cr3t" not in out and "pa55word" not in out
    view = orjson.loads(out.split("\n", 1)[1])
    assert view["sources"][0]["api_key"] == "***"
    assert view["database"]["dsn"] == "postgresql://u@db:5432/w"
    assert (
        view["export"]["poll_interval_seconds"] == 10.0
        and view["sources"][0]["interval_minutes"] == 15.0
    )
    assert set(view) == {f.name for f in dataclasses.fields(Config)} - {"path"}, "every table"
    assert view["service"]["max_concurrent_runs"] == 4 and view["fast_lane"]["enabled"] is False
    secret.unlink()
    code, _, err = await syncer("--config", str(path), "config", "check")
    assert code == 2
    assert_one_clear_line(err, "sources.a.api_key_file", "cannot read")


def test_config_example_is_valid_and_documents_every_key() -> None:
    """config.example.toml loads, and every config field appears in it."""
    text = (ROOT / "config.example.toml").read_text()
    config = load_config(ROOT / "config.example.toml", env={"MIRAKL_API_KEY": "x"})
    assert config.sources[0].name == "my-shop"
    for table in (DatabaseConfig, ExportConfig, HttpConfig, PushConfig, SourceConfig):
        for field in dataclasses.fields(table):
            if field.name in ("api_key",) or field.name.startswith("_"):
                continue
            assert re.search(rf"^#? ?{field.name} =", text, re.M), (
                f"{table.__name__}.{field.name} is not documented"
            )


def test_progress_line_on_a_terminal_only() -> None:
    """On a TTY the run shows export k/n, chunk i/m, orders/s and an ETA; elsewhere nothing."""
    import io

    from syncer.pipeline.run import Progress
    from syncer.progress import TerminalProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    step = Progress(
        "shop", "full", export=2, exports=3, chunk=1, chunks=2, orders=5000, elapsed_s=10.0
    )
    with (
        TerminalProgress("shop full", tty) as on_tty,
        TerminalProgress("shop full", pipe) as on_pipe,
    ):
        on_tty(step)
        on_pipe(step)
    line = tty.getvalue()
    assert "export 2/3, chunk 1/2, 5,000 orders, 500 orders/s, 50%, ETA 10s" in line
    assert pipe.getvalue() == ""
