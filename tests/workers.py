"""Real `syncer` subprocesses for crash and concurrency tests."""

from __future__ import annotations

import asyncio
import sys
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
    """Rerun the command until it exits 0; return how many reruns it took."""
    for attempt in range(1, attempts + 1):
        proc = await start(config, *args)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        if proc.returncode == 0:
            return attempt
    raise AssertionError(
        f"no success after {attempts} reruns: {out.decode()} {err.decode()[-2000:]}"
    )
