"""TOML configuration -> frozen dataclasses. Every error names the key at fault.

Nothing downstream reads dicts or environment variables: secrets named by
`api_key_env` are resolved here, once.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from syncer.dates import as_instant, parse_instant
from syncer.dsn import dsn_secrets, normalize_dsn
from syncer.errors import ConfigError
from syncer.redact import register_secret

DEFAULT_CONFIG_PATH = "config.toml"
# Source names end up in logs, metrics labels, lock keys and table rows: short and plain.
SOURCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
T = TypeVar("T")


class Secret:
    """A string that never shows itself in repr/str (logs, tracebacks, status)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)  # masked wherever it shows up in an error or a log line

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str | None = None
    schema: str = "mirakl"
    data_dir: Path = Path(".syncer/pgdata")
    # Connections of the work pool; None: derived from the service's limits (pool_size_needed).
    pool_size: int | None = None
    acquire_timeout_seconds: float = 30.0  # a wait for a pool connection, then DatabaseError
    lock_timeout_seconds: float = 30.0  # PostgreSQL lock_timeout: one lock wait
    statement_timeout_seconds: float = 900.0  # statement_timeout: one statement (a COPY too)
    idle_in_transaction_timeout_seconds: float = 600.0  # a transaction left waiting
    command_timeout_seconds: float = 60.0  # the client's wait for a short statement's answer
    lease_ttl_seconds: float = 60.0  # a dead process's run/push lease is free after this


@dataclass(frozen=True)
class ExportConfig:
    poll_interval_seconds: float = 10.0
    poll_timeout_minutes: float = 60.0
    items_per_chunk: int | None = None
    megabytes_per_chunk: int | None = None
    batch_orders: int = 5000  # orders per staging COPY; each merges while the next streams
    max_order_megabytes: int = 64  # a larger order refuses its chunk (the splitter holds it whole)
    run_timeout_minutes: float = 120.0  # a run still going after this fails (export resumable)
    # Mirakl: differential exports at most every 5 min, full ones every 24 h (whether a
    # one-year window of a resync counts as "full" is not known). Between two OR13 of a
    # resync / two differential OR13 of a source, at least this long (0: no spacing).
    full_export_spacing_minutes: float = 5.0
    differential_spacing_minutes: float = 5.0
    # The re-scan: every this many hours (`syncer run`; 0: never), a differential export of
    # the last `rescan_days` days up to the watermark loads what earlier exports missed.
    rescan_interval_hours: float = 24.0
    rescan_days: float = 3.0


@dataclass(frozen=True)
class HttpConfig:
    timeout_seconds: float = 300.0
    chunk_timeout_seconds: float = 1800.0  # one OR15 download attempt, body included
    max_attempts: int = 6
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    retry_after_max_seconds: float = 900.0


@dataclass(frozen=True)
class ServiceConfig:
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9108  # /metrics, /healthz, /readyz of `syncer run`; 0 turns them off
    max_concurrent_runs: int = 4  # sync runs of `syncer run` at once (the others wait)
    max_concurrent_pushes: int = 2  # OR04 pushes at once, apart from the runs
    # A watermark that has not moved for this long while runs succeed is reported stalled.
    stale_after_minutes: float = 60.0


def pool_size_needed(service: ServiceConfig) -> int:
    """Connections that the allowed concurrency can hold at once: a run holds its merge
    transaction's connection and a COPY's, plus short statements; a push one; 2 spare."""
    return service.max_concurrent_runs * 3 + service.max_concurrent_pushes + 2


@dataclass(frozen=True)
class PushConfig:
    min_interval_seconds: float = 60.0  # OR04: at most one call a minute per account
    interval_seconds: float = 60.0  # how often `syncer run` looks at the outbox
    max_attempts: int = 5  # sends of one patch before it is marked failed
    max_request_bytes: int = 1024 * 1024  # one OR04 body at most; batches are cut to fit
    max_patch_bytes: int = 32 * 1024  # a larger patch is rejected alone
    retry_base_seconds: float = 60.0  # after a transient failure: base * 2^(sends-1), jittered
    retry_max_seconds: float = 3600.0  # ...capped at this


@dataclass(frozen=True)
class FastLaneConfig:
    """OR11 between exports, for the orders someone must act on (docs/architecture.md)."""

    enabled: bool = False  # opt-in: one more API call per source and interval
    # Mirakl: OR11 at most once a minute per account. A pass every 60 s exactly lands a few
    # ms early now and then and is refused (429): a third of them in bench/freshness.
    interval_seconds: float = 65.0
    states: tuple[str, ...] = ("WAITING_ACCEPTANCE", "SHIPPING")
    max_pages: int = 10  # of 100 orders; further behind, the rest is left to the export


