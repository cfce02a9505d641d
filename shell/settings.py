"""Settings from ``PKIQ_*`` environment variables (pydantic-settings), read at the edge only."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ca import crl_config
from ca.errors import BadInput, ConfigError, WrongPassphrase
from shell.files import read_regular


def _default_data_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pkiq"


PASSPHRASE_FILE_BYTES = 4096  # only the first line counts; a longer one is cut here


def read_passphrase_file(path: Path, what: str = "passphrase file") -> bytes:
    """The first line of a file, as ``openssl -passin file:`` reads it (a trailing CR is
    dropped, so a file saved on Windows works). A regular file only, and only its first
    4 KiB: /dev/zero or a FIFO named as the passphrase file is refused, not read for ever."""
    try:
        head = read_regular(path, limit=PASSPHRASE_FILE_BYTES, what=what, head=True)
    except BadInput as exc:
        raise WrongPassphrase(str(exc)) from None
    first = head.split(b"\n", 1)[0].removesuffix(b"\r")
    if not first:
        raise WrongPassphrase(f"{what} {path} is empty: its first line is the passphrase")
    return first


def passphrase_bytes(value: str, variable: str) -> bytes:
    """A passphrase from an environment variable, which must be UTF-8 text; a passphrase of
    other bytes belongs in a file (read as bytes, as openssl does)."""
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise WrongPassphrase(f"{variable} is not valid UTF-8: put a passphrase of other "
                              "bytes in a file (--passphrase-file, PKIQ_CA_PASSPHRASE_FILE)"
                              ) from None


# The databases pkiq is built and tested for; shell.db.make_engine checks the same list.
DATABASE_SCHEMES = ("postgresql", "postgresql+psycopg", "sqlite", "sqlite+pysqlite")
DATABASE_ACCEPTED = "postgresql://USER@HOST:PORT/DB or sqlite:////PATH/TO/pkiq.db"
BROKER_SCHEMES = ("redis", "rediss", "filesystem")
MAX_ALERT_TIMEOUT = 300.0  # scheduler.alerts.MAX_TIMEOUT


def _checked(check, value: str | None):
    """A ``ca.crl_config`` check as a pydantic validator (ValueError, its sentence)."""
    if value is None:
        return None
    try:
        return check(value)
    except BadInput as exc:
        raise ValueError(str(exc)) from None


def _check_scheme(value: str, schemes: tuple[str, ...]) -> str:
    scheme, sep, _ = value.partition("://")
    if not sep:
        raise ValueError("not a URL")
    if scheme not in schemes:
        raise ValueError(f"{scheme}:// is not supported")
    return value


def _seconds(default: int, low: int, high: int):
    return Field(default=default, ge=low, le=high,
                 description=f"whole seconds from {low} to {high}")


_TIMEOUT = {"gt": 0, "le": MAX_ALERT_TIMEOUT, "allow_inf_nan": False,
            "description": f"seconds, above 0 and at most {MAX_ALERT_TIMEOUT:g}"}
_FLAG = "true or false, also 1/0, yes/no, on/off"
_HOSTS = ("host names (each with its subdomains), IP addresses or networks such as "
          "10.0.0.0/8, separated by commas")


class Settings(BaseSettings):
    """Every ``PKIQ_*`` variable. An empty variable counts as unset (compose files write
    ``VAR: ${VAR:-}``); each constrained one says what it accepts, which load_settings
    quotes when a value is refused."""

    model_config = SettingsConfigDict(env_prefix="PKIQ_", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(default_factory=_default_data_dir,
                           description="a folder, made if missing")
    database_url: str | None = Field(default=None, description=DATABASE_ACCEPTED)
    ca_passphrase: str | None = Field(default=None, repr=False)  # PKIQ_CA_PASSPHRASE
    ca_passphrase_file: Path | None = None  # PKIQ_CA_PASSPHRASE_FILE (first line)
    # The queue: Redis (redis://127.0.0.1:6379/0) or, by default, an embedded broker that
    # needs no server: kombu's filesystem transport in data_dir/queue.
    broker_url: str | None = Field(default=None, description="redis://HOST:PORT/DB or "
                                   "rediss://...; unset, the embedded queue in the data dir")
    queue: str = "pkiq"
    job_timeout_seconds: int = _seconds(300, 10, 86400)  # then the reconciler re-sends a job
    reconcile_seconds: int = _seconds(60, 1, 3600)  # how often beat runs the reconciler
    crl_tick_seconds: int = _seconds(60, 5, 3600)  # how often beat checks the CRL schedule
    # Alerts from the CRL updater (scheduler.alerts.channels_from_config reads these keys).
    webhook_url: str | None = Field(default=None, repr=False)  # may carry a token
    webhook_timeout: float | None = Field(default=None, **_TIMEOUT)
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535,
                                  description="a port number from 1 to 65535")
    smtp_from: str | None = None
    smtp_to: str | None = None  # comma-separated addresses
    smtp_starttls: bool | None = Field(default=None, description=_FLAG)
    smtp_ssl: bool | None = Field(default=None, description=_FLAG)
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_timeout: float | None = Field(default=None, **_TIMEOUT)
    # How CRL fetches reach distribution points (ca.crl_config.CrlNetwork). Only these:
    # HTTP_PROXY and the like are never read.
    crl_proxy: str | None = Field(default=None, repr=False,  # may carry a password
                                  description="http://HOST:PORT, optionally user:password@")
    crl_no_proxy: str | None = Field(default=None, description=_HOSTS)
    crl_allow_internal: str | None = Field(default=None, description=_HOSTS)
    # Expressway stores (service.stores): where per-node stores go unless a node names its
    # own folder, how often beat publishes the due ones, and how long every CRL a store
    # carries must stay valid (an Expressway fetches once a day: a CRL with less left may
    # lapse before its next fetch, and then every certificate of that CA counts as revoked).
    stores_dir: Path | None = Field(default=None, description="a folder; unset, "
                                    "<data dir>/stores")
    store_tick_seconds: int = _seconds(30, 5, 3600)
    store_crl_headroom_hours: int = Field(default=26, ge=0, le=24 * 90,
                                          description="whole hours from 0 to 2160")
    # Pushing to Expressways over REST (service.push, service.drift): how long one call may
    # take, how often a push is tried when a node does not answer (10 s, 20 s, 40 s, ...),
    # how long a restarted node may take to come back, and how often drift is checked.
    node_api_timeout: float = Field(default=15.0, gt=0, le=120, allow_inf_nan=False,
                                    description="seconds, above 0 and at most 120")
    push_attempts: int = Field(default=5, ge=1, le=50, description="from 1 to 50")
    push_retry_seconds: int = _seconds(10, 1, 3600)
    restart_wait_seconds: int = _seconds(600, 10, 7200)
    drift_check_seconds: int = _seconds(3600, 60, 7 * 86400)
    # The web app (pkiq web): where it listens for the CA certificate and CRL downloads.
    web_host: str = Field(default="127.0.0.1", description="an address or host name to "
                          "listen on: 0.0.0.0 for every IPv4 interface")
    web_port: int = Field(default=8080, ge=1, le=65535,
                          description="a port number from 1 to 65535")
    # Operations (shell.logs, /metrics): the log lines' form, where worker processes leave
    # their metrics for the web app to serve, and the token /metrics asks for, if any.
    log_format: str = Field(default="text", description="text or json")
    metrics_dir: Path | None = Field(default=None, description="a folder; unset, "
                                     "<data dir>/metrics")
    metrics_token: str | None = Field(default=None, repr=False, min_length=16,
                                      description="at least 16 characters; unset, /metrics "
                                      "needs no token")

    @field_validator("log_format")
    @classmethod
    def _a_log_format(cls, value: str) -> str:
        from shell.logs import check_format

        return check_format(value)

    @property
    def effective_metrics_dir(self) -> Path:
        return self.metrics_dir or self.data_dir / "metrics"

    @field_validator("data_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError("exists and is not a folder")
        return value

    @field_validator("database_url")
    @classmethod
    def _a_database(cls, value: str | None) -> str | None:
        return None if value is None else _check_scheme(value, DATABASE_SCHEMES)

    @field_validator("broker_url")
    @classmethod
    def _a_broker(cls, value: str | None) -> str | None:
        return None if value is None else _check_scheme(value, BROKER_SCHEMES)

    @field_validator("crl_proxy")
    @classmethod
    def _a_proxy(cls, value: str | None) -> str | None:
        return _checked(crl_config.check_proxy, value)

    @field_validator("crl_no_proxy", "crl_allow_internal")
    @classmethod
    def _hosts(cls, value: str | None) -> str | None:
        _checked(crl_config.host_list, value)
        return value

    @field_validator("*")
    @classmethod
    def _utf8(cls, value, info):
        """Text settings must be UTF-8 (a non-UTF-8 byte reaches Python as a lone surrogate
        and fails far from here). The passphrase is checked when it is used, as exit 6."""
        if isinstance(value, str) and info.field_name != "ca_passphrase":
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError("not valid UTF-8") from None
        return value

    def crl_network(self) -> crl_config.CrlNetwork:
        return crl_config.crl_network(self.crl_proxy, self.crl_no_proxy,
                                      self.crl_allow_internal)

    def alert_config(self) -> dict:
        return {name: getattr(self, name) for name in type(self).model_fields
                if name.startswith(("webhook_", "smtp_"))}

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    @property
    def effective_stores_dir(self) -> Path:
        return self.stores_dir or self.data_dir / "stores"

    def passphrase(self) -> bytes | None:
        """The CA passphrase when no command-line option names one (workers, beat, and the
        CLI alike): PKIQ_CA_PASSPHRASE_FILE first, then PKIQ_CA_PASSPHRASE."""
        if self.ca_passphrase_file is not None:
            return read_passphrase_file(self.ca_passphrase_file, "PKIQ_CA_PASSPHRASE_FILE")
        if self.ca_passphrase:
            return passphrase_bytes(self.ca_passphrase, "PKIQ_CA_PASSPHRASE")
        return None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'pkiq.db'}"

    @property
    def database_setting(self) -> str:
        """The variable the database comes from, for error lines."""
        return "PKIQ_DATABASE_URL" if self.database_url else "PKIQ_DATA_DIR"


def load_settings() -> Settings:
    """The settings from the environment, or one ConfigError line naming each PKIQ_*
    variable that is wrong and what it accepts (never the value of a secret one)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            field = Settings.model_fields.get(name)
            shown = ""
            if field is not None and field.repr:
                shown = "=" + _short_repr(error.get("input"))
            accepted = f" (accepted: {field.description})" if field and field.description else ""
            said = error["msg"].removeprefix("Value error, ")
            problems.append(f"PKIQ_{name.upper()}{shown}: {said}{accepted}")
        raise ConfigError("bad setting: " + "; ".join(problems)) from None


def _short_repr(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
