"""The CLI: one clear line and a documented exit code for bad input, nothing changed."""

import json

import pytest
from cryptography import x509

from .conftest import guide_csr, make_csr, openssl


@pytest.fixture
def root(pkiq):
    result = pkiq("ca", "create", "Root", "--subject", "/C=GB/ST=England/O=Example/CN=Root",
                  "--key-type", "ec-p256", "--policy", "policy_match")
    assert result.exit_code == 0, result.output
    return "Root"


def assert_one_line_error(result, code, fragment):
    assert result.exit_code == code, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pkiq: error:"), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.output + result.stderr


def issued_serials(pkiq, tmp_path):
    """Count of index entries, read back through export (no private API)."""
    out = tmp_path / f"export{len(list(tmp_path.iterdir()))}"
    assert pkiq("ca", "export-openssl", "Root", out).exit_code == 0
    return (out / "index.txt").read_text().splitlines()


def test_garbage_csr(pkiq, root, tmp_path):
    bad = tmp_path / "garbage.csr"
    bad.write_bytes(b"\x00\x01 this is not a request" * 10)
    assert_one_line_error(pkiq("ca", "sign", "Root", bad), 3, "not a certificate request")
    assert issued_serials(pkiq, tmp_path) == []


def test_tampered_csr(pkiq, root, tmp_path):
    der = bytearray(make_csr("h.example.com", der=True, extra_name={}))
    der[-3] ^= 0xFF
    path = tmp_path / "tampered.der"
    path.write_bytes(bytes(der))
    assert_one_line_error(pkiq("ca", "sign", "Root", path), 3, "does not verify")


def test_wrong_passphrase(pkiq, root, tmp_path):
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase\n")
    result = pkiq("ca", "sign", "Root", csr, "--passphrase-file", wrong)
    assert_one_line_error(result, 6, "wrong passphrase")
    assert issued_serials(pkiq, tmp_path) == []


def test_missing_passphrase_env(pkiq, root, tmp_path):
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    result = pkiq("ca", "sign", "Root", csr, "--passphrase-env", "PKIQ_TEST_UNSET_VAR")
    assert_one_line_error(result, 6, "PKIQ_TEST_UNSET_VAR")


def test_policy_violation_names_field_and_rule(pkiq, root, tmp_path):
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())  # no ST, which policy_match requires to match
    result = pkiq("ca", "sign", "Root", csr)
    assert_one_line_error(result, 4, "stateOrProvinceName")
    assert "match" in result.stderr
    assert issued_serials(pkiq, tmp_path) == []


def test_unknown_ca(pkiq, root, tmp_path):
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    assert_one_line_error(pkiq("ca", "sign", "Nope", csr), 5, "known CAs: Root")


def test_sha1_digest_is_refused_with_the_reason(pkiq, root, tmp_path):
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr())
    assert_one_line_error(pkiq("ca", "sign", "Root", csr, "--md", "sha1"), 3, "SHA-1")


def test_duplicate_ca_name(pkiq, root):
    result = pkiq("ca", "create", "Root", "--subject", "/CN=Again", "--key-type", "ec-p256")
    assert_one_line_error(result, 7, "already exists")


def test_sign_guide_request_end_to_end_and_fetch_with_chain(pkiq, tmp_path):
    assert pkiq("ca", "create", "Root", "--subject", "/C=GB/O=Example Ltd/CN=Root",
                "--key-type", "rsa2048").exit_code == 0
    assert pkiq("ca", "create", "Issuing", "--parent", "Root", "--subject",
                "/C=GB/O=Example Ltd/CN=Issuing", "--key-type", "ec-p256",
                "--days", "1000").exit_code == 0
    csr = guide_csr(tmp_path)
    result = pkiq("ca", "sign", "Issuing", csr, "--profile", "webclientandserver", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.output)
    assert info["subject"] == ("/C=GB/ST=England/L=London/O=Example Ltd/OU=Video"
                               "/CN=cluster.example.com")
    chain = pkiq("cert", "get", info["serial"], "--chain")
    assert chain.exit_code == 0
    assert chain.output.count("BEGIN CERTIFICATE") == 3
    show = pkiq("cert", "show", info["serial"])
    assert "serverAuth, clientAuth" in show.output and "status: valid" in show.output
    der = pkiq("cert", "get", info["serial"], "--der", "--out", tmp_path / "c.der")
    assert der.exit_code == 0
    assert x509.load_der_x509_certificate((tmp_path / "c.der").read_bytes()).serial_number == \
        int(info["serial"], 16)