@dataclass(frozen=True)
class AuditConfig:
    """The count audit: per day, the mirror's orders against OR11's total_count."""

    days: int = 7  # the last days audited, each up to the watermark
    interval_hours: float = 24.0  # 0 = no scheduled audit
    call_spacing_seconds: float = 60.0  # between OR11 calls (Mirakl: once a minute)
    start_delta_seconds: float = 0.0  # Mirakl subtracts a delta from start_update_date


@dataclass(frozen=True)
class SourceConfig:
    name: str
    base_url: str
    api_key: Secret | None
    api_key_env: str | None = None
    auth: str = "shop"
    shop_id: int | None = None
    start_date: datetime | None = None
    interval_minutes: float = 15.0
    overlap_minutes: float = 5.0
    history: bool = True  # a row per order version in order_history

    def require_api_key(self) -> Secret:
        """The API key, or a ConfigError that names where it should have come from."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env:
            raise ConfigError(
                f"sources.{self.name}.api_key_env: environment variable "
                f"{self.api_key_env} is not set"
            )
        raise ConfigError(f"sources.{self.name}: set api_key or api_key_env")


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    push: PushConfig = field(default_factory=PushConfig)
    fast_lane: FastLaneConfig = field(default_factory=FastLaneConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    sources: tuple[SourceConfig, ...] = ()
    path: Path | None = None

    def select_sources(self, name: str | None) -> tuple[SourceConfig, ...]:
        """All sources, or the one named; an unknown name is a ConfigError."""
        if name is None:
            if not self.sources:
                raise ConfigError("sources: no [[sources]] configured")
            return self.sources
        for source in self.sources:
            if source.name == name:
                return (source,)
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"--source: unknown source {_shown(name)} (configured: {known})")


def config_path(cli_value: str | None) -> Path:
    """`--config`, else `$SYNCER_CONFIG`, else `./config.toml`."""
    return Path(cli_value or os.environ.get("SYNCER_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate a TOML file; raise ConfigError with one clear line."""
    env = dict(os.environ) if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: {_not_utf8(exc)}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(data, env=env, path=path)


