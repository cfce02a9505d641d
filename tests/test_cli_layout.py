"""The command line as a whole: every command and option says what it is for, tables come
with --json, and a command loads only what it uses (import checks, not timings: the timings
are bench/bench_startup.py's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from pkiq.cli import COMMANDS, cli

# Commands that print PEM/DER, stream a service's log or write a file: no table to --json.
NO_JSON = {"cert get", "x509 convert", "worker", "beat", "serve", "web"}


def _walk(group: click.Group, ctx: click.Context, prefix: str = ""):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = f"{prefix}{name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from _walk(command, ctx, f"{path} ")


def _commands():
    with click.Context(cli) as ctx:
        return list(_walk(cli, ctx))


def test_the_lazy_registry_says_what_each_command_says_of_itself():
    with click.Context(cli) as ctx:
        for name, (_module, _attribute, short) in COMMANDS.items():
            command = cli.get_command(ctx, name)
            assert command.name == name
            assert command.help.strip().splitlines()[0] == short, name


def test_every_command_and_option_has_help():
    missing = []
    for path, command in _commands():
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{path} {param.opts[0]}")
    assert missing == []


def test_every_command_that_prints_a_table_takes_json():
    lacking = [path for path, command in _commands()
               if not isinstance(command, click.Group) and path not in NO_JSON
               and "as_json" not in {p.name for p in command.params}]
    assert lacking == []


def _loaded_by(args: list[str], tmp_path) -> set[str]:
    code = ("import sys, json\n"
            f"sys.argv = ['pkiq', *{args!r}]\n"
            "from pkiq.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), "
            "file=sys.stderr)\n")
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data")}
    env.pop("PKIQ_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(("args", "not_loaded"), [
    (["--help"], {"cryptography", "sqlalchemy", "pydantic", "celery", "kombu", "alembic"}),
    (["x509", "decode", "FILE"], {"sqlalchemy", "pydantic", "celery", "kombu", "alembic"}),
    (["ca", "list"], {"celery", "kombu", "alembic", "requests"}),
])
def test_a_command_loads_only_what_it_uses(args, not_loaded, tmp_path):
    pem = tmp_path / "cert.pem"
    from .conftest import make_csr

    pem.write_bytes(make_csr("start.example.com"))
    args = [str(pem) if a == "FILE" else a for a in args]
    if args == ["ca", "list"]:  # a database that exists already: no migration to run
        env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data")}
        subprocess.run([sys.executable, "-m", "pkiq", "db", "upgrade"], env=env, check=True,
                       capture_output=True, cwd=tmp_path)
    assert _loaded_by(args, tmp_path) & not_loaded == set()
