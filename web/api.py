"""The HTTP API, ``/api/v1``: signing jobs from automation, certificates, revocation, CAs,
tokens and the audit log, behind bearer tokens with roles. Every operation calls the same
``service`` function the CLI calls; this module only authenticates, checks the role and the
token's CAs, and turns answers into JSON.

Errors are JSON ``{"detail": "..."}`` with the status the domain error carries (400 bad
input, 401 no or unknown token, 403 a role or CA the token lacks, 404, 409 conflict, 413
too large, 422 refused by policy or malformed); nothing a client sends reaches a 500.
The OpenAPI document is served at ``/api/v1/openapi.json`` (and read at ``/api/v1/docs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes

from cryptography.hazmat.primitives import serialization
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ca.audit import Actor
from ca.errors import BadInput, NotFound, PkiqError
from ca.models import IdempotentRequest
from ca.profiles import PROFILES
from ca.sql import insert_or_ignore
from ca.tokens import ROLES, Forbidden, Grant
from service import ServiceContext
from service import cas as ca_service
from service import crl as crl_service
from service import jobs as job_service
from service import nodes as node_service
from service import stores as store_service
from service import tokens as token_service
from service import trust as trust_service

from .api_verify import verify_router

log = logging.getLogger("pkiq.api")
MAX_BODY = 1024 * 1024  # a CSR is a few KiB; nothing here takes more than this
MAX_WAIT = 30.0
MAX_ID = 2**31 - 1  # the id columns are 32-bit
bearer = HTTPBearer(auto_error=False, description="pkiq token create NAME --role ROLE")
JOB_STATES = ("queued", "awaiting_approval", "signing", "issued", "failed", "rejected")


# ---------------------------------------------------------------- schemas

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Text a client sends: no control characters (a PEM's line breaks aside), so no NUL reaches
# a database that cannot store it and no line break reaches a log line.
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
Line = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")]


class SubmitJob(Strict):
    ca: Name = Field(description="The CA to sign with.")
    csr: str = Field(min_length=1, max_length=64 * 1024,
                     pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+$",
                     description="The request, PEM (-----BEGIN CERTIFICATE REQUEST-----).")
    profile: Literal[tuple(PROFILES)] = "webclientandserver"  # type: ignore[valid-type]
    days: int | None = Field(default=None, ge=1, le=36500)
    node: Annotated[str, Field(max_length=253, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = \
        Field(default=None, description="The Expressway node the request is for.")


class Decision(Strict):
    reason: Line | None = None


class Revocation(Strict):
    reason: Literal["unspecified", "keyCompromise", "CACompromise", "affiliationChanged",
                    "superseded", "cessationOfOperation", "certificateHold",
                    "removeFromCRL"] = "unspecified"
    invalidity_date: dt.datetime | None = None


class NewToken(Strict):
    name: Name
    role: Literal[ROLES]  # type: ignore[valid-type]
    cas: list[Name] | None = Field(default=None, max_length=100)
    days: int | None = Field(default=None, ge=1, le=3650)


class CrlSettingsChange(Strict):
    enabled: bool | None = None
    update_time_utc: Annotated[str, Field(pattern=r"^[0-2][0-9]:[0-5][0-9]$")] | None = None
    spread_minutes: int | None = Field(default=None, ge=0, le=360)
    use_cdp: bool | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, le=3600)
    max_bytes: int | None = Field(default=None, ge=1024, le=2 * 2**30)
    parallelism: int | None = Field(default=None, ge=1, le=128)
    skew_seconds: int | None = Field(default=None, ge=0, le=86400)
    warn_hours: int | None = Field(default=None, ge=1, le=720)
    overlap_hours: int | None = Field(default=None, ge=1, le=720)


class Points(Strict):
    urls: list[Annotated[str, Field(min_length=1, max_length=2048,
                                    pattern=r"^[^\x00-\x1f\x7f]+$")]] = Field(
        min_length=1, max_length=1000)


class Bundle(Strict):
    pem: str = Field(min_length=1, max_length=512 * 1024,
                     pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+$",
                     description="One or more CA certificates, PEM.")


class Refs(Strict):
    refs: list[Name] = Field(min_length=1, max_length=100,
                             description="Entry ids or fingerprint prefixes.")


class NodeCsr(Strict):
    key_type: Literal["rsa2048", "rsa4096"] = "rsa4096"
    organization: Line | None = None
    unit: Line | None = None
    locality: Line | None = None
    state: Line | None = None
    country: Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")] | None = None
    submit_to: Name | None = Field(default=None, description="Queue it on this CA at once.")
    days: int | None = Field(default=None, ge=1, le=36500)


class Job(BaseModel):
    id: int
    ca: str
    profile: str
    state: str
    subject: str
    requester: str
    node: str | None
    days: int | None
    attempts: int
    error: str | None
    serial: str | None
    decided_by: str | None
    submitted_at: str
    updated_at: str
    finished_at: str | None
    new: bool | None = None


class JobList(BaseModel):
    jobs: list[Job]
    truncated: bool
    limit: int


class Problem(BaseModel):
    detail: str


# OpenAPI links: what a client (and schemathesis's stateful runs) can do next with an answer.
_JOB = {"job_id": "$response.body#/id"}
JOB_LINKS = {name: {"operationId": op, "parameters": _JOB} for name, op in [
    ("ShowJob", "showJob"), ("WaitJob", "waitJob"), ("ApproveJob", "approveJob"),
    ("RejectJob", "rejectJob"), ("RetryJob", "retryJob")]}
_CERT = {"ca": "$response.body#/ca", "serial": "$response.body#/serial"}
CERTIFICATE_LINKS = {name: {"operationId": op, "parameters": _CERT} for name, op in [
    ("GetCertificate", "getCertificate"), ("CertificateStatus", "certificateStatus"),
    ("RevokeCertificate", "revokeCertificate")]}

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413, 422)}


# ---------------------------------------------------------------- plumbing

def _json_error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status, headers=headers)


async def _pkiq_error(request: Request, exc: PkiqError) -> Response:
    if exc.http_status >= 500 and not isinstance(exc, _NoPassphrase):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return _json_error(exc.http_status, "the server cannot answer now; its log says why")
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return _json_error(exc.http_status, str(exc), headers)


async def _http_error(_request: Request, exc: HTTPException) -> Response:
    return _json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
    problems = []
    for error in exc.errors()[:10]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return _json_error(422, "; ".join(problems) or "the request is not valid")


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _json_error(500, "internal error; the server's log says more")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether the client declared the
    length or streams it chunked. Past the limit the app is told the client left, and
    whatever it answers to that is dropped for the 413."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _controls(scope):
            return await _answer(send, 400, "control characters (NUL and the like) are not "
                                 "accepted in the path, the query or headers")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen, over = 0, False

        async def counted():
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            if not over:
                await send(message)
        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over:
            await self._refuse(send)

    async def _refuse(self, send):
        await _answer(send, 413, f"the request body is over {self.limit:,} bytes")


def _controls(scope) -> bool:
    """Whether the path, the query (decoded) or a header value holds a C0 control or DEL:
    no name, id or key pkiq knows has one, and PostgreSQL cannot even compare a text with
    a NUL in it."""
    texts = [scope.get("path", ""), unquote_to_bytes(scope.get("query_string", b"")).decode(
        "latin-1"), *(value.decode("latin-1") for _name, value in scope.get("headers") or [])]
    return any(_CONTROL.search(text) for text in texts)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- the app

class GrantCache:
    """The grants of the tokens this process checked, trusted for ``SECONDS``: a busy
    client's requests then cost no database read for their token, and a revocation (or
    expiry) takes effect within ``SECONDS`` (at once for one made through this process:
    ``forget_all``).

    One look-up per token at a time: the requests that find its grant expired wait for the
    look-up the first of them started. Each used to make its own, and the read and the
    once-a-minute ``last_used_at`` write of each: the API benchmark counted 9 and 31 of
    them after each expiry at 500 requests a second (docs/benchmarks.md). A grant in its
    last ``AHEAD`` seconds is looked up again in the background by the first request to
    notice, so a busy token's requests do not wait at all. Used from the event loop's
    thread only, but for ``forget_all``, which a revocation calls from the thread pool."""

    SECONDS = 5.0
    AHEAD = 1.0
    MOST = 10_000  # tokens held; past that the cache starts again

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self._grants: dict[str, tuple[Grant, float]] = {}  # sha256 of the token -> grant
        self._lookups: dict[str, asyncio.Future] = {}
        self._forgotten = 0  # forget_all's count: a look-up begun before it is not kept
        self._books = threading.Lock()

    def cached(self, presented: str) -> Grant | None:
        """The token's grant if checked in the last ``SECONDS``, else None (no waiting)."""
        key = _token_key(presented)
        hit = self._grants.get(key)
        if hit is None:
            return None
        grant, until = hit
        left = until - time.monotonic()
        if left <= 0:
            return None
        if left < self.AHEAD and key not in self._lookups:
            self._look_up(key, presented)
        return grant

    async def grant(self, presented: str | None) -> Grant:
        """The token's grant, looked up if need be (401 without a known token)."""
        if not presented:
            return await run_in_threadpool(token_service.authenticate, self.ctx, presented)
        grant = self.cached(presented)
        if grant is not None:
            return grant
        key = _token_key(presented)
        lookup = self._lookups.get(key) or self._look_up(key, presented)
        return await asyncio.shield(lookup)  # a client that leaves does not cancel it

    def forget_all(self) -> None:
        with self._books:
            self._grants.clear()
            self._forgotten += 1

    def _look_up(self, key: str, presented: str) -> asyncio.Future:
        forgotten = self._forgotten
        lookup = asyncio.ensure_future(
            run_in_threadpool(token_service.authenticate, self.ctx, presented))
        self._lookups[key] = lookup

        def done(_future) -> None:
            if self._lookups.get(key) is lookup:
                del self._lookups[key]
            if lookup.cancelled() or lookup.exception() is not None:
                self._grants.pop(key, None)  # the next request looks up and is told why
                return
            with self._books:
                if self._forgotten != forgotten:
                    return  # a revocation came meanwhile: this grant may predate it
                if len(self._grants) >= self.MOST:
                    self._grants.clear()
                self._grants[key] = (lookup.result(), time.monotonic() + self.SECONDS)

        lookup.add_done_callback(done)
        return lookup


