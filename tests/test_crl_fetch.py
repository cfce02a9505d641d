"""scheduler.fetch against real servers on 127.0.0.1: outcomes, limits, redirects, TLS."""

from __future__ import annotations

import gzip
import time

import pytest

from ca.errors import BadInput
from scheduler.fetch import (
    USER_AGENT,
    FetchLimits,
    FetchResult,
    Validator,
    fetch_all,
)

from . import httpd
from .httpd import LocalServer, Reply, redirect, session_ca, unused_port

http_server = httpd.http_server
https_server = httpd.https_server

# Small limits keep every test well under a second or two.
FAST = FetchLimits(connect_timeout=1.0, read_timeout=0.3, total_timeout=1.0, max_bytes=4096,
                   retries=2, backoff=0.01)
LAST_MODIFIED = "Wed, 25 Nov 2026 10:00:00 GMT"


def fetch(url: str, validator: Validator = Validator(), limits: FetchLimits = FAST,  # noqa: B008
          sleeps: list | None = None, **kwargs) -> FetchResult:
    pauses = [] if sleeps is None else sleeps
    [result] = fetch_all([(url, validator)], limits=limits, sleep=pauses.append, **kwargs)
    return result


# ---------------------------------------------------------------- outcomes


def test_200_returns_the_body_and_validators(http_server):
    http_server.route("/a.crl", Reply(body=b"crl bytes", etag='"v1"',
                                      last_modified=LAST_MODIFIED))
    result = fetch(http_server.url("/a.crl"))
    assert (result.outcome, result.http_status, result.body) == ("fetched", 200, b"crl bytes")
    assert result.validator == Validator('"v1"', LAST_MODIFIED)
    assert result.bytes_received == 9 and result.error is None
    assert result.final_url == http_server.url("/a.crl") and result.elapsed < 1
    [seen] = http_server.requests
    assert seen.headers["User-Agent"] == USER_AGENT
    assert seen.headers["Accept-Encoding"] == "identity"
    assert seen.headers["If-None-Match"] is None


def test_304_on_a_matching_etag(http_server):
    http_server.route("/a.crl", Reply(body=b"crl", etag='"v1"'))
    result = fetch(http_server.url("/a.crl"), Validator(etag='"v1"'))
    assert (result.outcome, result.http_status, result.body) == ("not_modified", 304, None)
    assert result.validator == Validator('"v1"')
    assert http_server.requests[0].headers["If-None-Match"] == '"v1"'


def test_304_on_last_modified_keeps_the_validator(http_server):
    http_server.route("/a.crl", Reply(body=b"crl", last_modified=LAST_MODIFIED))
    result = fetch(http_server.url("/a.crl"), Validator(last_modified=LAST_MODIFIED))
    assert result.outcome == "not_modified"
    assert result.validator == Validator(None, LAST_MODIFIED)
    assert http_server.requests[0].headers["If-Modified-Since"] == LAST_MODIFIED


def test_a_changed_etag_fetches_again(http_server):
    http_server.route("/a.crl", Reply(body=b"new", etag='"v2"'))
    result = fetch(http_server.url("/a.crl"), Validator(etag='"v1"'))
    assert (result.outcome, result.body, result.validator.etag) == ("fetched", b"new", '"v2"')


def test_content_encoding_is_not_undone(http_server):
    """The body is returned as received; a gzip body is ca.crl_decode's to open."""
    packed = gzip.compress(b"crl bytes")
    http_server.route("/a.crl", Reply(body=packed, headers={"Content-Encoding": "gzip"}))
    assert fetch(http_server.url("/a.crl")).body == packed


# ---------------------------------------------------------------- retries


def test_500_then_success_is_retried_with_backoff(http_server):
    answers = iter([Reply(500, b"busy"), Reply(body=b"crl")])
    http_server.route("/a.crl", lambda request: next(answers))
    sleeps: list[float] = []
    result = fetch(http_server.url("/a.crl"), sleeps=sleeps)
    assert (result.outcome, result.body) == ("fetched", b"crl")
    assert sleeps == [0.01] and len(http_server.requests) == 2


def test_persistent_500_gives_up_after_the_retries(http_server):
    http_server.route("/a.crl", Reply(500, b"busy"))
    sleeps: list[float] = []
    result = fetch(http_server.url("/a.crl"), sleeps=sleeps)
    assert (result.outcome, result.http_status) == ("error", 500)
    assert result.error == f"HTTP 500 (Internal Server Error) from {http_server.url('/a.crl')}"
    assert sleeps == [0.01, 0.02] and len(http_server.requests) == 3


