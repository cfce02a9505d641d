"""The OCSP responder (RFC 6960) over a real uvicorn server on 127.0.0.1, asked by the real
``openssl ocsp`` client and by hand-made requests: good / revoked / unknown, SHA-1 and
SHA-256 CertIDs, nonces, GET and POST, hostile input (never a 500), and a revocation seen on
the very next request, on SQLite and on PostgreSQL. Time is the only fake: a clock set to
now, because openssl checks the answers' times against its own."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca import ocsp as ca_ocsp
from service import ServiceContext, cas
from service import ocsp as service_ocsp
from shell.settings import Settings

from .conftest import PASSPHRASE, FakeClock, make_csr, openssl
from .test_web_downloads import Served

PASS = PASSPHRASE.encode()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Estate:
    """Two CAs (an EC root with three leaves, an RSA root with one), their responders, and
    the files ``openssl ocsp`` reads."""

    def __init__(self, ctx: ServiceContext, folder: Path):
        self.ctx, self.folder = ctx, folder
        cas.create_ca(ctx, name="Root", subject="/C=GB/O=Example/CN=Example Root CA",
                      key_type="ec-p256", days=3650, passphrase=PASS)
        cas.create_ca(ctx, name="Other", subject="/C=GB/O=Example/CN=Other RSA CA",
                      key_type="rsa2048", days=3650, passphrase=PASS)
        self.leaves = {}
        for cn in ("a.example.com", "b.example.com", "c.example.com"):
            issued = cas.sign_request(ctx, "Root", make_csr(cn), passphrase=PASS,
                                      profile="webserver")
            self.leaves[cn] = (issued.info["serial"], self.write(cn, issued.certificate))
        issued = cas.sign_request(ctx, "Other", make_csr("rsa.example.com"), passphrase=PASS,
                                  profile="webserver")
        self.leaves["rsa.example.com"] = (issued.info["serial"],
                                          self.write("rsa.example.com", issued.certificate))
        self.ca_pem = {name: self.write(name, cas.show_ca(ctx, name)[1])
                       for name in ("Root", "Other")}
        outcomes = service_ocsp.renew_responders(ctx, passphrase=PASS)
        assert sorted(o.ca for o in outcomes if o.error is None) == ["Other", "Root"]
        self.responder_pem = {}
        for name in ("Root", "Other"):
            responder = service_ocsp.load_responder(ctx, name, PASS)
            self.responder_pem[name] = self.write(f"{name}-responder", responder.cert)

    def write(self, name: str, cert: x509.Certificate) -> Path:
        path = self.folder / f"{name}.pem"
        path.write_bytes(pem(cert))
        return path


@pytest.fixture
def now_clock() -> FakeClock:
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


def make_ctx(folder: Path, url: str, clock, passphrase: str | None = PASSPHRASE):
    return ServiceContext(Settings(data_dir=folder / "data", database_url=url,
                                   ca_passphrase=passphrase), clock)


@pytest.fixture
def estate(tmp_path, now_clock):
    ctx = make_ctx(tmp_path, f"sqlite:///{tmp_path / 'pkiq.db'}", now_clock)
    yield Estate(ctx, tmp_path)
    ctx.close()


@pytest.fixture
def served(estate):
    server = Served(estate.ctx)
    yield server
    server.close()


def ask(served: Served, estate: Estate, ca: str, *what: str, extra=(), va: Path | None = None
        ) -> str:
    """``openssl ocsp`` asking CA ``ca``'s responder; ``what`` are -cert FILE / -serial N
    arguments. Returns stdout and stderr together (openssl prints verification on stderr)."""
    done = openssl("ocsp", "-issuer", str(estate.ca_pem[ca]), *extra, *what,
                   "-url", served.url(f"/ocsp/{ca}"), "-resp_text",
                   "-VAfile", str(va or estate.responder_pem[ca]))
    return done.stdout.decode() + done.stderr.decode()


def cert_arg(estate: Estate, cn: str) -> tuple[str, str]:
    return "-cert", str(estate.leaves[cn][1])


def status_line(output: str, subject: str) -> str:
    found = re.search(rf"{re.escape(subject)}: (\w+)", output)
    assert found, output
    return found.group(1)


# ---------------------------------------------------------------- good, revoked, unknown

def test_good_certificates_are_good_and_the_answer_verifies(served, estate):
    for cn in ("a.example.com", "b.example.com", "c.example.com"):
        out = ask(served, estate, "Root", *cert_arg(estate, cn))
        assert status_line(out, str(estate.leaves[cn][1])) == "good"
        assert "Response verify OK" in out
        assert "OCSP Response Status: successful (0x0)" in out
    out = ask(served, estate, "Other", *cert_arg(estate, "rsa.example.com"))
    assert status_line(out, str(estate.leaves["rsa.example.com"][1])) == "good"
    assert "Response verify OK" in out and "sha256WithRSAEncryption" in out


def test_revoked_certificates_say_when_and_why(served, estate, now_clock):
    for cn, reason in (("a.example.com", "keyCompromise"), ("b.example.com", "superseded"),
                       ("c.example.com", "cessationOfOperation")):
        cas.revoke(estate.ctx, "Root", estate.leaves[cn][0], reason=reason)
        out = ask(served, estate, "Root", *cert_arg(estate, cn))
        assert status_line(out, str(estate.leaves[cn][1])) == "revoked"
        assert f"Reason: {reason}" in out
        assert f"Revocation Time: {now_clock.now:%b %e %H:%M:%S %Y} GMT" in out
        assert "Response verify OK" in out


def test_unspecified_revocation_has_no_reason_code(served, estate):
    cas.revoke(estate.ctx, "Other", estate.leaves["rsa.example.com"][0])
    out = ask(served, estate, "Other", *cert_arg(estate, "rsa.example.com"))
    assert status_line(out, str(estate.leaves["rsa.example.com"][1])) == "revoked"
    assert "Reason:" not in out  # RFC 5280 5.3.1: absent rather than unspecified


def test_serials_never_issued_are_unknown(served, estate):
    for serial in ("0x1234", "0x7F" + "00" * 15, "1"):
        out = ask(served, estate, "Root", "-serial", serial)
        assert re.search(r": unknown", out), out
        assert "Response verify OK" in out
    # a serial the other CA issued is unknown here too: a serial is unique per CA only
    rsa_serial = "0x" + estate.leaves["rsa.example.com"][0]
    assert ": unknown" in ask(served, estate, "Root", "-serial", rsa_serial)


def test_sha1_and_sha256_cert_ids_are_both_answered_in_kind(served, estate):
    leaf = estate.leaves["a.example.com"][1]
    for digest, oid_name in (("-sha1", "sha1"), ("-sha256", "sha256"), ("-sha384", "sha384")):
        out = ask(served, estate, "Root", digest, "-cert", str(leaf))
        assert status_line(out, str(leaf)) == "good"
        assert f"Hash Algorithm: {oid_name}" in out
        assert "Response verify OK" in out


def test_the_answer_names_the_responder_and_is_signed_sha256(served, estate):
    der = post(served, "Root", request_for(estate, "a.example.com")).content
    answer = ocsp.load_der_ocsp_response(der)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    responder = x509.load_pem_x509_certificate(estate.responder_pem["Root"].read_bytes())
    assert answer.certificates == [responder]
    assert answer.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
        responder.public_key()).digest
    assert isinstance(answer.signature_hash_algorithm, hashes.SHA256)
    responder.public_key().verify(answer.signature, answer.tbs_response_bytes,
                                  _ecdsa(answer.signature_hash_algorithm))
    assert answer.next_update_utc - answer.this_update_utc == ca_ocsp.RESPONSE_VALIDITY


def _ecdsa(algorithm):
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.ECDSA(algorithm)


def test_the_url_a_profile_writes_into_aia_is_the_responder(served, estate, tmp_path):
    """``pkiq ca set NAME --ocsp-url``: new certificates carry the URL, and openssl asks
    it as written there."""
    from click.testing import CliRunner

    from pkiq.cli import cli

    url = served.url("/ocsp/Root")
    result = CliRunner().invoke(cli, ["ca", "set", "Root", "--ocsp-url", url],
                                obj=estate.ctx, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    issued = cas.sign_request(estate.ctx, "Root", make_csr("aia.example.com"),
                              passphrase=PASS, profile="webserver")
    leaf = estate.write("aia", issued.certificate)
    found = openssl("x509", "-in", str(leaf), "-noout", "-ocsp_uri").stdout.decode().strip()
    assert found == url
    done = openssl("ocsp", "-issuer", str(estate.ca_pem["Root"]), "-cert", str(leaf),
                   "-url", found, "-CAfile", str(estate.ca_pem["Root"]))
    out = done.stdout.decode() + done.stderr.decode()
    assert status_line(out, str(leaf)) == "good" and "Response verify OK" in out


# ---------------------------------------------------------------- nonces and the cache

def test_a_nonce_is_echoed_and_its_answer_signed_afresh(served, estate):
    leaf = str(estate.leaves["b.example.com"][1])
    with_nonce = ask(served, estate, "Root", "-nonce", "-cert", leaf)
    assert "WARNING: no nonce in response" not in with_nonce
    assert with_nonce.count("OCSP Nonce") == 1  # -resp_text: echoed in the answer
    without = ask(served, estate, "Root", "-no_nonce", "-cert", leaf)
    assert "OCSP Nonce" not in without and "Response verify OK" in without
    # by hand: the nonce bytes come back, two nonces two answers
    for nonce in (b"\x01" * 16, b"\x02" * 32, b"n"):
        answer = ocsp.load_der_ocsp_response(post(
            served, "Root", request_for(estate, "b.example.com", nonce=nonce)).content)
        assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_nonce_less_answers_are_served_from_the_cache_and_nonced_ones_are_not(served, estate):
    request = request_for(estate, "c.example.com")
    first = post(served, "Root", request).content
    assert post(served, "Root", request).content == first  # the same signed bytes
    nonced = request_for(estate, "c.example.com", nonce=b"\x07" * 16)
    assert post(served, "Root", nonced).content != post(served, "Root", nonced).content


def test_a_cached_answer_is_signed_again_half_way_to_its_next_update(served, estate,
                                                                     now_clock):
    request = request_for(estate, "c.example.com")
    first = post(served, "Root", request).content
    now_clock.advance(seconds=ca_ocsp.RESPONSE_VALIDITY.total_seconds() / 2 - 1)
    assert post(served, "Root", request).content == first
    now_clock.advance(seconds=2)
    later = ocsp.load_der_ocsp_response(post(served, "Root", request).content)
    assert later.this_update_utc == now_clock.now


def test_unknown_answers_are_not_cached(served, estate):
    request = request_by_serial(estate, "Root", 0x4242)
    answers = {post(served, "Root", request).content for _ in range(2)}
    assert len(answers) == 2  # ECDSA: each signature is new


# ---------------------------------------------------------------- GET (RFC 6960 A.1)

def _nonce_making_slash_and_plus(estate) -> tuple[bytes, bytes]:
    for n in range(256):
        nonce = bytes([n, 0xFB, 0xFF, 0xBF]) * 4
        der = request_for(estate, "a.example.com", nonce=nonce)
        text = base64.b64encode(der)
        if b"/" in text and b"+" in text:
            return nonce, der
    raise AssertionError("no nonce gives both '/' and '+'")


def test_get_with_the_request_in_the_path_encoded_or_not(served, estate):
    nonce, der = _nonce_making_slash_and_plus(estate)
    text = base64.b64encode(der).decode()
    for path in (quote(text, safe=""), text, quote(text, safe="/"), text.rstrip("=")):
        response = requests.get(served.url(f"/ocsp/Root/{path}"), timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/ocsp-response"
        answer = ocsp.load_der_ocsp_response(response.content)
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, path
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    plain = request_for(estate, "b.example.com")
    url = served.url("/ocsp/Root/" + quote(base64.b64encode(plain).decode(), safe=""))
    first = requests.get(url, timeout=10).content
    assert requests.get(url, timeout=10).content == first  # cached as POST answers are
    assert ocsp.load_der_ocsp_response(first).serial_number == int(
        estate.leaves["b.example.com"][0], 16)


# ---------------------------------------------------------------- hostile input

def malformed(response: requests.Response) -> bool:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/ocsp-response"
    return (ocsp.load_der_ocsp_response(response.content).response_status
            == ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


def test_garbage_and_truncated_requests_are_malformed_never_500(served, estate):
    good = request_for(estate, "a.example.com", nonce=b"x" * 16)
    bodies = [b"", b"\x00", b"garbage" * 10, good[:10], good[:-1], good[:-20],
              good + b"\x00", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80" + good + b"\x00\x00",
              bytes(range(256)), good.replace(b"\x02", b"\x05", 3)]
    for body in bodies:
        assert malformed(post(served, "Root", body)), body
    for path in ("!!!", "%ZZ", "AAAA", "%00", quote(base64.b64encode(good[:-3]), safe=""),
                 "a" * 5000, ""):
        assert malformed(requests.get(served.url(f"/ocsp/Root/{path}"), timeout=10)), path


def test_requests_breaking_rfc_6960_are_malformed(served, estate):
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        b"\x00" * 20, b"\x00" * 20, 5, hashes.SHA1())
    too_long_nonce = request_for(estate, "a.example.com", nonce=b"n" * 33)  # RFC 8954
    critical = builder.add_extension(x509.OCSPNonce(b"abc"), True).build()
    two = openssl("ocsp", "-issuer", str(estate.ca_pem["Root"]), "-serial", "1", "-serial",
                  "2", "-reqout", "/dev/stdout", "-no_nonce").stdout
    md5 = openssl("ocsp", "-md5", "-issuer", str(estate.ca_pem["Root"]), "-serial", "1",
                  "-reqout", "/dev/stdout", "-no_nonce").stdout
    for der in (too_long_nonce, two, md5):
        assert malformed(post(served, "Root", der))
    # a critical nonce is understood, so it is answered
    answer = ocsp.load_der_ocsp_response(
        post(served, "Root", critical.public_bytes(serialization.Encoding.DER)).content)
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_another_issuers_cert_id_is_unauthorized(served, estate):
    rsa_leaf = x509.load_pem_x509_certificate(
        estate.leaves["rsa.example.com"][1].read_bytes())
    other = x509.load_pem_x509_certificate(estate.ca_pem["Other"].read_bytes())
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        der = ocsp.OCSPRequestBuilder().add_certificate(rsa_leaf, other, algorithm).build() \
            .public_bytes(serialization.Encoding.DER)
        answer = ocsp.load_der_ocsp_response(post(served, "Root", der).content)
        assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
        right = ocsp.load_der_ocsp_response(post(served, "Other", der).content)
        assert right.certificate_status == ocsp.OCSPCertStatus.GOOD
    # right name, wrong key hash (a CA of the same name on another key)
    name_hash, _ = ca_ocsp.issuer_hashes(
        x509.load_pem_x509_certificate(estate.ca_pem["Root"].read_bytes()))["sha1"]
    der = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, b"\x01" * 20, 1, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)
    answer = ocsp.load_der_ocsp_response(post(served, "Root", der).content)
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_http_level_refusals(served, estate):
    good = request_for(estate, "a.example.com")
    huge = requests.post(served.url("/ocsp/Root"), data=b"\x30" * 100_000, timeout=10,
                         headers={"content-type": "application/ocsp-request"})
    assert huge.status_code == 413
    chunked = requests.post(served.url("/ocsp/Root"), data=iter([b"\x30" * 5000] * 4),
                            timeout=10, headers={"content-type": "application/ocsp-request"})
    assert chunked.status_code == 413  # no Content-Length: counted as it arrives
    big_get = requests.get(served.url("/ocsp/Root/" + "A" * 20_000), timeout=10)
    assert big_get.status_code in (413, 414)
    for media in ("text/plain", "application/x-www-form-urlencoded", ""):
        wrong = requests.post(served.url("/ocsp/Root"), data=good, timeout=10,
                              headers={"content-type": media})
        assert wrong.status_code == 415
    for name in ("Nobody", "a" * 65, "R%00", "%2E%2E"):
        assert post(served, name, good).status_code == 404
        assert requests.get(served.url(f"/ocsp/{name}/{base64.b64encode(good).decode()}"),
                            timeout=10).status_code == 404
    assert requests.put(served.url("/ocsp/Root"), data=good, timeout=10).status_code == 405
    raw_status, _ = served.raw("GET /ocsp/Root/%GG%ZZ HTTP/1.1")
    assert raw_status == 200


# ---------------------------------------------------------------- no passphrase, handover

@pytest.fixture
def served_without_passphrase(estate, tmp_path, now_clock):
    """Started before the test's call (uvicorn configures logging as it starts, which would
    take caplog's handler off the root logger mid-test)."""
    ctx = make_ctx(tmp_path, estate.ctx.settings.database_url, now_clock, passphrase=None)
    server = Served(ctx)
    yield server
    server.close()
    ctx.close()


