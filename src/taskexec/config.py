"""Settings, read from ``TASKEXEC_*`` environment variables. No I/O at import time."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The per-user data directory (``~/.local/share/taskexec`` on Linux)."""
    return Path(platformdirs.user_data_dir("taskexec", appauthor=False))


# The databases taskexec runs on (mariadb is MySQL's dialect under another name).
DATABASE_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")
URL_EXAMPLES = "sqlite:///PATH, postgresql://USER@HOST:5432/DB or mysql://USER@HOST:3306/DB"


# scheme://[user[:password]@][host][:port][/database][?query], read as SQLAlchemy reads
# it: the user stops at ':' or '/', the password runs to the '@' (it may hold '/', '?',
# '#' or ':'; an '@' in it must be written %40).
_URL = re.compile(
    r"^(?P<scheme>[\w+]+)://"
    r"(?:(?P<user>[^:/@]*)(?::(?P<password>[^@]*))?@)?"
    r"(?P<host>\[[^\]]*\]|[^/:?]*)?(?::(?P<port>[^/?]*))?"
)


def redacted_url(url: str) -> str:
    """``url`` with its password, if it has one, shown as ``***``."""
    found = _URL.match(url)
    if found is None or found.group("password") is None:
        return url
    start, end = found.span("password")
    return url[:start] + "***" + url[end:]


def database_url_problem(url: str) -> str | None:
    """What is wrong with a database URL, in one line, or None when it looks usable
    (whether the database answers is for the connection to find out)."""
    found = _URL.match(url)
    shown = repr(redacted_url(url))
    if found is None:
        return f"{shown} is not a database URL: use {URL_EXAMPLES}"
    backend = found.group("scheme").split("+", 1)[0].lower()
    if backend == "postgres":
        return f"use postgresql:// rather than postgres:// in {shown}"
    if backend not in DATABASE_BACKENDS:
        return f"unsupported database {backend!r} in {shown}: use sqlite, postgresql or mysql"
    port = found.group("port")
    if backend != "sqlite" and port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"bad port {port!r} in {shown}: use a port 1-65535"
    return None


