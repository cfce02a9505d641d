"""``pkiq verify``: would a node accept this certificate? Parse, call
``service.verify``, render one line per certificate of the path and the verdict.

Exit 0 valid, 4 invalid (a rule broken, or revoked), 9 undetermined (no revocation answer,
and the fallback treats that as revoked), 3 unreadable input. ``--trusted`` needs no
database; ``--node`` reads the node's trusted list and CRLs from it.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import emit, json_option, read_input, warn

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("verify")
@click.argument("cert", type=_FILE)
@click.option("--node", help="Check as this node would: its trusted CA list and CRLs.")
@click.option("--trusted", "trusted", multiple=True, type=_FILE,
              help="A trusted CA list file (PEM bundle or DER), instead of --node; repeatable.")
@click.option("--crl", "crls", multiple=True, type=_FILE,
              help="A CRL file (PEM, DER, zip or gzip) the node holds; repeatable.")
@click.option("--intermediate", "intermediates", multiple=True, type=_FILE,
              help="Intermediate certificates the peer sends with its own; repeatable.")
@click.option("--purpose", type=click.Choice(["serverAuth", "clientAuth"]),
              help="The extended key usage the certificate must allow (none if absent).")
@click.option("--host", help="The peer address, checked against the CN or a SAN "
                             "(Expressway's TLS verify mode).")
@click.option("--at", "at", metavar="TIME", help="Check as at this ISO 8601 time (default: now).")
@click.option("--use-ocsp/--no-use-ocsp", default=True, show_default=True,
              help="Ask the OCSP responder a certificate names.")
@click.option("--use-crls/--no-use-crls", default=True, show_default=True,
              help="Use CRLs (the node's, the files given, downloads).")
@click.option("--cdp-downloads/--no-cdp-downloads", default=True, show_default=True,
              help="Download CRLs from the certificates' distribution points when none is "
                   "at hand.")
@click.option("--fallback", type=click.Choice(["not-revoked", "revoked"]),
              default="not-revoked", show_default=True,
              help="When no revocation answer can be had: treat as not revoked (Expressway's "
                   "default) or as revoked (exit 9).")
@json_option
@click.pass_context
def verify_cmd(click_ctx, cert, node, trusted, crls, intermediates, purpose, host, at,
               use_ocsp, use_crls, cdp_downloads, fallback, as_json):
    """Validate a certificate's path and revocation as an Expressway node would."""
    from ca.errors import BadInput
    from ca.verify import RevocationSettings
    from service.cas import parse_time
    from service.verify import Check, verify_files, verify_node

    if node and (trusted or crls):
        raise click.UsageError("give --node or --trusted/--crl, not both")
    if not node and not trusted:
        raise click.UsageError("give --node NODE, or --trusted FILE (and --crl FILE)")
    when = parse_time(at)
    check = Check(read_input(cert), tuple(read_input(p) for p in intermediates), when,
                  purpose, host, RevocationSettings(use_ocsp, use_crls, cdp_downloads,
                                                    fallback))
    for path in (*trusted, *crls):
        if not path.is_file():
            raise BadInput(f"cannot read {path}: No such file or directory")
    if node:
        from .cli_common import make_context

        if click_ctx.obj is None:
            click_ctx.obj = make_context()
        outcome = verify_node(click_ctx.obj, node, check)
    else:
        now = click_ctx.obj.clock() if click_ctx.obj is not None else _now()
        outcome = verify_files(check, trusted, crls, now=now)
    warn(outcome.notes if not as_json else [])
    emit(outcome.view(), as_json, outcome.verdict.render)
    click_ctx.exit(outcome.verdict.exit_code)


def _now():
    import datetime as dt

    return dt.datetime.now(dt.UTC)