def test_without_a_passphrase_the_answer_is_try_later_with_one_log_line(
        estate, served_without_passphrase, caplog):
    for cn in ("a.example.com", "b.example.com", "a.example.com"):
        answer = ocsp.load_der_ocsp_response(
            post(served_without_passphrase, "Root", request_for(estate, cn)).content)
        assert answer.response_status == ocsp.OCSPResponseStatus.TRY_LATER
    told = [r for r in caplog.records if "tryLater" in r.getMessage()]
    assert len(told) == 1 and "no CA passphrase" in told[0].getMessage()
    assert PASSPHRASE not in caplog.text


def test_a_ca_without_a_responder_yet_is_try_later(tmp_path, now_clock):
    ctx = make_ctx(tmp_path, f"sqlite:///{tmp_path / 'pkiq.db'}", now_clock)
    cas.create_ca(ctx, name="Fresh", subject="/CN=Fresh CA", key_type="ec-p256", days=365,
                  passphrase=PASS)
    server = Served(ctx)
    try:
        der = request_by_serial_for(ctx, "Fresh", 1)
        answer = ocsp.load_der_ocsp_response(post(server, "Fresh", der).content)
        assert answer.response_status == ocsp.OCSPResponseStatus.TRY_LATER
    finally:
        server.close()
        ctx.close()


