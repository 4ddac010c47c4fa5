"""Memory stays bounded whatever the chunk size (not timed: peak RSS of a real worker process)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_config


def peak_rss_mb(proc: subprocess.Popen[bytes]) -> float:
    """The child's high-water RSS (VmHWM), polled until it exits.

    Not `wait4`'s ru_maxrss: Linux carries the parent's peak into the child across
    fork+exec, so a big pytest process would be counted as the worker's.
    """
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.02)
    return peak_kb / 1024


def test_a_100_mb_chunk_loads_in_a_small_worker(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    """`syncer resync --full` of one ~100 MB chunk peaks far below the chunk's size."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "syncer", "simulator", "--port", "0", "--orders", "24000",
         "--days", "20", "--pending-polls", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        url = line.split("listening on ", 1)[1].split()[0]
        config = write_config(
            tmp_path / "c.toml", dsn=pg_dsn, schema=schema, base_url=url, api_key="sim-secret-key"
        )
        config.write_text(config.read_text().replace("batch_orders = 25", "batch_orders = 5000"))
        with (tmp_path / "out.txt").open("w+") as captured:
            worker = subprocess.Popen(
                [sys.executable, "-m", "syncer", "--config", str(config), "resync", "--full"],
                stdout=captured, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            peak_mb = peak_rss_mb(worker)
            captured.seek(0)
            out = captured.read()
    finally:
        sim.terminate()
        sim.wait()
        if sim.stdout is not None:
            sim.stdout.close()
    assert worker.returncode == 0, out
    assert "24000 orders" in out and "1 chunk(s)" in out
    megabytes = float(out.split(" MB in ")[0].rsplit(" ", 1)[1])
    assert megabytes > 90
    assert peak_mb < 120, f"peak RSS {peak_mb:.0f} MB for a {megabytes:.0f} MB chunk"
