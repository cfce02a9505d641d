"""What every ``pkiq`` command module shares: output (text or ``--json``), warnings, reading
input files, passphrase options, and where a PEM/DER result goes. Command modules import
from here, never from each other."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ca.errors import BadInput, PkiqError, WrongPassphrase

PARTIAL = 9  # exit code: some files, jobs, distribution points or issuers did not end as asked


def make_context(settings=None, clock=None):
    """The service context the commands run on: settings from PKIQ_*, the wall clock, and
    jobs announced over Celery (imported on the first announcement only)."""
    from service import ServiceContext, utc_now
    from shell.settings import load_settings

    settings = settings or load_settings()
    announcer: dict = {}

    def announce(job_ids):
        if not announcer:
            from worker.celery_app import CeleryAnnouncer

            announcer["celery"] = CeleryAnnouncer(settings)
        announcer["celery"](job_ids)

    warn_other_data_dir(settings)
    return ServiceContext(settings, clock or utc_now, announcer=announce)


def warn_other_data_dir(settings, here: Path = Path("pkiq-data")) -> None:
    """``make run`` and ``make demo`` keep their database in ./pkiq-data. A command run beside
    it without PKIQ_DATA_DIR would otherwise start a second, empty CA database in the
    default place without a word."""
    if settings.database_url or "PKIQ_DATA_DIR" in os.environ:
        return
    if (here / "pkiq.db").is_file() and not (settings.data_dir / "pkiq.db").exists() \
            and here.resolve() != settings.data_dir.resolve():
        warn([f"using a new database in {settings.data_dir}, while ./pkiq-data holds the one "
              "make run/demo use: export PKIQ_DATA_DIR=$PWD/pkiq-data (make env prints it)"])


def pass_service(command):
    """Like click's ``pass_obj``, with the service context made on first use: commands that
    need no database (``x509``) never pay for settings, SQLAlchemy or Celery."""

    @click.pass_context
    @functools.wraps(command)
    def invoke(click_ctx, *args, **kwargs):
        if click_ctx.obj is None:
            click_ctx.obj = make_context()
        return command(click_ctx.obj, *args, **kwargs)

    return invoke


def emit(data, as_json: bool, text: str | Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text() if callable(text) else text)


def warn(warnings: list[str]) -> None:
    for warning in warnings:
        if warning:
            click.echo(f"pkiq: warning: {warning}", err=True)


def read_input(path: Path) -> bytes:
    """A request, certificate, bundle or CRL file: a regular file of at most
    ``MAX_FILE_BYTES`` (not /dev/zero, a FIFO, a socket...), refused in one line if not."""
    from ca.x509text import MAX_FILE_BYTES
    from shell.files import read_regular

    return read_regular(path, limit=MAX_FILE_BYTES)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def output_options(what: str):
    """``--out FILE`` and ``--der`` for a command that hands back a certificate or CRL."""

    def decorate(func):
        func = click.option("--der", is_flag=True, help="DER instead of PEM.")(func)
        return click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                            help=f"Write the {what} here (else standard output).")(func)
    return decorate


def passphrase_options(prefix: str = "", what: str = "the CA key"):
    dash = f"{prefix}-" if prefix else ""
    under = f"{prefix}_" if prefix else ""

    def decorate(func):
        func = click.option(f"--{dash}passphrase-env", f"{under}passphrase_env", metavar="VAR",
                            help=f"Environment variable holding the passphrase of {what}.")(func)
        # No click checks on the file: read_passphrase_file refuses a missing file, a folder
        # or a FIFO as a passphrase problem (exit 6), as it does for PKIQ_CA_PASSPHRASE_FILE.
        return click.option(f"--{dash}passphrase-file", f"{under}passphrase_file",
                            type=click.Path(path_type=Path),
                            help=f"File whose first line is the passphrase of {what}.")(func)
    return decorate


def read_passphrase(ctx, file: Path | None, env: str | None, *, what: str,
                    default: bool = True) -> bytes:
    """From ``--passphrase-file`` (first line, as ``openssl -passin file:``), a variable
    named by ``--passphrase-env``, else (``default``) PKIQ_CA_PASSPHRASE_FILE or
    PKIQ_CA_PASSPHRASE as the workers read them. Never from the command line, where ``ps``
    would show it."""
    from shell.settings import passphrase_bytes, read_passphrase_file

    if file is not None:
        return read_passphrase_file(file)
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise WrongPassphrase(f"environment variable {env} (passphrase of {what}) is not set")
        return passphrase_bytes(value, f"environment variable {env}")
    found = ctx.settings.passphrase() if default else None
    if found:
        return found
    raise WrongPassphrase(f"{what} needs a passphrase: use --passphrase-file, --passphrase-env, "
                          "PKIQ_CA_PASSPHRASE_FILE or PKIQ_CA_PASSPHRASE")


class OutputNotWritten(PkiqError):
    """The database committed (a serial or CRL number was issued) but the file could not be
    put in place: partly done, and the line says how to get what was issued."""

    exit_code = PARTIAL


class Output:
    """Where a command's result goes. Checked before any database work (a bad ``--out`` or
    DER meant for a terminal then fails while nothing has been committed); ``stage`` writes
    the file aside, and is what a use case calls before it commits; ``commit`` renames it
    into place once the database has. Only the rename can fail after the commit, and then
    the error names what was issued. A context manager: leaving it removes a staged file
    that was never committed."""

    def __init__(self, path: Path | None, der: bool = False):
        self.path, self.der = path, der
        self._staged = None
        self._data: bytes | None = None
        if path is None:
            if der and sys.stdout.isatty():
                raise BadInput("refusing to write DER to a terminal: use --out FILE")
            return
        from shell.files import check_target

        check_target(path)

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._staged is not None:
            self._staged.discard()
            self._staged = None

    def encode(self, obj) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return obj.public_bytes(serialization.Encoding.DER if self.der
                                else serialization.Encoding.PEM)

    def stage(self, obj_or_data) -> None:
        """Write the file aside (a certificate or CRL object is encoded as asked)."""
        data = obj_or_data if isinstance(obj_or_data, bytes) else self.encode(obj_or_data)
        self._data = data
        if self.path is not None:
            from shell.files import StagedFile

            if self._staged is not None:
                self._staged.discard()
            self._staged = StagedFile(self.path, data)

    @property
    def staged(self) -> bool:
        return self._data is not None

    def commit(self, issued: str | None = None, recover: str | None = None) -> None:
        """Put the staged file in place (or write standard output). ``issued`` says what
        the database now holds ("certificate serial 1A..."), ``recover`` how to get it
        again; both go into the error should the rename fail."""
        if self.path is None:
            sys.stdout.buffer.write(self._data or b"")
            sys.stdout.flush()
            return
        staged, self._staged = self._staged, None
        try:
            staged.commit()
        except PkiqError as exc:
            if issued is None:
                raise
            raise OutputNotWritten(f"{issued} was issued and recorded, but {exc}"
                                   + (f"; get it with: {recover}" if recover else "")
                                   ) from None

    def write(self, data: bytes) -> None:
        self.stage(data)
        self.commit()


def deliver(output: Output, obj, info: dict, as_json: bool, done: str, *,
            issued: str | None = None, recover: str | None = None) -> None:
    """Write a certificate or CRL where asked (staged already if a use case did so before
    its commit); with --json, the PEM rides in the JSON."""
    from cryptography.hazmat.primitives import serialization

    pem = obj.public_bytes(serialization.Encoding.PEM)
    if not output.staged:
        output.stage(obj)
    if as_json:
        if output.path is not None:
            output.commit(issued, recover)
        emit({**info, "pem": pem.decode()}, True, "")
        return
    output.commit(issued, recover)
    if output.path is not None:
        click.echo(f"{done} -> {output.path}", err=True)
