"""Numbered SQL migrations, applied in order under an advisory lock and recorded.

Append-only: `NNN_name.sql` files are never edited once released. A database
that has a version this code does not know is refused (it is newer than us).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from syncer.errors import MigrationError
from syncer.store.db import translate

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    """`syncer/migrations` in an installed wheel, the repository's `migrations/` otherwise."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNN_name.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 001.. without gaps, found {versions}")
    return found


async def current_version(conn: asyncpg.Connection, schema: str) -> int | None:
    """The highest applied version, or None when the schema was never migrated."""
    exists = await conn.fetchval(
        "SELECT to_regclass(quote_ident($1) || '.schema_migrations') IS NOT NULL", schema
    )
    if not exists:
        return None
    version = await conn.fetchval(
        f'SELECT max(version) FROM "{schema}".schema_migrations'  # schema is validated at config
    )
    return int(version) if version is not None else None


async def migrate(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Apply pending migrations to `schema`; return the names applied (empty: up to date)."""
    migrations = load_migrations()
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext('syncer-migrate:' || $1))", schema)
        try:
            return await _apply(conn, schema, migrations)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext('syncer-migrate:' || $1))", schema
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"migration failed: {translate(exc)}") from None


async def _apply(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[str]:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(
        f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = {
        row["version"]
        for row in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
    }
    known = {m.version for m in migrations}
    newer = sorted(applied - known)
    if newer:
        raise MigrationError(
            f"schema {schema} has migration(s) {newer} that this code does not know: "
            "the database is newer than this syncer; upgrade syncer"
        )
    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        async with conn.transaction():
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(migration.sql)
            await conn.execute(
                f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES ($1, $2)',
                migration.version,
                migration.name,
            )
        done.append(migration.name)
    return done


async def pending_migrations(conn: asyncpg.Connection, schema: str) -> int:
    """How many migrations are not applied yet (for status and readiness)."""
    version = await current_version(conn, schema) or 0
    return len(load_migrations()) - version


async def ensure_change_clock(conn: asyncpg.Connection) -> int:
    """Keep change ids increasing after a restore into another cluster, whose transaction
    ids start lower: move the change clock (migration 014) past every stored id. Returns by
    how much it moved (0 nearly always). The connection's search_path is the schema."""
    try:
        moved: int = await conn.fetchval("SELECT ensure_change_clock()")
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"checking the change clock failed: {translate(exc)}") from None
    return moved
