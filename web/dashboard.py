"""The dashboard, ``/ui``: server-rendered pages (Jinja2) for people, behind a login with the
same API tokens the HTTP API takes.

    GET  /ui/login            the login form (a token); POST checks it and sets the cookie
    POST /ui/logout           clears the cookie
    GET  /ui/jobs             signing jobs, by state and CA: a requester's own, an approver's
                              every job of its CAs, with approve and reject buttons
    POST /ui/jobs/ID/approve  (and /reject): the same use case as the CLI and the API
    GET  /ui/cas              the CAs and their latest CRLs
    GET  /ui/crls             every issuer's CRL validity on a timeline, the nightly refresh
    GET  /ui/nodes            nodes: coverage gaps, publish state, REST rollouts (approver)
    GET  /ui/verify           "Check a certificate": paste PEM or upload PEM/DER, pick a node;
                              POST answers with the verdict and the path, from the same
                              service.verify.verify_node as POST /api/v1/verify

The session cookie holds the token itself (HttpOnly, SameSite=Strict, path /ui, Secure over
HTTPS), checked on every request, so a revoked token ends its sessions at once. Every POST
carries a CSRF token: derived from the session's token (an HMAC) once logged in, a
double-submit cookie on the login form. Bad parameters get a 400 or 404 page, a role the
token lacks a 403 page; nothing a browser sends reaches a 500.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ca import crl_config
from ca.audit import Actor
from ca.crl_install import scoped_label
from ca.errors import BadInput, NotFound, PkiqError
from ca.tokens import Forbidden, Grant, Unauthorized
from scheduler import schedule
from scheduler.upkeep import crl_expiry
from service import ServiceContext
from service import cas as ca_service
from service import crl as crl_service
from service import jobs as job_service
from service import nodes as node_service
from service import push as push_service
from service import stores as store_service
from service import tokens as token_service
from service import verify as verify_service

from .verify_form import MAX_CERT, TooLarge, verify_form, verify_options

log = logging.getLogger("pkiq.web")
HERE = Path(__file__).resolve().parent
COOKIE = "pkiq_ui"
LOGIN_COOKIE = "pkiq_ui_login"
PATH = "/ui"
JOB_STATES = ("awaiting_approval", "queued", "signing", "issued", "failed", "rejected")
MAX_ID = 2**31 - 1
MAX_FORM = 16 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAV = (("jobs", "Jobs"), ("cas", "CAs"), ("crls", "CRL timeline"), ("nodes", "Nodes"),
       ("verify", "Check a certificate"))
DONE = {"approve": "approved", "reject": "rejected"}


# ---------------------------------------------------------------- sessions and CSRF

def csrf_of(token: str) -> str:
    """The CSRF token of a session: only the holder of the session's token can make it."""
    return hmac.new(token.encode(), b"pkiq dashboard form", hashlib.sha256).hexdigest()[:40]


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(name, value, path=PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _forget(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


class Session:
    """The logged-in token's grant, the token (for the CSRF token) and the client."""

    def __init__(self, grant: Grant, token: str, client: str | None):
        self.grant, self.token, self.client = grant, token, client
        self.csrf = csrf_of(token)

    @property
    def is_approver(self) -> bool:
        return self.grant.at_least("approver")


class LoginNeeded(Exception):
    def __init__(self, message: str | None = None):
        self.message = message


# ---------------------------------------------------------------- rendering

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    env.filters["label"] = lambda state: (state or "").replace("_", " ")
    return env


def parse_time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def when(value: str | dt.datetime | None) -> str:
    """A time as people read it here: UTC, to the minute."""
    if isinstance(value, str):
        value = parse_time(value)
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") + " UTC"


def span(delta: dt.timedelta) -> str:
    """3 d 4 h, 5 h 12 min, 40 min: two units at most."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"


def _headers() -> dict[str, str]:
    return {"cache-control": "no-store", "x-frame-options": "DENY",
            "referrer-policy": "same-origin", "x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                                       "frame-ancestors 'none'; form-action 'self'; "
                                       "base-uri 'none'"}


class Pages:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.env = _environment()

    def render(self, name: str, request: Request, session: Session | None = None,
               status: int = 200, **values) -> HTMLResponse:
        page = name.removesuffix(".html")
        html = self.env.get_template(name).render(
            session=session, nav=NAV, page=page, base=PATH, now=self.ctx.clock(),
            **values)
        return HTMLResponse(html, status, headers=_headers())

    def error(self, request: Request, status: int, message: str,
              session: Session | None = None) -> HTMLResponse:
        titles = {400: "Bad request", 403: "Not allowed", 404: "Not found",
                  405: "Method not allowed", 409: "Conflict", 413: "Too large",
                  415: "Unsupported form", 422: "Refused"}
        return self.render("error.html", request, session, status=status,
                           title=titles.get(status, "Error"), code=status,
                           message=message)

    # ------------------------------------------------------------ who is asking

    def session_of(self, request: Request) -> Session:
        token = request.cookies.get(COOKIE)
        if not token:
            raise LoginNeeded()
        try:
            grant = token_service.authenticate(self.ctx, token)
        except Unauthorized as exc:
            raise LoginNeeded(str(exc)) from None
        return Session(grant, token, request.client.host if request.client else None)

    def acting(self, session: Session) -> ServiceContext:
        return self.ctx.acting_as(Actor(session.grant.name, "web", session.client))


# ---------------------------------------------------------------- parameters

def _text_param(request: Request, name: str, limit: int = 64) -> str | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if len(value) > limit or _CONTROL.search(value):
        raise BadInput(f"{name}: up to {limit} characters, no control characters")
    return value


def _job_id(request: Request) -> int:
    job_id = request.path_params["job_id"]
    if not 1 <= job_id <= MAX_ID:
        raise NotFound(f"no signing job {job_id}")
    return job_id


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form, bounded; anything else is a 4xx."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "this form is sent as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise HTTPException(413, f"the form is over {MAX_FORM:,} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise BadInput("the form could not be read") from None
    form = {key: values[0] for key, values in fields.items()}
    if any(_CONTROL.search(v.replace("\r\n", " ")) for v in form.values()):
        raise BadInput("the form holds control characters")
    return form


def _check_csrf(form: dict[str, str], expected: str | None) -> None:
    sent = form.get("csrf", "")
    if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and "
                        "try again")


# ---------------------------------------------------------------- the app

def make_dashboard(ctx: ServiceContext) -> Starlette:
    pages = Pages(ctx)

    async def login_form(request: Request) -> Response:
        return _login_page(request, None, 200)

    def _login_page(request: Request, message: str | None, status: int) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not nonce or len(nonce) != 43:
            nonce = secrets.token_urlsafe(32)
        response = pages.render("login.html", request, None, status=status, title="Log in",
                                error=message, csrf=nonce)
        _cookie(response, request, LOGIN_COOKIE, nonce)
        return response

    async def login(request: Request) -> Response:
        form = await _form(request)
        _check_csrf(form, request.cookies.get(LOGIN_COOKIE))
        token = form.get("token", "").strip()
        try:
            grant = await run_in_threadpool(token_service.authenticate, ctx, token)
        except Unauthorized as exc:
            return _login_page(request, str(exc), 401)
        log.info("dashboard login: token %s (%s)", grant.name, grant.role)
        response = RedirectResponse(f"{PATH}/jobs", 303)
        _cookie(response, request, COOKIE, token)
        _forget(response, request, LOGIN_COOKIE)
        return response

    async def logout(request: Request) -> Response:
        form = await _form(request)
        token = request.cookies.get(COOKIE)
        _check_csrf(form, csrf_of(token) if token else None)
        response = RedirectResponse(f"{PATH}/login", 303)
        _forget(response, request, COOKIE)
        return response

    async def home(_request: Request) -> Response:
        return RedirectResponse(f"{PATH}/jobs", 303)

    def jobs_page(request: Request) -> Response:
        session = pages.session_of(request)
        grant = session.grant
        state = _text_param(request, "state")
        if state is not None and state not in JOB_STATES:
            raise BadInput(f"state {state!r}: one of {', '.join(JOB_STATES)}")
        ca_name = _text_param(request, "ca")
        if ca_name is not None:
            grant.require_ca(ca_name, "listing jobs")
        cas = [c["name"] for c in ca_service.list_cas(ctx) if grant.sees_ca(c["name"])]
        if ca_name is not None and ca_name not in cas:
            raise NotFound(f"no CA {ca_name!r}")
        listed = job_service.list_jobs(
            ctx, state=state, ca_name=ca_name, limit=200,
            requester=None if session.is_approver else grant.name, ca_names=grant.cas)
        did = request.query_params.get("did")
        done_id = request.query_params.get("job", "")
        notice = (f"Job {done_id} {DONE[did]}." if did in DONE and done_id.isdigit()
                  else None)
        return pages.render("jobs.html", request, session, title="Jobs", jobs=listed["jobs"],
                            truncated=listed["truncated"], states=JOB_STATES, cas=cas,
                            state=state, ca=ca_name, notice=notice)

    async def decide(request: Request) -> Response:
        session = await run_in_threadpool(pages.session_of, request)
        form = await _form(request)
        _check_csrf(form, session.csrf)
        job_id = _job_id(request)
        what = request.path_params["what"]
        if what not in DONE:
            raise NotFound("there is no such page")
        grant = session.grant
        verb = "approving" if what == "approve" else "rejecting"
        grant.require("approver", f"{verb} a job")

        def allowed(job) -> None:
            grant.require_ca(job.ca.name, verb)

        acting = pages.acting(session)
        if what == "approve":
            await run_in_threadpool(job_service.approve, acting, [job_id], by=grant.name,
                                    allowed=allowed)
        else:
            reason = form.get("reason", "").strip()[:1000] or None
            await run_in_threadpool(job_service.reject, acting, [job_id], by=grant.name,
                                    reason=reason, allowed=allowed)
        back = {k: v for k in ("state", "ca") if (v := form.get(k)) and len(v) <= 64}
        back.update(did=what, job=str(job_id))
        return RedirectResponse(f"{PATH}/jobs?{urlencode(back)}", 303)

    def cas_page(request: Request) -> Response:
        session = pages.session_of(request)
        rows = []
        for view in ca_service.list_cas(ctx):
            if not session.grant.sees_ca(view["name"]):
                continue
            try:
                crl = ca_service.latest_crl(ctx, view["name"]).info
            except NotFound:
                crl = None
            rows.append({"ca": view, "crl": crl})
        warn = dt.timedelta(hours=crl_service.settings(ctx)["warn_hours"])
        now = ctx.clock()
        for row in rows:
            crl = row["crl"]
            row["expiry"] = crl_expiry(parse_time(crl["next_update"]), now, warn) \
                if crl else None
        return pages.render("cas.html", request, session, title="CAs", rows=rows)

    def crls_page(request: Request) -> Response:
        session = pages.session_of(request)
        now = ctx.clock()
        status = crl_service.status(ctx)
        return pages.render("crls.html", request, session, title="CRL timeline",
                            **timeline(status, now, upcoming_refresh(ctx, now)))

    def nodes_page(request: Request) -> Response:
        session = pages.session_of(request)
        session.grant.require("approver", "the nodes page")
        coverage = {row["node"]: row for row in store_service.check(ctx)}
        for row in coverage.values():  # a CA whose CRL is gone or expired: red, else amber
            row["severity"] = "expired" if any(
                g["reason"].startswith(("expired", "no CRL", "missing")) for g in row["gaps"]) \
                else "near"
        nodes = [{**view, "coverage": coverage.get(view["fqdn"])}
                 for view in node_service.list_nodes(ctx)]
        rollouts = push_service.list_rollouts(ctx, limit=10)
        return pages.render("nodes.html", request, session, title="Nodes", nodes=nodes,
                            rollouts=rollouts)

    verify_cache = verify_service.CrlCache()  # a node's CRLs parsed once, not per check

    def _verify_page(request: Request, session: Session, status: int = 200,
                     **values) -> Response:
        names = [view["fqdn"] for view in node_service.list_nodes(ctx)]
        return pages.render("verify.html", request, session, status=status,
                            title="Check a certificate", nodes=names,
                            network=session.grant.at_least("approver"),
                            max_kib=MAX_CERT // 1024, **values)

    def verify_page(request: Request) -> Response:
        session = pages.session_of(request)
        return _verify_page(request, session, form={})

    async def verify(request: Request) -> Response:
        """Expressway's "client certificate testing": the API's check, for people. Bad input
        is said on the form itself (4xx) so it can be corrected; nothing is stored."""
        session = await run_in_threadpool(pages.session_of, request)
        try:
            form, upload = await verify_form(request)
        except TooLarge as exc:  # said on the page, which comes back empty
            return await run_in_threadpool(_verify_page, request, session, exc.http_status,
                                           form={}, error=str(exc))
        _check_csrf(form, session.csrf)
        try:
            node, check = verify_options(form, upload, session.grant.at_least("approver"))
            outcome = await run_in_threadpool(verify_service.verify_node, ctx, node, check,
                                              verify_cache)
        except (BadInput, NotFound, Forbidden) as exc:
            return await run_in_threadpool(_verify_page, request, session, exc.http_status,
                                           form=form, error=str(exc))
        return await run_in_threadpool(_verify_page, request, session, form=form,
                                       outcome=outcome.view())

    # ------------------------------------------------------------ errors

    def _session_or_none(request: Request) -> Session | None:
        try:
            return pages.session_of(request)
        except LoginNeeded:
            return None

    async def login_needed(request: Request, exc: LoginNeeded) -> Response:
        if request.method == "GET":
            response = RedirectResponse(f"{PATH}/login", 303)
        else:
            response = pages.error(request, 401, "log in first")
        if exc.message:  # a revoked or expired token: the cookie goes
            _forget(response, request, COOKIE)
        return response

    async def pkiq_error(request: Request, exc: PkiqError) -> Response:
        if exc.http_status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
            return pages.error(request, 503, "the server cannot answer now; its log says why")
        if exc.http_status == 401:
            return await login_needed(request, LoginNeeded(str(exc)))
        session = await run_in_threadpool(_session_or_none, request)
        return pages.error(request, exc.http_status, str(exc), session)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        session = await run_in_threadpool(_session_or_none, request)
        message = {"Not Found": "there is no such page",
                   "Method Not Allowed": "this page does not take that method"}.get(
            str(exc.detail), str(exc.detail))
        return pages.error(request, exc.status_code, message, session)

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return HTMLResponse("<!doctype html><title>Error</title><p>Internal error; the "
                            "server's log says more.</p>", 500, headers=_headers())

    routes = [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/jobs", jobs_page, methods=["GET"]),
        Route("/jobs/{job_id:int}/{what:str}", decide, methods=["POST"]),
        Route("/cas", cas_page, methods=["GET"]),
        Route("/crls", crls_page, methods=["GET"]),
        Route("/nodes", nodes_page, methods=["GET"]),
        Route("/verify", verify_page, methods=["GET"]),
        Route("/verify", verify, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    return Starlette(routes=routes, exception_handlers={
        LoginNeeded: login_needed, PkiqError: pkiq_error, HTTPException: http_error,
        Exception: internal})


# ---------------------------------------------------------------- the CRL timeline

def upcoming_refresh(ctx: ServiceContext, now: dt.datetime) -> dt.datetime | None:
    """The next nightly slot (scheduler.schedule.next_slot with this installation's spread),
    or None while automatic updates are off."""
    with ctx.transaction() as session:  # the settings row is made on first use
        policy = crl_config.snapshot(session, now)
    if not policy.enabled:
        return None
    offset = schedule.spread_offset(policy.spread_seconds, policy.seed)
    return schedule.next_slot(policy.update_time, now, offset)


def timeline(status: dict, now: dt.datetime, upcoming: dt.datetime | None) -> dict:
    """Each issuer's CRL as a bar from thisUpdate to nextUpdate on one time axis, with now
    and the next nightly refreshes on it; flagged by scheduler.upkeep.crl_expiry."""
    settings = status["settings"]
    warn = dt.timedelta(hours=settings["warn_hours"])
    next_run = parse_time(settings["next_run"])
    owed = next_run is not None and upcoming is not None and next_run < upcoming
    crls = []
    for row in status["issuers"]:
        this_update, next_update = parse_time(row.get("this_update")), \
            parse_time(row.get("next_update"))
        state = crl_expiry(next_update, now, warn) if next_update else "missing"
        left = (next_update - now) if next_update else None
        label = scoped_label(row["issuer"], row["scope"]) if row.get("scope") else \
            row["issuer"]
        crls.append({**row, "label": label,
                     "this": this_update, "next": next_update, "state": state or "ok",
                     "left": left, "left_text": None if left is None else (
                         f"expired {span(left)} ago" if left.total_seconds() <= 0
                         else f"{span(left)} left")})
    times = [t for c in crls for t in (c["this"], c["next"]) if t is not None]
    start = max(min([*times, now - dt.timedelta(days=1)]), now - dt.timedelta(days=30))
    end = min(max([*times, now + dt.timedelta(days=2)]), now + dt.timedelta(days=60))
    start, end = start - (end - start) * 0.02, end + (end - start) * 0.02
    width = (end - start).total_seconds()

    def x(moment: dt.datetime) -> float:
        """Per cent along the axis, clipped."""
        return round(min(max((moment - start).total_seconds() / width, 0.0), 1.0) * 100, 3)

    for crl in crls:
        if crl["this"] and crl["next"]:
            crl["x"] = x(crl["this"])
            crl["w"] = round(max(x(crl["next"]) - crl["x"], 0.4), 3)
    refreshes = []
    if upcoming is not None:
        slot = upcoming
        while slot <= end and len(refreshes) < 60:
            refreshes.append({"at": slot, "x": x(slot)})
            slot += dt.timedelta(days=1)
    ticks = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    step = max(1, -(-(end - start).days // 6))  # six labels at most: they stay readable
    while day < end:
        ticks.append({"x": x(day), "label": day.strftime("%d %b")})
        day += dt.timedelta(days=step)
    flagged = sum(1 for c in crls if c["state"] in ("expired", "near", "missing"))
    return {"crls": crls, "now_x": x(now), "start": start, "end": end, "ticks": ticks,
            "refreshes": refreshes, "upcoming": upcoming, "owed": owed,
            "upcoming_in": span(upcoming - now) if upcoming else None,
            "settings": settings, "warn_hours": settings["warn_hours"], "flagged": flagged,
            "last_run": status["last_run"]}
