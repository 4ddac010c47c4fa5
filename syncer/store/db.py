"""Connections: a configured DSN, or an embedded PostgreSQL in a local data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg

from syncer.config import DatabaseConfig
from syncer.errors import DatabaseError, RunSkipped
from syncer.redact import redact_dsn
from syncer.store.embedded import resolve_dsn


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@asynccontextmanager
async def open_pool(config: DatabaseConfig, *, size: int = 4) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections use the configured schema; DatabaseError if unreachable."""
    dsn = await resolve_dsn(config)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings={"search_path": config.schema, "application_name": "mirakl-order-sync"},
            timeout=15,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise DatabaseError(
            f"cannot connect to PostgreSQL ({redact_dsn(dsn)}): {_describe(exc)}"
        ) from None
    try:
        yield pool
    finally:
        await pool.close()


def translate(exc: BaseException) -> DatabaseError:
    """asyncpg's error as ours, first line only."""
    return DatabaseError(f"PostgreSQL: {_describe(exc)}")


DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext($1 || ':' || current_schema() || ':' || $2))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext($1 || ':' || current_schema() || ':' || $2))"


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Inside this block, asyncpg's errors leave as DatabaseError (first line only)."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise translate(exc) from None


@asynccontextmanager
async def advisory_lock(pool: asyncpg.Pool, kind: str, source: str) -> AsyncIterator[None]:
    """Hold the `kind` lock of a source (any process, any replica); RunSkipped if taken.

    The lock belongs to a session, so a worker that dies releases it with its connection.
    """
    async with translated():
        conn = await pool.acquire()
    try:
        async with translated():
            got = await conn.fetchval(TRY_LOCK, kind, source)
        if not got:
            what = "run" if kind == "syncer-run" else "push"
            raise RunSkipped(f"source {source}: another {what} holds the lock; skipped")
        try:
            yield
        finally:
            # On failure the session ends below and takes the lock with it.
            with suppress(*DRIVER_ERRORS):
                await conn.fetchval(UNLOCK, kind, source)
    finally:
        await pool.release(conn)
