"""No secret in any output, whatever the DSN syntax: the real CLI, its logs, run rows, /metrics."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

from syncer.simulator import SimulatorState
from tests.test_cli import syncer
from tests.test_service import free_port, metric

API_KEY = "Api-Key-7f3e9c"
SOURCE = f"""
[[sources]]
name = "shop"
base_url = "http://127.0.0.1:1"
api_key = "{API_KEY}"
"""

# (DSN as a person writes it, the secrets it holds). Port 1: nothing listens there.
DSNS = [
    ("postgresql://u:Hunter2xyz@127.0.0.1:1/db", ["Hunter2xyz"]),
    ("postgresql://u:p%40ss%2Fw0rd9@127.0.0.1:1/db", ["p%40ss%2Fw0rd9", "p@ss/w0rd9"]),
    ("postgresql://u:p@ssw0rd8@127.0.0.1:1/db", ["p@ssw0rd8", "ssw0rd8"]),
    ("postgresql://u:Pa55/word7@127.0.0.1:1/db", ["Pa55/word7", "word7@"]),
    ("postgresql://u@127.0.0.1:1/db?password=Qwerty77&sslmode=disable", ["Qwerty77"]),
    ("postgresql://u@127.0.0.1:1/db?sslpassword=Zebra555&passfile=/nonexistent", ["Zebra555"]),
    ("host=127.0.0.1 port=1 user=u password=Kw7secret dbname=db", ["Kw7secret"]),
    ("host=127.0.0.1 port=1 user=u password='a b Kw8secret' dbname=db", ["Kw8secret"]),
    ("host=127.0.0.1 port=1 user=u password = Kw9secret dbname=db", ["Kw9secret"]),
    ("host=127.0.0.1 port=1 password='it\\'s Kw10secret'", ["Kw10secret"]),
    ("host=127.0.0.1 port=1 password=Kw11 secret=x", ["Kw11", "secret=x"]),
]


@pytest.mark.parametrize(("dsn", "secrets"), DSNS, ids=[f"dsn{i}" for i in range(len(DSNS))])
async def test_no_password_in_any_output_whatever_the_dsn_syntax(
    tmp_path: Path, dsn: str, secrets: list[str]
) -> None:
    """`config check`, a `sync` that cannot connect, `status`: neither the database password
    (URL user info, encoded or not, ?password=, ?sslpassword=, keyword/value, quoted or
    spaced) nor the API key is in stdout, stderr or the JSON log lines."""
    path = tmp_path / "c.toml"
    path.write_text(f"[database]\ndsn = {_toml_string(dsn)}\n" + SOURCE)
    seen = []
    for args in (("config", "check"), ("sync",), ("status",), ("--log-format", "json", "sync")):
        code, out, err = await syncer("--config", str(path), *args)
        assert code in (0, 1, 2), err
        assert "Traceback" not in err, err
        seen.append(out + err)
    seen.append(
        "".join(
            (
                await syncer(
                    "config", "check", env={"SYNCER_DATABASE_DSN": dsn, "SYNCER_CONFIG": str(path)}
                )
            )[1:]
        )
    )
    for text in seen:
        for secret in [*secrets, API_KEY]:
            assert secret not in text, f"{secret!r} shown in: {text}"


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def test_no_secret_in_output_logs_run_rows_or_metrics_with_a_reachable_database(
    tmp_path: Path, pg_dsn: str, schema: str, sim_url: str, sim_state: SimulatorState
) -> None:
    """A keyword/value DSN with a password against the real database: migrate, sync, a failed
    sync (key refused), status, runs, config check and `syncer run`'s /metrics never show the
    password or the API key; neither do the run and export rows."""
    parts = urlsplit(pg_dsn)
    # The embedded server's DSN names its socket directory (and port) in the query string.
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    password = parts.password or "Unused-Pw-51c2"  # trust auth ignores it; a real one is kept
    dsn = (
        f"host={parts.hostname or query['host']} port={parts.port or query.get('port', 5432)} "
        f"user={parts.username or query.get('user', 'postgres')} "
        f"dbname={parts.path.lstrip('/') or query.get('dbname', 'postgres')} password='{password}'"
    )
    sim_state.seed_orders(30, days=10)
    port = free_port()
    config = f"""
[database]
dsn = {_toml_string(dsn)}
schema = "{schema}"
[export]
poll_interval_seconds = 0.05
full_export_spacing_minutes = 0
[service]
metrics_host = "127.0.0.1"
metrics_port = {port}
[[sources]]
name = "shop"
base_url = "{sim_url}"
api_key = "{sim_state.config.api_key}"
start_date = 2024-01-01
interval_minutes = 0.02
"""
    path = tmp_path / "c.toml"
    path.write_text(config)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(config.replace(sim_state.config.api_key, API_KEY))
    seen: list[str] = []
    for conf, args in (
        (path, ("migrate",)),
        (path, ("--log-format", "json", "sync")),
        (wrong, ("--log-format", "json", "sync")),
        (path, ("status", "--json")),
        (path, ("runs",)),
        (path, ("config", "check")),
    ):
        code, out, err = await syncer("--config", str(conf), *args)
        assert code in (0, 1), err
        seen.append(out + err)
    assert "succeeded" in seen[1] and "refused the API key" in seen[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncer", "--config", str(path), "--log-format", "json", "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        page = ""
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        page = await resp.text()
                    if metric(
                        page,
                        "syncer_runs_total",
                        source="shop",
                        mode="differential",
                        result="succeeded",
                    ):
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        assert metric(page, "syncer_watermark_lag_seconds", source="shop") is not None, page
        seen.append(page)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    seen.append(out.decode() + err.decode())
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch("SELECT * FROM sync_runs")
        rows += await conn.fetch("SELECT * FROM sync_exports")
    finally:
        await conn.close()
    assert any(r["error"] for r in rows), "the refused key left an error in a run row"
    seen += [str(dict(r)) for r in rows]
    for text in seen:
        for secret in (password, sim_state.config.api_key, API_KEY):
            assert secret not in text, f"{secret!r} shown in: {text[:3000]}"