def test_revoke_status_gencrl_cli(pkiq, root, tmp_path):
    csr = tmp_path / "r.pem"
    csr.write_bytes(make_csr(extra_name={x509.oid.NameOID.STATE_OR_PROVINCE_NAME: "England"}))
    info = json.loads(pkiq("ca", "sign", "Root", csr, "--json").output)
    assert pkiq("ca", "status", "Root", info["serial"]).output.strip() == \
        f"{info['serial']}=Valid (V)"
    assert pkiq("ca", "revoke", "Root", info["serial"], "--reason", "superseded").exit_code == 0
    assert pkiq("ca", "status", "Root", info["serial"]).output.strip() == \
        f"{info['serial']}=Revoked (R)"
    crl = json.loads(pkiq("ca", "gencrl", "Root", "--json").output)
    assert crl["crl_number"] == 1 and crl["entries"] == 1
    again = pkiq("ca", "revoke", "Root", info["serial"])
    assert_one_line_error(again, 7, "already revoked")


def test_ca_set_changes_policy_and_copy_extensions(pkiq, root):
    result = pkiq("ca", "set", "Root", "--policy", "countryName=supplied,commonName=supplied",
                  "--copy-extensions", "none", "--profile-days", "webserver=397", "--json")
    info = json.loads(result.output)
    assert info["policy"]["fields"] == [["countryName", "supplied"], ["commonName", "supplied"]]
    assert info["copy_extensions"] == "none" and info["profile_days"] == {"webserver": 397}
    bad = pkiq("ca", "set", "Root", "--profile-days", "nosuch=3")
    assert_one_line_error(bad, 3, "PROFILE=DAYS")


def test_x509_decode_and_convert_round_trip(pkiq, tmp_path):
    csr_der = guide_csr(tmp_path)
    decoded = pkiq("x509", "decode", csr_der, "--json")
    assert decoded.exit_code == 0
    [info] = json.loads(decoded.output)
    assert info["type"] == "csr" and info["signature_algorithm"] == "sha1WithRSAEncryption"
    assert info["signature_valid"] is True  # SHA-1 requests are verified by hand
    pem = tmp_path / "csr.pem"
    assert pkiq("x509", "convert", csr_der, pem).exit_code == 0
    assert b"BEGIN CERTIFICATE REQUEST" in pem.read_bytes()
    back = tmp_path / "back.der"
    assert pkiq("x509", "convert", pem, back).exit_code == 0
    assert back.read_bytes() == csr_der.read_bytes()
    # the real openssl reads what we wrote
    subject = openssl("req", "-in", str(pem), "-noout", "-subject").stdout.decode()
    assert "cluster.example.com" in subject


def test_x509_decode_text_of_a_crl_and_garbage(pkiq, root, tmp_path):
    out = tmp_path / "crl.der"
    assert pkiq("ca", "gencrl", "Root", "--out", out, "--der").exit_code == 0
    text = pkiq("x509", "decode", out).output
    assert "Certificate Revocation List" in text and "CRL Number: 1" in text
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x30\x03\x02\x01")
    assert_one_line_error(pkiq("x509", "decode", junk), 3, "not a certificate")


def test_database_unreachable_is_one_line(pkiq, tmp_path):
    pkiq.app.settings.database_url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    result = pkiq("ca", "list")
    assert_one_line_error(result, 8, "cannot reach the database")
