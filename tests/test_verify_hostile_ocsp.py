"""``pkiq verify --use-ocsp`` against responders that misbehave: the responder's URL comes
from the certificate being checked, so it may be anyone's. An endless answer, one that
drips a byte at a time, one that announces gigabytes, a 500 and a hang each end with a note
on the path and the fallback deciding, within the bounds ``service.verify`` sets, never a
traceback and never the whole body in memory."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from service import verify as verify_service

from .httpd import LocalServer, Reply
from .test_verify import DAY, _with_ocsp, crl, files, make, verdict  # noqa: F401 - files: a fixture


@pytest.fixture
def hostile():
    server = LocalServer().start()
    junk = b"\x30" * 65536
    server.route("/endless", Reply(body=junk, repeat=100_000, chunked=True))
    server.route("/drip", Reply(body=b"\x30" * 64, drip=0.5))
    server.route("/huge", Reply(body=b"\x30\x82", headers={"Content-Length": str(2**31)}))
    server.route("/error", Reply(status=500, body=b"no"))
    server.route("/hang", Reply(delay=30, body=b"late"))
    yield server
    server.close()


@pytest.mark.parametrize("path, note", [
    ("/endless", "larger than"),
    ("/drip", "no whole answer within"),
    ("/huge", "larger than"),
    ("/error", "HTTP 500"),
    ("/hang", "ReadTimeout"),
])
def test_a_misbehaving_responder_leaves_the_fallback_to_decide(files, hostile, monkeypatch,  # noqa: F811
                                                               path, note):
    from click.testing import CliRunner

    from pkiq.cli import cli

    monkeypatch.setattr(verify_service, "OCSP_TOTAL_SECONDS", 3.0)
    monkeypatch.setattr(verify_service, "OCSP_TIMEOUT", (2.0, 2.0))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    root = make("Hostile Root", ca=True, before=now - DAY, after=now + 90 * DAY)
    issuing = make("Hostile Issuing", root, ca=True, before=now - DAY, after=now + 90 * DAY)
    root_crl = crl(root, this=now - DAY, nxt=now + 7 * DAY)
    leaf = _with_ocsp(issuing, "leaf.example.com", hostile.url(path), now)
    started = time.monotonic()
    result = CliRunner().invoke(cli, [
        "verify", str(files(leaf)), "--trusted", str(files(root)), "--intermediate",
        str(files(issuing)), "--crl", str(files(root_crl)), "--no-cdp-downloads",
        "--no-use-crls", "--fallback", "revoked", "--json"])
    assert time.monotonic() - started < 15, path
    assert result.exit_code == 9, result.output  # undetermined: the fallback says revoked
    notes = verdict(result)["notes"]
    assert any(note in n for n in notes), notes
    assert "Traceback" not in result.output