def _token_key(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()


async def grant_of(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None,
                                          Depends(bearer)]) -> Grant:
    """The bearer token's grant (401 without a known token), through ``GrantCache``."""
    return await request.app.state.grants.grant(
        credentials.credentials if credentials else None)


Authorized = Annotated[Grant, Depends(grant_of)]

# FastAPI's own OpenTelemetry support, off: pkiq's metrics are Prometheus (/metrics), and
# with it on FastAPI looks the providers up again on every request (7% of the API's CPU).
NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False}


def make_api(ctx: ServiceContext) -> FastAPI:
    api = FastAPI(title="pkiq API", version="1", telemetry=NO_TELEMETRY,
                  description=__doc__.split("\n\n", 1)[0].replace("\n", " "),
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  exception_handlers={PkiqError: _pkiq_error, HTTPException: _http_error,
                                      RequestValidationError: _invalid,
                                      Exception: _internal},
                  responses=ERRORS)

    api.state.pkiq_ctx = ctx
    api.state.grants = GrantCache(ctx)

    def actor_of(grant: Grant, request: Request) -> Actor:
        return Actor(grant.name, "api", request.client.host if request.client else None)

    def acting(grant: Grant, request: Request) -> ServiceContext:
        return ctx.acting_as(actor_of(grant, request))

    batcher = api.state.batcher = SubmitBatcher(ctx)

    async def submit_parsed(body: bytes, grant: Grant, client: str | None,
                            idempotency_key: str | None) -> Response:
        """``submit`` for ``SubmitShortcut``: the same checks and the same use case, with
        the body parsed by pydantic straight from its JSON."""
        job = SubmitJob.model_validate_json(body)
        grant.require_ca(job.ca, "submitting")
        return await _submit(ctx, batcher, Actor(grant.name, "api", client), grant, job.ca,
                             job.csr.encode(), job.profile, job.days, job.node,
                             idempotency_key, job.model_dump_json)
    api.state.submit_parsed = submit_parsed

    def job_allowed(grant: Grant, job: dict, what: str) -> None:
        grant.require_ca(job["ca"], what)
        if not grant.at_least("approver") and job["requester"] != grant.name:
            raise NotFound(f"no signing job {job['id']}")  # another requester's: not told

    # ------------------------------------------------------------ jobs

    @api.post("/jobs", status_code=201, response_model=Job, tags=["jobs"],
              operation_id="submitJob", responses={201: {"links": JOB_LINKS}})
    async def submit(body: SubmitJob, grant: Authorized, request: Request,
                     idempotency_key: Annotated[str | None,
                                                Header(max_length=255)] = None) -> Any:
        """Queue a signing request (PEM). The same request for the same CA answers the
        existing job (``new`` false); with an ``Idempotency-Key`` a retried call gets the
        same answer, and the key with another body is refused."""
        grant.require_ca(body.ca, "submitting")
        return await _submit(ctx, batcher, actor_of(grant, request), grant, body.ca,
                             body.csr.encode(), body.profile, body.days, body.node,
                             idempotency_key, body.model_dump_json)

    @api.post("/jobs/der", status_code=201, response_model=Job, tags=["jobs"],
              operation_id="submitJobDer", responses={201: {"links": JOB_LINKS}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/pkcs10": {"schema": {"type": "string",
                                                    "format": "binary"}}}}})
    async def submit_der(request: Request, grant: Authorized,
                         ca: Annotated[str, Query(min_length=1, max_length=64)],
                         profile: Literal[tuple(PROFILES)] = "webclientandserver",  # type: ignore[valid-type]
                         days: Annotated[int | None, Query(ge=1, le=36500)] = None,
                         idempotency_key: Annotated[str | None,
                                                    Header(max_length=255)] = None) -> Any:
        """Queue a signing request sent as DER (``Content-Type: application/pkcs10``)."""
        if request.headers.get("content-type", "").split(";")[0].strip() != \
                "application/pkcs10":
            raise HTTPException(415, "send the DER request as Content-Type: "
                                "application/pkcs10 (or PEM as JSON to /jobs)")
        data = await request.body()
        grant.require_ca(ca, "submitting")
        return await _submit(ctx, batcher, actor_of(grant, request), grant, ca, data, profile,
                             days, None, idempotency_key,
                             lambda: hashlib.sha256(data).hexdigest() + f"|{ca}|{profile}|{days}")

    @api.get("/jobs", response_model=JobList, tags=["jobs"])
    def list_jobs(grant: Authorized,
                  state: Literal[JOB_STATES] | None = None,  # type: ignore[valid-type]
                  ca: Annotated[str | None, Query(max_length=64)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
        """The newest jobs first: a requester's own, or every job of the token's CAs."""
        if ca is not None:
            grant.require_ca(ca, "listing jobs")
        return job_service.list_jobs(
            ctx, state=state, ca_name=ca, limit=limit,
            requester=None if grant.at_least("approver") else grant.name,
            ca_names=grant.cas)

    def _job(grant: Grant, job_id: int, what: str) -> dict:
        job = job_service.show_job(ctx, job_id)
        job_allowed(grant, job, what)
        return job

    @api.get("/jobs/{job_id}", response_model=Job, tags=["jobs"], operation_id="showJob",
             responses={200: {"links": CERTIFICATE_LINKS}})
    def show_job(job_id: Annotated[int, Path(ge=1, le=MAX_ID)], grant: Authorized) -> dict:
        return _job(grant, job_id, "reading a job")

    @api.get("/jobs/{job_id}/wait", response_model=Job, tags=["jobs"], operation_id="waitJob",
             responses={200: {"links": CERTIFICATE_LINKS}})
    def wait_job(job_id: Annotated[int, Path(ge=1, le=MAX_ID)], grant: Authorized,
                 timeout: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 10.0) -> dict:
        """The job once it is issued, failed or rejected, or after ``timeout`` seconds
        (at most 30) with its state then."""
        _job(grant, job_id, "waiting for a job")
        return job_service.wait_for(ctx, [job_id], timeout, poll=0.1)[job_id]

    def _decision(grant: Grant, request: Request, job_id: int, what: str, action, **kw):
        grant.require("approver", f"{what} a job")
        deciding = acting(grant, request)

        def allowed(job) -> None:
            grant.require_ca(job.ca.name, what)
        infos, _warning = action(deciding, [job_id], allowed=allowed, **kw)
        return infos[0]

    @api.post("/jobs/{job_id}/approve", response_model=Job, tags=["jobs"],
              operation_id="approveJob")
    def approve(job_id: Annotated[int, Path(ge=1, le=MAX_ID)], grant: Authorized,
                request: Request) -> dict:
        return _decision(grant, request, job_id, "approving", job_service.approve,
                         by=grant.name)

    @api.post("/jobs/{job_id}/reject", response_model=Job, tags=["jobs"],
              operation_id="rejectJob")
    def reject(job_id: Annotated[int, Path(ge=1, le=MAX_ID)], grant: Authorized,
               request: Request, body: Decision | None = None) -> dict:
        return _decision(grant, request, job_id, "rejecting", job_service.reject,
                         by=grant.name, reason=body.reason if body else None)

    @api.post("/jobs/{job_id}/retry", response_model=Job, tags=["jobs"],
              operation_id="retryJob")
    def retry(job_id: Annotated[int, Path(ge=1, le=MAX_ID)], grant: Authorized,
              request: Request) -> dict:
        return _decision(grant, request, job_id, "retrying", job_service.retry)

    # ------------------------------------------------------------ certificates

    @api.get("/certificates/{ca}/{serial}", tags=["certificates"], operation_id="getCertificate",
             responses={200: {"content": {"application/x-pem-file": {},
                                          "application/pkix-cert": {}}}})
    def certificate(ca: Annotated[str, Path(min_length=1, max_length=64)],
                    serial: Annotated[str, Path(min_length=1, max_length=64)],
                    grant: Authorized,
                    format: Literal["pem", "der"] = "pem",
                    chain: bool = False) -> Response:
        """The certificate (PEM with ``chain`` its issuing CAs too; DER the leaf alone)."""
        grant.require_ca(ca, "reading certificates")
        if not grant.at_least("approver"):
            _own_certificate(grant, ca, serial)
        certs = ca_service.certificate_with_chain(ctx, serial, ca, chain=chain and
                                                  format == "pem")
        if format == "der":
            return Response(certs[0].public_bytes(serialization.Encoding.DER),
                            media_type="application/pkix-cert")
        return Response(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs),
                        media_type="application/x-pem-file")

    def _own_certificate(grant: Grant, ca: str, serial: str) -> None:
        from ca import authority
        from ca.models import CertificateAuthority, SigningJob

        number = authority.parse_serial(serial)
        with ctx.read_transaction() as session:
            found = session.scalar(select(SigningJob.id).join(
                CertificateAuthority, CertificateAuthority.id == SigningJob.ca_id).where(
                CertificateAuthority.name == ca, SigningJob.requester == grant.name,
                SigningJob.serial == f"{number:X}").limit(1))
        if found is None:
            raise NotFound(f"no certificate {serial} of CA {ca} requested by {grant.name}")

    @api.get("/certificates/{ca}/{serial}/status", tags=["certificates"],
             operation_id="certificateStatus")
    def certificate_status(ca: Annotated[str, Path(min_length=1, max_length=64)],
                           serial: Annotated[str, Path(min_length=1, max_length=64)],
                           grant: Authorized) -> dict:
        """As ``openssl ca -status``: valid, revoked or expired, with the index entry."""
        grant.require_ca(ca, "reading certificates")
        if not grant.at_least("approver"):
            _own_certificate(grant, ca, serial)
        view, _state = ca_service.status(ctx, ca, serial)
        return view

    @api.post("/certificates/{ca}/{serial}/revoke", tags=["certificates"],
              operation_id="revokeCertificate")
    def revoke(ca: Annotated[str, Path(min_length=1, max_length=64)],
               serial: Annotated[str, Path(min_length=1, max_length=64)],
               grant: Authorized, request: Request,
               body: Revocation | None = None) -> dict:
        """Revoke; the CA's next CRL lists it (pkiq renews its CRL on the next tick)."""
        grant.require("approver", "revoking")
        grant.require_ca(ca, "revoking")
        body = body or Revocation()
        when = body.invalidity_date
        if when is not None and when.tzinfo is None:
            raise BadInput("invalidity_date needs a time zone (2026-11-27T10:00:00Z)")
        return ca_service.revoke(acting(grant, request), ca, serial, reason=body.reason,
                                 invalidity_date=when.astimezone(dt.UTC) if when else None)

    # ------------------------------------------------------------ CAs

    @api.get("/cas", tags=["cas"])
    def list_cas(grant: Authorized) -> list[dict]:
        return [c for c in ca_service.list_cas(ctx) if grant.sees_ca(c["name"])]

    @api.get("/cas/{name}", tags=["cas"])
    def show_ca(name: Annotated[str, Path(min_length=1, max_length=64)],
                grant: Authorized) -> dict:
        grant.require_ca(name, "reading a CA")
        view, _cert = ca_service.show_ca(ctx, name)
        return view

    # ------------------------------------------------------------ tokens and audit

    @api.post("/tokens", status_code=201, tags=["admin"])
    def create_token(body: NewToken, grant: Authorized, request: Request) -> dict:
        """A new token; its secret is in this answer only."""
        grant.require("admin", "making tokens")
        if grant.cas is not None:
            raise Forbidden("a token limited to some CAs cannot make tokens")
        return token_service.create_token(acting(grant, request), body.name, body.role,
                                          body.cas, body.days)

    @api.get("/tokens", tags=["admin"])
    def list_tokens(grant: Authorized) -> list[dict]:
        grant.require("admin", "listing tokens")
        return token_service.list_tokens(ctx)

    @api.delete("/tokens/{name}", tags=["admin"])
    def revoke_token(name: Annotated[str, Path(min_length=1, max_length=64)],
                     grant: Authorized, request: Request) -> dict:
        grant.require("admin", "revoking tokens")
        view = token_service.revoke_token(acting(grant, request), name)
        api.state.grants.forget_all()  # this process forgets every checked token at once
        return view

    @api.get("/audit", tags=["admin"])
    def audit_log(grant: Authorized,
                  action: Annotated[str | None, Query(max_length=40)] = None,
                  target: Annotated[str | None, Query(max_length=300)] = None,
                  actor: Annotated[str | None, Query(max_length=128)] = None,
                  after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
        """Newest first, or oldest first after the id ``after`` (to page forward)."""
        grant.require("admin", "reading the audit log")
        return token_service.audit_entries(ctx, action=action, target=target, actor=actor,
                                           after=after, limit=limit)

    @api.get("/audit/verify", tags=["admin"])
    def audit_verify(grant: Authorized) -> dict:
        grant.require("admin", "checking the audit log")
        return token_service.audit_verify(ctx)

    # ------------------------------------------------------------ CRLs from outside

    @api.get("/crl/status", tags=["crl"])
    def crl_status(grant: Authorized) -> dict:
        """Every issuer's CRL in force, its freshness, and the distribution points."""
        return crl_service.status(ctx)

    @api.get("/crl/settings", tags=["crl"])
    def crl_settings(grant: Authorized) -> dict:
        return crl_service.settings(ctx)

    @api.patch("/crl/settings", tags=["crl"])
    def change_crl_settings(body: CrlSettingsChange, grant: Authorized,
                            request: Request) -> dict:
        """The nightly time (UTC), spread, limits and margins; beat takes them at once."""
        grant.require("admin", "changing the CRL settings")
        changes = body.model_dump(exclude_none=True)
        if "update_time_utc" in changes:
            changes["update_time"] = changes.pop("update_time_utc")
        return crl_service.update_settings(acting(grant, request), **changes)

    @api.get("/crl/points", tags=["crl"])
    def crl_points(grant: Authorized) -> list[dict]:
        return crl_service.list_points(ctx)

    @api.post("/crl/points", tags=["crl"])
    def add_crl_points(body: Points, grant: Authorized, request: Request) -> dict:
        grant.require("admin", "adding distribution points")
        return {"added": crl_service.add_points(acting(grant, request), body.urls)}

    @api.post("/crl/points/remove", tags=["crl"])
    def remove_crl_points(body: Points, grant: Authorized, request: Request) -> dict:
        grant.require("admin", "removing distribution points")
        return {"removed": crl_service.remove_points(acting(grant, request), body.urls)}

    @api.post("/crl/refresh", tags=["crl"])
    def refresh_crls(grant: Authorized) -> dict:
        """Fetch every distribution point now (409 while another refresh runs)."""
        grant.require("admin", "refreshing CRLs")
        return crl_service.refresh_now(ctx).as_dict()

    @api.post("/crl/upload", tags=["crl"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/pkix-crl": {"schema": {"type": "string", "format": "binary"}},
                  "application/x-pem-file": {"schema": {"type": "string"}}}}})
    async def upload_crl(request: Request, grant: Authorized, force: bool = False) -> Any:
        """A CRL by hand (DER as application/pkix-crl, PEM as application/x-pem-file),
        validated against the trusted CA list as a fetched one is."""
        grant.require("admin", "uploading CRLs")
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind not in ("application/pkix-crl", "application/x-pem-file"):
            raise HTTPException(415, "send the CRL as application/pkix-crl (DER) or "
                                "application/x-pem-file (PEM)")
        data = await request.body()
        return await run_in_threadpool(crl_service.upload, acting(grant, request), data,
                                       source=f"API upload by {grant.name}", force=force)

    # ------------------------------------------------------------ the trusted CA list

    @api.get("/trust", tags=["trust"])
    def trust_list(grant: Authorized) -> dict:
        return trust_service.list_entries(ctx)

    @api.post("/trust", tags=["trust"])
    def trust_add(body: Bundle, grant: Authorized, request: Request) -> dict:
        grant.require("admin", "changing the trusted CA list")
        return trust_service.add(acting(grant, request), body.pem.encode())

    @api.post("/trust/remove", tags=["trust"])
    def trust_remove(body: Refs, grant: Authorized, request: Request) -> dict:
        grant.require("admin", "changing the trusted CA list")
        return trust_service.remove(acting(grant, request), body.refs)

    # ------------------------------------------------------------ nodes and stores

    @api.get("/nodes", tags=["nodes"])
    def nodes_list(grant: Authorized,
                   cluster: Annotated[str | None, Query(max_length=64)] = None) -> list[dict]:
        grant.require("approver", "listing nodes")
        return node_service.list_nodes(ctx, cluster)

    @api.get("/nodes/{fqdn}", tags=["nodes"])
    def node_show(fqdn: Annotated[str, Path(min_length=1, max_length=253)],
                  grant: Authorized) -> dict:
        grant.require("approver", "reading a node")
        return node_service.show_node(ctx, fqdn)

    @api.get("/nodes/{fqdn}/check", tags=["nodes"])
    def node_check(fqdn: Annotated[str, Path(min_length=1, max_length=253)],
                   grant: Authorized) -> dict:
        """Coverage: every CA of the node's trusted list with a CRL valid for the headroom."""
        grant.require("approver", "checking a node")
        return store_service.check(ctx, fqdn)[0]

    @api.post("/nodes/{fqdn}/csr", status_code=201, tags=["nodes"])
    def node_csr(fqdn: Annotated[str, Path(min_length=1, max_length=253)], body: NodeCsr,
                 grant: Authorized, request: Request) -> dict:
        """The guide's Generate CSR for a node: its key is made and kept here, encrypted;
        with ``submit_to`` the request is queued on that CA at once."""
        grant.require("admin", "generating a node's CSR")
        if body.submit_to:
            grant.require_ca(body.submit_to, "submitting a node's CSR")
        deciding = acting(grant, request)
        fields = {k: v for k, v in body.model_dump(include={
            "organization", "unit", "locality", "state", "country"}).items() if v}
        view = node_service.generate_csr(deciding, fqdn, key_type=body.key_type,
                                         passphrase=_passphrase(ctx), subject_fields=fields)
        if body.submit_to:
            job, _warning = node_service.submit_csr(
                deciding, fqdn, ca_name=body.submit_to, profile="webclientandserver",
                requester=grant.name, days=body.days)
            view = {**view, "job": job}
        return view

    @api.post("/nodes/{fqdn}/publish", tags=["nodes"])
    def node_publish(fqdn: Annotated[str, Path(min_length=1, max_length=253)],
                     grant: Authorized, request: Request, force: bool = False) -> dict:
        """Publish the node's store now (its files, and the CRL bundle it is served)."""
        grant.require("admin", "publishing a store")
        [outcome] = store_service.publish(acting(grant, request), fqdn,
                                          passphrase=_passphrase(ctx), force=force)
        return outcome.view()

    api.include_router(verify_router())  # POST /verify: web/api_verify.py
    return api


