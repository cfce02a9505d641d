"""``pkiq crl ...`` as a PKI engineer uses it, and the real service (worker + beat) running
the nightly refresh and renewing pkiq's own CRL by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests import crlfactory as cf

from . import httpd
from .conftest import PASSPHRASE
from .httpd import Reply

http_server = httpd.http_server
NOW = cf.T0 + cf.dt.timedelta(hours=1)


@pytest.fixture
def clock():
    from tests.conftest import FakeClock

    return FakeClock(NOW)


def ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def test_distribution_points_round_trip_as_text(pkiq, tmp_path):
    ok(pkiq("crl", "dp", "add", "http://crl.example.com/root.crl",
            "https://crl.example.com/sub.crl"))
    listing = ok(pkiq("crl", "dp", "list")).stdout.splitlines()
    assert listing == ["http://crl.example.com/root.crl", "https://crl.example.com/sub.crl"]
    text = tmp_path / "points.txt"
    text.write_text("# as the guide: one per line\nhttps://crl.example.com/sub.crl\n"
                    "http://other.example.com/x.crl\n")
    done = json.loads(ok(pkiq("crl", "dp", "set", text, "--json")).stdout)
    assert done == {"added": ["http://other.example.com/x.crl"],
                    "removed": ["http://crl.example.com/root.crl"], "count": 2}
    ok(pkiq("crl", "dp", "remove", "http://other.example.com/x.crl"))
    assert ok(pkiq("crl", "dp", "list")).stdout.split() == ["https://crl.example.com/sub.crl"]


def test_bad_distribution_points_and_settings_change_nothing(pkiq, tmp_path):
    bad = pkiq("crl", "dp", "add", "http://ok.example.com/a.crl", "ldap://ldap.example.com/x")
    assert bad.exit_code == 3
    assert "only HTTP(S) distribution points" in bad.stderr
    assert "Traceback" not in bad.stderr
    text = tmp_path / "points.txt"
    text.write_text("http://a.example.com/a.crl\nfile:///etc/passwd\n")
    bad = pkiq("crl", "dp", "set", text)
    assert bad.exit_code == 3 and "line 2" in bad.stderr
    assert ok(pkiq("crl", "dp", "list")).stdout.strip() == ""
    bad = pkiq("crl", "schedule", "--at", "24:00")
    assert bad.exit_code == 3 and "HH:MM" in bad.stderr
    bad = pkiq("crl", "settings", "--parallel", "0")
    assert bad.exit_code == 3 and "between 1 and 128" in bad.stderr
    gone = pkiq("crl", "dp", "remove", "http://nowhere.example.com/x.crl")
    assert gone.exit_code == 5


def test_schedule_shows_the_next_run_and_can_be_disabled(pkiq):
    info = json.loads(ok(pkiq("crl", "schedule", "--at", "02:30", "--json")).stdout)
    assert info["update_time_utc"] == "02:30" and info["enabled"]
    # T0+1h is 11:00 on a fresh install: yesterday's 02:30 is owed, so it is due now.
    assert info["next_run"] == NOW.isoformat()
    info = json.loads(ok(pkiq("crl", "schedule", "--disable", "--json")).stdout)
    assert info["enabled"] is False and info["next_run"] is None
    text = ok(pkiq("crl", "schedule")).stdout
    assert "automatic CRL updates: disabled, daily at 02:30 UTC" in text


def test_refresh_status_and_a_failure_that_keeps_the_crl(pkiq, http_server, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(cf.issuer().cert_pem)
    ok(pkiq("trust", "add", ca_file))
    http_server.route("/root.crl", cf.crl_der(4, number=12))
    url = http_server.url("/root.crl")
    ok(pkiq("crl", "dp", "add", url))
    first = ok(pkiq("crl", "refresh"))
    assert "installed" in first.stdout and "CRL 12 (4 entries)" in first.stdout
    http_server.route("/root.crl", Reply(status=500, body=b"upstream down"))
    ok(pkiq("crl", "settings", "--timeout", "2"))
    failed = pkiq("crl", "refresh")
    assert failed.exit_code == 9
    assert "HTTP 500" in failed.stdout and "installed CRLs are kept" in failed.stdout
    status = json.loads(ok(pkiq("crl", "status", "--json")).stdout)
    point = status["distribution_points"][0]
    assert point["url"] == url and "HTTP 500" in point["error"]
    assert point["last_success"] is not None
    issuer = status["issuers"][0]
    assert issuer["crl_number"] == "12" and issuer["entries"] == 4
    assert "HTTP 500" in issuer["error"]
    ok(pkiq("ca", "create", "Own", "--subject", "/CN=Own Root", "--key-type", "ec-p256"))
    ok(pkiq("ca", "gencrl", "Own"))
    status = json.loads(ok(pkiq("crl", "status", "--json")).stdout)
    assert [(i["origin"], i["crl_number"]) for i in status["issuers"]] == [
        ("pkiq CA Own", "1"), ("fetched", "12")]
    shown = ok(pkiq("crl", "show", "/O=Example/CN=CRL Test CA")).stdout.encode()
    assert x509.load_pem_x509_crl(shown).extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number == 12


def test_manual_upload_show_and_remove(pkiq, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(cf.issuer().cert_pem)
    ok(pkiq("trust", "add", ca_file))
    crl_file = tmp_path / "upload.crl"
    crl_file.write_bytes(cf.crl_der(2, number=3))  # DER: accepted as well as PEM
    info = json.loads(ok(pkiq("crl", "upload", crl_file, "--json")).stdout)
    assert info["action"] == "installed" and info["crl_number"] == 3
    out = tmp_path / "back.pem"
    ok(pkiq("crl", "show", "/O=Example/CN=CRL Test CA", "--out", out))
    assert x509.load_pem_x509_crl(out.read_bytes()).public_bytes(
        serialization.Encoding.DER) == crl_file.read_bytes()
    ok(pkiq("crl", "remove", "/O=Example/CN=CRL Test CA"))
    gone = pkiq("crl", "show", "/O=Example/CN=CRL Test CA")
    assert gone.exit_code == 5


def test_upload_of_garbage_or_an_untrusted_crl_is_one_clear_error(pkiq, tmp_path):
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"<html>503 Service Unavailable</html>")
    bad = pkiq("crl", "upload", garbage)
    assert bad.exit_code == 3 and "HTML" in bad.stderr
    stranger = tmp_path / "stranger.crl"
    stranger.write_bytes(cf.crl_der(1, number=1, ca=cf.issuer("Stranger CA")))
    bad = pkiq("crl", "upload", stranger)
    assert bad.exit_code == 4 and "not in the trusted CA list" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- the real service

def test_the_service_refreshes_on_schedule_and_renews_its_own_crl(tmp_path, db_url):
    """`pkiq serve` (worker + beat, embedded broker): at the configured minute the tick
    fetches the distribution point, and the pkiq CA's missing CRL is issued unattended."""
    env = {**os.environ, "PKIQ_DATABASE_URL": db_url, "PKIQ_CA_PASSPHRASE": PASSPHRASE,
           "PKIQ_DATA_DIR": str(tmp_path / "data"), "PKIQ_CRL_TICK_SECONDS": "5",
           "PKIQ_QUEUE": "crl-service-test"}

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "pkiq", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 9), done.stderr
        return done

    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    issuer = cf.issuer("Service Test CA")
    crl = cf.crl_der(3, number=5, ca=issuer, this_update=now - dt.timedelta(minutes=5),
                     next_update=now + dt.timedelta(days=1))
    with httpd.LocalServer() as server:
        server.route("/svc.crl", crl)
        (tmp_path / "ca.pem").write_bytes(issuer.cert_pem)
        cli("ca", "create", "Root", "--subject", "/CN=Service Root", "--key-type", "ec-p256")
        cli("trust", "add", tmp_path / "ca.pem")
        cli("crl", "dp", "add", server.url("/svc.crl"))
        cli("crl", "schedule", "--at", f"{now:%H:%M}")
        log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "pkiq", "serve"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                status = json.loads(cli("crl", "status", "--json").stdout)
                own = subprocess.run([sys.executable, "-m", "pkiq", "ca", "crl", "Root",
                                      "--json"], env=env, capture_output=True, text=True)
                fetched = [i for i in status["issuers"] if i.get("origin") == "fetched"]
                if fetched and fetched[0]["crl_number"] == "5" and own.returncode == 0:
                    break
                time.sleep(2)
            else:
                pytest.fail("no scheduled refresh within 90 s:\n"
                            + (tmp_path / "serve.log").read_text()[-4000:])
            assert status["last_run"]["trigger"] in ("schedule", "missed")
            assert json.loads(own.stdout)["crl_number"] == 1
            assert proc.poll() is None
        finally:
            proc.terminate()  # the main process stops its pool and beat (a warm shutdown)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
            log.close()
