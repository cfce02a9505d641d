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
    """Serve CA certificates and CRLs over HTTP, with conditional GET, and the HTTP API.

    /ca/NAME.crl (DER), /ca/NAME.crl.pem, /ca/NAME.crt (DER) and /ca/NAME.pem: the URLs to
    put in CRL distribution points and authority information access. A new CRL is served
    within a second of being issued. These, the node bundles, /healthz and /readyz need no
    credentials; /api/v1 (OpenAPI at /api/v1/openapi.json) takes tokens from pkiq token."""
    from web.server import run

    _check_free(host or ctx.settings.web_host, port or ctx.settings.web_port)
    run(ctx, host, port, workers=workers, access_log=access_log)


def _check_free(host: str, port: int) -> None:
    """A port in use (or an address not on this host) is a setting to change: say so in
    one line, exit 2, rather than uvicorn's log line and its exit status."""
    import socket

    from ca.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (set "
                          "PKIQ_WEB_HOST or --host)") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror} (another "
                              "server holds it? set PKIQ_WEB_PORT or --port)") from None