def test_404_is_not_retried(http_server):
    sleeps: list[float] = []
    result = fetch(http_server.url("/missing.crl"), sleeps=sleeps)
    assert (result.outcome, result.http_status) == ("error", 404)
    assert result.error == f"HTTP 404 (Not Found) from {http_server.url('/missing.crl')}"
    assert sleeps == [] and len(http_server.requests) == 1


def test_connection_refused_is_retried_then_named():
    sleeps: list[float] = []
    port = unused_port()
    result = fetch(f"http://127.0.0.1:{port}/a.crl", sleeps=sleeps)
    assert result.error == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert sleeps == [0.01, 0.02] and result.http_status is None


# ---------------------------------------------------------------- time and size limits


def test_a_hang_is_cut_by_the_read_timeout(http_server):
    http_server.route("/a.crl", Reply(body=b"crl", delay=10))
    limits = FetchLimits(read_timeout=0.2, total_timeout=5, retries=0)
    result = fetch(http_server.url("/a.crl"), limits=limits)
    assert result.error == f"no answer from {http_server.url('/a.crl')} within 0.2 s (read timeout)"
    assert 0.2 <= result.elapsed < 1


def test_a_drip_is_cut_by_the_total_timeout(http_server):
    """A byte every 50 ms never trips the 0.3 s read timeout; the 1 s deadline cuts it."""
    http_server.route("/a.crl", Reply(body=b"x" * 1000, drip=0.05))
    result = fetch(http_server.url("/a.crl"))
    assert result.outcome == "error" and result.http_status == 200
    assert result.error.startswith(f"{http_server.url('/a.crl')} did not complete within 1 s "
                                   "(total timeout; ")
    assert 5 <= result.bytes_received < 40
    assert 1 <= result.elapsed < 1.5


def test_a_truncated_body_is_an_error(http_server):
    http_server.route("/a.crl", Reply(body=b"x" * 1000, truncate_at=100))
    sleeps: list[float] = []
    result = fetch(http_server.url("/a.crl"), sleeps=sleeps)
    assert result.outcome == "error" and result.bytes_received == 100
    assert result.error.startswith(f"the connection to 127.0.0.1:{http_server.port} broke after "
                                   f"100 bytes of the body from {http_server.url('/a.crl')} "
                                   "(truncated: ")
    assert len(sleeps) == 2  # a broken connection may be transient


def test_an_announced_oversize_body_is_refused_unread(http_server):
    http_server.route("/big.crl", Reply(body=b"x" * 5000))
    result = fetch(http_server.url("/big.crl"))
    assert result.error == (f"{http_server.url('/big.crl')} announces 5,000 bytes "
                            "(Content-Length), more than the limit of 4,096")
    assert result.bytes_received == 0


def test_an_unannounced_oversize_body_is_cut_at_the_limit(http_server):
    http_server.route("/big.crl", Reply(body=b"x" * 100_000, chunked=True))
    result = fetch(http_server.url("/big.crl"))
    assert result.error == (f"the body from {http_server.url('/big.crl')} exceeds the limit of "
                            "4,096 bytes")
    assert 4096 < result.bytes_received <= 4096 + 64 * 1024


def test_chunked_body_within_the_limit(http_server):
    http_server.route("/a.crl", Reply(body=b"y" * 3000, chunked=True))
    assert fetch(http_server.url("/a.crl")).body == b"y" * 3000


def test_other_2xx_is_an_error(http_server):
    http_server.route("/a.crl", Reply(204))
    assert fetch(http_server.url("/a.crl")).error.startswith("HTTP 204 (No Content) from ")


# ---------------------------------------------------------------- redirects


def test_redirect_to_another_path(http_server):
    http_server.route("/old.crl", redirect("/new.crl", 301))
    http_server.route("/new.crl", Reply(body=b"crl", etag='"n"'))
    result = fetch(http_server.url("/old.crl"), Validator(etag='"o"'))
    assert (result.outcome, result.body) == ("fetched", b"crl")
    assert result.final_url == http_server.url("/new.crl")
    assert http_server.paths() == ["/old.crl", "/new.crl"]
    assert http_server.connections == 1  # the redirect's body was drained, connection reused


def test_redirect_across_servers(http_server):
    with LocalServer() as other:
        other.route("/a.crl", b"crl")
        http_server.route("/a.crl", redirect(other.url("/a.crl"), 307))
        assert fetch(http_server.url("/a.crl")).body == b"crl"


def test_redirect_loop_is_named(http_server):
    http_server.route("/a", redirect("/b"))
    http_server.route("/b", redirect("/a"))
    result = fetch(http_server.url("/a"))
    assert result.error == "redirect loop: " + " -> ".join(
        http_server.url(p) for p in ("/a", "/b", "/a"))


