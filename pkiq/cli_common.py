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

from ca.errors import BadInput, WrongPassphrase

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
    from ca.x509text import MAX_FILE_BYTES

    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BadInput(f"{path} is {size} bytes; pkiq reads at most {MAX_FILE_BYTES}")
    return path.read_bytes()


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
        return click.option(f"--{dash}passphrase-file", f"{under}passphrase_file",
                            type=click.Path(dir_okay=False, path_type=Path),
                            help=f"File whose first line is the passphrase of {what}.")(func)
    return decorate


def read_passphrase(ctx, file: Path | None, env: str | None, *, what: str,
                    default: bool = True) -> bytes:
    """From ``--passphrase-file`` (first line, as ``openssl -passin file:``), a variable
    named by ``--passphrase-env``, else (``default``) PKIQ_CA_PASSPHRASE_FILE or
    PKIQ_CA_PASSPHRASE as the workers read them. Never from the command line, where ``ps``
    would show it."""
    from shell.settings import read_passphrase_file

    if file is not None:
        return read_passphrase_file(file)
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise WrongPassphrase(f"environment variable {env} (passphrase of {what}) is not set")
        return value.encode()
    found = ctx.settings.passphrase() if default else None
    if found:
        return found
    raise WrongPassphrase(f"{what} needs a passphrase: use --passphrase-file, --passphrase-env, "
                          "PKIQ_CA_PASSPHRASE_FILE or PKIQ_CA_PASSPHRASE")


class Output:
    """Where a command's result goes, checked before any database work: a bad ``--out`` or
    DER meant for a terminal then fails while nothing has been committed."""

    def __init__(self, path: Path | None, der: bool = False):
        self.path, self.der = path, der
        if path is None:
            if der and sys.stdout.isatty():
                raise BadInput("refusing to write DER to a terminal: use --out FILE")
            return
        if path.is_dir():
            raise BadInput(f"{path} is a directory; give a file name")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise BadInput(f"cannot write {path}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise BadInput(f"cannot write {path}: no write permission on {parent}")

    def write(self, data: bytes) -> None:
        if self.path is not None:
            from shell.files import write_atomic

            write_atomic(self.path, data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


def deliver(output: Output, obj, info: dict, as_json: bool, done: str) -> None:
    """Write a certificate or CRL where asked; with --json, the PEM rides in the JSON."""
    from cryptography.hazmat.primitives import serialization

    pem = obj.public_bytes(serialization.Encoding.PEM)
    data = obj.public_bytes(serialization.Encoding.DER) if output.der else pem
    if as_json:
        if output.path is not None:
            output.write(data)
        emit({**info, "pem": pem.decode()}, True, "")
        return
    output.write(data)
    if output.path is not None:
        click.echo(f"{done} -> {output.path}", err=True)
