"""The refresh end to end, against real HTTP(S) servers on 127.0.0.1: every format installs;
every kind of failure keeps the last good CRL and records a clear reason, per distribution
point and per issuer; alerts reach a real webhook receiver and a real SMTP relay."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import crl_config, crl_install, trust
from ca.models import CrlIssuerStatus, DistributionPoint, InstalledCrl
from scheduler import refresh, tick, upkeep
from scheduler.notifications import sender
from shell.db import transaction
from tests import crlfactory as cf

from . import httpd
from .httpd import Reply, redirect

http_server = httpd.http_server
https_server = httpd.https_server

T0 = cf.T0
NOW = T0 + dt.timedelta(hours=1)


def no_sleep(_seconds):
    pass


def run(sessions, clock):
    return refresh.refresh(sessions, clock, trigger="manual", sleep=no_sleep)


def setup_world(sessions, clock, urls, *, issuers=("CRL Test CA",)):
    with transaction(sessions) as s:
        for name in issuers:
            trust.add(s, cf.issuer(name).cert_pem, clock())
        crl_config.update_settings(s, clock(), timeout_seconds=2)
        crl_config.add_points(s, urls, clock())


def installed_numbers(sessions) -> dict[str, str]:
    with transaction(sessions) as s:
        return {row.issuer: row.number for row in crl_install.installed(s)}


def point(sessions, url) -> DistributionPoint:
    with transaction(sessions) as s:
        return s.query(DistributionPoint).filter_by(url=url).one()


@pytest.fixture
def clock():
    from tests.conftest import FakeClock

    return FakeClock(NOW)


# ---------------------------------------------------------------- formats

def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_every_format_installs(sessions, clock, http_server):
    """One issuer per point: results are applied in the order they arrive, so two points
    serving one issuer would make this test about which answered first."""
    names = ("CRL Test CA", "Second CA", "Third CA", "Fourth CA", "Fifth CA")
    a, b, c, d, e = (cf.issuer(name) for name in names)
    bodies = {
        "/pem.crl": cf.crl_pem(3, number=1, ca=a),
        "/b.der": cf.crl_der(4, number=7, ca=b),
        "/bundle.zip": _zip({"readme.txt": b"not a CRL",
                             "../../x.crl": cf.crl_der(2, number=9, ca=c)}),
        "/one.gz": gzip.compress(cf.crl_der(5, number=2, ca=d)),
        "/many.tar.gz": _tar_gz({"b.crl": cf.crl_pem(6, number=8, ca=e)}),
    }
    for path, body in bodies.items():
        http_server.route(path, Reply(body=body, headers={"Content-Type": "text/html"}))
    urls = [http_server.url(p) for p in bodies]
    setup_world(sessions, clock, urls, issuers=names)
    report = run(sessions, clock)
    assert not report.failed, report.as_dict()
    assert installed_numbers(sessions) == {
        "/O=Example/CN=CRL Test CA": "1", "/O=Example/CN=Second CA": "7",
        "/O=Example/CN=Third CA": "9", "/O=Example/CN=Fourth CA": "2",
        "/O=Example/CN=Fifth CA": "8"}
    # The zip member's name was never used as a path: nothing but the database changed.
    assert report.points[2].crls[0]["action"] == "installed"


def test_unchanged_crl_costs_one_304_and_changes_nothing(sessions, clock, http_server):
    http_server.route("/a.crl", Reply(body=cf.crl_der(3, number=4), etag='"v4"',
                                      last_modified="Fri, 27 Nov 2026 09:00:00 GMT"))
    url = http_server.url("/a.crl")
    setup_world(sessions, clock, [url])
    run(sessions, clock)
    clock.advance(hours=1)
    report = run(sessions, clock)
    assert report.points[0].outcome == "not_modified", report.points[0].error
    last = http_server.requests[-1].headers
    assert last["If-None-Match"] == '"v4"'
    assert last["If-Modified-Since"] == "Fri, 27 Nov 2026 09:00:00 GMT"
    with transaction(sessions) as s:
        assert s.query(InstalledCrl).count() == 1
        status = s.get(CrlIssuerStatus, trust.name_key(cf.issuer().cert.subject))
        assert status.last_success_at == clock() and status.error is None


def test_a_newer_crl_replaces_the_installed_one_and_history_is_kept(sessions, clock,
                                                                     http_server):
    http_server.route("/a.crl", cf.crl_der(3, number=4))
    url = http_server.url("/a.crl")
    setup_world(sessions, clock, [url])
    run(sessions, clock)
    http_server.route("/a.crl", cf.crl_der(5, number=5, this_update=T0 + dt.timedelta(
        minutes=30)))
    run(sessions, clock)
    assert installed_numbers(sessions) == {"/O=Example/CN=CRL Test CA": "5"}
    with transaction(sessions) as s:
        rows = crl_install.history(s, trust.name_key(cf.issuer().cert.subject))
        assert [(r.number, r.current) for r in rows] == [("5", True), ("4", False)]


# ---------------------------------------------------------------- failures keep the last good

def _gzip_bomb() -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as stream:
        block = bytes(1 << 20)
        for _ in range(2048):  # 2 GiB of zeros, about 2 MB compressed
            stream.write(block)
    return out.getvalue()


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("huge.crl", "w", force_zip64=True) as member:
        block = bytes(1 << 20)
        for _ in range(1024):
            member.write(block)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bombs():
    return {"gzip": _gzip_bomb(), "zip": _zip_bomb()}


def _other_key_crl():
    impostor = cf.Issuer(cf.issuer("Impostor").key, cf.issuer().cert)
    return cf.crl_der(1, number=99, ca=impostor)


FAILURES = {
    "http-500": (lambda srv, b: Reply(status=500, body=b"oops"), "HTTP 500"),
    "http-404": (lambda srv, b: Reply(status=404), "HTTP 404"),
    "hang": (lambda srv, b: Reply(body=b"x", delay=5), "time"),
    "truncated": (lambda srv, b: Reply(body=cf.crl_der(50, number=6), truncate_at=300),
                  ""),
    "html-200": (lambda srv, b: Reply(body=b"<!DOCTYPE html><html><body>Maintenance"
                                      b"</body></html>"), "HTML"),
    "wrong-key": (lambda srv, b: Reply(body=_other_key_crl()), "signature"),
    "expired": (lambda srv, b: Reply(body=cf.crl_der(
        1, number=8, this_update=T0 - dt.timedelta(days=9),
        next_update=T0 - dt.timedelta(days=2))), "expired"),
    "future": (lambda srv, b: Reply(body=cf.crl_der(
        1, number=8, this_update=NOW + dt.timedelta(hours=2))), "future"),
    "lower-number": (lambda srv, b: Reply(body=cf.crl_der(1, number=3)), "lower"),
    "gzip-bomb": (lambda srv, b: Reply(body=b["gzip"]), ""),
    "zip-bomb": (lambda srv, b: Reply(body=b["zip"]), ""),
    "redirect-loop": (lambda srv, b: redirect(srv.url("/a.crl")), "redirect"),
    "redirect-file": (lambda srv, b: redirect("file:///etc/passwd"), "file"),
    "oversize": (lambda srv, b: Reply(body=bytes(3 << 20)), "bytes"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failure_keeps_the_last_good_crl_and_says_why(sessions, clock, http_server, bombs,
                                                        failure):
    http_server.route("/a.crl", cf.crl_der(3, number=5))
    url = http_server.url("/a.crl")
    setup_world(sessions, clock, [url])
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), max_bytes=2 << 20)
    assert not run(sessions, clock).failed
    make, words = FAILURES[failure]
    http_server.route("/a.crl", make(http_server, bombs))
    clock.advance(hours=1)
    report = run(sessions, clock)
    assert report.failed
    assert installed_numbers(sessions) == {"/O=Example/CN=CRL Test CA": "5"}
    dp = point(sessions, url)
    assert dp.error and words.lower() in dp.error.lower(), dp.error
    assert "Traceback" not in dp.error and len(dp.error) < 600
    assert dp.last_success_at == NOW  # the earlier success is still on record
    key = trust.name_key(cf.issuer().cert.subject)
    with transaction(sessions) as s:
        status = s.get(CrlIssuerStatus, key)
        problems = {p.key: p.severity for p in upkeep.problems(s, clock(),
                                                               dt.timedelta(hours=1))}
        assert status.last_attempt_at == clock()
        if failure == "lower-number":  # an older copy: the point lags, the issuer is fine
            assert status.error is None
            assert problems == {f"dp:{url}": "warning"}
            return
        assert status.error and url in status.error
        assert words.lower() in status.error.lower()
    # one alert for one problem: the issuer's, which names the point and its reason
    assert problems == {f"issuer:{key}": "critical"}


def test_https_distribution_point_must_present_a_trusted_certificate(sessions, clock,
                                                                    https_server):
    https_server.route("/a.crl", cf.crl_der(2, number=1))
    url = https_server.url("/a.crl")
    setup_world(sessions, clock, [url])
    report = run(sessions, clock)
    assert report.points[0].outcome == "error"
    assert "not trusted" in report.points[0].error
    with transaction(sessions) as s:  # the guide: its certificate must be valid, i.e. trusted
        trust.add(s, https_server.ca_pem, clock())
    assert run(sessions, clock).points[0].outcome == "installed"


def test_crl_of_an_issuer_not_in_the_trusted_list_is_refused(sessions, clock, http_server):
    http_server.route("/a.crl", cf.crl_der(2, number=1, ca=cf.issuer("Stranger CA")))
    url = http_server.url("/a.crl")
    setup_world(sessions, clock, [url])
    report = run(sessions, clock)
    assert "not in the trusted CA list" in report.points[0].error
    assert installed_numbers(sessions) == {}


def test_one_bad_distribution_point_does_not_stop_the_others(sessions, clock, http_server):
    http_server.route("/good.crl", cf.crl_der(2, number=1))
    http_server.route("/bad.crl", Reply(status=503))
    urls = [http_server.url("/bad.crl"), http_server.url("/good.crl")]
    setup_world(sessions, clock, urls)
    report = run(sessions, clock)
    assert [p.outcome for p in report.points] == ["error", "installed"]
    assert installed_numbers(sessions) == {"/O=Example/CN=CRL Test CA": "1"}


def test_manual_refresh_during_another_is_refused(sessions, clock, http_server):
    from scheduler import lease

    setup_world(sessions, clock, [])
    with transaction(sessions) as s:
        lease.acquire(s, refresh.LEASE, "beat-host:1:abcd", clock(), dt.timedelta(minutes=5))
    with pytest.raises(refresh.RefreshBusy, match="already running by beat-host"):
        run(sessions, clock)


# ---------------------------------------------------------------- manual CRLs

def test_a_fetched_crl_overrides_the_manual_one_once_newer(sessions, clock, http_server):
    setup_world(sessions, clock, [])
    manual = cf.crl_der(1, number=10, this_update=T0)
    with transaction(sessions) as s:
        crl_install.upload(s, x509.load_der_x509_crl(manual), manual, clock(),
                           skew=dt.timedelta(minutes=5), source="upload.crl")
    http_server.route("/a.crl", cf.crl_der(1, number=2, this_update=T0 - dt.timedelta(
        hours=1)))
    with transaction(sessions) as s:
        crl_config.add_points(s, [http_server.url("/a.crl")], clock())
    run(sessions, clock)
    with transaction(sessions) as s:
        key = trust.name_key(cf.issuer().cert.subject)
        assert crl_install.effective(s, key).origin == "manual"  # the fetched one is older
    http_server.route("/a.crl", cf.crl_der(1, number=3, this_update=T0 + dt.timedelta(
        minutes=30)))
    run(sessions, clock)
    with transaction(sessions) as s:
        assert crl_install.effective(s, key).origin == "fetched"


# ---------------------------------------------------------------- alerts, for real

class _Hook(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class _Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(envelope.content.decode())
        return "250 OK"


def test_failed_refresh_alerts_webhook_and_mail_once(sessions, clock, http_server):
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    hook.posts = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    mailbox = _Mailbox()
    smtp_port = httpd.unused_port()
    relay = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    relay.start()
    try:
        http_server.route("/a.crl", Reply(status=500))
        url = http_server.url("/a.crl")
        setup_world(sessions, clock, [url])
        send = sender({"webhook_url": f"http://127.0.0.1:{hook.server_port}/alerts",
                       "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
                       "smtp_from": "pkiq@example.com",
                       "smtp_to": "pki-team@example.com"}, clock)
        with transaction(sessions) as s:
            crl_config.update_settings(s, clock(), update_time="11:00")
        for _ in range(3):  # the run, then two more ticks with the problem still open
            tick.tick(sessions, clock, signer_for=None, send=send, sleep=no_sleep)
            clock.advance(minutes=1)
        keys = [p["key"] for p in hook.posts]
        assert keys == [f"dp:{url}"], hook.posts
        assert hook.posts[0]["severity"] == "critical"
        assert "HTTP 500" in hook.posts[0]["summary"]
        assert len(mailbox.messages) == 1
        assert "Subject: [pkiq] CRITICAL: CRL distribution point" in mailbox.messages[0]
        # Fixed: the next run installs, and "resolved" goes out once.
        http_server.route("/a.crl", cf.crl_der(1, number=1))
        with transaction(sessions) as s:
            crl_config.update_settings(s, clock(), update_time=f"{clock():%H:%M}")
        tick.tick(sessions, clock, signer_for=None, send=send, sleep=no_sleep)
        assert [p["severity"] for p in hook.posts] == ["critical", "resolved"]
    finally:
        relay.stop()
        hook.shutdown()
        hook.server_close()


def test_crl_near_next_update_is_a_problem(sessions, clock, http_server):
    http_server.route("/a.crl", cf.crl_der(1, number=1, next_update=NOW + dt.timedelta(
        hours=5)))
    setup_world(sessions, clock, [http_server.url("/a.crl")])
    run(sessions, clock)
    with transaction(sessions) as s:
        found = upkeep.problems(s, clock(), dt.timedelta(hours=48))
    assert [(p.key.split(":")[0], p.severity) for p in found] == [("expiry", "warning")]
    assert "reaches nextUpdate" in found[0].summary


def test_pem_of_installed_crl_reads_back_identical(sessions, clock, http_server):
    der = cf.crl_der(2, number=1)
    http_server.route("/a.crl", der)
    setup_world(sessions, clock, [http_server.url("/a.crl")])
    run(sessions, clock)
    with transaction(sessions) as s:
        row = crl_install.installed(s)[0]
        assert crl_install.stored_der(s, row) == der
        assert x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.DER) == der


def test_schedule_changed_and_clock_stepped_while_a_refresh_runs(sessions, clock, http_server):
    """The refresh is slow; meanwhile a manual refresh is refused, the daily time is moved
    to later today, and afterwards the clock steps back (NTP): one run per slot, at the
    times the settings say when each tick reads them."""
    http_server.route("/slow.crl", Reply(body=cf.crl_der(1, number=1), delay=1.5))
    setup_world(sessions, clock, [http_server.url("/slow.crl")])
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time=f"{clock():%H:%M}")
    reports = []
    ticking = threading.Thread(target=lambda: reports.append(tick.tick(
        sessions, clock, signer_for=None, send=lambda *a: [], sleep=no_sleep)))
    ticking.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=5)
        while not http_server.requests and dt.datetime.now() < deadline:
            threading.Event().wait(0.05)
        with pytest.raises(refresh.RefreshBusy, match="already running"):
            run(sessions, clock)
        later = clock() + dt.timedelta(hours=2)
        with transaction(sessions) as s:
            crl_config.update_settings(s, clock(), update_time=f"{later:%H:%M}")
    finally:
        ticking.join()
    assert reports[0].refresh is not None and not reports[0].refresh.failed

    def run_tick():
        return tick.tick(sessions, clock, signer_for=None, send=lambda *a: [],
                         sleep=no_sleep).refresh

    assert run_tick() is None  # the new time is not reached yet
    clock.advance(hours=2)
    assert run_tick() is not None  # the new time, once
    assert run_tick() is None
    clock.advance(hours=-1)  # the clock steps back an hour: that slot is not run again
    assert run_tick() is None
    clock.advance(days=1, hours=1)  # tomorrow at the new time
    assert run_tick() is not None


def test_one_tick_reads_the_settings_once_and_its_refresh_uses_them(sessions, clock,
                                                                     http_server, monkeypatch):
    """Deciding the slot, the refresh's limits, own CRLs and alerts all work on the one
    snapshot the tick took (before, the refresh read the settings again, later)."""
    http_server.route("/a.crl", cf.crl_der(1, number=1))
    setup_world(sessions, clock, [http_server.url("/a.crl")])
    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), update_time=f"{clock():%H:%M}")
    reads = []
    real = crl_config.get_settings
    monkeypatch.setattr(crl_config, "get_settings", lambda *a, **kw: reads.append(1) or
                        real(*a, **kw))
    report = tick.tick(sessions, clock, signer_for=None, send=lambda *a: [], sleep=no_sleep)
    assert report.refresh is not None and not report.refresh.failed
    assert len(reads) == 1


def test_a_refresh_given_a_policy_uses_it_not_the_stored_settings(sessions, clock,
                                                                  http_server):
    body = cf.crl_der(100, number=1)
    http_server.route("/a.crl", body)
    setup_world(sessions, clock, [http_server.url("/a.crl")])
    with transaction(sessions) as s:
        taken = crl_config.snapshot(s, clock())
        crl_config.update_settings(s, clock(), max_bytes=1024)  # changed after the snapshot
    assert len(body) > 1024
    report = refresh.refresh(sessions, clock, policy=taken, sleep=no_sleep)
    assert [p.outcome for p in report.points] == ["installed"]
    clock.advance(minutes=1)
    http_server.route("/a.crl", cf.crl_der(100, number=2))
    report = run(sessions, clock)  # a manual refresh reads the settings itself
    assert "more than the limit of 1,024" in report.points[0].error


def test_the_policy_is_the_settings_frozen(sessions, clock):
    import dataclasses

    with transaction(sessions) as s:
        crl_config.update_settings(s, clock(), warn_hours=5, overlap_hours=7, skew_seconds=9)
        policy = crl_config.snapshot(s, clock())
        row = crl_config.get_settings(s, clock())
        assert {name: getattr(row, name) for name in crl_config.DEFAULTS} == {
            name: getattr(policy, name) for name in crl_config.DEFAULTS}
        assert policy.seed == row.seed
    assert (policy.warn, policy.overlap, policy.skew) == (
        dt.timedelta(hours=5), dt.timedelta(hours=7), dt.timedelta(seconds=9))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.warn_hours = 1


# ---------------------------------------------------------------- found in review

def test_overlong_validators_are_not_kept_and_break_nothing(sessions, clock, http_server):
    """PostgreSQL enforces column lengths: a server's 100-character Last-Modified and 600-byte
    ETag must not fail the commit (and with it the whole refresh)."""
    http_server.route("/a.crl", Reply(body=cf.crl_der(1, number=1), etag='"' + "e" * 600 + '"',
                                      last_modified="Fri, 27 Nov 2026 09:00:00 GMT" + " " * 80))
    url = http_server.url("/a.crl")
    setup_world(sessions, clock, [url])
    assert not run(sessions, clock).failed
    dp = point(sessions, url)
    assert dp.etag is None and dp.last_modified is None


def test_a_refused_crl_is_fetched_again_not_answered_304(sessions, clock, http_server):
    """A bundle with one CRL refused (its CA not trusted yet) keeps no validators: once the CA
    is trusted, the next refresh fetches the file again and installs it."""
    stranger = cf.issuer("Late Trusted CA")
    http_server.route("/bundle.pem", Reply(body=cf.crl_pem(1, number=1) + cf.crl_pem(
        1, number=1, ca=stranger), etag='"b1"'))
    url = http_server.url("/bundle.pem")
    setup_world(sessions, clock, [url])
    assert run(sessions, clock).failed
    with transaction(sessions) as s:
        trust.add(s, stranger.cert_pem, clock())
    report = run(sessions, clock)
    assert report.points[0].outcome == "installed" and not report.failed
    assert len(installed_numbers(sessions)) == 2


def test_a_refresh_that_crashes_is_recorded_and_alerted(sessions, clock, http_server):
    http_server.route("/a.crl", cf.crl_der(1, number=1))
    setup_world(sessions, clock, [http_server.url("/a.crl")])
    with transaction(sessions) as s:  # an unusable trust anchor bundle for HTTPS
        s.add(trust.TrustedCa(sha256="f" * 64, subject="/CN=Broken", issuer="/CN=Broken",
                              subject_key="0" * 64, not_after=NOW + dt.timedelta(days=9),
                              der=b"\x30\x03\x02\x01\x00", origin="uploaded", added_at=NOW))
        crl_config.update_settings(s, clock(), update_time=f"{clock():%H:%M}")
    sent = []
    report = tick.tick(sessions, clock, signer_for=None, sleep=no_sleep,
                          send=lambda p, sev: sent.append((p.key, sev)) or [])
    assert report.refresh is None and "refresh failed" in report.skipped
    assert ("refresh-failed", "critical") in sent
    with transaction(sessions) as s:
        assert tick.last_run(s)["summary"]["aborted"]


def test_removing_a_failing_point_or_its_ca_closes_its_problems(sessions, clock, http_server):
    http_server.route("/a.crl", cf.crl_der(1, number=1))
    url = http_server.url("/a.crl")
    setup_world(sessions, clock, [url])
    run(sessions, clock)
    http_server.route("/a.crl", Reply(status=500))
    run(sessions, clock)

    def open_problems():
        with transaction(sessions) as s:
            return sorted(p.key.split(":")[0] for p in upkeep.problems(
                s, clock(), dt.timedelta(hours=1)))

    assert open_problems() == ["issuer"]  # one alert, naming the point and its reason
    with transaction(sessions) as s:
        crl_config.remove_points(s, [url])
    assert open_problems() == []
    # The same for a CA taken off the trusted list while its point keeps failing.
    with transaction(sessions) as s:
        crl_config.add_points(s, [url], clock())
    run(sessions, clock)
    with transaction(sessions) as s:
        s.query(DistributionPoint).filter_by(url=url).one().serves = [
            [trust.name_key(cf.issuer().cert.subject), None]]
    run(sessions, clock)
    assert "issuer" in open_problems()
    with transaction(sessions) as s:
        trust.remove(s, [trust.fingerprint(cf.issuer().cert)], clock())
    assert open_problems() == ["dp"]
