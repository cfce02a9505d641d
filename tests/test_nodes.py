"""Expressway nodes through the CLI: clusters, trusted sets, a node's CSR generated here and
signed by the queue (paired with the node's key), certificates made elsewhere, and what is
refused — on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from ca import authority, jobs
from ca.models import NodeCredential
from service.jobs import sign_batch
from shell.db import transaction

from .conftest import PASSPHRASE, cached_key, make_csr, openssl
from .test_cli import assert_one_line_error

PASS = PASSPHRASE.encode()


def ok(result):
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


def js(result):
    return json.loads(ok(result).stdout)


def run_queue(sessions, clock):
    """What a worker does with every queued job (on SQLite: claimed, signed apart, recorded)."""
    with transaction(sessions) as session:
        ids = [j.id for j in jobs.list_jobs(session, state="queued")]
    return sign_batch(sessions, ids, lambda ca: authority.load_signer(ca, PASS), clock)


def make_estate(pkiq):
    ok(pkiq("ca", "create", "Root", "--subject", "/C=GB/O=Example/CN=Example Root",
            "--key-type", "ec-p256"))
    ok(pkiq("cluster", "add", "edge", "--fqdn", "vcse.example.com"))
    for peer in ("expe1", "expe2"):
        ok(pkiq("node", "add", f"{peer}.example.com", "--role", "E", "--cluster", "edge",
                "--uc-domain", "example.com", "--chat-node-alias", "chat.example.com"))


def test_cluster_and_node_names_follow_the_deployment_model(pkiq):
    make_estate(pkiq)
    shown = js(pkiq("node", "show", "EXPE1.example.com.", "--json"))  # case, trailing dot
    assert shown["fqdn"] == "expe1.example.com" and shown["cluster"] == "edge"
    assert shown["csr_names"]["subject_alt_names"][:2] == ["expe1.example.com",
                                                           "vcse.example.com"]
    assert "collab-edge.example.com" in shown["csr_names"]["subject_alt_names"]
    assert "expe2.example.com" not in shown["csr_names"]["subject_alt_names"]  # per peer
    cluster = js(pkiq("cluster", "show", "edge", "--json"))
    assert cluster["peers"] == ["expe1.example.com", "expe2.example.com"]

    ok(pkiq("cluster", "add", "shared", "--fqdn", "vcsc.example.com", "--model",
            "cluster-shared"))
    for peer in ("expc1", "expc2"):
        ok(pkiq("node", "add", f"{peer}.example.com", "--role", "C", "--cluster", "shared",
                "--phone-security-profile", "secure-phone.example.com"))
    names = js(pkiq("node", "show", "expc1.example.com", "--json"))["csr_names"]
    assert {"expc1.example.com", "expc2.example.com", "vcsc.example.com",
            "secure-phone.example.com"} <= set(names["subject_alt_names"])

    ok(pkiq("node", "add", "solo.example.com", "--role", "C"))
    solo = js(pkiq("node", "show", "solo.example.com", "--json"))["csr_names"]
    assert solo["subject_alt_names"] == ["solo.example.com"]  # X14: the FQDN always in SAN


def test_registry_refusals_are_one_line_and_change_nothing(pkiq):
    make_estate(pkiq)
    ok(pkiq("node", "set", "expe1.example.com", "--store-dir", "/srv/stores/shared"))
    before = js(pkiq("node", "list", "--json"))
    cases = [
        (("node", "add", "expe1.example.com", "--role", "E"), 7, "registered already"),
        (("node", "add", "*.example.com", "--role", "E"), 4, "wildcard"),
        (("node", "add", "bad_name.example.com", "--role", "C"), 4, ""),
        (("node", "add", "x.example.com", "--role", "C", "--cluster", "nope"), 5, "no cluster"),
        (("node", "add", "x.example.com", "--role", "C", "--uc-domain", "example.com"), 4,
         "Expressway-E"),
        (("node", "add", "x.example.com", "--role", "E", "--phone-security-profile",
          "p.example.com"), 4, "Expressway-C"),
        (("node", "set", "nope.example.com", "--role", "C"), 5, "no node"),
        (("node", "set", "expe1.example.com", "--trusted-set", "nope"), 5, "no trusted set"),
        (("node", "set", "expe1.example.com", "--store-dir", "relative/dir"), 3, "absolute"),
        (("node", "set", "expe2.example.com", "--store-dir", "/srv/stores/shared/"), 7,
         "store of node expe1.example.com already"),
        (("cluster", "add", "edge", "--fqdn", "other.example.com"), 7, "exists already"),
        (("cluster", "remove", "edge"), 7, "still has 2 peer"),
        (("trustset", "create", "s1", "no-such-ca-or-entry"), 5, ""),
    ]
    for args, code, words in cases:
        result = pkiq(*args)
        assert result.exit_code == code, (args, result.output, result.stderr)
        assert_one_line_error(result, code, words)
    assert js(pkiq("node", "list", "--json")) == before
    assert js(pkiq("trustset", "list", "--json")) == []


def test_csr_generated_here_is_signed_by_the_queue_and_paired(pkiq, sessions, clock,
                                                              tmp_path):
    make_estate(pkiq)
    out = tmp_path / "expe1.csr"
    view = js(pkiq("node", "csr", "expe1.example.com", "--generate", "--key-type", "rsa2048",
                   "-O", "Example", "-C", "GB", "--out", out, "--json"))
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert view["pem"].encode() == out.read_bytes() and csr.is_signature_valid
    assert csr.signature_hash_algorithm.name == "sha256"
    openssl("req", "-in", str(out), "-verify", "-noout")
    # one CSR in progress per node; a key upload is refused meanwhile
    assert_one_line_error(pkiq("node", "csr", "expe1.example.com", "--generate",
                               "--key-type", "rsa2048"), 7, "in progress")
    assert_one_line_error(pkiq("node", "csr", "expe1.example.com", "--generate",
                               "--key-type", "rsa8192"), 4, "SIP TLS")
    assert_one_line_error(pkiq("node", "csr", "expe2.example.com", "--generate",
                               "--key-type", "rsa2048", "--submit", "NoSuchCA"), 5, "NoSuchCA")
    assert_one_line_error(pkiq("node", "csr", "expe2.example.com", "--generate",
                               "--key-type", "rsa2048", "--out", tmp_path / "no" / "x.csr"),
                          3, "does not exist")
    assert js(pkiq("node", "show", "expe2.example.com", "--json"))["csr"] is None
    decoded = ok(pkiq("node", "csr", "expe1.example.com", "--show", "--decoded")).stdout
    assert "vcse.example.com" in decoded and "BEGIN" not in decoded

    submitted = js(pkiq("node", "csr", "expe1.example.com", "--submit", "Root", "--json"))
    assert submitted["job"]["state"] == "queued"
    assert submitted["job"]["node"] == "expe1.example.com"
    [job] = run_queue(sessions, clock)
    assert job.state == "issued", job.error
    node = js(pkiq("node", "show", "expe1.example.com", "--json"))
    assert node["csr"] is None and node["certificate"]["serial"] == job.serial
    assert node["certificate"]["state"] == "active" and node["publish_due_at"]
    with transaction(sessions) as session:
        row = session.scalar(select(NodeCredential).where(NodeCredential.state == "active"))
        assert "ENCRYPTED PRIVATE KEY" in row.key_pem  # never clear in the database
        cert = x509.load_der_x509_certificate(row.cert_der)
    assert cert.public_key().public_numbers() == csr.public_key().public_numbers()
    # a second CSR while the first certificate is active: the old one retires when the new
    # one is issued
    ok(pkiq("node", "csr", "expe1.example.com", "--generate", "--key-type", "rsa2048",
            "--submit", "Root"))
    run_queue(sessions, clock)
    states = [r["state"] for r in js(pkiq("node", "certs", "expe1.example.com", "--json"))]
    assert states == ["active", "retired"]


def test_discarded_csr_pairs_with_nothing(pkiq, sessions, clock):
    make_estate(pkiq)
    ok(pkiq("node", "csr", "expe2.example.com", "--generate", "--key-type", "rsa2048",
            "--submit", "Root"))
    ok(pkiq("node", "csr", "expe2.example.com", "--discard"))
    [job] = run_queue(sessions, clock)
    assert job.state == "issued"  # the certificate is in the index ...
    node = js(pkiq("node", "show", "expe2.example.com", "--json"))
    assert node["certificate"] is None and node["csr"] is None  # ... but no node's
    assert_one_line_error(pkiq("node", "csr", "expe2.example.com", "--discard"), 5,
                          "no CSR in progress")


def _external_cert(tmp_path, key, names=("expe1.example.com",), cn="expe1.example.com"):
    """A certificate from "another CA": openssl, self-contained."""
    ca_key = tmp_path / "other-ca.key"
    ca_crt = tmp_path / "other-ca.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(ca_key), "-out", str(ca_crt), "-subj", "/CN=Other CA", "-days", "30")
    key_pem = tmp_path / "leaf.key"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    csr = tmp_path / "leaf.csr"
    csr.write_bytes(make_csr(cn, sans=names, key=key))
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names)
                   + "\nextendedKeyUsage=serverAuth,clientAuth\n")
    leaf = tmp_path / "leaf.pem"
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(leaf), "-days", "20", "-extfile", str(ext))
    return leaf, key_pem, ca_crt


def test_certificate_made_elsewhere_is_checked_as_expressway_checks_it(pkiq, tmp_path):
    make_estate(pkiq)
    key = cached_key("rsa2048")
    leaf, key_pem, other_ca = _external_cert(tmp_path, key)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(other_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    encrypted = tmp_path / "enc.key"
    openssl("pkcs8", "-topk8", "-in", str(key_pem), "-out", str(encrypted), "-v2",
            "aes-256-cbc", "-passout", "pass:secret-secret")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01 not a certificate")
    refusals = [
        ((leaf, wrong), 4, "does not match"),
        ((leaf, encrypted), 4, "password protected"),
        ((garbage, key_pem), 3, ""),
        ((leaf, garbage), 3, ""),
    ]
    for (cert_file, key_file), code, words in refusals:
        result = pkiq("node", "upload", "expe1.example.com", "--cert", cert_file, "--key",
                      key_file)
        assert_one_line_error(result, code, words)
    assert js(pkiq("node", "certs", "expe1.example.com", "--json")) == []

    done = pkiq("node", "upload", "expe1.example.com", "--cert", leaf, "--key", key_pem,
                "--json")
    view = js(done)
    assert view["state"] == "active" and view["source"] == "uploaded"
    assert any("expires" in w or "trusted" in w for w in view["warnings"]), view["warnings"]
    # with a CSR in progress, a key may not be uploaded; the certificate alone must match it
    ok(pkiq("node", "csr", "expe2.example.com", "--generate", "--key-type", "rsa2048"))
    leaf2, key2, _ = _external_cert(tmp_path, cached_key("rsa2048"),
                                    names=("expe2.example.com",), cn="expe2.example.com")
    assert_one_line_error(pkiq("node", "upload", "expe2.example.com", "--cert", leaf2,
                               "--key", key2), 7, "in progress")
    assert_one_line_error(pkiq("node", "upload", "expe2.example.com", "--cert", leaf2), 4,
                          "")
    assert js(pkiq("node", "show", "expe2.example.com", "--json"))["csr"] is not None


def test_trusted_sets_resolve_pkiq_ca_chains_and_entries(pkiq, tmp_path):
    make_estate(pkiq)
    ok(pkiq("ca", "create", "Issuing", "--parent", "Root", "--subject",
            "/C=GB/O=Example/CN=Example Issuing", "--key-type", "ec-p256"))
    other = tmp_path / "other.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(tmp_path / "o.key"), "-out", str(other), "-subj", "/CN=Partner CA",
            "-days", "30")
    added = js(pkiq("trust", "add", other, "--json"))["added"][0]
    view = js(pkiq("trustset", "create", "edge-trust", "Issuing", added["sha256"][:12],
                   "--json"))
    assert view["members"] == [{"ca": "Issuing"},
                               {"sha256": added["sha256"], "subject": added["subject"]}]
    shown = js(pkiq("trustset", "show", "edge-trust", "--json"))
    subjects = sorted(c["subject"] for c in shown["certificates"])
    assert subjects == ["/C=GB/O=Example/CN=Example Issuing", "/C=GB/O=Example/CN=Example Root",
                        "/CN=Partner CA"]  # Issuing brings Root: a full chain of trust
    ok(pkiq("node", "set", "expe1.example.com", "--trusted-set", "edge-trust"))
    assert_one_line_error(pkiq("trustset", "delete", "edge-trust"), 7, "held by 1 node")
    ok(pkiq("trust", "remove", added["sha256"][:12]))
    shown = js(pkiq("trustset", "show", "edge-trust", "--json"))
    assert len(shown["certificates"]) == 2 and "no longer in the trusted CA list" in \
        shown["missing"][0]
    ok(pkiq("trustset", "remove", "edge-trust", "ca:Issuing"))
    assert js(pkiq("trustset", "show", "edge-trust", "--json"))["certificates"] == []
