"""``pkiq x509 ...``: decode and convert files; no database, no settings."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import emit, json_option, read_input


@click.group("x509")
def x509_group():
    """Decode and convert certificates, requests and CRLs (no database needed)."""


@x509_group.command("decode")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def x509_decode(file, as_json):
    """Show a certificate, CSR or CRL (PEM or DER) like 'openssl x509 -text'."""
    from ca.x509text import decode_all, describe, render

    items = decode_all(read_input(file))
    emit([describe(i) for i in items], as_json, lambda: "\n\n".join(render(i) for i in items))


@x509_group.command("convert")
@click.argument("infile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("outfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "target", type=click.Choice(["pem", "der"]),
              help="Output form (default: the other one).")
def x509_convert(infile, outfile, target):
    """DER to PEM and back, for certificates, CSRs and CRLs."""
    from ca.errors import BadInput
    from ca.x509text import decode_all
    from shell.files import write_atomic

    data = read_input(infile)
    items = decode_all(data)
    source = "pem" if b"-----BEGIN " in data else "der"
    target = target or ("der" if source == "pem" else "pem")
    if target == "der":
        if len(items) != 1:
            raise BadInput(f"{infile} holds {len(items)} objects; DER holds exactly one")
        write_atomic(outfile, items[0].der())
    else:
        write_atomic(outfile, b"".join(i.pem() for i in items))
    click.echo(f"wrote {len(items)} {items[0].kind}(s) as {target.upper()} to {outfile}",
               err=True)
