"""``pkiq db upgrade``: the schema step of a deployment."""

from __future__ import annotations

import click

from .cli_common import emit, json_option, pass_service


@click.group("db")
def db_group():
    """The database schema: create or upgrade it."""


@db_group.command("upgrade")
@json_option
@pass_service
def db_upgrade(ctx, as_json):
    """Create the schema or bring it to the newest revision, then exit (a one-shot
    migration step for deployments; safe to run from several hosts at once)."""
    from shell.db import SCHEMA_HEAD

    ctx.sessions  # noqa: B018 - making the session factory migrates
    emit({"revision": SCHEMA_HEAD}, as_json, f"database schema at revision {SCHEMA_HEAD}")