def test_a_renewed_responder_certificate_is_taken_up_by_the_running_server(served, estate,
                                                                          now_clock):
    from .test_web_downloads import wait_for

    first = x509.load_pem_x509_certificate(estate.responder_pem["Root"].read_bytes())
    answer = ocsp.load_der_ocsp_response(post(served, "Root", request_for(estate,
                                                                        "a.example.com")).content)
    assert answer.certificates == [first]
    now_clock.now = first.not_valid_after_utc - dt.timedelta(days=1)  # past half life
    renewed = [o for o in service_ocsp.renew_responders(estate.ctx, passphrase=PASS)
               if o.ca == "Root"]
    assert renewed and renewed[0].error is None

    def signer() -> x509.Certificate:
        der = post(served, "Root", request_for(estate, "b.example.com",
                                               nonce=b"r" * 16)).content
        return ocsp.load_der_ocsp_response(der).certificates[0]

    second = wait_for(lambda: (found := signer()) != first and found)
    assert f"{int(renewed[0].serial, 16):X}" == f"{second.serial_number:X}"
    assert second.not_valid_after_utc > first.not_valid_after_utc


# ---------------------------------------------------------------- revocation at once

@pytest.mark.parametrize("through", ["service", "cli"])
def test_a_revocation_is_answered_at_once_and_listed_by_the_next_crl(
        db_url, tmp_path, now_clock, through):
    """Item 5 of issue 15, on SQLite and PostgreSQL (``db_url``): the answer was cached as
    good; the revocation, committed by another context as the CLI would, is seen on the very
    next request, and the tick's CRL renewal, due from the same commit, lists it."""
    from click.testing import CliRunner

    from ca import authority
    from pkiq.cli import cli
    from scheduler import upkeep
    from shell.db import transaction

    ctx = make_ctx(tmp_path, db_url, now_clock)
    estate = Estate(ctx, tmp_path)
    cas.generate_crl(ctx, "Root", passphrase=PASS)
    server = Served(ctx)
    other = make_ctx(tmp_path, db_url, now_clock)  # another process's view of the database
    try:
        serial, leaf = estate.leaves["a.example.com"]
        for _ in range(2):  # the second one from the cache
            assert status_line(ask(server, estate, "Root", "-no_nonce", "-cert", str(leaf)),
                               str(leaf)) == "good"
        now_clock.advance(seconds=1)
        if through == "service":
            cas.revoke(other, "Root", serial, reason="keyCompromise")
        else:
            result = CliRunner().invoke(cli, ["ca", "revoke", "Root", serial, "--reason",
                                              "keyCompromise"], obj=other,
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.output
        out = ask(server, estate, "Root", "-no_nonce", "-cert", str(leaf))
        assert status_line(out, str(leaf)) == "revoked" and "keyCompromise" in out
        # the other serials' cached answers are untouched: the same bytes as before
        b_request = request_for(estate, "b.example.com")
        assert post(server, "Root", b_request).content == post(server, "Root",
                                                               b_request).content
        with transaction(other.sessions) as session:
            ca = authority.get_ca(session, "Root")
            assert "revoked after CRL" in upkeep.own_crl_reason(
                session, ca, now_clock(), dt.timedelta(hours=1))
            renewed = upkeep.renew_own_crls(
                session, lambda ca: authority.load_signer(ca, PASS), now_clock(),
                dt.timedelta(hours=1))
        [outcome] = [o for o in renewed if o.ca == "Root"]
        assert outcome.crl_number == 2 and "revoked after CRL 1" in outcome.reason
        assert _wait_crl(server, serial)
        # released from hold: good again at once
        b_serial, b_leaf = estate.leaves["b.example.com"]
        cas.revoke(other, "Root", b_serial, reason="certificateHold")
        assert status_line(ask(server, estate, "Root", "-no_nonce", "-cert", str(b_leaf)),
                           str(b_leaf)) == "revoked"
        cas.release_hold(other, "Root", b_serial)
        assert status_line(ask(server, estate, "Root", "-no_nonce", "-cert", str(b_leaf)),
                           str(b_leaf)) == "good"
    finally:
        server.close()
        other.close()
        ctx.close()


def _wait_crl(server: Served, serial: str) -> bool:
    """The CRL download is refreshed within its one-second window (web.cache)."""
    from .test_web_downloads import wait_for
    return wait_for(lambda: x509.load_der_x509_crl(requests.get(
        server.url("/ca/Root.crl"), timeout=10).content
    ).get_revoked_certificate_by_serial_number(int(serial, 16)) is not None)


# ---------------------------------------------------------------- request builders

def post(served: Served, ca: str, der: bytes) -> requests.Response:
    return requests.post(served.url(f"/ocsp/{ca}"), data=der, timeout=10,
                         headers={"content-type": "application/ocsp-request"})


def request_for(estate: Estate, cn: str, *, nonce: bytes | None = None,
                algorithm=None) -> bytes:
    leaf = x509.load_pem_x509_certificate(estate.leaves[cn][1].read_bytes())
    issuer = x509.load_pem_x509_certificate(estate.ca_pem["Root"].read_bytes())
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def request_by_serial(estate: Estate, ca: str, serial: int) -> bytes:
    return request_by_serial_for(estate.ctx, ca, serial)


def request_by_serial_for(ctx: ServiceContext, ca: str, serial: int) -> bytes:
    name_hash, key_hash = ca_ocsp.issuer_hashes(cas.show_ca(ctx, ca)[1])["sha1"]
    return ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)


