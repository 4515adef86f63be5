"""Settings: one object, from ``VEIL_*`` environment variables, built in ``create_app``.

This is the only module that reads a ``VEIL_*`` variable: everything else gets its value from
here, so that docs/settings.md (checked against this class by tests/test_docs.py) lists every
one. Secrets are ``SecretStr``: a printed or logged ``Settings`` shows ``**********``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from policies.gate.limits import MAX_SQL_CHARS, SqlLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VEIL_", extra="forbid", frozen=True)

    data_dir: Path = Field(Path("veil-data"), description="Workspaces, state store and keys.")
    database_url: str | None = Field(
        None, description="State store URL; default: SQLite file state.db in the data directory."
    )
    workers: int = Field(2, ge=1, le=64, description="Executor worker processes.")
    worker_threads: int = Field(2, ge=1, le=64, description="DuckDB threads per worker.")
    worker_memory_limit: str = Field("2GB", description="DuckDB memory_limit per worker.")
    worker_address_space_gb: float = Field(
        6.0, gt=0, description="RLIMIT_AS per worker process, in GiB: contains memory bombs."
    )
    query_timeout_s: float = Field(30.0, gt=0, description="Watchdog deadline per query.")
    default_delta: float = Field(
        1e-7, ge=0, le=1e-3, description="δ spent on partition selection when a request omits it."
    )
    key_dir: Path | None = Field(
        None,
        description="Receipt signing keys and the zone secret; default: <data_dir>/keys.",
    )
    master_key: SecretStr | None = Field(
        None,
        description="Master key ring as `kid:base64` entries separated by commas, the first "
        "current; replaces <key_dir>/master (unset: the key directory's).",
    )
    audit_hmac_key: SecretStr | None = Field(
        None,
        description="Audit HMAC key ring, same format; replaces <key_dir>/audit-hmac (unset: the "
        "key directory's).",
    )
    templates_dir: Path | None = Field(
        None,
        description="Verification template files (*.toml); default: the packaged demo templates.",
    )
    verification_envelope_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        description="Pad every single verification answer and consent refusal to at least this "
        "many milliseconds (0: no padding; the refusal path runs a decoy query instead).",
    )
    verification_index_max_subjects: int = Field(
        1_000_000,
        ge=0,
        le=100_000_000,
        description="Index every subject's template facts on a dataset's current version, in "
        "memory, when it has at most this many subjects, so that an answer is a lookup rather "
        "than a query (0: never; every answer runs its template query).",
    )
    query_grid_ms: float = Field(
        50.0,
        ge=0,
        le=60_000,
        description="Fixed part, per statement, of the time grid step a query's answer is "
        "released on (0: no grid, answers go out when ready; docs/queries.md#timing).",
    )
    query_grid_ns_per_row: float = Field(
        25.0,
        ge=0,
        le=1_000_000,
        description="Part of the grid step per row of the query's input size class (its tables' "
        "row counts, and the join's bound, rounded up to a power of two), in nanoseconds.",
    )
    auth_cache_s: float = Field(
        2.0,
        ge=0,
        le=300,
        description="Seconds a successfully checked API key is remembered by a server process "
        "(0: check every request against the state store).",
    )
    signing_processes: int = Field(
        2,
        ge=0,
        le=16,
        description="Processes that sign the receipts of large verification batches "
        "(0: sign in the server process).",
    )
    load_quota_bytes: int | None = Field(
        None, ge=1, description="Largest source one load may read, in bytes (unset: free disk)."
    )
    upload_max_bytes: int = Field(
        2**30,
        ge=1,
        description="Largest file one upload (`…/uploads`) may hold, in bytes; each request's "
        "body is also capped by max_body_bytes, so larger files are sent in chunks.",
    )
    upload_expiry_s: float = Field(
        86_400.0,
        gt=0,
        le=30 * 86_400,
        description="Seconds an unfinished upload is kept without a new chunk; then it is deleted.",
    )
    audit_checkpoint_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="Seconds between signed audit checkpoints (written also when nothing "
        "happened; one per interval across all server processes).",
    )
    audit_witness: Path | None = Field(
        None,
        description="A file (one JSON line per checkpoint, appended) or directory (one file per "
        "checkpoint) outside the state store that receives every signed audit checkpoint "
        "(unset: none).",
    )
    # API hardening (sandbox/limits.py, sandbox/api/guard.py): every limit is per server process.
    rate_limit_per_s: float = Field(
        1000.0,
        ge=0,
        description="Requests per second per API key (no key: per client address); 0: no limit.",
    )
    rate_limit_burst: int = Field(
        2000, ge=1, le=1_000_000, description="Requests a caller may make at once (bucket size)."
    )
    tenant_concurrency: int = Field(
        256, ge=0, le=100_000, description="In-flight requests per tenant; 0: no limit."
    )
    max_body_bytes: int = Field(
        32 * 2**20, ge=1024, le=2**31, description="Largest request body, in bytes."
    )
    max_sql_chars: int = Field(
        MAX_SQL_CHARS,
        ge=100,
        le=MAX_SQL_CHARS,  # the gate's own cap: the edge can only refuse earlier, never admit more
        description="Longest SQL text of a query, in characters.",
    )
    max_sql_depth: int = Field(
        32, ge=1, le=200, description="Deepest bracket nesting of a query's SQL text."
    )
    runtime_dir: Path | None = Field(
        None,
        description="Where decrypted workspaces live while served (a fresh 0700 directory per "
        "process inside it); default: /dev/shm (RAM), else the system temp directory.",
    )
    host: str = Field("127.0.0.1", description="Bind address of `veil serve`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `veil serve`.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve the Prometheus metrics without an API key on this port of "
        "`metrics_host`, besides `/metrics` on the API (unset: only there, for admins and "
        "operators).",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Bind address of the metrics listener (`metrics_port`)."
    )
    # Connections (sandbox/api/connections.py): per server process, as served by `veil serve`.
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's line and headers, from connecting "
        "(or from the first byte of its next request on a kept-alive connection).",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's whole body, from the end of its "
        "headers.",
    )
    connections_per_address: int = Field(
        256,
        ge=0,
        le=100_000,
        description="Open connections one client address may hold at once; 0: no limit.",
    )

    @property
    def sql_limits(self) -> SqlLimits:
        return SqlLimits(self.max_sql_chars, self.max_sql_depth)

    @property
    def state_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'state.db').resolve()}"

    @property
    def keys_path(self) -> Path:
        return self.key_dir if self.key_dir is not None else self.data_dir / "keys"

    @property
    def templates_path(self) -> Path:
        if self.templates_dir is not None:
            return self.templates_dir
        return Path(__file__).parent / "demo" / "data" / "templates"

    @property
    def workspace_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def temp_dir(self) -> Path:
        return self.data_dir / "tmp"
