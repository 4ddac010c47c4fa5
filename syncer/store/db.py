"""Connections: a configured DSN, or an embedded PostgreSQL in a local data directory."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import asyncpg

from syncer.config import DatabaseConfig
from syncer.errors import ConfigError, DatabaseError, RunSkipped
from syncer.log import get_logger
from syncer.redact import redact_dsn


def embedded_dsn(data_dir: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL in `data_dir`; return its DSN."""
    try:
        import pgserver
    except ImportError:
        raise ConfigError(
            "database.dsn: not set, and the embedded PostgreSQL is not installed "
            "(pip install 'mirakl-order-sync[embedded]', or set database.dsn)"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    get_logger().info("embedded_postgres_starting", data_dir=str(data_dir))
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        server = pgserver.get_server(  # type: ignore[attr-defined]
            str(data_dir), cleanup_mode="stop"
        )
    return str(server.get_uri())


def resolve_dsn(config: DatabaseConfig) -> str:
    return config.dsn or embedded_dsn(config.data_dir)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@asynccontextmanager
async def open_pool(config: DatabaseConfig, *, size: int = 4) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections use the configured schema; DatabaseError if unreachable."""
    dsn = resolve_dsn(config)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings={"search_path": config.schema, "application_name": "mirakl-order-sync"},
            timeout=15,
        )
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        TimeoutError,
        ValueError,
    ) as exc:
        raise DatabaseError(
            f"cannot connect to PostgreSQL ({redact_dsn(dsn)}): {_describe(exc)}"
        ) from None
    try:
        yield pool
    finally:
        await pool.close()


# SQLSTATE class 57P: the server shut down, crashed or is starting (admin_shutdown, ...).
SERVER_GONE_STATES = ("57P01", "57P02", "57P03")
# What asyncpg says when the socket went away under a statement, a COPY or a transaction.
CONNECTION_GONE_TEXT = ("connection is closed", "connection was closed", "cannot switch to state")


def translate(exc: BaseException) -> DatabaseError:
    """asyncpg's error as ours, first line only; a lost connection says so in plain words."""
    text = _describe(exc)
    if (
        isinstance(exc, (asyncpg.ConnectionDoesNotExistError, ConnectionError))
        or getattr(exc, "sqlstate", None) in SERVER_GONE_STATES
        or (
            isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError))
            and any(t in text for t in CONNECTION_GONE_TEXT)
        )
    ):
        # asyncpg's wording ("cannot call Transaction.__aexit__()...") names its internals.
        why = text if isinstance(exc, OSError) else "the server closed it or went away"
        return DatabaseError(
            f"PostgreSQL connection lost ({why}): check that the database is up, then run again"
        )
    return DatabaseError(f"PostgreSQL: {text}")


DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)

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