def _passphrase(ctx: ServiceContext) -> bytes:
    """The service passphrase of this process (node keys are sealed under it)."""
    try:
        found = ctx.settings.passphrase()
    except PkiqError:
        found = None
    if not found:
        raise _NoPassphrase("this web app has no service passphrase: node keys stay sealed. "
                            "Set PKIQ_CA_PASSPHRASE_FILE for it, or use the pkiq command")
    return found


class _NoPassphrase(PkiqError):
    http_status = 503


async def _submit(ctx: ServiceContext, batcher: SubmitBatcher, actor: Actor, grant: Grant,
                  ca: str, data: bytes, profile: str, days: int | None, node: str | None,
                  key: str | None, fingerprint_of: Callable[[], str]) -> JSONResponse:
    """One request through the same use case as ``pkiq submit``; the requester is the
    token's name (a token cannot submit in someone else's name). The answer is the job's
    view as the service made it (the ``Job`` model documents it), sent without validating
    it again: the hot path of the API."""
    request_sha = None
    if key is not None:
        request_sha = hashlib.sha256(fingerprint_of().encode()).hexdigest()
        seen = await run_in_threadpool(_idempotent_answer, ctx, grant, key, request_sha)
        if seen is not None:
            return JSONResponse(seen, status_code=201)
    row = await batcher.submit((actor, ca, profile, days, node, grant.name), data)
    if row["state"] == "refused":
        raise _Refused(row["error"])
    if key is not None:
        await run_in_threadpool(_remember, ctx, grant, key, request_sha, row)
    return JSONResponse(row, status_code=201)


