"""Settings: one object, from ``VEIL_*`` environment variables, built in ``create_app``.

Every setting is documented in docs/settings.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    host: str = Field("127.0.0.1", description="Bind address of `veil serve`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `veil serve`.")

    @property
    def state_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'state.db').resolve()}"

    @property
    def workspace_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def temp_dir(self) -> Path:
        return self.data_dir / "tmp"
