"""The README's walkthrough (examples/walkthrough.sh) through the HTTP API instead of the
command line: the guide's SHA-1 cluster request signed "web client and server", fetched
with its chain and checked by openssl, a second peer revoked for key compromise and seen
revoked by openssl against pkiq's CRL, an Expressway node's CSR generated, signed and its
store published, and the trusted CA list and CRL settings changed. The CAs are made by the
CLI (the API does not create CAs); each step then goes through one API call, and the
certificates the API gives equal what the CLI gives for the same request."""

from __future__ import annotations

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from service import tokens

from .conftest import PASSPHRASE, guide_csr, openssl
from .test_api import Api, sign_queued
from .test_nodes import ok
from .test_web_downloads import Served

PASS = PASSPHRASE.encode()


@pytest.mark.openssl
def test_the_walkthrough_through_the_api(app, pkiq, tmp_path):
    ok(pkiq("ca", "create", "Root", "--subject", "/C=GB/O=Example Ltd/CN=Example Root CA",
            "--key-type", "ec-p384", "--days", "3650"))
    ok(pkiq("ca", "create", "Issuing", "--parent", "Root", "--subject",
            "/C=GB/O=Example Ltd/CN=Example Issuing CA", "--key-type", "ec-p256",
            "--policy", "policy_anything", "--copy-extensions", "copy",
            "--crl-url", "http://pki.example.com/issuing.crl"))
    token = {name: tokens.create_token(app, name, role, None)["token"]
             for name, role in [("ops", "requester"), ("pki", "approver"), ("root", "admin")]}
    served = Served(app)
    try:
        api = Api(served)
        _walk(app, pkiq, api, token, tmp_path)
    finally:
        served.close()


