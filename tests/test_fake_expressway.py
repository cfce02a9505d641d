"""The fake Expressway (tests/fake_expressway.py) itself, through ``requests`` and ``ssl``
against its real HTTPS listener, so the publisher's tests can rely on what it does."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import fake_expressway as fx
from .httpd import HOST, make_ca
from .storepki import key_pem, pem

expressway = fx.expressway

DATA = Path(__file__).parent / "data"
RAML = "/api/raml"
SERVER = "/api/provisioning/certs/server"
ROOT = "/api/provisioning/certs/root"
RESTART = "/api/provisioning/restart"


def call(fake: fx.FakeExpressway, method: str, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", fake.auth)
    return requests.request(method, fake.url + path, verify=str(fake.ca_file), timeout=5,
                            **kwargs)


def upload(fake: fx.FakeExpressway, cert_pem: bytes | None, key: bytes | None
           ) -> requests.Response:
    files = {"file": ("server.pem", cert_pem), "key": ("server.key", key)}
    return call(fake, "POST", SERVER, files={k: v for k, v in files.items() if v[1] is not None})


def presented(fake: fx.FakeExpressway) -> bytes:
    """The DER certificate the listener presents, verified against the factory CA."""
    context = ssl.create_default_context(cafile=str(fake.ca_file))
    with (socket.create_connection((HOST, fake.port), timeout=5) as raw,
          context.wrap_socket(raw, server_hostname=HOST) as tls):
        return tls.getpeercert(binary_form=True)


def new_server_cert(name: str = "exp1.example.com", **kwargs):
    kwargs.setdefault("dns", (name,))
    return fx.issue(fx.factory_tls().ca, name, ips=(HOST,), **kwargs)


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------- auth and RAML


def test_every_call_needs_the_basic_credentials_and_none_is_recorded_with_its_password(
        expressway):
    for auth in (None, ("admin", "not-the-password")):
        answer = call(expressway, "GET", RAML, auth=auth)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="Expressway"'
        assert answer.json() == {"Message": "Authentication failed"}
    assert call(expressway, "GET", RAML).status_code == 200
    assert [(s.method, s.path, s.username, s.status) for s in expressway.requests] == [
        ("GET", RAML, None, 401), ("GET", RAML, "admin", 401), ("GET", RAML, "admin", 200)]
    logged = repr(expressway.requests)
    assert "not-the-password" not in logged and expressway.password not in logged


def test_the_raml_describes_the_certificate_resources_nested_under_api(expressway):
    answer = call(expressway, "GET", RAML)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/raml+yaml"
    text = answer.text
    assert text.splitlines()[:4] == ["#%RAML 1.0", "title: Cisco Expressway REST API",
                                     "version: X8.10", "baseUri: https://{host}/api"]
    for nested in ("\n/provisioning:\n  /certs:\n    /server:\n      get:\n",
                   "\n      post:\n", "\n    /root:\n      get:\n",
                   "\n      /{fingerprint}:\n        delete:\n",
                   "\n    /generate_csr:\n      post:\n", "\n  /restart:\n    post:\n"):
        assert nested in text


def test_the_raml_can_lack_a_resource_or_be_missing_altogether(tmp_path):
    tls = fx.factory_tls()
    ca_file = tls.ca_file(tmp_path)
    raml = fx.make_raml(without=["/provisioning/restart", "post /provisioning/certs/server"])
    with fx.FakeExpressway(tls.cert, tls.key, raml=raml, ca_file=ca_file) as fake:
        text = call(fake, "GET", RAML).text
        assert "/restart:" not in text and "/server:\n      get:" in text
        assert "/server:\n      get:\n        description: \"The server certificate" in text
        assert "Upload a server certificate" not in text
        assert call(fake, "POST", RESTART).status_code == 202  # the endpoint is still there
    with fx.FakeExpressway(tls.cert, tls.key, raml="", ca_file=ca_file) as fake:
        answer = call(fake, "GET", RAML)
        assert answer.status_code == 404 and "Message" in answer.json()


# ---------------------------------------------------------------- the server certificate


def test_an_upload_is_read_back_at_once_and_presented_only_after_the_restart(expressway):
    factory = fx.factory_tls().cert
    before = call(expressway, "GET", SERVER).json()
    assert before == {"certificate": pem(factory).decode(),
                      "subject": "CN=exp1.example.com",
                      "not_after": factory.not_valid_after_utc.isoformat()}
    cert, key = new_server_cert()

    answer = upload(expressway, pem(cert), key_pem(key))
    assert answer.status_code == 200
    assert answer.json() == {"Message": fx.MSG_UPLOADED, "restart_required": True,
                             "warnings": []}
    assert expressway.server_cert == cert and expressway.pending_restart
    assert call(expressway, "GET", SERVER).json()["certificate"] == pem(cert).decode()
    assert presented(expressway) == der(factory)  # as a real Expressway: not before a restart

    expressway.down_for(0.3)
    started = time.monotonic()
    answer = call(expressway, "POST", RESTART)
    assert (answer.status_code, answer.json()) == (202, {"Message": "Restarting"})
    assert expressway.restarts == 1 and not expressway.pending_restart
    with pytest.raises(OSError):  # down: the handshake is cut
        presented(expressway)
    assert expressway.refused >= 1
    expressway.wait_up()
    assert presented(expressway) == der(cert)
    assert time.monotonic() - started >= 0.3
    assert call(expressway, "GET", SERVER).json()["certificate"] == pem(cert).decode()


def test_a_restart_cuts_open_connections_and_refuses_new_ones_while_down(expressway):
    # verify= on each call: REQUESTS_CA_BUNDLE in the environment overrides Session.verify
    get = {"url": expressway.url + SERVER, "auth": expressway.auth,
           "verify": str(expressway.ca_file), "timeout": 5}
    with requests.Session() as session:
        assert session.get(**get).status_code == 200
        expressway.down_for(0.2)
        expressway.restart()
        assert expressway.is_down
        with pytest.raises(requests.ConnectionError):
            session.get(**get)
        expressway.wait_up()
        assert session.get(**get).status_code == 200
    assert presented(expressway) == der(fx.factory_tls().cert)  # nothing was uploaded


def test_an_uploaded_chain_is_kept_and_read_back_after_the_leaf(expressway):
    cert, key = new_server_cert()
    ca_pem = fx.factory_tls().ca.cert_pem
    assert upload(expressway, pem(cert) + ca_pem, key_pem(key)).status_code == 200
    assert expressway.server_chain == [fx.factory_tls().ca.cert]
    assert call(expressway, "GET", SERVER).json()["certificate"] == (pem(cert) + ca_pem).decode()
    expressway.down_for(0.05)
    expressway.restart()
    expressway.wait_up()
    assert presented(expressway) == der(cert)


def _encrypted(key, form) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form,
                             serialization.BestAvailableEncryption(b"passphrase"))


def _wildcard(cn: str, dns: tuple[str, ...]):
    def parts(_cert, _key):
        cert, key = new_server_cert(cn, dns=dns)
        return pem(cert), key_pem(key)
    return parts


REFUSALS = {  # case: ((cert, key) -> (file part, key part)), the expected message
    "no key part": (lambda c, k: (pem(c), None), fx.MSG_BOTH_REQUIRED),
    "no file part": (lambda c, k: (None, key_pem(k)), fx.MSG_BOTH_REQUIRED),
    "empty key part": (lambda c, k: (pem(c), b""), fx.MSG_BOTH_REQUIRED),
    "certificate garbage": (lambda c, k: (b"not a certificate\n", key_pem(k)), fx.MSG_BAD_CERT),
    "PKCS#8 encrypted key": (
        lambda c, k: (pem(c), _encrypted(k, serialization.PrivateFormat.PKCS8)),
        fx.MSG_KEY_ENCRYPTED),
    "traditional encrypted key (Proc-Type)": (
        lambda c, k: (pem(c), _encrypted(k, serialization.PrivateFormat.TraditionalOpenSSL)),
        fx.MSG_KEY_ENCRYPTED),
    "encrypted before newline": (
        lambda c, k: (pem(c), _encrypted(k, serialization.PrivateFormat.PKCS8).rstrip()),
        fx.MSG_KEY_ENCRYPTED),
    "key without a trailing newline": (lambda c, k: (pem(c), key_pem(k).rstrip(b"\n")),
                                       fx.MSG_KEY_NEWLINE),
    "key garbage": (lambda c, k: (pem(c), b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                          b"-----END PRIVATE KEY-----\n"), fx.MSG_BAD_KEY),
    "another key": (lambda c, k: (pem(c), key_pem(ec.generate_private_key(ec.SECP256R1()))),
                    fx.MSG_KEY_MISMATCH),
    "wildcard SAN": (_wildcard("exp1.example.com", ("*.example.com",)), fx.MSG_WILDCARD),
    "wildcard CN": (_wildcard("*.example.com", ("exp1.example.com",)), fx.MSG_WILDCARD),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_an_upload_the_expressway_would_refuse_is_a_400_and_changes_nothing(expressway, case):
    parts, message = REFUSALS[case]
    cert, key = new_server_cert()
    answer = upload(expressway, *parts(cert, key))
    assert (answer.status_code, answer.json()) == (400, {"Message": message})
    assert expressway.server_cert is None and not expressway.pending_restart


def test_the_checks_run_in_order_a_mismatched_wildcard_is_a_mismatch(expressway):
    cert, _ = new_server_cert("*.example.com")
    answer = upload(expressway, pem(cert), key_pem(ec.generate_private_key(ec.SECP256R1())))
    assert answer.json() == {"Message": fx.MSG_KEY_MISMATCH}


def test_an_rsa_8192_key_is_accepted_with_the_sip_tls_warning(expressway):
    key_bytes = (DATA / "rsa8192-test-only.key").read_bytes()
    key = serialization.load_pem_private_key(key_bytes, None,
                                             unsafe_skip_rsa_key_validation=True)  # 3 s saved
    cert, _ = new_server_cert(key=key)
    answer = upload(expressway, pem(cert), key_bytes)
    assert answer.status_code == 200
    warnings = answer.json()["warnings"]
    assert warnings == [fx.msg_large_rsa(8192)]
    assert warnings[0].startswith("An 8192-bit key is not supported for SIP TLS")
    assert expressway.server_cert == cert and expressway.pending_restart


# ---------------------------------------------------------------- trusted CAs


def test_trusted_cas_are_added_idempotently_refused_by_subject_and_deleted(expressway):
    first, second, namesake = make_ca("Trusted A"), make_ca("Trusted B"), make_ca("Trusted A")
    both = {"file": ("cas.pem", first.cert_pem + second.cert_pem)}
    answer = call(expressway, "POST", ROOT, files=both)
    assert answer.json() == {"Message": "CA certificate(s) added", "added": 2}
    assert expressway.trusted == [first.cert, second.cert]
    assert call(expressway, "GET", ROOT).json() == {"certificates": [
        {"subject": "CN=Trusted A", "pem": first.cert_pem.decode()},
        {"subject": "CN=Trusted B", "pem": second.cert_pem.decode()}]}

    again = call(expressway, "POST", ROOT, files={"file": ("a.pem", first.cert_pem)})
    assert (again.status_code, again.json()["added"]) == (200, 0)
    clash = call(expressway, "POST", ROOT, files={"file": ("a.pem", namesake.cert_pem)})
    assert (clash.status_code, clash.json()) == (400, {"Message": fx.msg_same_subject(
        "CN=Trusted A")})
    assert clash.json()["Message"] == ("A CA certificate with subject CN=Trusted A is already "
                                       "in the trusted CA list")
    garbage = call(expressway, "POST", ROOT, files={"file": ("x.pem", b"garbage\n")})
    assert (garbage.status_code, garbage.json()) == (400, {"Message": fx.MSG_BAD_CA})
    assert expressway.trusted == [first.cert, second.cert]

    gone = call(expressway, "DELETE", f"{ROOT}/{fx.fingerprint(first.cert)}")
    assert gone.status_code == 200 and expressway.trusted == [second.cert]
    missing = call(expressway, "DELETE", f"{ROOT}/{fx.fingerprint(first.cert)}")
    assert (missing.status_code, missing.json()) == (404, {"Message": fx.MSG_NO_CA})


def test_a_change_behind_the_clients_back_is_what_it_reads(expressway):
    cert, _ = new_server_cert("exp2.example.com")
    other = make_ca("Put there by hand")
    expressway.set_held(server_cert=cert, trusted=[other.cert])
    assert call(expressway, "GET", SERVER).json()["subject"] == "CN=exp2.example.com"
    assert [c["subject"] for c in call(expressway, "GET", ROOT).json()["certificates"]] == [
        "CN=Put there by hand"]
    assert not expressway.pending_restart


# ---------------------------------------------------------------- faults and edges


def test_fail_answers_the_next_calls_to_a_path_with_the_status_then_stops(expressway):
    expressway.fail(SERVER, 503, times=2, message="busy")
    assert call(expressway, "GET", SERVER).json() == {"Message": "busy"}
    answer = call(expressway, "POST", SERVER, auth=None)  # any method, before the auth check
    assert (answer.status_code, answer.json()) == (503, {"Message": "busy"})
    assert call(expressway, "GET", SERVER).status_code == 200
    expressway.fail(ROOT, 500)
    answer = call(expressway, "GET", ROOT)
    assert (answer.status_code, answer.json()) == (500, {"Message": "Internal Server Error"})


def test_drop_closes_the_connection_without_an_answer(expressway):
    expressway.drop(RESTART)
    with pytest.raises(requests.ConnectionError):
        call(expressway, "POST", RESTART)
    assert expressway.restarts == 0
    assert expressway.requests[-1].status is None
    assert call(expressway, "POST", RESTART).status_code == 202


def test_unknown_paths_wrong_methods_large_bodies_and_csrs_get_json_errors(expressway):
    answer = call(expressway, "GET", "/api/provisioning/nothing")
    assert answer.status_code == 404 and "Message" in answer.json()
    answer = call(expressway, "DELETE", SERVER)
    assert answer.status_code == 405 and "Message" in answer.json()
    assert answer.headers["Allow"] == "GET, POST"
    answer = call(expressway, "GET", f"{ROOT}/{'0' * 64}")
    assert answer.status_code == 405 and answer.headers["Allow"] == "DELETE"
    answer = call(expressway, "POST", "/api/provisioning/certs/generate_csr")
    assert (answer.status_code, answer.json()) == (501, {"Message": fx.MSG_CSR})
    answer = call(expressway, "POST", SERVER, data=b"x" * (fx.MAX_BODY + 1),
                  headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 413 and "Message" in answer.json()


def test_requests_record_method_path_user_and_content_type(expressway):
    cert, key = new_server_cert()
    upload(expressway, pem(cert), key_pem(key))
    seen = expressway.requests[-1]
    assert (seen.method, seen.path, seen.username, seen.status) == ("POST", SERVER, "admin", 200)
    assert seen.content_type.startswith("multipart/form-data; boundary=")


def test_an_outage_refuses_connections_for_a_while_without_a_restart(expressway):
    expressway.outage(0.1)
    with pytest.raises(OSError):
        presented(expressway)
    expressway.wait_up()
    assert presented(expressway) == der(fx.factory_tls().cert)
    assert expressway.restarts == 0 and expressway.refused == 1
