"""Handing a CA over to ``openssl ca`` is explicit: ``export-openssl --handover`` stops pkiq
signing, revoking and issuing CRLs with it (beat's renewal included), since two writers of
one index would hand out the same serials and CRL numbers; a plain export says so."""

from __future__ import annotations

import datetime as dt
import json

from ca import authority, jobs
from scheduler import upkeep
from shell.db import transaction

from .conftest import PASSPHRASE, make_csr, openssl


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pkiq: error: "), result.stderr
    return lines[0]


def _root(pkiq, tmp_path):
    _ok(pkiq("ca", "create", "Root", "--subject", "/C=GB/O=Example Ltd/CN=Handover Root",
             "--key-type", "ec-p256"))
    csr = tmp_path / "web.pem"
    csr.write_bytes(make_csr("web.example.com"))
    return json.loads(_ok(pkiq("ca", "sign", "Root", csr, "--json")).stdout)["serial"], csr


def test_a_plain_export_warns_that_both_would_number_independently(pkiq, tmp_path):
    _root(pkiq, tmp_path)
    done = _ok(pkiq("ca", "export-openssl", "Root", tmp_path / "export"))
    assert "number serials and CRLs independently" in done.stderr
    assert "--handover" in done.stderr
    assert json.loads(_ok(pkiq("ca", "show", "Root", "--json")).stdout)["handed_over_at"] is None


def test_handover_stops_every_change_to_the_ca_in_pkiq(pkiq, tmp_path, app):
    serial, csr = _root(pkiq, tmp_path)
    queued = tmp_path / "queued.pem"  # a job waiting in the queue when the CA is handed over
    queued.write_bytes(make_csr("queued.example.com"))
    job = json.loads(_ok(pkiq("submit", queued, "--ca", "Root", "--json")).stdout)[0]["id"]
    done = _ok(pkiq("ca", "export-openssl", "Root", tmp_path / "export", "--handover",
                    "--json"))
    info = json.loads(done.stdout)
    assert info["handed_over"] is True and info["ca"]["handed_over_to"] == str(
        (tmp_path / "export").resolve())
    assert "independently" not in done.stderr
    again = _ok(pkiq("ca", "export-openssl", "Root", tmp_path / "copy"))  # a copy, later
    assert "independently" not in again.stderr
    for args in (("ca", "sign", "Root", csr), ("ca", "gencrl", "Root"),
                 ("ca", "revoke", "Root", serial), ("ca", "updatedb", "Root"),
                 ("ca", "release-hold", "Root", serial),
                 ("ca", "export-openssl", "Root", tmp_path / "again", "--handover")):
        line = _one_line_error(pkiq(*args), 7)
        assert "handed over to openssl ca" in line and "use openssl ca there" in line, args
    assert not (tmp_path / "again").exists()
    # reading still works, and says whose the CA is
    assert "handed over" in _ok(pkiq("ca", "show", "Root")).stdout
    assert "(handed over to openssl ca)" in _ok(pkiq("ca", "list")).stdout
    assert _ok(pkiq("ca", "status", "Root", serial)).stdout.startswith(f"{serial}=Valid")
    # a new request is refused at once; one queued before fails with the reason, unsigned
    other = tmp_path / "other.pem"
    other.write_bytes(make_csr("other.example.com"))
    assert "handed over to openssl ca" in _one_line_error(pkiq("submit", other, "--ca", "Root"), 7)
    with transaction(app.sessions) as session:
        done_jobs = jobs.run_jobs(session, [job], lambda ca: authority.load_signer(
            ca, PASSPHRASE.encode()), app.clock)
        assert done_jobs[0].state == "failed"
        assert "handed over to openssl ca" in done_jobs[0].error


def test_beat_leaves_a_handed_over_ca_to_openssl(pkiq, tmp_path, app, clock):
    """The defect found: after an export put to work, openssl ca -gencrl and beat's nightly
    renewal each issued a CRL with the same number."""
    _root(pkiq, tmp_path)
    _ok(pkiq("ca", "gencrl", "Root"))
    export = tmp_path / "export"
    _ok(pkiq("ca", "export-openssl", "Root", export, "--handover"))
    passfile = tmp_path / "ca.pass"
    passfile.write_text(PASSPHRASE + "\n")
    openssl("ca", "-config", str(export / "openssl.cnf"), "-passin", f"file:{passfile}",
            "-gencrl", "-out", str(tmp_path / "openssl.crl"), cwd=export)
    text = openssl("crl", "-in", str(tmp_path / "openssl.crl"), "-noout", "-crlnumber").stdout
    assert text.decode().strip() == "crlNumber=0x02"  # openssl goes on from pkiq's CRL 1
    clock.advance(days=30)  # far past nextUpdate: renewal would be due, forced or not
    with transaction(app.sessions) as session:
        upkeep.renew_own_crls(session, lambda ca: authority.load_signer(
            ca, PASSPHRASE.encode()), clock(), dt.timedelta(hours=24), force=True)
        assert authority.latest_crl(session, authority.get_ca(session, "Root")).number == 1
        keys = [p.key for p in upkeep.problems(session, clock(), dt.timedelta(hours=48))]
    assert not [k for k in keys if k.startswith(("own-expiry:", "own-renew:"))]
    status = json.loads(_ok(pkiq("crl", "status", "--json")).stdout)
    assert not [i for i in status["issuers"] if i.get("origin") == "pkiq CA Root"]


def test_a_handover_whose_export_cannot_be_written_hands_nothing_over(pkiq, tmp_path):
    serial, csr = _root(pkiq, tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    _one_line_error(pkiq("ca", "export-openssl", "Root", busy, "--handover"), 7)
    _ok(pkiq("ca", "sign", "Root", csr))
    assert json.loads(_ok(pkiq("ca", "show", "Root", "--json")).stdout)["handed_over_at"] is None


def test_a_handover_waits_for_a_signature_under_way_and_exports_it(sessions, clock, app,
                                                                   tmp_path):
    """A certificate signed while the handover starts is in the exported index.txt (the
    signer holds the CA row shared, the handover waits for it to commit), and nothing is
    signed after: the index openssl takes over is the whole truth."""
    import threading

    from service import cas

    from .domain import PASS, new_ca

    new_ca(sessions, clock)
    signed, release, results = threading.Event(), threading.Event(), {}

    def sign_slowly():
        with transaction(sessions) as session:
            ca = authority.get_ca(session, "Root")
            record = authority.sign_csr(session, ca, authority.load_signer(ca, PASS),
                                        make_csr("late.example.com"), profile="webserver",
                                        now=clock()).record
            results["serial"] = record.serial
            signed.set()
            release.wait(30)

    def hand_over():
        results["export"] = cas.export_openssl(app, "Root", tmp_path / "export",
                                               handover=True)

    signer = threading.Thread(target=sign_slowly)
    signer.start()
    assert signed.wait(30)
    handing = threading.Thread(target=hand_over)
    handing.start()
    handing.join(1.0)
    assert handing.is_alive()  # waiting for the signature to commit
    release.set()
    signer.join(30)
    handing.join(30)
    index = (tmp_path / "export" / "index.txt").read_text()
    assert f"\t{results['serial']}\t" in index
    assert results["export"]["handed_over"] is True
    with transaction(sessions) as session:
        ca = authority.get_ca(session, "Root")
        try:
            authority.sign_csr(session, ca, authority.load_signer(ca, PASS),
                               make_csr("after.example.com"), profile="webserver", now=clock())
        except authority.HandedOver:
            pass
        else:
            raise AssertionError("signed after the handover")
