"""The project's one exception hierarchy.

Only `syncer.mirakl` catches aiohttp errors and only `syncer.store` catches
asyncpg errors; both translate them into these. The CLI turns any
`SyncerError` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations


class SyncerError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(SyncerError):
    """Raised when the configuration or a command-line argument is unusable."""

    exit_code = 2


class DatabaseError(SyncerError):
    """Raised when PostgreSQL cannot be reached or refuses a statement."""


class MigrationError(DatabaseError):
    """Raised when migrations cannot be applied (e.g. the database is newer than the code)."""


class RunSkipped(SyncerError):
    """Raised when another run of the same source holds the lock."""

    exit_code = 3


class RunDeferred(RunSkipped):
    """Raised when a run does not call OR13 (or stops before its next one) to respect
    Mirakl's call frequency or a Retry-After; the next run goes on from there."""


class MiraklError(SyncerError):
    """Raised when Mirakl answers in a way the worker cannot use."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthRefused(MiraklError):
    """Raised on 401/403: the API key was refused (the key itself is never included)."""


class MiraklUnavailable(MiraklError):
    """Raised when retries of a transient failure (429, 5xx, network) are exhausted."""


class ExportBusy(MiraklError):
    """Raised when OR13 refuses a new export because one is already running."""


class RateLimited(MiraklError):
    """Raised when OR13 answers 429 with a Retry-After longer than the client waits
    (http.retry_after_max_seconds): the caller records when to call again instead."""

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message, status=429)
        self.retry_after_seconds = retry_after_seconds


class ExportNotFound(MiraklError):
    """Raised when OR14 does not know the tracking id (404)."""


class ChunkGone(MiraklError):
    """Raised when an OR15 chunk URL answers 404/410: the export must be redone."""


class StreamBroken(MiraklError):
    """Raised when a chunk download breaks after its body started (retryable)."""


class ExportFailed(SyncerError):
    """Raised when an export ends FAILED/CANCELED/unknown or misses its deadline."""

    def __init__(self, message: str, *, tracking_id: str) -> None:
        super().__init__(message)
        self.tracking_id = tracking_id


class ExportTimeout(ExportFailed):
    """Raised when an export is still not COMPLETED at the deadline; it stays resumable."""


class ChunkInvalid(SyncerError):
    """Raised when a chunk file is not `{"orders": [...]}` of valid orders."""

    def __init__(self, reason: str, *, chunk: str, position: int | None = None) -> None:
        where = f"chunk {chunk}" + (f" at order #{position}" if position is not None else "")
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.chunk = chunk
        self.position = position


class LeaseLost(SyncerError):
    """Raised when a run or push lost its source's lease (expired unrenewed, or taken over):
    it stops, and nothing it had not committed yet is committed."""


class RunTimeout(SyncerError):
    """Raised when a run is still going at `export.run_timeout_minutes`; its export in
    flight stays resumable."""
