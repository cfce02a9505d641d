"""The web app: the files pkiq publishes over plain HTTP, no credentials needed.

URLs (stable: CA profiles write them into CRL distribution points and authority information
access, RFC 5280 sections 4.2.1.13 and 4.2.2.1):

    GET /ca/NAME.crl       CA NAME's current CRL, DER (application/pkix-crl)
    GET /ca/NAME.crl.pem   the same CRL, PEM
    GET /ca/NAME.crt       CA NAME's certificate, DER (application/pkix-cert)
    GET /ca/NAME.pem       the same certificate, PEM
    GET /nodes/FQDN/crls.zip      the CRLs of node FQDN's published store, ZIP (DER files)
    GET /nodes/FQDN/crls.tar.gz   the same, GZIP'd tar; /nodes/FQDN/crls.pem one PEM file
    GET /clusters/NAME/crls.zip   (and .tar.gz, .pem) every CRL any peer of cluster NAME carries
    POST /ocsp/NAME        CA NAME's OCSP responder (RFC 6960); GET /ocsp/NAME/REQUEST too
    GET /healthz           200 "ok" while the process is up
    GET /readyz            200 when the database and the queue answer, else 503 saying which
    GET /metrics           Prometheus text format (web.metrics; PKIQ_METRICS_TOKEN if set)
    /api/v1/...            the HTTP API, behind tokens (web.api; /api/v1/openapi.json)
    /ui/...                the dashboard for people, behind a login with the same tokens

HEAD answers as GET without the body. Every file carries a strong ETag (the SHA-256 of its
bytes) and Last-Modified (a CRL's thisUpdate, a certificate's notBefore), and a matching
If-None-Match or If-Modified-Since gets 304. An unknown CA, a CA with no CRL yet, or a name
no CA can have is a 404 with one line of text; anything unexpected a 500 with one generic
line (the details go to the log only)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ca.errors import PkiqError
from service import ServiceContext
from service.health import readiness

from .api import NO_TELEMETRY, BodyLimit, SubmitShortcut, make_api
from .dashboard import make_dashboard
from .downloads import ca_route, store_routes
from .metrics import metrics_route
from .ocsp import ocsp_routes
from .verify_form import MAX_BODY as MAX_UI_BODY

log = logging.getLogger("pkiq.web")


def line(status: int, text: str, headers: dict | None = None) -> Response:
    return PlainTextResponse(text + "\n", status, headers=headers)


async def http_error(_request: Request, exc: HTTPException) -> Response:
    return line(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def pkiq_error(request: Request, exc: PkiqError) -> Response:
    if exc.http_status >= 500:  # the server's own trouble: say so in the log, not to clients
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return line(exc.http_status, "the server cannot answer now; its log says why")
    return line(exc.http_status, str(exc))


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return line(500, "internal error; the server's log says more")


async def healthz(_request: Request) -> Response:
    """The process is up (it does not touch the database)."""
    return PlainTextResponse("ok", headers={"cache-control": "no-store"})


def make_app(ctx: ServiceContext, *, refresh_seconds: float = 1.0) -> FastAPI:
    """The app over ``ctx``'s database. A new CRL or CA is served within ``refresh_seconds``
    (see ``web.cache``); the database is read on the first request, not here."""
    ocsp = ocsp_routes(ctx)  # /ocsp/NAME: each CA's responder (web.ocsp)
    app = FastAPI(title="pkiq downloads", docs_url=None, redoc_url=None, openapi_url=None,
                  telemetry=NO_TELEMETRY, lifespan=ocsp.lifespan,
                  exception_handlers={HTTPException: http_error, PkiqError: pkiq_error,
                                      Exception: internal_error})

    app.router.routes += [Route("/healthz", healthz, methods=["GET", "HEAD"]),
                          Route("/readyz", readyz(ctx), methods=["GET", "HEAD"]),
                          ca_route(ctx, refresh_seconds), *store_routes(ctx, refresh_seconds),
                          *ocsp.routes]
    app.state.api = BodyLimit(SubmitShortcut(make_api(ctx)))
    app.mount(API_PREFIX, app.state.api)
    app.router.routes.append(Route("/metrics", metrics_route(ctx), methods=["GET"]))
    # the dashboard (web.dashboard): its forms are bounded again inside, the certificate
    # upload's at web.verify_form.MAX_VERIFY_FORM with a message on the page
    app.mount("/ui", BodyLimit(make_dashboard(ctx), MAX_UI_BODY))
    return app


API_PREFIX = "/api/v1"


class FrontDoor:
    """What is served: ``POST /api/v1/jobs``, the busiest route by far, goes straight to
    the API's mount (``SubmitShortcut`` first), past the outer app's middleware stack and
    router, which have nothing to do for it: the API has its own error handlers and body
    limit. They cost about a sixth of the web process's CPU per submission (py-spy,
    docs/benchmarks.md, "HTTP API submissions"). Everything else goes through the outer
    app, lifespan included; the API is handed the scope ``Mount`` would hand it."""

    def __init__(self, app: FastAPI):
        self.app, self.api = app, app.state.api

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            root = scope.get("root_path", "")
            path = scope["path"]
            if (path[len(root):] if root and path.startswith(root) else path) == (
                    API_PREFIX + "/jobs"):
                child = dict(scope, root_path=root + API_PREFIX, path_params={},
                             app_root_path=scope.get("app_root_path", root))
                return await self.api(child, receive, send)
        return await self.app(scope, receive, send)


def readyz(ctx: ServiceContext):
    async def ready(_request: Request) -> Response:
        """200 when the database answers and the queue can be reached, else 503 naming
        what is not; a load balancer takes the process out of rotation meanwhile."""
        problems = await run_in_threadpool(readiness, ctx)
        headers = {"cache-control": "no-store"}
        if problems:
            return line(503, "not ready: " + "; ".join(problems), headers)
        return PlainTextResponse("ready", headers=headers)
    return ready
