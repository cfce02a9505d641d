"""The OCSP responder (RFC 6960) of every pkiq CA, at ``/ocsp/NAME``:

    POST /ocsp/NAME              body: a DER OCSPRequest, Content-Type application/ocsp-request
    GET  /ocsp/NAME/{request}    the request base64'd, then URL-encoded (RFC 6960 A.1.1)

Answers are ``application/ocsp-response``, signed by the CA's delegated responder
certificate (``ca.ocsp``). Protocol failures are OCSP answers with HTTP 200, as clients
expect: ``malformedRequest`` for anything that is not one well-formed request (never a 500),
``unauthorized`` for a CertID of another issuer (RFC 6960 section 2.3: this responder is not
authoritative for it) or a CA handed over to ``openssl ca``, ``tryLater`` while the process
cannot sign (no responder certificate yet, no CA passphrase: one log line says which).
HTTP errors are for HTTP: 404 no such CA, 413 a request over ``MAX_REQUEST``, 415 a POST
of another content type.

Caching. A nonce-less answer for a serial the CA issued is kept in memory, keyed by the
request's bytes, until half its validity has passed or that serial's status changes; a hit
costs a dictionary look-up and no signature. A status change made by any process (a CLI
revocation) is seen on the very next request: every request first asks whether the CAs'
``status_generation`` moved (``Freshness``), cheaply: on SQLite by ``PRAGMA data_version``
(microseconds, no table read), on PostgreSQL by one small read shared by all the requests
that arrived while it ran. Answers to requests with a nonce are signed afresh (a nonce must
be echoed, RFC 8954, and cannot be cached); "unknown" answers are not kept either (the serial
may be issued a moment later, under sequential serials)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from anyio import to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ca.errors import NotFound, PkiqError
from ca.ocsp import Malformed, parse_request, unsuccessful
from service import ServiceContext
from service import ocsp as service_ocsp

from .cache import first_line

log = logging.getLogger("pkiq.web")
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
MAX_REQUEST = 8192  # DER bytes: one CertID with a nonce is about 100; signed ones a few KB
MAX_CACHED = 100_000  # answers kept per process (about 2 KB each with an RSA responder)
CA_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # as web.downloads: no look-up for others
READ_SPACING = 0.001  # seconds between two status-generation reads (FreshRead)
SIGNING_THREADS = 2  # one per core of the machine it was measured on (bench/run ocsp)
NO_CACHE = {"cache-control": "no-cache"}  # a revocation must be seen at once: revalidate


def line(status: int, text: str) -> Response:
    return PlainTextResponse(text + "\n", status)


def ocsp_body(body: bytes) -> Response:
    return Response(body, 200, headers=NO_CACHE, media_type=OCSP_RESPONSE)


# ---------------------------------------------------------------- freshness

class FreshRead:
    """A value read by a read that started after the caller asked (so a commit made before
    the request arrived is in it), one read at a time: the requests that arrive while one
    runs share the next. A read starts at least ``spacing`` seconds after the one before:
    under load the requests of that wait share it too, so a thousand reads a second at
    most, whatever the request rate, for at most ``spacing`` more latency."""

    def __init__(self, read: Callable, spacing: float = 0.0):
        self.read, self.spacing = read, spacing
        self._started = self._done = 0
        self._last_start = float("-inf")
        self._value = None
        self._task: asyncio.Task | None = None

    async def get(self):
        need = self._started + 1
        while self._done < need:
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._run())
            await asyncio.shield(self._task)
        return self._value

    async def _run(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            wait = self._last_start + self.spacing - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # who arrives meanwhile joins this read
            self._last_start = loop.time()
            self._started += 1
            number = self._started
            value = await to_thread.run_sync(self.read)
        finally:
            self._task = None
        self._value, self._done = value, number


class Freshness:
    """Which CA status generations this process has applied to its cache, brought up to
    date on every request (see the module's docstring)."""

    def __init__(self, ctx: ServiceContext, cache: AnswerCache,
                 changed: Callable[[int], None] = lambda ca_id: None):
        self.ctx, self.cache, self.changed = ctx, cache, changed
        self.counter = None
        self.known: dict[int, int] | None = None
        self._seen_commits: int | None = None
        self._reads_made = self._applied = 0
        self._generations = None
        self._reads = FreshRead(self._read, READ_SPACING)
        self._applying = asyncio.Lock()

    def _read(self) -> tuple[int, int | None, dict[int, int]]:
        """(this read's number, the commit counter, the generations), in a worker thread;
        reads run one at a time (``FreshRead``), so numbers and values both grow."""
        if self.counter is None and self.known is None:
            self.counter = service_ocsp.commit_watch(self.ctx)
            if self.counter is None:  # asked on every request: its own connection
                self._generations = service_ocsp.GenerationReader(self.ctx)
        self._reads_made += 1
        if self.counter is not None:  # SQLite: read only after a commit, through the pool
            return self._reads_made, self.counter(), service_ocsp.generations(self.ctx)
        return self._reads_made, None, self._generations()

    async def check(self) -> None:
        if self.counter is not None and self.counter() == self._seen_commits:
            return  # SQLite: nothing committed anywhere since the last read
        number, commits, generations = await self._reads.get()
        async with self._applying:
            if number <= self._applied:
                return  # a newer read was applied while this one waited
            if self.known is None:
                self.known = generations
            else:
                for ca_id, generation in generations.items():
                    before = self.known.get(ca_id, 0)
                    if generation > before:  # generations only grow
                        serials = await to_thread.run_sync(
                            service_ocsp.changed_serials, self.ctx, ca_id, before, generation)
                        self.cache.drop(ca_id, serials)
                        if serials is None:  # the CA itself changed (a handover)
                            self.changed(ca_id)
                        self.known[ca_id] = generation
            self._seen_commits, self._applied = commits, number

    def generation(self, ca_id: int) -> int | None:
        return None if self.known is None else self.known.get(ca_id, 0)

    def close(self) -> None:
        """The connections it holds, when the app shuts down."""
        if self.counter is not None:
            self.counter.close()
        if self._generations is not None:
            self._generations.close()


# ---------------------------------------------------------------- answers kept

@dataclass(frozen=True)
class Answer:
    ca_id: int
    serial: int
    body: bytes
    renew_at: dt.datetime  # half way to nextUpdate: sign again after that


class AnswerCache:
    """Signed nonce-less answers by (CA name, request DER)."""

    def __init__(self, size: int = MAX_CACHED):
        self.size = size
        self.answers: dict[tuple[str, bytes], Answer] = {}

    def get(self, key: tuple[str, bytes], now: dt.datetime) -> bytes | None:
        found = self.answers.get(key)
        if found is None or now >= found.renew_at:
            return None
        return found.body

    def put(self, key: tuple[str, bytes], answer: Answer) -> None:
        if len(self.answers) >= self.size:  # full: forget the older half
            for old in list(self.answers)[:self.size // 2]:
                del self.answers[old]
        self.answers[key] = answer

    def drop(self, ca_id: int, serials: set[int] | None) -> None:
        """Forget the CA's answers for ``serials`` (all of the CA's for None)."""
        for key, answer in list(self.answers.items()):
            if answer.ca_id == ca_id and (serials is None or answer.serial in serials):
                del self.answers[key]


# ---------------------------------------------------------------- responders

class Responders:
    """Each CA's ``service.ocsp.Responder``, loaded on first use (one load per CA at a
    time, its key unlocked once) and again at its ``recheck_at``, to pick up the
    certificate beat renewed."""

    def __init__(self, ctx: ServiceContext, passphrase: Callable[[], bytes | None]):
        self.ctx, self.passphrase = ctx, passphrase
        self.loaded: dict[str, service_ocsp.Responder] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self._told: set[str] = set()

    def forget(self, ca_id: int) -> None:
        """Load the CA's responder again on its next request."""
        for name, responder in list(self.loaded.items()):
            if responder.ca_id == ca_id:
                del self.loaded[name]

    async def get(self, name: str) -> service_ocsp.Responder:
        found = self.loaded.get(name)
        now = self.ctx.clock()
        if found is not None and now < found.recheck_at:
            return found
        task = self._loading.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(name, found))
            self._loading[name] = task
        if found is not None and found.usable(now):
            return found  # still good: answer with it while the look-up runs
        return await asyncio.shield(task)

    async def _load(self, name: str, known: service_ocsp.Responder | None
                    ) -> service_ocsp.Responder:
        try:
            responder = await to_thread.run_sync(service_ocsp.load_responder, self.ctx,
                                                 name, self.passphrase(), known)
        finally:
            del self._loading[name]
        self.loaded[name] = responder
        if responder.unavailable and name not in self._told:
            self._told.add(name)  # once per CA and process, not once per request
            log.warning("OCSP for CA %s answers tryLater: %s", name, responder.unavailable)
        elif not responder.unavailable:
            self._told.discard(name)
        return responder


# ---------------------------------------------------------------- the routes

def process_passphrase(ctx: ServiceContext) -> Callable[[], bytes | None]:
    def read() -> bytes | None:
        try:
            return ctx.settings.passphrase() or None
        except PkiqError:
            return None
    return read


@dataclass(frozen=True)
class OcspRoutes:
    """The routes, and what to call when the app shuts down (``lifespan``)."""

    routes: list[Route]
    close: Callable[[], None]

    @contextlib.asynccontextmanager
    async def lifespan(self, _app) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.close()


def ocsp_routes(ctx: ServiceContext, passphrase: Callable[[], bytes | None] | None = None
                ) -> OcspRoutes:
    """``/ocsp/NAME`` (POST) and ``/ocsp/NAME/REQUEST`` (GET) over ``ctx``; ``passphrase``
    gives the CA passphrase that unlocks responder keys (by default this process's
    setting, PKIQ_CA_PASSPHRASE_FILE)."""
    cache = AnswerCache()
    responders = Responders(ctx, passphrase or process_passphrase(ctx))
    fresh = Freshness(ctx, cache, responders.forget)
    # Uncached answers (a read and a signature, mostly in C) on two threads of their own:
    # forty threads of the shared pool taking turns at the GIL cost more than they sign.
    signing = ThreadPoolExecutor(SIGNING_THREADS, thread_name_prefix="pkiq-ocsp")

    async def answer(name: str, der: bytes) -> Response:
        """An OCSP answer whatever happens: a database that does not answer is tryLater,
        a bug internalError (its traceback in the log), never an HTTP 500."""
        try:
            return await answer_for(name, der)
        except (PkiqError, SQLAlchemyError) as exc:
            log.error("OCSP for CA %s answers tryLater: %s", name[:64], first_line(exc))
            return ocsp_body(unsuccessful("tryLater"))
        except Exception:
            log.exception("OCSP for CA %s failed", name[:64])
            return ocsp_body(unsuccessful("internalError"))

    async def answer_for(name: str, der: bytes) -> Response:
        if not CA_NAME.fullmatch(name):
            return line(404, "no such CA: CA names are 1-64 letters, digits, '-', '_' or '.'")
        await fresh.check()  # first: it may void the responder (a handover)
        try:
            responder = await responders.get(name)
        except NotFound:
            return line(404, f"no CA named {name!r}")
        now = ctx.clock()
        key = (name, der)
        body = cache.get(key, now)
        if body is not None:
            return ocsp_body(body)
        try:
            question = parse_request(der)
        except Malformed:
            return ocsp_body(unsuccessful("malformedRequest"))
        if responder.handed_over or not responder.issued_by(question):
            return ocsp_body(unsuccessful("unauthorized"))
        if responder.key is None:
            return ocsp_body(unsuccessful("tryLater"))
        generation = fresh.generation(responder.ca_id)
        status, signed, next_update = await asyncio.get_running_loop().run_in_executor(
            signing, _status_and_answer, ctx, responder, question, now)
        if (question.nonce is None and status.state != "unknown"
                and fresh.generation(responder.ca_id) == generation):
            # (a status change applied while this one was read may not be in it: not kept)
            cache.put(key, Answer(responder.ca_id, question.serial, signed,
                                  now + (next_update - now) / 2))
        return ocsp_body(signed)

    async def post(request: Request) -> Response:
        """A DER OCSPRequest in the body (RFC 6960 A.1)."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != OCSP_REQUEST:
            return line(415, f"an OCSP request is POSTed as {OCSP_REQUEST}")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST):
            return line(413, f"an OCSP request is at most {MAX_REQUEST} bytes here")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST:
                return line(413, f"an OCSP request is at most {MAX_REQUEST} bytes here")
        return await answer(request.path_params["name"], bytes(body))

    async def get(request: Request) -> Response:
        """The request base64'd and URL-encoded in the path (RFC 6960 A.1). The raw path is
        read, so an encoded '/' ('%2F') in the base64 is data, not a separator."""
        raw = request.scope.get("raw_path") or request.url.path.encode()
        prefix = f"/ocsp/{request.path_params['name']}/".encode()
        encoded = raw[len(prefix):] if raw.startswith(prefix) else b""
        if len(encoded) > MAX_REQUEST * 2:
            return line(413, f"an OCSP request is at most {MAX_REQUEST} bytes here")
        text = unquote_to_bytes(encoded).strip()
        try:  # standard base64; the URL-safe alphabet, and no padding, from lax clients
            der = base64.b64decode(text.replace(b"-", b"+").replace(b"_", b"/")
                                   + b"=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            return ocsp_body(unsuccessful("malformedRequest"))
        if len(der) > MAX_REQUEST:
            return line(413, f"an OCSP request is at most {MAX_REQUEST} bytes here")
        return await answer(request.path_params["name"], der)

    def close() -> None:
        fresh.close()
        signing.shutdown(wait=False)

    return OcspRoutes([Route("/ocsp/{name}", post, methods=["POST"]),
                       Route("/ocsp/{name}/", post, methods=["POST"]),
                       Route("/ocsp/{name}/{request:path}", get, methods=["GET"])], close)


def _status_and_answer(ctx: ServiceContext, responder: service_ocsp.Responder, question,
                       now: dt.datetime):
    """The serial's status and the signed answer: one trip to a worker thread."""
    status = service_ocsp.status_of(ctx, responder.ca_id, question.serial)
    body, next_update = service_ocsp.sign_answer(responder, question, status, now)
    return status, body, next_update
