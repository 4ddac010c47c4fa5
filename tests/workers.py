"""Real `syncer` subprocesses for crash and concurrency tests."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path


async def start(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncer",
        "--config",
        str(config),
        "--log-format",
        "json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def rerun_until_success(config: Path, args: tuple[str, ...], attempts: int = 4) -> int:
    """Rerun the command until it exits 0; return how many reruns it took. A skip (exit 3:
    a killed worker's lease has not expired yet) is waited out, not counted."""
    attempt = 0
    skipped_until = time.monotonic() + 30
    while attempt < attempts:
        proc = await start(config, *args)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        if proc.returncode == 3 and time.monotonic() < skipped_until:
            await asyncio.sleep(0.5)
            continue
        attempt += 1
        if proc.returncode == 0:
            return attempt
    raise AssertionError(
        f"no success after {attempts} reruns: {out.decode()} {err.decode()[-2000:]}"
    )
