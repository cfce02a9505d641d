"""The delegated OCSP responder certificate of each CA (RFC 6960 section 4.2.2.2): what it
says, where its key lives, and its renewal by beat at half life, moved by an injected clock;
and the answers it signs under pkilint's RFC 6960 linter."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from pkilint import loader, pkix
from pkilint.pkix import extension, name
from pkilint.pkix import ocsp as pkilint_ocsp
from sqlalchemy import func, select

from ca import authority
from ca import ocsp as ca_ocsp
from ca.errors import WrongPassphrase
from ca.keys import describe_key
from ca.models import Certificate, OcspResponder
from scheduler import tick
from service import ServiceContext, cas
from service import ocsp as service_ocsp
from shell.db import transaction
from shell.settings import Settings

from .conftest import PASSPHRASE, make_csr
from .test_pkilint import _findings

PASS = PASSPHRASE.encode()


@pytest.fixture
def ctx(tmp_path, clock):
    context = ServiceContext(Settings(data_dir=tmp_path / "data",
                                      database_url=f"sqlite:///{tmp_path / 'pkiq.db'}"), clock)
    cas.create_ca(context, name="Root", subject="/C=GB/O=Example/CN=Example Root CA",
                  key_type="ec-p256", days=3650, passphrase=PASS)
    cas.create_ca(context, name="Rsa", subject="/C=GB/O=Example/CN=Example RSA CA",
                  key_type="rsa2048", days=3650, passphrase=PASS)
    cas.create_ca(context, name="Sub", subject="/C=GB/O=Example/CN=Example Sub CA",
                  key_type="ec-p384", days=1000, passphrase=PASS, parent="Root",
                  parent_passphrase=PASS)
    yield context
    context.close()


def responders(ctx) -> dict[str, list[OcspResponder]]:
    with ctx.read_transaction() as session:
        found: dict[str, list] = {}
        for ca in authority.list_cas(session):
            found[ca.name] = list(session.scalars(select(OcspResponder).where(
                OcspResponder.ca_id == ca.id).order_by(OcspResponder.id)))
        return found


def test_each_ca_gets_a_responder_that_may_sign_ocsp_only(ctx, clock):
    outcomes = service_ocsp.renew_responders(ctx, passphrase=PASS)
    assert sorted(o.ca for o in outcomes) == ["Root", "Rsa", "Sub"]
    assert all("no OCSP responder certificate yet" in o.reason for o in outcomes)
    for ca_name, rows in responders(ctx).items():
        [row] = rows
        cert = x509.load_der_x509_certificate(row.cert_der)
        ca_cert = cas.show_ca(ctx, ca_name)[1]
        assert cert.issuer == ca_cert.subject
        cert.verify_directly_issued_by(ca_cert)
        ext = cert.extensions
        assert ext.get_extension_for_class(x509.ExtendedKeyUsage).value == \
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING])
        assert isinstance(ext.get_extension_for_class(x509.OCSPNoCheck).value, x509.OCSPNoCheck)
        assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
        usage = ext.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature
        assert not usage.value.key_cert_sign and not usage.value.crl_sign
        assert ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier \
            == ca_cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier).value.digest
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        skew = dt.timedelta(seconds=300)
        assert lifetime == dt.timedelta(days=ca_ocsp.RESPONDER_DAYS) + skew
        assert cert.not_valid_before_utc == clock() - skew
        assert isinstance(cert.signature_hash_algorithm,
                          hashes.SHA384 if ca_name == "Sub" else hashes.SHA256)
        # the CA's key type, so whoever checks the CA's signatures checks these
        assert describe_key(cert.public_key()) == describe_key(ca_cert.public_key())
        assert cas.show_certificate(ctx, row.serial, ca_name)  # in the CA's index


def test_the_responder_key_is_encrypted_at_rest_under_the_ca_passphrase(ctx):
    service_ocsp.renew_responders(ctx, passphrase=PASS)
    [row] = responders(ctx)["Root"]
    assert row.key_pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(row.key_pem.encode(), None)
    with pytest.raises(WrongPassphrase):
        service_ocsp.load_responder(ctx, "Root", b"not the passphrase at all")
    responder = service_ocsp.load_responder(ctx, "Root", PASS)
    assert responder.key.public_key() == responder.cert.public_key()
    assert "PRIVATE" not in repr(responder) and PASSPHRASE not in repr(responder)


def test_renewal_when_less_than_half_the_life_is_left(ctx, clock):
    service_ocsp.renew_responders(ctx, passphrase=PASS)
    [first] = responders(ctx)["Root"]
    half = (first.not_after - first.not_before) / 2
    clock.now = first.not_after - half - dt.timedelta(seconds=1)  # more than half left
    assert service_ocsp.renew_responders(ctx, passphrase=PASS) == []
    clock.now = first.not_after - half  # half left: renew
    outcomes = service_ocsp.renew_responders(ctx, passphrase=PASS)
    assert sorted(o.ca for o in outcomes) == ["Root", "Rsa", "Sub"]
    assert "expires at" in outcomes[0].reason
    second = responders(ctx)["Root"][-1]
    assert second.serial != first.serial and second.not_after > first.not_after
    with ctx.read_transaction() as session:
        ca = authority.get_ca(session, "Root")
        assert ca_ocsp.current_responder(session, ca, clock()).serial == second.serial
    assert service_ocsp.renew_responders(ctx, passphrase=PASS) == []  # once


def test_a_lapsed_responder_is_replaced_and_the_web_sees_the_new_one(ctx, clock):
    service_ocsp.renew_responders(ctx, passphrase=PASS)
    first = service_ocsp.load_responder(ctx, "Root", PASS)
    clock.advance(days=ca_ocsp.RESPONDER_DAYS + 1)  # beat was down: none is valid now
    missing = service_ocsp.load_responder(ctx, "Root", PASS)
    assert missing.cert is None and "no OCSP responder certificate" in missing.unavailable
    [outcome] = [o for o in service_ocsp.renew_responders(ctx, passphrase=PASS)
                 if o.ca == "Root"]
    assert "no OCSP responder certificate yet" in outcome.reason
    assert service_ocsp.load_responder(ctx, "Root", PASS).cert != first.cert


def test_the_tick_renews_responders_beside_the_crls(ctx, clock):
    sessions = ctx.sessions
    signer_for = lambda ca: authority.load_signer(ca, PASS)  # noqa: E731
    report = tick.tick(sessions, clock, signer_for=signer_for, send=lambda *a: [],
                       passphrase=PASS)
    assert sorted(o.ca for o in report.responders) == ["Root", "Rsa", "Sub"]
    assert all(o.error is None for o in report.responders)
    clock.advance(hours=1)
    assert tick.tick(sessions, clock, signer_for=signer_for, send=lambda *a: [],
                     passphrase=PASS).responders == []
    clock.advance(days=2)
    renewed = tick.tick(sessions, clock, signer_for=signer_for, send=lambda *a: [],
                        passphrase=PASS).responders
    assert sorted(o.ca for o in renewed) == ["Root", "Rsa", "Sub"]
    # without the passphrase the tick leaves responders alone
    clock.advance(days=2)
    assert tick.tick(sessions, clock, signer_for=signer_for,
                     send=lambda *a: []).responders == []


def test_a_key_that_does_not_unlock_is_an_alert_not_a_failed_tick(ctx, clock):
    def signer_for(ca):
        if ca.name == "Rsa":
            raise WrongPassphrase("wrong passphrase for the key of CA 'Rsa'")
        return authority.load_signer(ca, PASS)
    sent = []
    report = tick.tick(ctx.sessions, clock, signer_for=signer_for,
                       send=lambda alert, severity: sent.append(alert.key) or [],
                       passphrase=PASS)
    by_ca = {o.ca: o for o in report.responders}
    assert by_ca["Rsa"].error and by_ca["Root"].error is None and by_ca["Sub"].error is None
    assert "ocsp-renew:Rsa" in sent


def test_handed_over_and_expired_cas_get_no_responder(ctx, clock, tmp_path):
    cas.export_openssl(ctx, "Rsa", tmp_path / "democa", handover=True)
    outcomes = service_ocsp.renew_responders(ctx, passphrase=PASS)
    assert sorted(o.ca for o in outcomes) == ["Root", "Sub"]
    clock.advance(days=1001)  # Sub has expired
    outcomes = service_ocsp.renew_responders(ctx, passphrase=PASS)
    assert sorted(o.ca for o in outcomes) == ["Root"]


def test_the_responder_notafter_never_passes_the_cas(tmp_path, clock):
    context = ServiceContext(Settings(data_dir=tmp_path / "d",
                                      database_url=f"sqlite:///{tmp_path / 'p.db'}"), clock)
    try:
        cas.create_ca(context, name="Short", subject="/CN=Short CA", key_type="ec-p256",
                      days=2, passphrase=PASS)
        service_ocsp.renew_responders(context, passphrase=PASS)
        responder = service_ocsp.load_responder(context, "Short", PASS)
        assert responder.cert.not_valid_after_utc == cas.show_ca(
            context, "Short")[1].not_valid_after_utc
    finally:
        context.close()


def test_revocations_bump_the_status_generation_and_list_the_serial(ctx, clock):
    issued = [cas.sign_request(ctx, "Root", make_csr(f"h{i}.example.com"), passphrase=PASS,
                               profile="webserver").info["serial"] for i in range(3)]
    assert service_ocsp.generations(ctx)[1] == 0
    cas.revoke(ctx, "Root", issued[0], reason="keyCompromise")
    cas.revoke(ctx, "Root", issued[1], reason="certificateHold")
    cas.release_hold(ctx, "Root", issued[1])
    gens = service_ocsp.generations(ctx)
    assert gens[1] == 3 and gens[2] == 0  # Root moved, Rsa did not
    assert service_ocsp.changed_serials(ctx, 1, 0, 3) == {int(issued[0], 16),
                                                          int(issued[1], 16)}
    assert service_ocsp.changed_serials(ctx, 1, 2, 3) == {int(issued[1], 16)}
    with transaction(ctx.sessions) as session:  # pruned history: the caller drops all
        from ca.models import OcspInvalidation
        session.query(OcspInvalidation).filter(OcspInvalidation.generation == 1).delete()
    assert service_ocsp.changed_serials(ctx, 1, 0, 3) is None
    with ctx.read_transaction() as session:
        assert session.scalar(select(func.count()).select_from(Certificate).where(
            Certificate.status == "R")) == 1


# ---------------------------------------------------------------- pkilint

def lint_ocsp_response(der: bytes):
    """pkilint's ``lint_ocsp_response`` (RFC 6960 response profile), in process."""
    validator = pkilint_ocsp.create_pkix_ocsp_response_validator_container(
        [pkilint_ocsp.create_response_decoder(),
         pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)], [])
    document = loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, "response")
    return _findings(validator.validate(document.root))


