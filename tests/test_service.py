"""The service's endpoints over real HTTP: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from syncer.health import build_health_app, serve_health
from syncer.metrics import Metrics
from syncer.simulator import SimulatorState
from syncer.store.migrate import load_migrations
from syncer.store.sync_store import SyncStore


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text page."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        found, _, label_text = sample.partition("{")
        if found == name and set(filter(None, label_text.rstrip("}").split(","))) == want:
            return float(value)
    return None


async def test_run_serves_metrics_health_and_readiness(
    sim_config: Callable[..., Path],
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
    sim_url: str,
    sim_state: SimulatorState,
    pool: asyncpg.Pool,
) -> None:
    """`syncer run`: /healthz and /readyz answer 200, /metrics counts runs, orders, bytes, lag, backlog."""
    sim_state.seed_orders(50, days=10)
    port = free_port()
    path = sim_config(
        metrics_port=port,
    )
    await pool.execute(
        "INSERT INTO order_patches (source, order_id, patch) VALUES ('shop', 'Order_X-A', '{\"bad\": 1}')"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncer",
        "--config",
        str(path),
        "run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            text = ""
            for _ in range(400):  # up to 40 s: a loaded CI machine starts processes slowly
                try:
                    async with http.get(f"{base}/metrics") as resp:
                        text = await resp.text()
                    synced = metric(
                        text, "syncer_runs_total", source="shop", mode="full", result="succeeded"
                    )
                    pushed = metric(text, "syncer_outbox_backlog", source="shop", status="rejected")
                    if synced and pushed:
                        break  # the first sync and the first push (it rejects the bad patch) ran
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            assert (
                metric(text, "syncer_runs_total", source="shop", mode="full", result="succeeded")
                == 1
            )
            assert metric(text, "syncer_orders_loaded_total", source="shop") == 50
            assert (metric(text, "syncer_bytes_downloaded_total", source="shop") or 0) > 50 * 2000
            assert metric(text, "syncer_stage_seconds_count", source="shop", stage="merge") == 1
            lag = metric(text, "syncer_watermark_lag_seconds", source="shop")
            assert lag is not None and 0 <= lag < 60
            assert (
                metric(text, "syncer_last_success_timestamp_seconds", source="shop") or 0
            ) > 1.7e9
            assert metric(text, "syncer_outbox_backlog", source="shop", status="rejected") == 1
            waiting = metric(text, "syncer_change_feed_waiting_seconds")
            assert waiting is not None and 0 <= waiting < 60
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["scheduler"] == "running"
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200 and (await resp.json())["migrations_pending"] == 0
    except AssertionError as failure:
        # Say what the service logged: this test has failed intermittently under load.
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        raise AssertionError(
            f"{failure}\nmetrics page:\n{text}\nservice log:\n{err.decode()[-4000:]}"
        ) from None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()[-4000:]


async def test_readyz_fails_when_migrations_are_pending_and_healthz_when_stopped(
    pg_dsn: str, pool: asyncpg.Pool
) -> None:
    """A schema that is not migrated is not ready (503); a stopped scheduler is not healthy."""
    unmigrated = SyncStore(pool, f"nothing_{uuid.uuid4().hex[:8]}")
    app = build_health_app(unmigrated, ["shop"], Metrics(), lambda: False)
    async with serve_health(app, "127.0.0.1", 0) as port, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["migrations_pending"] == len(load_migrations())
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 503


@pytest.mark.parametrize("port", [70000, -1])
async def test_bad_metrics_port_is_a_config_error(tmp_path: Path, port: int) -> None:
    """service.metrics_port out of range: one line naming the key."""
    from tests.test_cli import assert_one_clear_line, syncer

    path = tmp_path / "c.toml"
    path.write_text(
        f'[service]\nmetrics_port = {port}\n[[sources]]\nname = "a"\nbase_url = "http://x"\napi_key = "k"\n'
    )
    code, _, err = await syncer("--config", str(path), "run")
    assert code == 2
    assert_one_clear_line(err, "service.metrics_port")