def test_fresh_read_never_answers_with_a_read_older_than_the_request():
    """What "at once" rests on (web.ocsp.FreshRead): a request that arrives while a read
    runs waits for the next one, and the twenty that arrive then share that one."""
    import asyncio
    import time

    from web.ocsp import FreshRead

    started = []

    def read() -> int:
        started.append(time.monotonic())
        time.sleep(0.02)
        return len(started)

    async def main():
        fresh = FreshRead(read, spacing=0.005)
        first = asyncio.get_running_loop().create_task(fresh.get())
        while not started:
            await asyncio.sleep(0.001)  # the first read is under way
        arrived = time.monotonic()
        later = await asyncio.gather(*(fresh.get() for _ in range(20)))
        assert await first == 1
        assert set(later) == {2} and started[1] >= arrived
        assert started[1] - started[0] >= 0.005  # spaced
        assert await fresh.get() == 3  # nothing is answered from an older read

    asyncio.run(main())


def test_a_handover_makes_the_running_responder_unauthorized_at_once(served, estate,
                                                                    tmp_path):
    """After ``export-openssl --handover`` openssl ca revokes there: pkiq's index may be
    behind, so its answers stop (unauthorized), cached ones included."""
    request = request_for(estate, "a.example.com")
    first = ocsp.load_der_ocsp_response(post(served, "Root", request).content)
    assert first.certificate_status == ocsp.OCSPCertStatus.GOOD
    cas.export_openssl(estate.ctx, "Root", tmp_path / "democa", handover=True)
    for der in (request, request_for(estate, "b.example.com", nonce=b"h" * 16)):
        answer = ocsp.load_der_ocsp_response(post(served, "Root", der).content)
        assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    other = ocsp.load_der_ocsp_response(post(
        served, "Other", request_by_serial(estate, "Other", 5)).content)
    assert other.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