def _walk(app, pkiq, api, token, tmp_path):
    der = guide_csr(tmp_path, cn="expe.example.com",
                    peers=("expe1.example.com", "expe2.example.com")).read_bytes()

    # the guide's request, as is, signed "web client and server"
    made = api.call("POST", "/jobs/der?ca=Issuing&profile=webclientandserver", token["ops"],
                    data=der, headers={"Content-Type": "application/pkcs10"})
    assert made.status_code == 201, made.text
    sign_queued(app)
    job = api.call("GET", f"/jobs/{made.json()['id']}/wait?timeout=5", token["ops"]).json()
    assert job["state"] == "issued"
    serial = job["serial"]
    chain = api.call("GET", f"/certificates/Issuing/{serial}?chain=true", token["ops"])
    (tmp_path / "server-chain.pem").write_bytes(chain.content)
    leaf, issuing, root = x509.load_pem_x509_certificates(chain.content)
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    names = leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["expe.example.com", "expe1.example.com", "expe2.example.com"]
    (tmp_path / "root.pem").write_bytes(_pem(root))
    (tmp_path / "issuing.pem").write_bytes(_pem(issuing))
    (tmp_path / "server.pem").write_bytes(_pem(leaf))
    openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
            str(tmp_path / "issuing.pem"), str(tmp_path / "server.pem"))

    # the CLI signs the same request into the same certificate, but for serial and time
    ok(pkiq("ca", "sign", "Issuing", tmp_path / "certcsr.der", "--profile",
            "webclientandserver", "--out", tmp_path / "cli.pem"))
    by_cli = x509.load_pem_x509_certificate((tmp_path / "cli.pem").read_bytes())
    assert by_cli.subject == leaf.subject and by_cli.issuer == leaf.issuer
    assert [e.oid for e in by_cli.extensions] == [e.oid for e in leaf.extensions]
    assert by_cli.extensions.get_extension_for_class(x509.SubjectAlternativeName) == \
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)

    # a second peer, revoked for key compromise, then the CRL
    openssl("req", "-new", "-key", str(tmp_path / "certcsr.key"), "-config",
            str(tmp_path / "certcsr.cfg"), "-subj",
            "/C=GB/O=Example Ltd/OU=Video/CN=old-expe.example.com", "-out",
            str(tmp_path / "old.csr"))
    old = api.call("POST", "/jobs", token["ops"], json={
        "ca": "Issuing", "csr": (tmp_path / "old.csr").read_text()}).json()
    sign_queued(app)
    old_serial = api.call("GET", f"/jobs/{old['id']}", token["ops"]).json()["serial"]
    revoked = api.call("POST", f"/certificates/Issuing/{old_serial}/revoke", token["pki"],
                       json={"reason": "keyCompromise",
                             "invalidity_date": "2026-11-20T00:00:00Z"})
    assert revoked.status_code == 200, revoked.text
    status = api.call("GET", f"/certificates/Issuing/{old_serial}/status", token["ops"]).json()
    assert status["status"] == "revoked"
    ok(pkiq("ca", "gencrl", "Issuing"))  # beat renews it after a revocation; here at once
    ok(pkiq("ca", "gencrl", "Root"))
    crls = b"".join(requests.get(api.served.url(f"/ca/{name}.crl.pem"), timeout=10).content
                    for name in ("Root", "Issuing"))
    (tmp_path / "crls.pem").write_bytes(crls)
    (tmp_path / "trust.pem").write_bytes(_pem(root) + _pem(issuing))
    old_pem = api.call("GET", f"/certificates/Issuing/{old_serial}", token["ops"]).content
    (tmp_path / "old.pem").write_bytes(old_pem)
    openssl("verify", "-crl_check_all", "-CAfile", str(tmp_path / "trust.pem"), "-CRLfile",
            str(tmp_path / "crls.pem"), str(tmp_path / "server.pem"))
    refused = openssl("verify", "-crl_check_all", "-CAfile", str(tmp_path / "trust.pem"),
                      "-CRLfile", str(tmp_path / "crls.pem"), str(tmp_path / "old.pem"),
                      check=False)
    assert refused.returncode != 0 and b"revoked" in (refused.stdout + refused.stderr)

    # an Expressway peer: its key and CSR made by pkiq, signed, its store published
    ok(pkiq("cluster", "add", "edge", "--fqdn", "vcse.example.com"))
    ok(pkiq("node", "add", "expe1.example.com", "--role", "E", "--cluster", "edge",
            "--uc-domain", "example.com"))
    csr = api.call("POST", "/nodes/expe1.example.com/csr", token["root"],
                   json={"key_type": "rsa2048", "organization": "Example Ltd", "country": "GB",
                         "submit_to": "Issuing"})
    assert csr.status_code == 201, csr.text
    sign_queued(app)
    published = api.call("POST", "/nodes/expe1.example.com/publish", token["root"]).json()
    assert published["state"] == "published", published
    node = api.call("GET", "/nodes/expe1.example.com", token["pki"]).json()
    assert node["certificate"]["state"] == "active"
    store = app.settings.effective_stores_dir / "expe1.example.com" / "current"
    openssl("verify", "-CApath", str(store / "capath"), "-crl_check_all",
            str(store / "server.pem"))
    assert api.call("GET", "/nodes/expe1.example.com/check", token["pki"]).json()["gaps"] == []

    # the trusted CA list and the nightly CRL time, as an admin
    assert api.call("GET", "/trust", token["ops"]).status_code == 200
    changed = api.call("PATCH", "/crl/settings", token["root"],
                       json={"update_time_utc": "03:30", "warn_hours": 72})
    assert changed.status_code == 200 and changed.json()["update_time_utc"] == "03:30"
    assert api.call("PATCH", "/crl/settings", token["pki"],
                    json={"warn_hours": 1}).status_code == 403
    trail = [e["action"] for e in api.call("GET", "/audit?limit=200", token["root"]).json()]
    for action in ("job.submit", "cert.issue", "cert.revoke", "crl.issue", "node.csr",
                   "store.publish", "crl.settings"):
        assert action in trail, action
    assert api.call("GET", "/audit/verify", token["root"]).json()["ok"]


def _pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)
