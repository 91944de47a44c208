"""Settings: one frozen dataclass, built once from the environment and the `.env` files."""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent

# Published in the reference's source: anyone can mint tokens with it (D01).
PUBLIC_DEFAULT_SECRET = "c41302ce0f1758f4ae5dcc65729fd50a"
# Must equal the router's defaults, or nothing can talk to anything out of the box.
DEFAULT_MASTER_BE_API_KEY = "7a3fd399-3e48-46a0-ab7c-0eaf38020283::master_server_be"
DEFAULT_MASTER_AGENT_API_KEY = "e1adc3d8-fca1-40b2-b90a-7b48290f2d6a::master_server_ml"


class ConfigError(Exception):
    """A setting is missing or wrong; the message says what to set."""


@dataclass(frozen=True)
class Settings:
    secret_key: str
    # Keys being rotated away from (SECRET_KEY_PREVIOUS): still verify tokens and decrypt secrets.
    secret_key_previous: tuple[str, ...] = ()
    # None: start the embedded PostgreSQL under `data_dir`.
    database_dsn: str | None = None
    data_dir: Path = PROJECT_DIR / ".genai"
    hash_algorithm: str = "HS256"
    debug: bool = False
    host: str = "0.0.0.0"
    port: int = 8000
    router_ws_url: str = "ws://genai-router:8080/ws"
    master_be_api_key: str = DEFAULT_MASTER_BE_API_KEY
    master_agent_api_key: str = DEFAULT_MASTER_AGENT_API_KEY
    cors_origins: tuple[str, ...] = ("*",)
    files_dir: Path = PROJECT_DIR.parent / "files"
    max_upload_bytes: int = 100 * 1024 * 1024
    refresh_interval_minutes: float = 1.0
    # Seconds one MCP server or A2A card may take during a refresh before it counts as down.
    tool_refresh_timeout: float = 10.0
    log_retention_days: int = 7
    master_agent_timeout: float = 600.0
    a2a_verify_tls: bool = True
    urls_allow_private: bool = True
    urls_allow_hosts: tuple[str, ...] = ()
    db_pool_min: int = 2
    db_pool_max: int = 10
    apply_migrations: bool = True
    # Router session back-off (seconds); tests shorten it.
    router_backoff_initial: float = 1.0
    router_backoff_max: float = 30.0
    # Per-user and per-address limits, shared by every process on the database (0 = no limit).
    max_sockets_per_user: int = 20
    # Runs (chat turns over the WebSocket, HTTP and /v1) in flight per user, across the service.
    max_runs_per_user: int = 20
    # A socket slot whose process stopped refreshing it counts no more after this many seconds.
    socket_slot_ttl: float = 8.0
    login_max_failures_per_account: int = 10
    login_max_failures_per_address: int = 50
    login_throttle_window: float = 300.0
    register_max_per_address: int = 20
    register_throttle_window: float = 3600.0
    # Password hashes waiting for a worker process in this process (at most 4 of one account or
    # address); more are refused with 503.
    password_queue_max: int = 32
    start_router: bool = True
    start_jobs: bool = True
    # Prometheus metrics at /metrics (METRICS_ENABLED); with a token, scrapes need `Bearer <token>`.
    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    # The standard OTEL_* variables; tracing is on when they name an OTLP endpoint.
    otel: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    # Slow clients (seconds; 0 = no limit): a request head must be complete this long after its
    # first byte (or after the connection opened), a body may pause this long between bytes, and
    # an idle keep-alive connection is closed after keepalive_timeout.
    header_read_timeout: float = 15.0
    body_read_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    # Serving processes on one port; 1 = this process serves, as it always did.
    workers: int = 1
    # Set only in worker processes: the supervisor's embedded server, used but never started,
    # stopped or migrated by them.
    embedded_dsn: str | None = None

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """Every key a token or a stored secret may be under, the current one first."""
        return (self.secret_key, *self.secret_key_previous)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def embedded(self) -> bool:
        return self.database_dsn is None


SETTINGS = web.AppKey("settings", Settings)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file: KEY=VALUE lines, `#` comments, optional quotes, optional `export`."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def merged_environment(environ: Mapping[str, str], project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """The parent directory's `.env` (monorepo root), then our own, then the real environment."""
    merged: dict[str, str] = {}
    merged.update(read_env_file(project_dir.parent / ".env"))
    merged.update(read_env_file(project_dir / ".env"))
    merged.update(environ)
    return merged


