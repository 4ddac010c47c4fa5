"""Connections: a configured DSN, or an embedded PostgreSQL in a local data directory; pools
with a deadline on every wait; asyncpg's errors translated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from syncer.config import DatabaseConfig
from syncer.errors import DatabaseError
from syncer.redact import redact_dsn
from syncer.store.embedded import resolve_dsn


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# The pools' jobs. `work`: runs and pushes, the configured limits. `control`: the lease
# heartbeat and /readyz, a few connections that a saturated work pool cannot starve, with
# second-long limits. `migrate`: one connection, no statement limit (an index build).
WORK, CONTROL, MIGRATE = "work", "control", "migrate"
CONTROL_POOL_SIZE = 2
CONTROL_TIMEOUT_SECONDS = 1.0


def _milliseconds(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def server_settings(config: DatabaseConfig, role: str) -> dict[str, str]:
    """Session parameters sent at connection start-up. asyncpg resets a released connection
    with RESET ALL, which returns to these (a plain SET would be lost)."""
    settings = {"search_path": config.schema, "application_name": "mirakl-order-sync"}
    if role == CONTROL:
        quick = _milliseconds(CONTROL_TIMEOUT_SECONDS)
        settings.update(
            lock_timeout=quick,
            statement_timeout=quick,
            idle_in_transaction_session_timeout=_milliseconds(5 * CONTROL_TIMEOUT_SECONDS),
        )
        return settings
    settings.update(
        lock_timeout=_milliseconds(config.lock_timeout_seconds),
        statement_timeout="0"
        if role == MIGRATE
        else _milliseconds(config.statement_timeout_seconds),
        idle_in_transaction_session_timeout=_milliseconds(
            config.idle_in_transaction_timeout_seconds
        ),
    )
    return settings


class Database:
    """A pool whose every wait for a connection has a deadline (DatabaseError naming the key)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        name: str = WORK,
        acquire_timeout_seconds: float = 30.0,
        long_timeout_seconds: float | None = None,
    ) -> None:
        self._pool = pool
        self.name = name
        self.acquire_timeout_seconds = acquire_timeout_seconds
        # For COPY and merge statements: longer than the pool's command timeout.
        self.long_timeout_seconds = long_timeout_seconds

    @property
    def raw(self) -> asyncpg.Pool:
        return self._pool

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await self._pool.acquire(timeout=self.acquire_timeout_seconds)
        except TimeoutError:
            raise DatabaseError(
                f"no connection of the {self.name} pool came free within "
                f"{self.acquire_timeout_seconds:g}s ({self._pool.get_max_size()} connections, "
                "all busy): raise database.acquire_timeout_seconds or database.pool_size"
            ) from None
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            result: str = await conn.execute(query, *args)
            return result

    async def executemany(self, query: str, args: Any) -> None:
        async with self.acquire() as conn:
            await conn.executemany(query, args)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)


def as_database(pool: asyncpg.Pool | Database) -> Database:
    """A Database as it is, or a plain asyncpg pool behind the default deadlines."""
    return pool if isinstance(pool, Database) else Database(pool)


@asynccontextmanager
async def open_pool(
    config: DatabaseConfig, *, size: int = 4, role: str = WORK
) -> AsyncIterator[Database]:
    """A pool whose connections use the configured schema and limits; DatabaseError if
    unreachable."""
    dsn = await resolve_dsn(config)
    command_timeout: float | None = config.command_timeout_seconds
    if role == CONTROL:
        command_timeout = 2 * CONTROL_TIMEOUT_SECONDS
    elif role == MIGRATE:
        command_timeout = None
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings=server_settings(config, role),
            command_timeout=command_timeout,
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
        yield Database(
            pool,
            name=role,
            acquire_timeout_seconds=(
                2 * CONTROL_TIMEOUT_SECONDS if role == CONTROL else config.acquire_timeout_seconds
            ),
            # The client waits a little longer than the server, whose message is clearer.
            long_timeout_seconds=config.statement_timeout_seconds + 30,
        )
    finally:
        await pool.close()


# SQLSTATE class 57P: the server shut down, crashed or is starting (admin_shutdown, ...).
SERVER_GONE_STATES = ("57P01", "57P02", "57P03")
# What asyncpg says when the socket went away under a statement, a COPY or a transaction.
CONNECTION_GONE_TEXT = ("connection is closed", "connection was closed", "cannot switch to state")


def translate(exc: BaseException, doing: str | None = None) -> DatabaseError:
    """asyncpg's error as ours, first line only: a lost connection says so in plain words, a
    wait that hit a limit names the setting."""
    text = _describe(exc)
    where = f" ({doing})" if doing else ""
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
            f"PostgreSQL connection lost{where} ({why}): check that the database is up, "
            "then run again"
        )
    if isinstance(exc, asyncpg.LockNotAvailableError):
        context = f" [{_describe(exc.context)}]" if getattr(exc, "context", None) else ""
        return DatabaseError(
            f"PostgreSQL: {text}{where}{context}: another session holds a lock "
            "(database.lock_timeout_seconds)"
        )
    if isinstance(exc, asyncpg.QueryCanceledError) and "statement timeout" in str(exc):
        return DatabaseError(f"PostgreSQL: {text}{where} (database.statement_timeout_seconds)")
    if isinstance(exc, asyncpg.IdleInTransactionSessionTimeoutError):
        return DatabaseError(
            f"PostgreSQL: {text}{where} (database.idle_in_transaction_timeout_seconds)"
        )
    if isinstance(exc, TimeoutError):
        return DatabaseError(
            f"PostgreSQL did not answer in time{where} (database.command_timeout_seconds; "
            "COPY and merge statements: database.statement_timeout_seconds)"
        )
    return DatabaseError(f"PostgreSQL: {text}{where}")


DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


@asynccontextmanager
async def translated(doing: str | None = None) -> AsyncIterator[None]:
    """Inside this block, asyncpg's errors (and its client timeouts) leave as DatabaseError,
    first line only; `doing` says what was being done."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise translate(exc, doing) from None
