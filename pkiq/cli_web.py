"""``pkiq web``: the public downloads over HTTP (each CA's certificate and current CRL)."""

from __future__ import annotations

import click

from .cli_common import pass_service


@click.command("web")
@click.option("--host", help="Address to listen on (default PKIQ_WEB_HOST, else 127.0.0.1; "
                             "0.0.0.0 for every IPv4 interface).")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port to listen on (default PKIQ_WEB_PORT, else 8080).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Server processes; each keeps its own cache.")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log one line per request (errors are logged either way).")
@pass_service
def web_cmd(ctx, host, port, workers, access_log):
    """Serve CA certificates and CRLs over HTTP, with conditional GET.

    /ca/NAME.crl (DER), /ca/NAME.crl.pem, /ca/NAME.crt (DER) and /ca/NAME.pem: the URLs to
    put in CRL distribution points and authority information access. A new CRL is served
    within a second of being issued. No credentials are needed or accepted."""
    from web.server import run

    run(ctx, host, port, workers=workers, access_log=access_log)
