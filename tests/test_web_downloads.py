"""The public downloads over a real uvicorn server on 127.0.0.1 and a real SQLite database:
DER and PEM bodies that pyca and the openssl binary read, conditional GET (RFC 9110
section 13), a new CRL served within the one-second cache window, and hostile requests
answered 400/404 in one line, never 500."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.errors import BadInput, NotFound
from pkiq.cli import cli
from service import ServiceContext, cas
from shell.settings import Settings
from web.cache import VersionedDownloads
from web.conditional import entity_tags, http_date, none_match, parse_http_date
from web.server import make_server

from .conftest import PASSPHRASE, T0, openssl

PASS = PASSPHRASE.encode()
CRL_HOURS = 168


class Served:
    """pkiq's web app in a uvicorn server on a thread, over ``ctx``."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.server = make_server(ctx, "127.0.0.1", 0, access_log=False)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "no server"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **headers) -> requests.Response:
        return requests.get(self.url(path), headers=headers, timeout=10)

    def head(self, path: str, **headers) -> requests.Response:
        return requests.head(self.url(path), headers=headers, timeout=10)

    def raw(self, request_line: str) -> tuple[int, bytes]:
        """Send a request line exactly as written (no client tidies the path); (status,
        body)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(request_line.encode("latin-1") + b"\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def ctx(tmp_path, clock):
    settings = Settings(data_dir=tmp_path / "data",
                        database_url=f"sqlite:///{tmp_path / 'pkiq.db'}")
    context = ServiceContext(settings, clock)
    cas.create_ca(context, name="Root", subject="/C=GB/O=Example/CN=Example Root CA",
                  key_type="ec-p256", days=3650, passphrase=PASS,
                  changes=cas.CaChanges(crl_hours=CRL_HOURS))
    cas.generate_crl(context, "Root", passphrase=PASS)
    yield context
    context.close()


@pytest.fixture
def served(ctx):
    server = Served(ctx)
    yield server
    server.close()


def strong_tag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


def one_line(response: requests.Response) -> str:
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    text = response.text
    assert text.endswith("\n") and text.count("\n") == 1 and "Traceback" not in text
    return text.strip()


def wait_for(check, seconds: float = 3.0):
    """``check()`` until it is truthy; the cache window is one second."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "not within the cache window"
        time.sleep(0.05)
    return found


# ---------------------------------------------------------------- bodies and headers

@pytest.mark.openssl
def test_the_crl_is_served_as_der_and_pem_that_openssl_reads(served, tmp_path):
    der = served.get("/ca/Root.crl")
    assert der.status_code == 200
    assert der.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(der.content)
    assert crl.issuer.rfc4514_string() == "CN=Example Root CA,O=Example,C=GB"
    assert der.headers["etag"] == strong_tag(der.content)
    assert der.headers["last-modified"] == "Fri, 27 Nov 2026 10:00:00 GMT"  # thisUpdate
    assert crl.last_update_utc == T0
    assert der.headers["cache-control"] == "public, max-age=3600"
    assert der.headers["content-disposition"] == 'inline; filename="Root.crl"'
    (tmp_path / "root.crl").write_bytes(der.content)
    text = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "root.crl"), "-noout",
                   "-issuer", "-crlnumber").stdout.decode()
    assert "CN = Example Root CA" in text and "crlNumber=0x01" in text

    pem = served.get("/ca/Root.crl.pem")
    assert pem.status_code == 200
    assert pem.headers["content-type"] == "application/x-pem-file"
    assert pem.content.startswith(b"-----BEGIN X509 CRL-----\n")
    assert x509.load_pem_x509_crl(pem.content).public_bytes(
        serialization.Encoding.DER) == der.content
    assert pem.headers["etag"] == strong_tag(pem.content) != der.headers["etag"]
    assert pem.headers["last-modified"] == der.headers["last-modified"]
    from_pem = openssl("crl", "-outform", "DER", input=pem.content).stdout
    assert from_pem == der.content