def parse_config(data: dict[str, Any], *, env: dict[str, str], path: Path | None = None) -> Config:
    """Validate a TOML document already parsed into a dict."""
    _reject_unknown(
        data, "", {"database", "export", "http", "push", "fast_lane", "audit", "service", "sources"}
    )
    base = path.parent if path else Path.cwd()
    db = _table(data, "database")
    _reject_unknown(
        db,
        "database.",
        {
            "dsn",
            "schema",
            "data_dir",
            "pool_size",
            "acquire_timeout_seconds",
            "lock_timeout_seconds",
            "statement_timeout_seconds",
            "idle_in_transaction_timeout_seconds",
            "command_timeout_seconds",
            "lease_ttl_seconds",
        },
    )
    dsn = env.get("SYNCER_DATABASE_DSN") or _opt(db, "database.dsn", str)
    if dsn:
        try:
            dsn = normalize_dsn(dsn)
        except ValueError as exc:
            where = "SYNCER_DATABASE_DSN" if env.get("SYNCER_DATABASE_DSN") else "database.dsn"
            raise ConfigError(f"{where}: {exc}") from None
        for secret in dsn_secrets(dsn):
            register_secret(secret)
    schema = env.get("SYNCER_DATABASE_SCHEMA") or _opt(db, "database.schema", str) or "mirakl"
    if not schema.isidentifier() or schema != schema.lower():
        raise ConfigError(f"database.schema: {schema!r} must be a lowercase SQL identifier")
    data_dir = Path(_opt(db, "database.data_dir", str) or ".syncer/pgdata")
    database = DatabaseConfig(
        dsn=dsn,
        schema=schema,
        data_dir=data_dir if data_dir.is_absolute() else base / data_dir,
        pool_size=_int_range(db, "database.pool_size", 2, 1000),
        acquire_timeout_seconds=_number(
            db, "database.acquire_timeout_seconds", 30.0, minimum=0.1, maximum=3600
        ),
        lock_timeout_seconds=_number(
            db, "database.lock_timeout_seconds", 30.0, minimum=0.1, maximum=86400
        ),
        statement_timeout_seconds=_number(
            db, "database.statement_timeout_seconds", 900.0, minimum=1, maximum=86400
        ),
        idle_in_transaction_timeout_seconds=_number(
            db, "database.idle_in_transaction_timeout_seconds", 600.0, minimum=1, maximum=86400
        ),
        command_timeout_seconds=_number(
            db, "database.command_timeout_seconds", 60.0, minimum=1, maximum=86400
        ),
        lease_ttl_seconds=_number(db, "database.lease_ttl_seconds", 60.0, minimum=2, maximum=3600),
    )

    ex = _table(data, "export")
    _reject_unknown(
        ex,
        "export.",
        {
            "poll_interval_seconds",
            "poll_timeout_minutes",
            "items_per_chunk",
            "megabytes_per_chunk",
            "batch_orders",
            "max_order_megabytes",
            "run_timeout_minutes",
            "full_export_spacing_minutes",
            "differential_spacing_minutes",
            "rescan_interval_hours",
            "rescan_days",
        },
    )
    export = ExportConfig(
        poll_interval_seconds=_number(
            ex, "export.poll_interval_seconds", 10.0, minimum=0.01, maximum=3600
        ),
        poll_timeout_minutes=_number(
            ex, "export.poll_timeout_minutes", 60.0, minimum=0.01, maximum=1440
        ),
        items_per_chunk=_int_range(ex, "export.items_per_chunk", 10_000, 1_000_000),
        megabytes_per_chunk=_int_range(ex, "export.megabytes_per_chunk", 10, 1024),
        batch_orders=_int_range(ex, "export.batch_orders", 1, 1_000_000) or 5000,
        max_order_megabytes=_int_range(ex, "export.max_order_megabytes", 1, 1024) or 64,
        run_timeout_minutes=_number(
            ex, "export.run_timeout_minutes", 120.0, minimum=0.05, maximum=10080
        ),
        full_export_spacing_minutes=_number(
            ex, "export.full_export_spacing_minutes", 5.0, minimum=0.0, maximum=10080
        ),
        differential_spacing_minutes=_number(
            ex, "export.differential_spacing_minutes", 5.0, minimum=0.0, maximum=1440
        ),
        rescan_interval_hours=_number(
            ex, "export.rescan_interval_hours", 24.0, minimum=0.0, maximum=8760
        ),
        rescan_days=_number(ex, "export.rescan_days", 3.0, minimum=0.01, maximum=365),
    )

    ht = _table(data, "http")
    _reject_unknown(
        ht,
        "http.",
        {
            "timeout_seconds",
            "chunk_timeout_seconds",
            "max_attempts",
            "backoff_base_seconds",
            "backoff_max_seconds",
            "retry_after_max_seconds",
        },
    )
    attempts = _int_range(ht, "http.max_attempts", 1, 100)
    http = HttpConfig(
        timeout_seconds=_number(ht, "http.timeout_seconds", 300.0, minimum=0.1, maximum=86400),
        chunk_timeout_seconds=_number(
            ht, "http.chunk_timeout_seconds", 1800.0, minimum=0.1, maximum=86400
        ),
        max_attempts=attempts or 6,
        backoff_base_seconds=_number(
            ht, "http.backoff_base_seconds", 1.0, minimum=0.0, maximum=3600
        ),
        backoff_max_seconds=_number(
            ht, "http.backoff_max_seconds", 60.0, minimum=0.0, maximum=3600
        ),
        retry_after_max_seconds=_number(
            ht, "http.retry_after_max_seconds", 900.0, minimum=0.0, maximum=86400
        ),
    )

    pu = _table(data, "push")
    _reject_unknown(
        pu,
        "push.",
        {
            "min_interval_seconds",
            "interval_seconds",
            "max_attempts",
            "max_request_bytes",
            "max_patch_bytes",
            "retry_base_seconds",
            "retry_max_seconds",
        },
    )
    push_attempts = _int_range(pu, "push.max_attempts", 1, 100)
    request_bytes = _int_range(pu, "push.max_request_bytes", 1024, 64 * 1024 * 1024) or 1024**2
    patch_bytes = _int_range(pu, "push.max_patch_bytes", 64, request_bytes)
    week = 7 * 86400
    retry_base = _number(pu, "push.retry_base_seconds", 60.0, minimum=0.0, maximum=week)
    retry_max = _number(pu, "push.retry_max_seconds", 3600.0, minimum=retry_base, maximum=week)
    push = PushConfig(
        min_interval_seconds=_number(
            pu, "push.min_interval_seconds", 60.0, minimum=0.0, maximum=3600
        ),
        interval_seconds=_number(pu, "push.interval_seconds", 60.0, minimum=0.1, maximum=86400),
        max_attempts=push_attempts or 5,
        max_request_bytes=request_bytes,
        max_patch_bytes=patch_bytes or min(32 * 1024, request_bytes // 2),
        retry_base_seconds=retry_base,
        retry_max_seconds=retry_max,
    )

    fast_lane = _fast_lane(_table(data, "fast_lane"))
    audit = _audit(_table(data, "audit"))

    sv = _table(data, "service")
    _reject_unknown(
        sv,
        "service.",
        {
            "metrics_host",
            "metrics_port",
            "max_concurrent_runs",
            "max_concurrent_pushes",
            "stale_after_minutes",
        },
    )
    port = _opt(sv, "service.metrics_port", int)
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"service.metrics_port: must be between 0 and 65535, got {port}")
    service = ServiceConfig(
        metrics_host=_opt(sv, "service.metrics_host", str) or "0.0.0.0",
        metrics_port=9108 if port is None else port,
        max_concurrent_runs=_int_range(sv, "service.max_concurrent_runs", 1, 256) or 4,
        max_concurrent_pushes=_int_range(sv, "service.max_concurrent_pushes", 1, 256) or 2,
        stale_after_minutes=_number(
            sv, "service.stale_after_minutes", 60.0, minimum=1.0, maximum=10080
        ),
    )
    needed = pool_size_needed(service)
    if database.pool_size is not None and database.pool_size < needed:
        raise ConfigError(
            f"database.pool_size: must be at least {needed} (service.max_concurrent_runs x 3 + "
            f"service.max_concurrent_pushes + 2), got {database.pool_size}"
        )

    raw_sources = data.get("sources", [])
    if not isinstance(raw_sources, list):
        raise ConfigError("sources: must be an array of tables ([[sources]])")
    sources = tuple(_source(item, i, env, base) for i, item in enumerate(raw_sources))
    names = [s.name for s in sources]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"sources: name {name!r} is used twice")
    return Config(
        database=database,
        export=export,
        http=http,
        push=push,
        fast_lane=fast_lane,
        audit=audit,
        service=service,
        sources=sources,
        path=path,
    )


