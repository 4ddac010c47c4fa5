"""A live progress display on a terminal: export k/n, chunk i/m, orders/s, ETA.

One `rich` display per process sits at the bottom of the terminal while runs are in
flight, one row per run (the service may run several sources at once); log lines and
prints go above it (rich redirects stderr and stdout while it is live). When stderr is
not a terminal nothing of this is active and rich is not imported from here: the JSON
log lines carry the same facts.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from syncer.log import console_lines
from syncer.pipeline.run import Progress
from syncer.report import human_duration


def describe(progress: Progress) -> str:
    """Where a run is, in words: `export 2/3, chunk 1/2, 5,000 orders, 500 orders/s, 50%, ETA 10s`."""
    rate = progress.orders / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
    eta = progress.eta_s
    return (
        f"export {progress.export}/{progress.exports}, "
        f"chunk {progress.chunk}/{progress.chunks}, {progress.orders:,} orders, "
        f"{rate:,.0f} orders/s, {progress.fraction:.0%}"
        + (f", ETA {human_duration(eta)}" if eta is not None and progress.fraction < 1 else "")
    )


class _Display:
    """The live display on one stream; started by its first row, stopped after its last."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        console = Console(stderr=True) if stream is sys.stderr else Console(file=stream)
        self.bars = RichProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=True,  # the run's summary line replaces it
        )
        self.rows = 0


_displays: dict[int, _Display] = {}


class TerminalProgress:
    """One run's row in the live display, from `with TerminalProgress("shop full") as p:` to its
    end; `p` is the run's `on_progress`. Does nothing when the stream (stderr) is not a TTY or
    the logs are JSON."""

    def __init__(self, title: str = "", stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        # JSON logs on a terminal are for a machine, and would be drawn over by the display
        self.enabled = self.stream.isatty() and console_lines()
        self._display: _Display | None = None
        self._row: Any = None

    def __enter__(self) -> TerminalProgress:
        if self.enabled:
            self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> _Display:
        if self._display is None:
            display = _displays.get(id(self.stream)) or _Display(self.stream)
            _displays[id(self.stream)] = display
            if display.rows == 0:
                display.bars.start()
            display.rows += 1
            self._row = display.bars.add_task(
                self.title, total=1.0, detail="waiting for the first chunk"
            )
            self._display = display
        return self._display

    def close(self) -> None:
        """Take this run's row off the display; the last row out stops the display."""
        if self._display is None:
            return
        display, self._display = self._display, None
        display.bars.remove_task(self._row)
        display.rows -= 1
        if display.rows == 0:
            display.bars.stop()
            del _displays[id(self.stream)]

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        self.title = self.title or f"{progress.source} {progress.mode}"
        self._open().bars.update(
            self._row, completed=progress.fraction, detail=describe(progress), refresh=True
        )
