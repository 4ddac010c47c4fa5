"""What a person sees in a terminal: the CLI under a pseudo-terminal, and the same command piped."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
EVENTS = ("run_started", "export_requested", "export_completed", "chunk_loaded", "export_merged")


def terminal_segments(raw: bytes) -> list[str]:
    """The pieces of text the terminal drew: ANSI codes removed, split at newlines and at
    carriage returns (which start a line over)."""
    text = ANSI.sub("", raw.decode("utf-8", "replace"))
    return [piece for line in text.split("\n") for piece in line.split("\r") if piece.strip()]


async def run_in_terminal(*args: str, timeout_s: float = 90) -> tuple[int, bytes]:
    """Run `syncer ARGS` with stdin, stdout and stderr on a 200x50 pseudo-terminal; return
    its exit code and everything it drew."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS")}
    env["TERM"] = "xterm-256color"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncer", *args, stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    drawn = bytearray()
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        while True:
            try:
                data = await loop.run_in_executor(None, os.read, master, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                return
            if not data:
                return
            drawn.extend(data)

    try:
        await asyncio.wait_for(asyncio.gather(drain(), proc.wait()), timeout=timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    assert proc.returncode is not None
    return proc.returncode, bytes(drawn)


async def test_terminal_shows_a_live_progress_display_below_unbroken_log_lines(
    config_file: Path,
) -> None:
    """On a TTY a multi-chunk resync draws chunk i/m and orders/s, and no log line is glued
    onto a progress line."""
    code, drawn = await run_in_terminal("--config", str(config_file), "resync", "--full")
    segments = terminal_segments(drawn)
    assert code == 0, "\n".join(segments[-20:])
    progress = [s for s in segments if "orders/s" in s and re.search(r"chunk \d+/\d+", s)]
    assert progress, "\n".join(segments)
    assert any("ETA" in s for s in progress), "\n".join(progress)
    glued = [s for s in segments if "ETA" in s and any(event in s for event in EVENTS)]
    assert not glued, "\n".join(glued)
    for event in ("run_started", "chunk_loaded", "run_finished"):  # short console lines
        assert any(re.match(rf"\d\d:\d\d:\d\d \[info +\] {event} ", s) for s in segments), event
    assert not any("tracking_id" in s for s in segments)
    assert any("shop: full run" in s and "succeeded" in s for s in segments)


async def test_json_logs_on_a_terminal_get_no_progress_display(config_file: Path) -> None:
    """`--log-format json` on a TTY: JSON lines only (and the summary), nothing drawn over them."""
    code, drawn = await run_in_terminal(
        "--config", str(config_file), "--log-format", "json", "resync", "--full"
    )
    segments = terminal_segments(drawn)
    assert code == 0, "\n".join(segments[-20:])
    assert "\x1b[" not in drawn.decode("utf-8", "replace")
    logs = [s for s in segments if not s.startswith("shop: full run")]
    assert "chunk_loaded" in [json.loads(s)["event"] for s in logs]
    assert len(logs) == len(segments) - 1


async def test_piped_stderr_is_json_lines_only(config_file: Path) -> None:
    """With stderr not a terminal the same command logs JSON lines and nothing else."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "syncer", "--config", str(config_file), "resync", "--full"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    stderr = err.decode()
    assert proc.returncode == 0, stderr[-2000:]
    events = [json.loads(line)["event"] for line in stderr.splitlines()]  # every line parses
    assert "chunk_loaded" in events and "run_finished" in events
    assert "orders/s" not in stderr and "\r" not in stderr


def test_a_warning_on_the_console_is_one_log_line(tmp_path: Path) -> None:
    """A library's Python warning shows as one console log line, not file:line plus source."""
    script = tmp_path / "warns.py"
    script.write_text(
        "import warnings\n"
        "from syncer.log import configure_logging\n"
        "configure_logging(json=False)\n"
        "warnings.warn('XDG_RUNTIME_DIR is not set', RuntimeWarning)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "default", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [line] = proc.stderr.splitlines()
    assert "warning" in line and "RuntimeWarning: XDG_RUNTIME_DIR is not set" in line


def test_runs_at_once_share_one_display_that_stops_after_the_last() -> None:
    """Two runs in flight (the service, two sources) are two rows of one live display."""
    import io

    from syncer import progress as module
    from syncer.pipeline.run import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    step = Progress("a", "full", export=1, exports=2, chunk=1, chunks=1, orders=10, elapsed_s=1.0)
    with module.TerminalProgress("a full", tty) as first:
        with module.TerminalProgress("b differential", tty) as second:
            first(step)
            second(step)
            [display] = module._displays.values()
            assert display.rows == 2 and display.bars.live.is_started
        assert display.rows == 1 and display.bars.live.is_started
    assert not display.bars.live.is_started and not module._displays
    drawn = tty.getvalue()
    assert "a full" in drawn and "b differential" in drawn and "chunk 1/1" in drawn