LANE_STATES = frozenset(
    {
        "STAGING", "WAITING_ACCEPTANCE", "WAITING_DEBIT", "WAITING_DEBIT_PAYMENT", "SHIPPING",
        "SHIPPED", "TO_COLLECT", "RECEIVED", "CLOSED", "REFUSED", "CANCELED",
    }
)  # fmt: skip


def _audit(au: dict[str, Any]) -> AuditConfig:
    _reject_unknown(
        au,
        "audit.",
        {"days", "interval_hours", "call_spacing_seconds", "start_delta_seconds"},
    )
    return AuditConfig(
        days=_int_range(au, "audit.days", 1, 90) or 7,
        interval_hours=_number(au, "audit.interval_hours", 24.0, minimum=0.0, maximum=8760),
        call_spacing_seconds=_number(
            au, "audit.call_spacing_seconds", 60.0, minimum=0.0, maximum=3600
        ),
        start_delta_seconds=_number(
            au, "audit.start_delta_seconds", 0.0, minimum=0.0, maximum=3600
        ),
    )


def _fast_lane(fl: dict[str, Any]) -> FastLaneConfig:
    _reject_unknown(fl, "fast_lane.", {"enabled", "interval_seconds", "states", "max_pages"})
    states = fl.get("states", list(FastLaneConfig.states))
    if (
        not isinstance(states, list)
        or not states
        or not all(isinstance(x, str) and x in LANE_STATES for x in states)
    ):
        raise ConfigError(
            f"fast_lane.states: must be a non-empty list of order states "
            f"({', '.join(sorted(LANE_STATES))})"
        )
    enabled = _opt(fl, "fast_lane.enabled", bool)
    return FastLaneConfig(
        enabled=bool(enabled),
        # Mirakl allows OR11 once a minute; less is only for tests against the simulator.
        interval_seconds=_number(
            fl, "fast_lane.interval_seconds", 65.0, minimum=0.1, maximum=86400
        ),
        states=tuple(dict.fromkeys(states)),
        max_pages=_int_range(fl, "fast_lane.max_pages", 1, 1000) or 10,
    )


START_DATE_FORMS = "a date (2024-01-01) or a date-time with Z or an offset (2024-01-01T00:00:00Z)"


