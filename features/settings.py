"""Where the feature data lives and which Feast profile serves it.

One :class:`FeatureSettings` is built at start-up (from ``LIVEREC_*`` variables and
an optional ``.env``) and passed down; nothing here touches the disk on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The project root: the parent of the ``features`` package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class FeatureSettings(BaseSettings):
    """Settings of the feature store, shared by the batch build, Feast and the service."""

    model_config = SettingsConfigDict(
        env_prefix="LIVEREC_",
        # The project's .env, then one in the working directory (later wins).
        env_file=(PROJECT_ROOT / ".env", ".env"),
        env_file_encoding="utf-8",
        # The same .env carries the service's and the trainer's settings.
        extra="ignore",
    )

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description=(
            "Root of all data: raw event log, offline feature tables (features/) and, in the "
            "embedded profile, the Feast registry and SQLite online store (feast/)."
        ),
    )
    profile: Literal["embedded", "production"] = Field(
        default="embedded",
        description=(
            "embedded: SQLite online store and file registry under data_dir, nothing running. "
            "production: Redis online store and SQL registry on PostgreSQL."
        ),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description=(
            "Online store of the production profile: a redis:// or rediss:// URL, or Feast's "
            "own connection string (host:port[,host:port...],key=value...) for Redis Cluster."
        ),
    )
    registry_url: str = Field(
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        description=(
            "SQLAlchemy URL of the production profile's Feast SQL registry (psycopg 3 driver: "
            "postgresql+psycopg://...)."
        ),
    )
    project: str = Field(
        default="liverec",
        description="Feast project name: namespaces the registry entries and online tables.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Feast's CLI changes directory into the repo before it imports the definitions;
        # an absolute path keeps every reader pointing at the same files.
        return value.expanduser().absolute()

    @property
    def raw_dir(self) -> Path:
        """The raw event log (parquet) the simulator or a backend export writes."""
        return self.data_dir

    @property
    def offline_dir(self) -> Path:
        """The offline feature tables, one ``<table>.parquet`` each (features.tables)."""
        return self.data_dir / "features"

    @property
    def feast_dir(self) -> Path:
        """The embedded profile's Feast state: ``registry.db`` and ``online.db``."""
        return self.data_dir / "feast"