@pytest.mark.parametrize("ca_name", ["Root", "Rsa", "Sub"])
def test_answers_pass_pkilint(ctx, clock, ca_name):
    serial = cas.sign_request(ctx, ca_name, make_csr("lint.example.com"), passphrase=PASS,
                              profile="webserver").info["serial"]
    service_ocsp.renew_responders(ctx, passphrase=PASS)
    responder = service_ocsp.load_responder(ctx, ca_name, PASS)
    name_hash, key_hash = responder.hashes["sha256"]
    statuses = [ca_ocsp.Status("good"), ca_ocsp.Status("unknown"),
                ca_ocsp.Status("revoked", clock(), "keyCompromise"),
                ca_ocsp.Status("revoked", clock(), "unspecified")]
    for status in statuses:
        for nonce in (None, b"\x05" * 16):
            question = ca_ocsp.Question("sha256", name_hash, key_hash, int(serial, 16), nonce)
            der, _ = service_ocsp.sign_answer(responder, question, status, clock())
            findings = [f for f in lint_ocsp_response(der)
                        if f.severity in ("ERROR", "FATAL", "WARNING")]
            assert findings == [], (status, findings)
            answer = ocsp.load_der_ocsp_response(der)
            assert answer.certificate_status.name.lower() == status.state
    for state in ("malformedRequest", "tryLater", "unauthorized", "internalError"):
        der = ca_ocsp.unsuccessful(state)
        assert [f for f in lint_ocsp_response(der) if f.severity in ("ERROR", "FATAL")] == []
        assert ocsp.load_der_ocsp_response(der).response_status.name.replace(
            "_", "").lower() == state.lower()