def _start_date(value: object, key: str) -> datetime | None:
    """A TOML date/date-time, or the same as an ISO 8601 string; a naive time is UTC."""
    if value is None or isinstance(value, (date, datetime)):
        return as_instant(value) if value is not None else None
    if isinstance(value, str):
        try:
            return parse_instant(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not {START_DATE_FORMS}") from None
    raise ConfigError(f"{key}: must be {START_DATE_FORMS}, got {type(value).__name__}")


def _source(item: object, index: int, env: dict[str, str], base: Path) -> SourceConfig:
    if not isinstance(item, dict):
        raise ConfigError(f"sources[{index}]: must be a table")
    name = _opt(item, f"sources[{index}].name", str)
    if not name:
        raise ConfigError(f"sources[{index}].name: missing")
    if not SOURCE_NAME.fullmatch(name):
        raise ConfigError(
            f"sources[{index}].name: {_shown(name)} must be 1 to 64 letters, digits, _ . or -"
        )
    where = f"sources.{name}."
    _reject_unknown(
        item,
        where,
        {
            "name",
            "base_url",
            "api_key",
            "api_key_env",
            "api_key_file",
            "auth",
            "shop_id",
            "start_date",
            "interval_minutes",
            "overlap_minutes",
            "history",
        },
    )
    base_url = _opt(item, where + "base_url", str)
    if not base_url:
        raise ConfigError(f"{where}base_url: missing")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}base_url: must start with http:// or https://")
    key = _opt(item, where + "api_key", str)
    key_env = _opt(item, where + "api_key_env", str)
    key_file = _opt(item, where + "api_key_file", str)
    given = [
        k for k, v in (("api_key", key), ("api_key_env", key_env), ("api_key_file", key_file)) if v
    ]
    if len(given) > 1:
        raise ConfigError(f"{where}{given[1]}: set only one of api_key, api_key_env, api_key_file")
    if not given:
        raise ConfigError(f"{where}api_key: missing (set api_key, api_key_env or api_key_file)")
    if key_env:
        key = env.get(key_env) or None
    if key_file:
        secret_path = Path(key_file) if Path(key_file).is_absolute() else base / key_file
        try:
            key = secret_path.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(
                f"{where}api_key_file: cannot read {secret_path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}api_key_file: {secret_path}: {_not_utf8(exc)}") from None
        if key is None:
            raise ConfigError(f"{where}api_key_file: {secret_path} is empty")
    if key and (bad := _unprintable(key)) is not None:
        raise ConfigError(
            f"{where}{given[0]}: the key has {bad} (a key is one line of printable ASCII)"
        )
    auth = _opt(item, where + "auth", str) or "shop"
    if auth not in ("shop", "bearer"):
        raise ConfigError(f'{where}auth: must be "shop" or "bearer", not {auth!r}')
    start = _start_date(item.get("start_date"), where + "start_date")
    return SourceConfig(
        name=name,
        base_url=base_url.rstrip("/"),
        api_key=Secret(key) if key else None,
        api_key_env=key_env,
        auth=auth,
        shop_id=_int_range(item, where + "shop_id", 0, 2**63 - 1),
        start_date=start,
        interval_minutes=_number(
            item, where + "interval_minutes", 15.0, minimum=0.01, maximum=10080
        ),
        overlap_minutes=_number(item, where + "overlap_minutes", 5.0, minimum=0.0, maximum=1440),
        history=_opt(item, where + "history", bool) is not False,
    )


def _shown(text: str) -> str:
    """A user's value in an error line: quoted, control characters escaped, at most 40 chars."""
    return repr(text[:40]) + (f" ({len(text)} characters)" if len(text) > 40 else "")


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"


def _unprintable(text: str) -> str | None:
    """What is wrong with a key that cannot be an HTTP header value (keys are printable ASCII),
    and where; the character itself is not shown."""
    for position, char in enumerate(text, start=1):
        if " " < char < "\x7f":
            continue
        kind = (
            "a line break"
            if char in "\r\n"
            else "a space"
            if char.isspace()
            else "a control character"
            if char < " " or char == "\x7f"
            else "a non-ASCII character"
        )
        return f"{kind} at character {position}"
    return None


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table ([{key}])")
    return value


def _reject_unknown(table: dict[str, Any], prefix: str, known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def _type_name(value: object) -> str:
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
        type(value).__name__, type(value).__name__
    )


def _opt(table: dict[str, Any], key: str, kind: type[T]) -> T | None:
    value = table.get(key.rsplit(".", 1)[-1])
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{key}: must be {_type_name(kind())}, got {_type_name(value)}")
    return value


def _number(
    table: dict[str, Any], key: str, default: float, *, minimum: float, maximum: float
) -> float:
    """A finite number in [minimum, maximum] (TOML allows nan and inf), else the default."""
    value = table.get(key.rsplit(".", 1)[-1])
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: must be a number, got {_type_name(value)}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ConfigError(f"{key}: must be between {minimum:g} and {maximum:g}, got {value}")
    return float(value)


def _int_range(table: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = _opt(table, key, int)
    if value is not None and not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
    return value