@pytest.mark.openssl
def test_the_ca_certificate_is_served_as_der_and_pem(served, ctx, tmp_path):
    _, cert = cas.show_ca(ctx, "Root")
    der = served.get("/ca/Root.crt")
    assert der.status_code == 200
    assert der.headers["content-type"] == "application/pkix-cert"
    assert der.content == cert.public_bytes(serialization.Encoding.DER)
    assert der.headers["etag"] == strong_tag(der.content)
    assert der.headers["last-modified"] == http_date(cert.not_valid_before_utc)
    assert der.headers["cache-control"] == "public, max-age=3600"
    (tmp_path / "root.crt").write_bytes(der.content)
    subject = openssl("x509", "-inform", "DER", "-in", str(tmp_path / "root.crt"), "-noout",
                      "-subject").stdout.decode()
    assert "CN = Example Root CA" in subject

    pem = served.get("/ca/Root.pem")
    assert pem.headers["content-type"] == "application/x-pem-file"
    assert x509.load_pem_x509_certificate(pem.content) == cert
    assert pem.headers["etag"] == strong_tag(pem.content)


def test_healthz_says_ok(served):
    response = served.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")
    assert served.head("/healthz").status_code == 200


# ---------------------------------------------------------------- conditional GET

def test_if_none_match_gets_304_with_the_etag_and_no_body(served):
    first = served.get("/ca/Root.crl")
    tag = first.headers["etag"]
    again = served.get("/ca/Root.crl", **{"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == tag
    assert again.headers["cache-control"] == first.headers["cache-control"]
    assert "content-type" not in again.headers


@pytest.mark.parametrize("field", [
    "W/{tag}",  # weak comparison (RFC 9110 section 13.1.2) ignores W/
    '"other", {tag}',
    '"a,b" , W/"x",W/{tag}',  # a tag may hold a comma
    "junk, {tag}",
    "*",
])
def test_if_none_match_lists_weak_tags_and_star_match(served, field):
    tag = served.get("/ca/Root.crl").headers["etag"]
    assert served.get("/ca/Root.crl", **{"If-None-Match": field.format(tag=tag)}
                      ).status_code == 304


@pytest.mark.parametrize("field", ['"other"', "W/\"other\"", "", "{bare}", '"a,{bare}"'])
def test_if_none_match_naming_another_copy_gets_the_body(served, field):
    tag = served.get("/ca/Root.crl").headers["etag"]
    response = served.get("/ca/Root.crl", **{"If-None-Match": field.format(bare=tag[1:-1])})
    assert response.status_code == 200 and response.content


def test_only_the_head_of_a_huge_if_none_match_is_read(served):
    tag = served.get("/ca/Root.crl").headers["etag"]
    flood = '"other", ' * 100_000
    assert served.get("/ca/Root.crl", **{"If-None-Match": f"{tag}, {flood}"}
                      ).status_code == 304
    assert served.get("/ca/Root.crl", **{"If-None-Match": f"{flood}{tag}"}
                      ).status_code == 200


def test_the_pem_and_der_files_have_tags_of_their_own(served):
    der_tag = served.get("/ca/Root.crl").headers["etag"]
    assert served.get("/ca/Root.crl.pem", **{"If-None-Match": der_tag}).status_code == 200


def test_if_modified_since_gets_304_unless_older_or_not_a_date(served):
    last = served.get("/ca/Root.crl").headers["last-modified"]
    assert last == "Fri, 27 Nov 2026 10:00:00 GMT"
    ims = "If-Modified-Since"
    assert served.get("/ca/Root.crl", **{ims: last}).status_code == 304
    assert served.get("/ca/Root.crl", **{ims: "Sat, 28 Nov 2026 00:00:00 GMT"}
                      ).status_code == 304
    # The obsolete RFC 850 and asctime forms count too (RFC 9110 section 5.6.7).
    assert served.get("/ca/Root.crl", **{ims: "Friday, 27-Nov-26 10:00:00 GMT"}
                      ).status_code == 304
    assert served.get("/ca/Root.crl", **{ims: "Fri Nov 27 10:00:00 2026"}).status_code == 304
    assert served.get("/ca/Root.crl", **{ims: "Fri, 27 Nov 2026 09:59:59 GMT"}
                      ).status_code == 200
    assert served.get("/ca/Root.crl", **{ims: "yesterday"}).status_code == 200


def test_if_none_match_wins_over_if_modified_since(served):
    first = served.get("/ca/Root.crl")
    tag, last = first.headers["etag"], first.headers["last-modified"]
    assert served.get("/ca/Root.crl", **{"If-None-Match": '"other"', "If-Modified-Since": last}
                      ).status_code == 200
    assert served.get("/ca/Root.crl", **{"If-None-Match": tag,
                                         "If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}
                      ).status_code == 304


def test_head_has_the_get_headers_and_no_body(served):
    for path in ("/ca/Root.crl", "/ca/Root.crl.pem", "/ca/Root.crt", "/ca/Root.pem"):
        get, head = served.get(path), served.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(get.content))
        for name in ("etag", "last-modified", "content-type", "cache-control"):
            assert head.headers[name] == get.headers[name]
        tag = get.headers["etag"]
        assert served.head(path, **{"If-None-Match": tag}).status_code == 304


# ---------------------------------------------------------------- freshness

def test_a_new_crl_is_served_within_the_cache_window(served, ctx, clock):
    old = served.get("/ca/Root.crl")
    old_tag = old.headers["etag"]
    clock.advance(hours=1)
    cas.generate_crl(ctx, "Root", passphrase=PASS)
    new = wait_for(lambda: (r := served.get("/ca/Root.crl", **{"If-None-Match": old_tag})
                            ).status_code == 200 and r)
    assert new.headers["etag"] == strong_tag(new.content) != old_tag
    crl = x509.load_der_x509_crl(new.content)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert new.headers["last-modified"] == "Fri, 27 Nov 2026 11:00:00 GMT"
    pem = served.get("/ca/Root.crl.pem")
    assert x509.load_pem_x509_crl(pem.content).public_bytes(
        serialization.Encoding.DER) == new.content
    assert served.get("/ca/Root.crl", **{"If-None-Match": new.headers["etag"]}
                      ).status_code == 304


def test_max_age_never_reaches_past_next_update(served, clock):
    next_update = T0 + dt.timedelta(hours=CRL_HOURS)
    clock.now = next_update - dt.timedelta(seconds=100)
    response = served.get("/ca/Root.crl")
    assert response.headers["cache-control"] == "public, max-age=100"
    clock.now = next_update + dt.timedelta(seconds=1)  # overdue: every cache must ask
    assert served.get("/ca/Root.crl").headers["cache-control"] == "no-cache"
    tag = response.headers["etag"]
    overdue = served.get("/ca/Root.crl", **{"If-None-Match": tag})
    assert overdue.status_code == 304 and overdue.headers["cache-control"] == "no-cache"
    assert served.get("/ca/Root.crt").headers["cache-control"] == "public, max-age=3600"


# ---------------------------------------------------------------- refusals

def test_an_unknown_ca_is_a_404_in_one_line(served):
    response = served.get("/ca/Nope.crl")
    assert response.status_code == 404
    assert one_line(response) == "no CA named 'Nope'"
    assert served.head("/ca/Nope.pem").status_code == 404


def test_a_ca_made_later_appears_and_says_when_it_has_no_crl(served, ctx):
    assert served.get("/ca/Fresh.crt").status_code == 404
    cas.create_ca(ctx, name="Fresh", subject="/C=GB/O=Example/CN=Fresh CA",
                  key_type="ec-p256", days=365, passphrase=PASS)
    cert = wait_for(lambda: (r := served.get("/ca/Fresh.crt")).status_code == 200 and r)
    assert x509.load_der_x509_certificate(cert.content).subject.rfc4514_string() == \
        "CN=Fresh CA,O=Example,C=GB"
    missing = served.get("/ca/Fresh.crl")
    assert missing.status_code == 404
    assert one_line(missing) == "CA 'Fresh' has issued no CRL yet: run pkiq ca gencrl Fresh"
    cas.generate_crl(ctx, "Fresh", passphrase=PASS)
    wait_for(lambda: served.get("/ca/Fresh.crl.pem").status_code == 200)


@pytest.mark.parametrize("path", [
    "/ca/..%2f..%2fetc%2fpasswd.crl", "/ca/../../etc/passwd", "/ca/%2e%2e.crl", "/ca/..crl",
    "/ca/%00.crl", "/ca/Root%00.crl", "/ca/Root.crl%00", "/ca/.crl", "/ca/Root.exe",
    "/ca/Root", "/ca/", "/ca/Root.crl/x", "/ca/R%C3%B6ot.crl", "/ca/%ff%fe.pem",
    "/ca/Root%0d%0aX-Injected:%201.crl", "/ca/" + "A" * 65 + ".crl",
    "/ca/" + "%41" * 3000 + ".crt", "/ca/Root.crl?x=" + "y" * 2000, "/CA/Root.crl",
    "//ca/Root.crl", "/ca/Root.crl#frag", "/ca/%25.crl", "/ca/%.crl",
])
def test_hostile_paths_get_400_or_404_never_500(served, path):
    status, body = served.raw(f"GET {path} HTTP/1.1")
    if path.startswith("/ca/Root.crl?") or path == "/ca/Root.crl#frag":
        assert status == 200  # a query is no part of the file's name; nor is a fragment
        return
    assert status in (400, 404), (path, status)
    assert b"Traceback" not in body and body.count(b"\n") <= 1 and len(body) < 300


def test_other_methods_are_refused_not_failed(served):
    response = requests.post(served.url("/ca/Root.crl"), data=b"x", timeout=10)
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]


def test_an_unexpected_failure_is_a_generic_500_and_logged(served, ctx, tmp_path, caplog):
    with sqlite3.connect(tmp_path / "pkiq.db") as db:  # a database broken under the server
        db.execute("DROP TABLE crls")
    response = served.get("/ca/Root.crl")
    assert response.status_code == 500
    assert one_line(response) == "internal error; the server's log says more"
    assert any(record.name == "pkiq.web" and "GET /ca/Root.crl failed" in record.getMessage()
               for record in caplog.records)
    assert served.get("/healthz").status_code == 200  # the process is still up


def test_a_database_failing_later_leaves_the_last_files_served(served, tmp_path, caplog):
    tag = served.get("/ca/Root.crl").headers["etag"]
    with sqlite3.connect(tmp_path / "pkiq.db") as db:
        db.execute("ALTER TABLE certificate_authorities RENAME TO away")
    deadline = time.monotonic() + 2.5  # two and more re-reads fail meanwhile
    while time.monotonic() < deadline:
        assert served.get("/ca/Root.crl", **{"If-None-Match": tag}).status_code == 304
        time.sleep(0.1)
    said = [r.getMessage() for r in caplog.records if r.name == "pkiq.web"]
    assert said == ["cannot re-read what changed ((sqlite3.OperationalError) no such table: "
                    "certificate_authorities); serving what was read last"]
    with sqlite3.connect(tmp_path / "pkiq.db") as db:
        db.execute("ALTER TABLE away RENAME TO certificate_authorities")
    wait_for(lambda: served.get("/ca/Root.crl") and any(  # a request starts each re-read
        "works again" in r.getMessage() for r in caplog.records))
    assert served.get("/ca/Root.crl").headers["etag"] == tag


# ---------------------------------------------------------------- the cache, directly

def test_files_are_built_once_per_version_however_many_ask_at_once():
    versions, builds, now = {"Root": 1}, [], [0.0]

    def build():
        builds.append(versions["Root"])
        time.sleep(0.05)  # long enough for every request to arrive while it runs
        if versions["Root"] == 3:
            raise NotFound("no CRL yet")
        return f"file {versions['Root']}"

    async def main():
        cache = VersionedDownloads(lambda: dict(versions), interval=1.0, clock=lambda: now[0])
        got = await asyncio.gather(*(cache.get("Root", "crl", build) for _ in range(100)))
        assert set(got) == {"file 1"} and builds == [1]
        versions["Root"] = 2
        assert await cache.get("Root", "crl", build) == "file 1"  # no re-read yet
        now[0] = 1.0  # the interval has passed: the next request starts a re-read

        async def until(expected):
            for _ in range(200):
                got = await asyncio.gather(*(cache.get("Root", "crl", build)
                                             for _ in range(20)))
                if set(got) == {expected}:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"never {expected}")

        await until("file 2")
        assert builds == [1, 2]
        assert await cache.get("Nope", "crl", build) is None
        versions["Root"], now[0] = 3, 2.0
        for _ in range(200):
            try:
                await cache.get("Root", "crl", build)
            except NotFound:
                break
            await asyncio.sleep(0.01)
        for _ in range(5):  # the refusal is kept for the version, as a file would be
            with pytest.raises(NotFound):
                await cache.get("Root", "crl", build)
        assert builds == [1, 2, 3]

    asyncio.run(main())