def _idempotent_answer(ctx: ServiceContext, grant: Grant, key: str, request_sha: str
                       ) -> dict | None:
    with ctx.read_transaction() as session:
        seen = session.get(IdempotentRequest, (grant.token_id, key))
        if seen is None:
            return None
        if seen.request_sha256 != request_sha:
            raise BadInput(f"Idempotency-Key {key!r} was used for another request: use a new "
                           "key")
        return seen.answer


def _remember(ctx: ServiceContext, grant: Grant, key: str, request_sha: str, row: dict) -> None:
    with ctx.transaction() as session:
        insert_or_ignore(session, IdempotentRequest, dict(
            token_id=grant.token_id, key=key, request_sha256=request_sha, answer=row,
            created_at=ctx.clock()))


class SubmitBatcher:
    """Submissions that arrive close together are written together: one transaction and one
    turn of the audit log's head for all of them, as ``pkiq submit`` does for a folder of
    requests. A write starts when its oldest request has waited ``GATHER`` seconds, or at
    once when ``ENOUGH`` are waiting; under load the oldest has waited that long already,
    behind the write before.

    Why wait: a write costs about 0.33 ms of CPU beside 0.07 ms per request
    (``queue_requests`` alone, one thread, AVX-512 CPU), and about twice that in the web
    process beside the event loop, so at a steady 500 requests a second written as they
    came the writes would cost more than the requests. The benchmark's paced phase (500/s),
    runs alternating: 0.64 ms of the web process's CPU a job with 20 ms against 0.73 with
    10 ms (p99 32-43 against 21-33 ms); later, 0.58 with 20 ms against 0.52 with 30 ms (p99
    44 ms); docs/benchmarks.md. Why not wait for more than ``ENOUGH``: a write's own cost is
    a small share of theirs by then, and clients that wait for their answer before they
    send again would be held back by the window (50 of them made 1,100-1,300 a second with
    it, 1,650-2,480 without).

    Two batches of a kind are under way at once, so one is parsed and verified (outside any
    transaction) while the other waits for the writer lock or commits. Requests go together
    only with the same actor, CA, profile, validity and node, so each keeps its own audit
    row, and one refused request (garbage, policy) gets its own 422 while the others are
    queued."""

    IN_FLIGHT = 2  # batches of one kind under way at once
    GATHER = 0.02  # seconds
    ENOUGH = 25  # waiting requests that start a write at once (at most ``limit`` a write)
    PREPARE_STEP = 8  # requests checked between two turns of the event loop (~3 ms)

    def __init__(self, ctx: ServiceContext, limit: int = job_service.SUBMIT_CHUNK):
        self.ctx, self.limit = ctx, limit
        # per kind: (request, its answer to be, when it came)
        self._waiting: dict[tuple, list[tuple[bytes, asyncio.Future, float]]] = {}
        self._writers: dict[tuple, int] = {}
        self._full: dict[tuple, asyncio.Event] = {}  # wakes a writer waiting for more
        self.announcements = Announcements(ctx)

    @property
    def _enough(self) -> int:
        return min(self.ENOUGH, self.limit)

    async def submit(self, key: tuple, data: bytes) -> dict:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        waiting = self._waiting.setdefault(key, [])
        waiting.append((data, future, loop.time()))
        if len(waiting) >= self._enough and key in self._full:
            self._full[key].set()
        if self._writers.get(key, 0) < self.IN_FLIGHT:
            self._writers[key] = self._writers.get(key, 0) + 1
            loop.create_task(self._drain(key))
        return await future

    async def _drain(self, key: tuple) -> None:
        actor, ca, profile, days, node, requester = key
        # written without announcing: the answers go out at the commit, and the workers
        # are told in the background (a lost message is the reconciler's, as always)
        acting = self.ctx.acting_as(actor, announcer=None)
        try:
            while self._waiting.get(key):
                waiting = self._waiting[key]
                if len(waiting) < self._enough:
                    wait = waiting[0][2] + self.GATHER - asyncio.get_running_loop().time()
                    if wait > 0:
                        full = self._full.setdefault(key, asyncio.Event())
                        full.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(full.wait(), wait)
                        continue  # look again: the other writer may have taken them
                batch = self._waiting[key][:self.limit]
                del self._waiting[key][:self.limit]
                try:
                    requests = await self._prepare(acting, ca, profile, batch)
                    rows, _warning = await run_in_threadpool(
                        job_service.queue_requests, acting, ca, requests,
                        profile=profile, requester=requester, days=days, node=node)
                except Exception as exc:  # noqa: BLE001 - every waiting request gets it
                    for _data, future, _t in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_data, future, _t), row in zip(batch, rows, strict=True):
                    if not future.done():
                        future.set_result(row)
                self.announcements.add(row["id"] for row in rows if row.get("new") and
                                       row["state"] == "queued")
        finally:
            self._writers[key] -= 1
            if not self._writers[key]:
                del self._writers[key]
                self._full.pop(key, None)
                if not self._waiting.get(key):
                    self._waiting.pop(key, None)

    async def _prepare(self, acting: ServiceContext, ca: str, profile: str,
                       batch: list) -> list:
        """The batch's requests parsed, verified and checked here, in the event loop's
        thread, a few at a time between its other work; the write goes to a thread. In a
        thread the checks cost more: every SQLite statement of the other batch's write
        hands the GIL back and forth between that thread and this one (about 4,000 context
        switches a second at 500 requests a second), and ``bench/run api`` measured 1.60-1.62
        ms of the web process's CPU per job paced this way against 1.72-1.85 in the pool
        (docs/benchmarks.md, "HTTP API submissions")."""
        out: list = []
        for start in range(0, len(batch), self.PREPARE_STEP):
            step = [data for data, _f, _t in batch[start:start + self.PREPARE_STEP]]
            out += job_service.prepare_known(acting, ca, step, profile=profile)
            await asyncio.sleep(0)  # let the loop answer and read between steps
        return out