def test_too_many_redirects(http_server):
    for hop in range(7):
        http_server.route(f"/{hop}", redirect(f"/{hop + 1}"))
    result = fetch(http_server.url("/0"), limits=FetchLimits(max_redirects=3))
    assert result.error == f"more than 3 redirects from {http_server.url('/0')}"
    assert http_server.paths() == ["/0", "/1", "/2", "/3"]


def test_redirect_to_a_file_url_is_refused(http_server):
    http_server.route("/a.crl", redirect("file:///etc/passwd"))
    result = fetch(http_server.url("/a.crl"))
    assert result.error == (f"{http_server.url('/a.crl')} redirects to a URL that is not "
                            "followed: only HTTP(S) distribution points are supported (the "
                            "Expressway guide); 'file:///etc/passwd' is file:")


# ---------------------------------------------------------------- URLs


def test_refused_urls_come_back_as_results():
    result = fetch("ldap://ldap.example.com/x")
    assert result.outcome == "error" and result.error.startswith("only HTTP(S) distribution")


def test_a_url_with_credentials_is_refused_before_any_request(http_server):
    """The two URL checks disagreed: the fetch sent the password (Basic auth) and hid it in
    messages, adding a point refused it. One check now refuses it everywhere."""
    url = f"http://crl:hunter2@127.0.0.1:{http_server.port}/a.crl"
    http_server.route("/a.crl", b"crl")
    result = fetch(url)
    assert result.outcome == "error" and "user name or password" in result.error
    assert "hunter2" not in result.error and "hunter2" not in result.final_url
    assert result.final_url == f"http://***@127.0.0.1:{http_server.port}/a.crl"
    assert http_server.requests == []


def test_the_url_is_requested_in_its_normal_form(http_server):
    http_server.route("/a.crl", b"crl")
    result = fetch(f" HTTP://127.0.0.1:{http_server.port}/a.crl#fragment ")
    assert (result.outcome, result.body) == ("fetched", b"crl")
    assert result.final_url == http_server.url("/a.crl")


# ---------------------------------------------------------------- HTTPS


def test_https_trusted_through_the_trusted_ca_list(https_server):
    https_server.route("/a.crl", b"crl")
    result = fetch(https_server.url("/a.crl"), extra_trust_pem=https_server.ca_pem)
    assert (result.outcome, result.body) == ("fetched", b"crl")


def test_https_from_an_unknown_ca_is_refused(https_server):
    https_server.route("/a.crl", b"crl")
    sleeps: list[float] = []
    result = fetch(https_server.url("/a.crl"), sleeps=sleeps)
    assert result.error == (f"TLS certificate of 127.0.0.1:{https_server.port} is not trusted: "
                            "self-signed certificate in certificate chain")
    assert sleeps == [] and https_server.requests == []


def test_https_certificate_for_another_host_is_refused():
    with LocalServer(tls_ca=session_ca(), cert_ip="10.9.9.9", cert_dns=()) as server:
        server.route("/a.crl", b"crl")
        result = fetch(server.url("/a.crl"), extra_trust_pem=server.ca_pem)
    assert result.error == (f"TLS certificate of 127.0.0.1:{server.port} is not trusted: "
                            "IP address mismatch, certificate is not valid for '127.0.0.1'.")


def test_an_unusable_trust_list_is_bad_input(http_server):
    with pytest.raises(BadInput, match="the trusted CA list cannot be used for HTTPS"):
        fetch_all([(http_server.url("/a.crl"), Validator())], extra_trust_pem=b"not PEM")


# ---------------------------------------------------------------- many at once


def test_200_urls_in_parallel_keep_input_order(http_server):
    for n in range(200):
        http_server.route(f"/{n}.crl", Reply(body=b"crl %d" % n, delay=0.001 * (n % 7)))
    targets = [(http_server.url(f"/{n}.crl"), Validator()) for n in range(200)]
    results = fetch_all(targets, limits=FetchLimits(parallelism=8))
    assert [r.body for r in results] == [b"crl %d" % n for n in range(200)]
    assert [r.url for r in results] == [url for url, _ in targets]
    assert http_server.connections <= 8  # keep-alive: one connection per worker


def test_a_thousand_not_modified_answers_are_fast(http_server):
    http_server.route("/a.crl", Reply(body=b"crl", etag='"v1"'))
    targets = [(http_server.url(f"/a.crl?n={n}"), Validator(etag='"v1"')) for n in range(1000)]
    started = time.perf_counter()
    results = fetch_all(targets)
    assert time.perf_counter() - started < 3
    assert {r.outcome for r in results} == {"not_modified"}
    assert http_server.connections <= FetchLimits().parallelism


def test_no_targets():
    assert fetch_all([]) == []
