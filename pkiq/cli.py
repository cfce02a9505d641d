"""The ``pkiq`` command line: parse, call one use case from ``service``, render.

Command groups live in their own modules and are imported only when used, so ``pkiq
--help`` and ``pkiq x509 ...`` do not pay for the database layer, and no group pays for
Celery unless it queues or runs jobs.

Exit codes: 0 success, 1 internal error, 2 usage error, 3 unreadable input, 4 refused by
policy, 5 not found, 6 missing or wrong passphrase, 7 conflict with the database,
8 database unreachable, 9 partly done.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ca.errors import PkiqError

# name: (module, attribute, short help). The short help is here so that ``--help`` lists
# the commands without importing them; tests/test_cli_layout.py keeps it equal to each
# command's own.
COMMANDS = {
    "ca": ("pkiq.cli_ca", "ca_group", "Create and run certificate authorities."),
    "cert": ("pkiq.cli_ca", "cert_group", "Look up issued certificates."),
    "crl": ("pkiq.cli_crl", "crl_group",
            "CRLs from outside: distribution points, the nightly refresh, status, uploads."),
    "trust": ("pkiq.cli_crl", "trust_group",
              "The trusted CA list: the anchors CRLs are checked against."),
    "submit": ("pkiq.cli_jobs", "submit", "Queue signing requests (PEM or DER), many at once."),
    "jobs": ("pkiq.cli_jobs", "jobs_group", "Look at and decide on queued signing jobs."),
    "worker": ("pkiq.cli_jobs", "worker_cmd",
               "Run signing workers (celery -A worker worker); extra arguments go to Celery."),
    "beat": ("pkiq.cli_jobs", "beat_cmd",
             "Run the scheduler: job reconciler and CRL tick (celery -A worker beat)."),
    "serve": ("pkiq.cli_jobs", "serve_cmd",
              "The whole service on one host: workers, beat and the web app."),
    "web": ("pkiq.cli_web", "web_cmd",
            "Serve CA certificates and CRLs over HTTP, with conditional GET, and the HTTP API."),
    "db": ("pkiq.cli_db", "db_group", "The database schema: create or upgrade it."),
    "node": ("pkiq.cli_nodes", "node_group",
             "Expressway peers: names, CSRs, server certificates, stores, REST pushes."),
    "cluster": ("pkiq.cli_nodes", "cluster_group",
                "Expressway clusters: name, cluster FQDN, certificate model, rollouts."),
    "rollout": ("pkiq.cli_push", "rollout_group",
                "REST rollouts to Expressway clusters and nodes: list, show, resume, cancel."),
    "trustset": ("pkiq.cli_nodes", "trustset_group",
                 "Named trusted CA lists for nodes: pkiq CAs and trusted CA list entries."),
    "token": ("pkiq.cli_tokens", "token_group", "API tokens: create (shown once), list, revoke."),
    "audit": ("pkiq.cli_tokens", "audit_group",
              "The audit log, newest first: who changed what, when, from where."),
    "verify": ("pkiq.cli_verify", "verify_cmd",
               "Validate a certificate's path and revocation as an Expressway node would."),
    "x509": ("pkiq.cli_x509", "x509_group",
             "Decode and convert certificates, requests and CRLs (no database needed)."),
}

# Commands another module adds to a group when the group is loaded: the REST pushes
# (node api|push|restart|drift, cluster rollout) live beside the node commands, not in them.
EXTENSIONS = {"node": ("pkiq.cli_push", "node_commands"),
              "cluster": ("pkiq.cli_push", "cluster_commands")}


class PkiqGroup(click.Group):
    """Loads command groups on demand and turns domain errors into one line on stderr with
    the documented exit code."""

    def list_commands(self, ctx):
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        group = getattr(importlib.import_module(module), attribute)
        if name in EXTENSIONS:
            module, attribute = EXTENSIONS[name]
            for command in getattr(importlib.import_module(module), attribute):
                if command.name not in group.commands:
                    group.add_command(command)
        return group

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PkiqError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except Exception as exc:
            sa_exc = sys.modules.get("sqlalchemy.exc")  # loaded if the error came from it
            if sa_exc is not None and isinstance(exc, sa_exc.OperationalError):
                from shell.db import DatabaseUnavailable

                detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                unreachable = any(word in detail.lower() for word in (
                    "connect", "connection", "unable to open", "timeout", "server closed"))
                _fail(ctx, f"database error: {detail}",
                      DatabaseUnavailable.exit_code if unreachable else 1)
            if isinstance(exc, OSError):
                _fail(ctx, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 3)
            raise


def _fail(ctx, message: str, code: int):
    click.echo(f"pkiq: error: {message}", err=True)
    ctx.exit(code)


@click.group(cls=PkiqGroup)
@click.version_option(package_name="pkiq")
def cli():
    """pkiq: a private CA with OpenSSL's semantics, for Expressway and any TLS estate."""


def _json_logs() -> None:
    """PKIQ_LOG_FORMAT=json: what a command logs (warnings and errors) as JSON lines on
    stderr. The worker, beat and the web app set their own handlers when they start
    (worker.celery_app, web.server), in the same format. A value other than text or json
    is refused by the settings, as any bad PKIQ_* value."""
    if os.environ.get("PKIQ_LOG_FORMAT", "").strip().lower() == "json":
        import logging

        from shell.logs import configure

        configure("json", logging.WARNING)


def main() -> None:
    _json_logs()
    try:
        cli(prog_name="pkiq")
    except Exception as exc:  # a bug, not bad input: one line unless PKIQ_DEBUG asks for more
        if os.environ.get("PKIQ_DEBUG"):
            raise
        click.echo(f"pkiq: internal error: {type(exc).__name__}: {exc} "
                   "(set PKIQ_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