class Announcements:
    """The jobs the API queued, told to the workers together: at most one message every
    ``GATHER`` seconds for all that were queued meanwhile, not one per write. A job queued
    after a quiet spell is told at once; under load, the others wait at most ``GATHER``.
    Why: a message costs its sender about 0.2 ms of Python and a new file in the embedded
    broker's folder, which ext4 makes slowly where files come and go this fast (``perf``
    found 5% of the web process's CPU in creating them at 500 submissions a second, one
    message each 20 ms); and each message becomes a worker batch with its own claim and
    record transactions. At 500 a second, 50 ms fills a message (``JOBS_PER_MESSAGE``).
    The answers do not wait for the message; a message lost (broker down, process stopped
    meanwhile) leaves its jobs queued for the reconciler, as always."""

    GATHER = 0.05  # seconds between two messages

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self._ids: list[int] = []
        self._sending: asyncio.Task | None = None
        self._last = -math.inf  # the loop's time at the last message

    def add(self, job_ids) -> None:
        self._ids.extend(job_ids)
        if self._ids and self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._ids:
                wait = self._last + self.GATHER - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                job_ids, self._ids = self._ids, []
                self._last = loop.time()
                warning = await run_in_threadpool(job_service.announce, self.ctx, job_ids)
                if warning:
                    log.warning("announcing %d queued job(s): %s", len(job_ids), warning)
        finally:
            self._sending = None


