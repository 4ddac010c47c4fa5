"""A one-line progress display on a terminal: export k/n, chunks, orders/s, ETA."""

from __future__ import annotations

import sys
from typing import TextIO

from syncer.pipeline.run import Progress
from syncer.report import human_duration


class TerminalProgress:
    """Rewrites one stderr line as a run advances; prints nothing when stderr is not a TTY
    (log lines carry the same facts there)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        rate = progress.orders / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        eta = progress.eta_s
        line = (
            f"{progress.source} {progress.mode}: export {progress.export}/{progress.exports}, "
            f"chunk {progress.chunk}/{progress.chunks}, {progress.orders:,} orders, "
            f"{rate:,.0f} orders/s, {progress.fraction:.0%}"
            + (f", ETA {human_duration(eta)}" if eta is not None and progress.fraction < 1 else "")
        )
        self.stream.write("\r\x1b[2K" + line)
        if progress.fraction >= 1:
            self.stream.write("\n")
        self.stream.flush()
