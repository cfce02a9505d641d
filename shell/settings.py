"""Settings from ``PKIQ_*`` environment variables (pydantic-settings), read at the edge only."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ca.errors import BadInput, WrongPassphrase


def _default_data_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pkiq"


def read_passphrase_file(path: Path, what: str = "passphrase file") -> bytes:
    """The first line of a file, as ``openssl -passin file:`` reads it (a trailing CR is
    dropped, so a file saved on Windows works)."""
    try:
        first = Path(path).read_bytes()[:4096].split(b"\n", 1)[0].removesuffix(b"\r")
    except OSError as exc:
        raise WrongPassphrase(f"cannot read {what} {path}: {exc.strerror}") from None
    if not first:
        raise WrongPassphrase(f"{what} {path} is empty: its first line is the passphrase")
    return first


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PKIQ_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None  # default: SQLite (WAL) in data_dir
    ca_passphrase: str | None = Field(default=None, repr=False)  # PKIQ_CA_PASSPHRASE
    ca_passphrase_file: Path | None = None  # PKIQ_CA_PASSPHRASE_FILE (first line)
    # The queue: Redis (redis://127.0.0.1:6379/0) or, by default, an embedded broker that
    # needs no server: kombu's filesystem transport in data_dir/queue.
    broker_url: str | None = None
    queue: str = "pkiq"
    job_timeout_seconds: int = Field(default=300, ge=10)  # then the reconciler re-sends a job
    reconcile_seconds: int = Field(default=60, ge=1)  # how often beat runs the reconciler
    crl_tick_seconds: int = Field(default=60, ge=5)  # how often beat checks the CRL schedule
    # Alerts from the CRL updater (scheduler.alerts.channels_from_config reads these keys).
    webhook_url: str | None = Field(default=None, repr=False)  # may carry a token
    webhook_timeout: float | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_from: str | None = None
    smtp_to: str | None = None  # comma-separated addresses
    smtp_starttls: bool | None = None
    smtp_ssl: bool | None = None
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_timeout: float | None = None

    def alert_config(self) -> dict:
        return {name: getattr(self, name) for name in type(self).model_fields
                if name.startswith(("webhook_", "smtp_"))}

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    def passphrase(self) -> bytes | None:
        """The CA passphrase when no command-line option names one (workers, beat, and the
        CLI alike): PKIQ_CA_PASSPHRASE_FILE first, then PKIQ_CA_PASSPHRASE."""
        if self.ca_passphrase_file is not None:
            return read_passphrase_file(self.ca_passphrase_file, "PKIQ_CA_PASSPHRASE_FILE")
        return self.ca_passphrase.encode() if self.ca_passphrase else None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'pkiq.db'}"


def load_settings() -> Settings:
    """The settings from the environment, or one clear BadInput naming each PKIQ_* variable
    that is wrong (never the value of a secret one)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            field = Settings.model_fields.get(name)
            shown = "" if field is None or not field.repr else f"={error.get('input')!r}"
            problems.append(f"PKIQ_{name.upper()}{shown}: {error['msg']}")
        raise BadInput("bad setting: " + "; ".join(problems)) from None
