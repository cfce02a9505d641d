"""Settings from ``PKIQ_*`` environment variables (pydantic-settings), read at the edge only."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pkiq"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PKIQ_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None  # default: SQLite (WAL) in data_dir
    ca_passphrase: str | None = Field(default=None, repr=False)  # PKIQ_CA_PASSPHRASE

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'pkiq.db'}"