# ---------------------------------------------------------------- parsing, directly

def test_entity_tag_lists_are_read_tag_by_tag():
    assert entity_tags('W/"a", "b,c",junk,  *') == ['"a"', '"b,c"', "*"]
    assert entity_tags('"unterminated') == []
    assert none_match('W/"x"', '"x"') and not none_match('"x"', '"y"')
    assert parse_http_date("not a date") is None
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == dt.datetime(
        1994, 11, 6, 8, 49, 37, tzinfo=dt.UTC)


# ---------------------------------------------------------------- the command

def test_pkiq_web_help():
    result = CliRunner().invoke(cli, ["web", "--help"])
    assert result.exit_code == 0
    assert "/ca/NAME.crl" in result.output and "--port" in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pkiq_web_serves_until_sigterm(ctx, tmp_path):
    port = free_port()
    env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data"),
           "PKIQ_DATABASE_URL": f"sqlite:///{tmp_path / 'pkiq.db'}",
           "PKIQ_WEB_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "pkiq", "web"],
                               env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()
                return False

        wait_for(up, seconds=30)
        crl = requests.get(f"{url}/ca/Root.crl", timeout=10)
        assert crl.status_code == 200
        assert x509.load_der_x509_crl(crl.content).issuer.rfc4514_string() == \
            "CN=Example Root CA,O=Example,C=GB"
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    # A graceful stop: uvicorn finishes the requests in hand, then (0.29 and later) ends by
    # the signal it was sent, as a supervisor expects of a process it told to stop.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output and "Traceback" not in output
    assert "GET /ca/Root.crl" not in output  # no access log unless asked


def test_pkiq_web_on_a_port_in_use_is_one_line_exit_2(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "PKIQ_DATA_DIR": str(tmp_path / "data")}
        for args in (["--port", str(port)], ["--host", "no-such-host.invalid"]):
            done = subprocess.run([sys.executable, "-m", "pkiq", "web", *args], env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 2, done.stderr
            assert done.stderr.startswith("pkiq: error: cannot listen on")
            assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_ca_names_that_would_be_ambiguous_in_download_urls_are_refused(ctx):
    from service.cas import create_ca
    from service.downloads import ca_versions

    for name in ("A.crl", "B.CRT", "c.pem", "..", "."):
        with pytest.raises(BadInput, match="ambiguous" if len(name) > 2 else "letters"):
            create_ca(ctx, name=name, subject="/CN=Ambiguous", key_type="ec-p256", days=30,
                      passphrase=PASS)
    assert set(ca_versions(ctx)) == {"Root"}  # nothing was made beside the fixture's CA