class _Refused(PkiqError):
    """A request the queue refused (garbage, policy): 422 with the reason."""

    http_status = 422


class SubmitShortcut:
    """``POST /jobs`` from a client whose token this process checked in the last seconds
    (``grant_of``'s cache), with a JSON body, goes straight to ``submit``'s use case; every
    other request, and any such request the shortcut cannot take whole (another content
    type, a body the model refuses, a token not cached), goes through FastAPI as before,
    with the body it sent. Why: FastAPI's layers (two middleware stacks, dependency
    solving, JSON decoded then validated) cost 0.3 ms of CPU per submission, a fifth of the
    API's, on its busiest route (docs/benchmarks.md, "HTTP API submissions"). The answers
    are the route's own: the same use case, the same error handlers, and a test compares
    the two paths over the same requests."""

    def __init__(self, api: FastAPI):
        self.api = api
        self.taken = 0  # submissions that went the short way (the tests look)

    async def __call__(self, scope, receive, send):
        taken = self._grant(scope) if scope["type"] == "http" else None
        if taken is None:
            return await self.api(scope, receive, send)
        self.taken += 1
        grant, key = taken
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left (or BodyLimit stopped it: it answers 413)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        client = scope.get("client")
        try:
            response = await self.api.state.submit_parsed(body, grant,
                                                          client[0] if client else None, key)
        except ValidationError:  # FastAPI words the 422 (nothing was written)
            return await self.api(scope, _replay(body, receive), send)
        except PkiqError as exc:
            response = await _pkiq_error(Request(scope), exc)
        except Exception as exc:  # noqa: BLE001 - as the API's own last-resort handler
            response = await _internal(Request(scope), exc)
        await response(scope, receive, send)

    def _grant(self, scope) -> tuple[Grant, str | None] | None:
        """The cached grant and the Idempotency-Key of a submission the shortcut can take,
        read as FastAPI reads them (the first of each header), else None."""
        if scope["method"] != "POST":
            return None
        root = scope.get("root_path", "")
        path = scope["path"]
        if (path[len(root):] if root and path.startswith(root) else path) != "/jobs":
            return None
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), value)
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        key = headers.get(b"idempotency-key")
        if kind != b"application/json" or (key is not None and len(key) > 255):
            return None
        scheme, _, credentials = headers.get(b"authorization", b"").decode(
            "latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            return None
        grant = self.api.state.grants.cached(credentials)
        if grant is None:
            return None
        return grant, key.decode("latin-1") if key is not None else None


def _replay(body: bytes, receive):
    """A ``receive`` that gives ``body`` again, then whatever the client sends next."""
    given = False

    async def replayed():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replayed