def parse_cors_origins(raw: str) -> tuple[str, ...]:
    raw = raw.strip()
    if not (raw.startswith("[") or raw.endswith("]")):
        raise ConfigError(f"BACKEND_CORS_ORIGINS must be a bracketed list like [*] or [\"http://a\", \"http://b\"], got {raw!r}")
    inner = raw.strip("[]").replace('"', "")
    return tuple(item.strip() for item in inner.split(",") if item.strip())


def _bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _number(raw: str, name: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def parse_port(raw: str) -> int:
    port = int(_number(raw, "PORT", int))
    if port > 65535:
        raise ConfigError(f"PORT must be between 1 and 65535 (0 = any free port), got {raw!r}")
    return port


def parse_workers(raw: str) -> int:
    """`WORKERS`: a count of at least 1, or `auto` for one per core."""
    if raw.strip().lower() == "auto":
        return max(1, os.cpu_count() or 1)
    workers = int(_number(raw, "WORKERS", int))
    if workers < 1:
        raise ConfigError(f"WORKERS must be at least 1 or auto, got {raw!r}")
    return workers


def database_dsn_from(env: Mapping[str, str]) -> str | None:
    """A full DSN, or one built from POSTGRES_*; None when no server is configured at all."""
    uri = env.get("SQLALCHEMY_ASYNC_DATABASE_URI", "").strip()
    if uri:
        scheme, sep, rest = uri.partition("://")
        if not sep:
            raise ConfigError("SQLALCHEMY_ASYNC_DATABASE_URI must look like postgresql://user:password@host:port/db")
        # SQLAlchemy's driver suffix means nothing to asyncpg.
        return "postgresql://" + rest if scheme.split("+")[0] in {"postgresql", "postgres"} else uri
    host = env.get("POSTGRES_HOST", "").strip()
    if not host:
        return None
    user = quote(env.get("POSTGRES_USER", "postgres"), safe="")
    password = quote(env.get("POSTGRES_PASSWORD", "postgres"), safe="")
    port = env.get("POSTGRES_PORT", "5432").strip() or "5432"
    db = quote(env.get("POSTGRES_DB", "postgres"), safe="")
    return f"postgresql://{user}:{password}@{host}:{port}/{db}"


def resolve_secret_key(env: Mapping[str, str], dsn: str | None, data_dir: Path) -> str:
    """SECRET_KEY from the environment; in embedded mode a generated one kept beside the data."""
    key = env.get("SECRET_KEY", "")
    if key == PUBLIC_DEFAULT_SECRET:
        raise ConfigError("SECRET_KEY is the reference's published default; set a random value (e.g. `openssl rand -hex 32`)")
    if key:
        return key
    if dsn is not None:
        raise ConfigError("SECRET_KEY is not set; an external database needs an explicit key: set SECRET_KEY (e.g. `openssl rand -hex 32`)")
    # Embedded mode: a key that changed at every restart would silently invalidate every agent
    # token and every stored provider key, so generate it once and keep it with the data.
    path = data_dir / "secret_key"
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        return stored
    data_dir.mkdir(parents=True, exist_ok=True)
    generated = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(generated + "\n")
    log.warning("SECRET_KEY is not set: generated one and stored it in %s (mode 0600)", path)
    return generated


_LIMITS: dict[str, tuple[str, type[int] | type[float]]] = {
    "max_sockets_per_user": ("MAX_SOCKETS_PER_USER", int),
    "max_runs_per_user": ("MAX_RUNS_PER_USER", int),
    "login_max_failures_per_account": ("LOGIN_MAX_FAILURES_PER_ACCOUNT", int),
    "login_max_failures_per_address": ("LOGIN_MAX_FAILURES_PER_ADDRESS", int),
    "login_throttle_window": ("LOGIN_THROTTLE_SECONDS", float),
    "register_max_per_address": ("REGISTER_MAX_PER_ADDRESS", int),
    "register_throttle_window": ("REGISTER_THROTTLE_SECONDS", float),
    "password_queue_max": ("PASSWORD_QUEUE_MAX", int),
}


def _limits(env: Mapping[str, str]) -> dict[str, Any]:
    """The limit settings present in the environment (absent ones keep their defaults)."""
    return {name: kind(_number(env[var], var, kind)) for name, (var, kind) in _LIMITS.items() if env.get(var, "").strip()}


def previous_secret_keys(env: Mapping[str, str], current: str) -> tuple[str, ...]:
    """SECRET_KEY_PREVIOUS: comma-separated, newest first; the current key and repeats are dropped."""
    keys: list[str] = []
    for key in (k.strip() for k in env.get("SECRET_KEY_PREVIOUS", "").split(",")):
        if key and key != current and key not in keys:
            keys.append(key)
    return tuple(keys)


def from_env(environ: Mapping[str, str], project_dir: Path = PROJECT_DIR) -> Settings:
    env = merged_environment(environ, project_dir)
    dsn = database_dsn_from(env)
    data_dir = Path(env.get("GENAI_DATA_DIR", "") or project_dir / ".genai").expanduser().resolve()
    files_raw = env.get("DEFAULT_FILES_FOLDER_NAME", "files") or "files"
    files_dir = Path(files_raw) if Path(files_raw).is_absolute() else (project_dir.parent / files_raw).resolve()
    allow_hosts = tuple(h.strip() for h in env.get("URL_ALLOW_HOSTS", "").split(",") if h.strip())
    secret_key = resolve_secret_key(env, dsn, data_dir)
    settings = Settings(
        secret_key=secret_key,
        secret_key_previous=previous_secret_keys(env, secret_key),
        database_dsn=dsn,
        data_dir=data_dir,
        hash_algorithm=env.get("HASH_ALGORITHM", "HS256"),
        debug=_bool(env.get("DEBUG", "false"), "DEBUG"),
        host=env.get("HOST", "0.0.0.0"),
        port=parse_port(env.get("PORT", "8000")),
        router_ws_url=env.get("ROUTER_WS_URL", "ws://genai-router:8080/ws"),
        master_be_api_key=env.get("MASTER_BE_API_KEY", "") or DEFAULT_MASTER_BE_API_KEY,
        master_agent_api_key=env.get("MASTER_AGENT_API_KEY", "") or DEFAULT_MASTER_AGENT_API_KEY,
        cors_origins=parse_cors_origins(env.get("BACKEND_CORS_ORIGINS", "[*]")),
        files_dir=files_dir,
        max_upload_bytes=int(_number(env.get("MAX_UPLOAD_BYTES", str(100 * 1024 * 1024)), "MAX_UPLOAD_BYTES", int)),
        refresh_interval_minutes=_number(env.get("CELERY_BEAT_INTERVAL_MINUTES", "1"), "CELERY_BEAT_INTERVAL_MINUTES", float),
        tool_refresh_timeout=_number(env.get("TOOL_REFRESH_TIMEOUT", "10"), "TOOL_REFRESH_TIMEOUT", float) or 10.0,
        log_retention_days=int(_number(env.get("LOG_RETENTION_DAYS", "7"), "LOG_RETENTION_DAYS", int)),
        master_agent_timeout=_number(env.get("MASTER_AGENT_TIMEOUT", "600"), "MASTER_AGENT_TIMEOUT", float),
        a2a_verify_tls=_bool(env.get("A2A_VERIFY_TLS", "true"), "A2A_VERIFY_TLS"),
        urls_allow_private=_bool(env.get("URL_ALLOW_PRIVATE", "true"), "URL_ALLOW_PRIVATE"),
        urls_allow_hosts=allow_hosts,
        db_pool_max=int(_number(env.get("DB_POOL_SIZE", "10"), "DB_POOL_SIZE", int)) or 10,
        metrics_enabled=_bool(env.get("METRICS_ENABLED", "true"), "METRICS_ENABLED"),
        metrics_token=env.get("METRICS_TOKEN", "") or None,
        otel={key: value for key, value in env.items() if key.startswith("OTEL_")},
        **_limits(env),
        header_read_timeout=_number(env.get("HEADER_READ_TIMEOUT", "15"), "HEADER_READ_TIMEOUT", float),
        body_read_timeout=_number(env.get("BODY_READ_TIMEOUT", "60"), "BODY_READ_TIMEOUT", float),
        keepalive_timeout=_number(env.get("KEEPALIVE_TIMEOUT", "75"), "KEEPALIVE_TIMEOUT", float),
        workers=parse_workers(env.get("WORKERS", "1") or "1"),
    )
    if settings.hash_algorithm != "HS256":
        raise ConfigError("HASH_ALGORITHM: only HS256 is supported (the router and agents expect it)")
    if settings.master_be_api_key == DEFAULT_MASTER_BE_API_KEY:
        if dsn is not None:
            # It opens every user's chats and files (the master agent's mode), like SECRET_KEY.
            raise ConfigError("MASTER_BE_API_KEY is the router's published default; with an external database set "
                              "your own (the same value in the router and the master agent)")
        log.warning("MASTER_BE_API_KEY is the router's public default: accepted from loopback clients only")
    if settings.master_agent_api_key == DEFAULT_MASTER_AGENT_API_KEY:
        log.warning("MASTER_AGENT_API_KEY is the router's public default; set your own in production")
    return settings