def test_responder_certificates_pass_pkilint_rfc_5280(ctx):
    """pkilint's certificate and issuer/subject linters, as every certificate pkiq issues."""
    from .test_pkilint import lint_certificate, lint_chain

    service_ocsp.renew_responders(ctx, passphrase=PASS)
    for ca_name, rows in responders(ctx).items():
        der = rows[-1].cert_der
        issuer = cas.show_ca(ctx, ca_name)[1].public_bytes(serialization.Encoding.DER)
        bad = [f for f in lint_certificate(der) + lint_chain(issuer, der)
               if f.severity != "INFO"]  # INFO: the SKI is method 1 (RFC 5280 4.2.1.2)
        assert bad == [], (ca_name, [str(f) for f in bad])


def test_pkiq_ca_ocsp_responders_issues_them_now(ctx, clock, tmp_path):
    from click.testing import CliRunner

    from pkiq.cli import cli

    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    run = CliRunner()
    args = ["ca", "ocsp-responders", "--passphrase-file", str(passfile)]
    first = run.invoke(cli, [*args, "--json"], obj=ctx, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    issued = json.loads(first.output)
    assert sorted(o["ca"] for o in issued) == ["Root", "Rsa", "Sub"]
    assert all(o["serial"] and o["error"] is None for o in issued)
    again = run.invoke(cli, args, obj=ctx, catch_exceptions=False)
    assert again.exit_code == 0 and "every CA has a current OCSP responder" in again.output
    clock.advance(days=3)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase of these CAs\n")
    failed = run.invoke(cli, ["ca", "ocsp-responders", "--passphrase-file", str(wrong)],
                        obj=ctx, catch_exceptions=False)
    assert failed.exit_code == 1 and failed.output.count("FAILED") == 3
