"""Cancel a task for a reason: the task stops at its next await, its cleanup runs as for any
cancellation, and the block that asked (a lease, a run deadline) raises the reason instead of
CancelledError."""

from __future__ import annotations

import asyncio
import weakref

from syncer.errors import SyncerError

_REASONS: weakref.WeakKeyDictionary[asyncio.Task[object], SyncerError] = weakref.WeakKeyDictionary()


def cancel_for(task: asyncio.Task[object], reason: SyncerError) -> None:
    """Cancel `task` because of `reason` (the first reason wins; a finished task is left)."""
    if task.done() or task in _REASONS:
        return
    _REASONS[task] = reason
    task.cancel(str(reason))


def cancel_reason(task: asyncio.Task[object] | None = None) -> SyncerError | None:
    """Why `task` (default: the current one) was cancelled by `cancel_for`, if it was."""
    task = task or asyncio.current_task()
    return None if task is None else _REASONS.get(task)


def reason_instead(exc: asyncio.CancelledError) -> SyncerError | asyncio.CancelledError:
    """What to raise for a CancelledError caught in the current task: the reason given to
    `cancel_for` (the cancellation is then withdrawn), else the CancelledError itself."""
    task = asyncio.current_task()
    reason = None if task is None else _REASONS.pop(task, None)
    if task is None or reason is None:
        return exc
    task.uncancel()
    return reason