class Settings(BaseSettings):
    """Everything configurable about the server, the CLI and the database."""

    model_config = SettingsConfigDict(env_prefix="TASKEXEC_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    # Empty means the embedded default: SQLite in ``data_dir``.
    database_url: str = ""

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # Test a pooled connection before use when it has been idle for longer than
    # ``db_pool_pre_ping_idle_seconds``, so a connection the server dropped meanwhile is
    # replaced instead of failing a request. A connection back from work a moment ago is
    # not pinged: under load that saves one round trip per request, and a connection
    # lost mid-use is still retried by the transaction owner. 0 pings every checkout.
    db_pool_pre_ping: bool = True
    db_pool_pre_ping_idle_seconds: float = Field(default=1.0, ge=0)
    # How often the transaction owner retries a deadlock, serialization failure,
    # SQLite busy/locked or lost connection before answering 503.
    db_retry_attempts: int = Field(default=3, ge=1, le=20)
    db_retry_base_delay_seconds: float = Field(default=0.02, ge=0)
    db_retry_after_seconds: int = Field(default=1, ge=0)
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    # On PostgreSQL, a write that is one statement (``db.engine.one_statement``: the
    # rendered-fields upserts) runs in autocommit, its own transaction: one round trip
    # instead of BEGIN, the statement and COMMIT. Off, it runs in a transaction.
    db_one_statement_autocommit: bool = True
    # On PostgreSQL, group commit's batch statement goes straight through the driver, on
    # one connection per server process kept open (``db.direct``), past SQLAlchemy's
    # execution layers (about four times the driver's own CPU for that statement).
    rtif_batch_direct: bool = True
    # SQLite's writers queue on a file lock beside the database, across processes
    # (``db.sqlite_queue``); off, other processes' writers meet SQLite's busy handler.
    sqlite_write_queue: bool = True
    # Every wait is bounded. A request gets its answer within this (at worst 503 with
    # Retry-After), kept below the worker SDK's 5 s client timeout; each transaction,
    # with its retries, gets a little less, and the database is told to give up on a
    # statement or a lock wait after as long (statement_timeout, lock_timeout,
    # innodb_lock_wait_timeout, max_statement_time, SQLite's busy timeout).
    request_timeout_seconds: float = Field(default=4.0, gt=0)
    # Logging, the same in every process: "text" lines, or "json" (one object a line).
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    # HTTP connections, per server process: a request's headers must arrive within
    # http_header_timeout_seconds; an idle keep-alive connection is closed after
    # http_keep_alive_seconds; past http_max_connections a new connection is refused.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_keep_alive_seconds: int = Field(default=5, ge=1)
    http_max_connections: int = Field(default=2048, ge=1)
    # With two workers or more, each listens on a socket of its own (SO_REUSEPORT) and
    # the kernel spreads connections over them (``server.supervisor``); off, they share
    # one socket, and the first worker to wake accepts every connection waiting.
    http_reuse_port: bool = True

    # Empty means: generate once, keep in ``data_dir/jwt_secret`` with mode 0600.
    jwt_secret: SecretStr = SecretStr("")
    jwt_audience: str = "urn:taskexec:task"
    jwt_issuer: str = "taskexec"
    jwt_expiration_seconds: int = Field(default=600, gt=0)
    jwt_leeway_seconds: int = Field(default=10, ge=0)

    max_request_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Group commit of rendered-fields writes: the writes that arrive while a batch is in
    # the database go together as the next one, one statement, up to this many (1 turns
    # batching off: one transaction per write).
    rtif_batch_max: int = Field(default=64, ge=1, le=1000)
    # ...and at most this many bytes of fields (a body under 64 KiB counts as 64 KiB):
    # a batch must fit in one statement (MariaDB's max_allowed_packet is 16 MiB).
    rtif_batch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # PUT /rtif's ordinary requests skip FastAPI's request machinery (``api/routes/
    # rtif_hot_path``); off sends every one through the FastAPI route (to compare).
    rtif_hot_path: bool = True
    # Each server process moves what it loaded at start-up out of the garbage
    # collector's sight (``gc.freeze``): a full collection then scans only what requests
    # made, not the ~120,000 objects of the modules (about 50 ms, every worker stalled).
    gc_freeze: bool = True

    # --- retention ---------------------------------------------------------------
    # Keep rendered fields for the newest N runs of each dag; 0 or less keeps them all.
    rendered_fields_retain_runs: int = 30
    # The server prunes in the background this often (0 turns the background task off;
    # ``taskexec db prune`` still works), deleting at most this many rows per
    # transaction, so that no worker's write waits long on a pruning lock.
    prune_interval_seconds: float = Field(default=10.0, ge=0)
    prune_batch_size: int = Field(default=500, ge=1, le=10_000)

    # --- scheduler -----------------------------------------------------------------
    # ``taskexec serve`` runs a scheduler beside the API (``taskexec scheduler`` runs one
    # alone); across all of them exactly one is active, by a lease in the database.
    scheduler_in_server: bool = True
    # Longest time between two scheduler iterations (it also wakes when a try ends);
    # the lease lasts 1.5 intervals, so another scheduler takes over within two.
    scheduler_interval_seconds: float = Field(default=1.0, gt=0)
    # Airflow's task_instance_heartbeat_timeout: a running try whose worker has not
    # heartbeated for this long is failed (and retried if it has tries left).
    task_heartbeat_timeout_seconds: float = Field(default=300.0, gt=0)
    # Airflow's task_queued_timeout: a try handed to an executor that no worker started
    # in this long is handed out again.
    task_queued_timeout_seconds: float = Field(default=600.0, gt=0)
    # Where the active scheduler runs tries: local worker processes, or Celery.
    executor: Literal["local", "celery"] = "local"
    # Worker processes of the local executor; 0 means one per CPU.
    local_workers: int = Field(default=0, ge=0)

    # --- read API and web page (/api/v1, /ui) -----------------------------------
    # A bearer token for the read side. Unset: only loopback clients may read, and the
    # server warns when it listens anywhere else.
    api_token: SecretStr | None = None

    # --- worker side -------------------------------------------------------------
    # Where workers reach the Execution API.
    api_url: str = "http://127.0.0.1:8080"
    # Per-request timeout and retry policy of the SDK client (Airflow's defaults).
    execution_api_timeout_seconds: float = Field(default=5.0, gt=0)
    execution_api_retries: int = Field(default=5, ge=1)
    execution_api_retry_wait_min_seconds: float = Field(default=1.0, ge=0)
    execution_api_retry_wait_max_seconds: float = Field(default=90.0, ge=0)
    heartbeat_interval_seconds: float = Field(default=5.0, gt=0)
    # Empty means the bundled example dags.
    dags_folder: Path | None = None
    # Empty means ``data_dir/logs``.
    logs_dir: Path | None = None
    max_templated_field_length: int = 4096
    # Added to Airflow's default sensitive words (comma-separated in the environment).
    sensitive_words: str = ""
    # Celery broker (redis:// or amqp://).
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_queue: str = "taskexec"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, url: str) -> str:
        if url and (problem := database_url_problem(url)):
            raise ValueError(problem)
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, level: Any) -> Any:
        return level.upper() if isinstance(level, str) else level

    @property
    def transaction_timeout_seconds(self) -> float:
        """How long one transaction (with its retries) may take: the request deadline
        less a margin, so that database trouble is answered as such before the request
        deadline's own 503."""
        return max(0.1, self.request_timeout_seconds * 0.9)

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'taskexec.db'}"

    @property
    def effective_dags_folder(self) -> Path:
        """The configured dags folder, or the bundled examples."""
        return self.dags_folder or Path(__file__).parent / "example_dags"

    @property
    def effective_logs_dir(self) -> Path:
        """Where per-try task logs go."""
        return self.logs_dir or self.data_dir / "logs"

    @property
    def extra_sensitive_words(self) -> list[str]:
        """The configured extra sensitive words, lower-cased."""
        return [w.strip().lower() for w in self.sensitive_words.split(",") if w.strip()]

    @property
    def is_embedded(self) -> bool:
        """True when running on the embedded default database (SQLite)."""
        return self.effective_database_url.startswith("sqlite")


def as_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``TASKEXEC_*`` variables that give them back: for a process
    started with another's settings (the local executor's workers)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"TASKEXEC_{name.upper()}"] = str(value)
    return env


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
