"""The web benchmark's yardstick (a): the least an app on pkiq's stack can do per poll. A
bare Starlette app, served by the same uvicorn (uvloop, httptools) the same way, with a
route of the same shape as pkiq's (``/nodes/{name}/{file_name}``) answering from a dict of
bundles held in memory: 304 with the ETag when If-None-Match is that ETag, else the bytes.
No cache refresh, no validation of names, no RFC 9110 parsing of the field: what is left is
the cost of uvicorn, httptools and Starlette's routing and response.

    python -m uvicorn bench.web_bare:app --port N [--workers W] --no-access-log ...

``PKIQ_BENCH_BARE_DIR`` names a folder holding ``FQDN/crls.zip`` files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

FILES: dict[str, tuple[bytes, str]] = {}
for path in sorted(Path(os.environ["PKIQ_BENCH_BARE_DIR"]).glob("*/crls.zip")):
    body = path.read_bytes()
    FILES[path.parent.name] = (body, f'"{hashlib.sha256(body).hexdigest()}"')


async def bundle(request: Request) -> Response:
    found = FILES.get(request.path_params["name"])
    if found is None or request.path_params["file_name"] != "crls.zip":
        return PlainTextResponse("not found\n", 404)
    body, etag = found
    headers = {"etag": etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type="application/zip")


app = Starlette(routes=[Route("/nodes/{name}/{file_name}", bundle, methods=["GET", "HEAD"])])
