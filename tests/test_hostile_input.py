"""Hostile and odd input: each gets one clear error and a documented exit code, and changes
nothing. Several of these came from a review that tried to break pkiq on purpose."""

import json
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from ca import authority
from ca.errors import Conflict, PolicyViolation
from ca.names import parse_name
from shell.db import transaction

from .conftest import PASSPHRASE, cached_key, make_csr, openssl
from .domain import in_threads, new_ca, sign
from .test_cli import assert_one_line_error


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def make_democa(folder: Path, *, ca: bool = True, index: str = "", attr: str | None = None,
                subject: str = "/C=GB/O=Example/CN=Odd CA"):
    """A minimal demoCA made by the openssl binary: clear key, self-signed cert, index."""
    (folder / "private").mkdir(parents=True)
    (folder / "newcerts").mkdir()
    constraints = "critical,CA:TRUE" if ca else "critical,CA:FALSE"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-utf8", "-subj",
            subject, "-multivalue-rdn", "-addext", f"basicConstraints={constraints}",
            "-keyout", str(folder / "private" / "cakey.pem"), "-out", str(folder / "cacert.pem"))
    (folder / "index.txt").write_text(index)
    if attr is not None:
        (folder / "index.txt.attr").write_text(attr)
    (folder / "serial").write_text("10\n")
    return folder


# ---------------------------------------------------------------- adopting

def test_the_same_ca_key_cannot_be_adopted_twice(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    assert pkiq("ca", "export-openssl", "R", tmp_path / "x").exit_code == 0
    again = pkiq("ca", "import-openssl", "R2", tmp_path / "x")
    assert_one_line_error(again, 7, "already belongs to pkiq CA 'R'")
    assert [c["name"] for c in json.loads(pkiq("ca", "list", "--json").output)] == ["R"]


@pytest.mark.parametrize(("subject", "code", "match"), [
    ("/O=Example/CN=Evil\u202eCA", 3, "U+202E"),
    ("/O=Exa\x1bmple/CN=Odd CA", 3, "control character"),
    ("/CN=Odd CA/CN=payroll.example.com", 4, "more than one commonName"),
    ("/O=Example+CN=Odd CA", 4, "multi-valued RDN"),
    ("/O=Example/CN=Odd\u200bCA", 3, "U+200B"),
])
def test_an_imported_ca_subject_meets_the_name_rules(pkiq, tmp_path, subject, code, match):
    folder = make_democa(tmp_path / "n", subject=subject)
    assert_one_line_error(pkiq("ca", "import-openssl", "N", folder), code, match)
    assert json.loads(pkiq("ca", "list", "--json").output) == []


def test_an_end_entity_certificate_is_not_adopted_as_a_ca(pkiq, tmp_path):
    folder = make_democa(tmp_path / "ee", ca=False)
    result = pkiq("ca", "import-openssl", "EE", folder)
    assert_one_line_error(result, 4, "not a CA certificate")
    assert json.loads(pkiq("ca", "list", "--json").output) == []


def test_an_index_that_openssl_would_refuse_under_unique_subject(pkiq, tmp_path):
    rows = "".join(f"V\t301231000000Z\t\t{s}\tunknown\t/CN=twice.example.com\n"
                   for s in ("10", "11"))
    folder = make_democa(tmp_path / "dup", index=rows, attr="unique_subject = yes\n")
    result = pkiq("ca", "import-openssl", "Dup", folder)
    assert_one_line_error(result, 3, "two valid certificates for /CN=twice.example.com")
    assert json.loads(pkiq("ca", "list", "--json").output) == []


@pytest.mark.parametrize("name, content, fragment", [
    ("serial", "F" * 60 + "\n", "out of range"),
    ("crlnumber", "F" * 20 + "\n", "out of range"),
    ("serial", "zz\n", "hexadecimal"),
])
def test_serial_and_crlnumber_files_out_of_range(pkiq, tmp_path, name, content, fragment):
    folder = make_democa(tmp_path / "d")
    (folder / name).write_text(content)
    assert_one_line_error(pkiq("ca", "import-openssl", "D", folder), 3, fragment)


def test_a_released_hold_imports_as_valid(pkiq, tmp_path):
    row = "R\t301231000000Z\t261101000000Z,removeFromCRL\t10\tunknown\t/CN=held.example.com\n"
    folder = make_democa(tmp_path / "h", index=row)
    result = pkiq("ca", "import-openssl", "H", folder)
    assert result.exit_code == 0, result.stderr
    assert "removeFromCRL" in result.stderr
    assert pkiq("ca", "status", "H", "10").output.strip() == "10=Valid (V)"


# ---------------------------------------------------------------- names and requests

def test_control_characters_in_a_subject_are_refused(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    csr = write(tmp_path, "evil.pem", make_csr("evil\nV\tx.example.com"))
    assert_one_line_error(pkiq("ca", "sign", "R", csr), 3, "control character")


def test_unicode_subjects_survive_export_and_reimport(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    csr = write(tmp_path, "u.pem", make_csr("cafe.example.com", extra_name={
        NameOID.ORGANIZATIONAL_UNIT_NAME: "Vid\u00e9o\u2028team"}))
    result = pkiq("ca", "sign", "R", csr, "--json")
    # U+2028 is a line separator: a control character for index.txt, refused like \n
    assert_one_line_error(result, 3, "line separator")
    csr = write(tmp_path, "u2.pem", make_csr("cafe.example.com", extra_name={
        NameOID.ORGANIZATIONAL_UNIT_NAME: "Caf\u00e9"}))
    info = json.loads(pkiq("ca", "sign", "R", csr, "--json").output)
    assert "/OU=Caf\\xC3\\xA9/" in info["subject"]  # as X509_NAME_oneline
    folder = tmp_path / "exp"
    assert pkiq("ca", "export-openssl", "R", folder).exit_code == 0
    passfile = write(tmp_path, "p", PASSPHRASE.encode() + b"\n")
    status = openssl("ca", "-config", str(folder / "openssl.cnf"), "-passin", f"file:{passfile}",
                     "-status", info["serial"], check=False)
    assert f"{info['serial']}=Valid" in status.stderr.decode()


def test_rfc5280_breaking_subjects_are_refused_without_python_warnings(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    # a request that cryptography itself would refuse to build: attribute made unchecked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = x509.NameAttribute(NameOID.COMMON_NAME, "a" * 70 + ".example.com",
                                  _validate=False)
    hostile = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([attr])).sign(
        cached_key(), hashes.SHA256())
    long_cn = write(tmp_path, "long.pem", hostile.public_bytes(serialization.Encoding.PEM))
    result = pkiq("ca", "sign", "R", long_cn)
    assert_one_line_error(result, 3, "RFC 5280")
    assert "Warning" not in result.stderr
    bad = pkiq("ca", "create", "S", "--subject", "/C=\u00dcK/CN=S", "--key-type", "ec-p256")
    assert_one_line_error(bad, 3, "countryName")
    email = pkiq("ca", "create", "T", "--subject", "/emailAddress=\u00fc@example.com/CN=T",
                 "--key-type", "ec-p256")
    assert_one_line_error(email, 3, "IA5String")


def test_a_malformed_request_extension_is_bad_input(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    garbage = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x01\x02junk")
    csr = write(tmp_path, "m.pem", make_csr(extensions=[(garbage, False)]))
    assert_one_line_error(pkiq("ca", "sign", "R", csr), 3, "malformed extension")
    assert_one_line_error(pkiq("x509", "decode", csr), 3, "damaged")


def test_rsa_pss_only_keys_are_refused(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    key = tmp_path / "pss.key"
    openssl("genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", str(key))
    csr = tmp_path / "pss.csr"
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=pss.example.com", "-out", str(csr))
    assert_one_line_error(pkiq("ca", "sign", "R", csr), 4, "RSA-PSS")


def test_openssl_req_text_output_is_read(pkiq, tmp_path):
    """``openssl req -text`` puts kilobytes of text before the PEM block (RSA-4096)."""
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    pem = make_csr("t.example.com", key=cached_key("rsa4096"))
    path = write(tmp_path, "text.pem", b"Certificate Request:\n" + b"    xx:xx:xx\n" * 500 + pem)
    assert pkiq("ca", "sign", "R", path).exit_code == 0


# ---------------------------------------------------------------- options and outputs

def test_out_of_range_numbers_and_urls(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    csr = write(tmp_path, "r.pem", make_csr())
    assert pkiq("ca", "sign", "R", csr, "--days", "99999999").exit_code == 2
    assert pkiq("ca", "set", "R", "--crl-hours", "999999999").exit_code == 2
    bad_url = pkiq("ca", "set", "R", "--crl-url", "http://pk\u00ed.example.com/x.crl")
    assert_one_line_error(bad_url, 3, "ASCII")
    assert_one_line_error(pkiq("ca", "set", "R", "--crl-url", "ftp://x/y.crl"), 3, "http(s)")
    info = json.loads(pkiq("ca", "show", "R", "--json").output)
    assert info["crl_urls"] == [] and info["crl_hours"] == 168
    assert pkiq("ca", "sign", "R", csr).exit_code == 0


def test_a_bad_out_path_fails_before_anything_is_committed(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256",
                "--unique-subject").exit_code == 0
    csr = write(tmp_path, "r.pem", make_csr())
    result = pkiq("ca", "sign", "R", csr, "--out", tmp_path / "missing" / "c.pem")
    assert_one_line_error(result, 3, "does not exist")
    crl = pkiq("ca", "gencrl", "R", "--out", tmp_path / "missing" / "c.crl")
    assert_one_line_error(crl, 3, "does not exist")
    assert pkiq("ca", "sign", "R", csr, "--out", tmp_path / "c.pem").exit_code == 0  # no conflict
    assert json.loads(pkiq("ca", "gencrl", "R", "--json").output)["crl_number"] == 1


def test_md_is_honoured_and_sha1_refused(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "rsa2048").exit_code == 0
    csr = write(tmp_path, "r.pem", make_csr())
    out = tmp_path / "c.pem"
    assert pkiq("ca", "sign", "R", csr, "--md", "sha512", "--out", out).exit_code == 0
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA512)
    assert_one_line_error(pkiq("ca", "sign", "R", csr, "--md", "sha1"), 3, "SHA-1")


@pytest.mark.parametrize(("key_type", "refused", "own"), [
    ("ec-p256", "sha512", "sha256"), ("ec-p256", "sha384", "sha256"),
    ("ec-p384", "sha256", "sha384"), ("ec-p384", "sha512", "sha384")])
def test_an_ec_ca_signs_with_its_curves_own_hash(pkiq, tmp_path, key_type, refused, own):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", key_type).exit_code == 0
    csr = write(tmp_path, "r.pem", make_csr())
    assert_one_line_error(pkiq("ca", "sign", "R", csr, "--md", refused), 3, "curve's hash")
    assert pkiq("ca", "list", "--json").exit_code == 0
    out = tmp_path / "c.pem"
    assert pkiq("ca", "sign", "R", csr, "--md", own, "--out", out).exit_code == 0
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert.signature_hash_algorithm.name == own


def test_bad_database_url(pkiq):
    pkiq.app.settings.database_url = "notadb://what"
    assert_one_line_error(pkiq("ca", "list"), 2, "PKIQ_DATABASE_URL")


def test_a_policy_that_could_never_match_is_refused_at_create(pkiq):
    result = pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256",
                  "--policy", "policy_match")
    assert_one_line_error(result, 3, "countryName = match")


def test_export_to_a_folder_with_hash_and_space_works_with_openssl(pkiq, tmp_path, passfile):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    csr = write(tmp_path, "r.pem", make_csr())
    serial = json.loads(pkiq("ca", "sign", "R", csr, "--json").output)["serial"]
    folder = tmp_path / "odd #1 dir"
    assert pkiq("ca", "export-openssl", "R", folder).exit_code == 0
    status = openssl("ca", "-config", str(folder / "openssl.cnf"), "-passin",
                     f"file:{passfile}", "-status", serial, check=False)
    assert f"{serial}=Valid" in status.stderr.decode()


# ---------------------------------------------------------------- domain rules

def test_a_pathlen_zero_ca_issues_no_ca(sessions, clock):
    new_ca(sessions, clock)
    new_ca(sessions, clock, name="Issuing", parent="Root")
    with pytest.raises(PolicyViolation, match="pathlen 0"):
        new_ca(sessions, clock, name="Deeper", parent="Issuing")
    with pytest.raises(PolicyViolation, match="pathlen 0"):
        sign(sessions, clock, "Issuing", make_csr("Sub CA"), profile="subca")


def test_sub_ca_validity_cut_to_the_parent_is_reported(sessions, clock):
    new_ca(sessions, clock, days=100)
    with transaction(sessions) as session:
        root = authority.get_ca(session, "Root")
        _, warnings = authority.create_ca(
            session, name="Issuing", subject=parse_name("/CN=Issuing"), key_type="ec-p256",
            passphrase=PASSPHRASE.encode(), now=clock(), days=3650, parent=root,
            parent_signer=authority.load_signer(root, PASSPHRASE.encode()))
    assert any("notAfter" in w for w in warnings)


def test_requests_cannot_choose_the_crl_or_aia_urls(sessions, clock):
    new_ca(sessions, clock, copy_extensions="copyall")
    dp = x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier("http://evil.example/crl")], None, None, None)])
    cert = sign(sessions, clock, "Root", make_csr(extensions=[(dp, False)])).certificate
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)


def test_concurrent_revocations_one_wins(sessions, clock):
    new_ca(sessions, clock)
    serial = sign(sessions, clock, "Root", make_csr()).certificate.serial_number

    def revoke(reason):
        with transaction(sessions) as session:
            authority.revoke(session, authority.get_ca(session, "Root"), serial,
                             now=clock(), reason=reason)
        return reason

    outcomes = in_threads(revoke, [("keyCompromise",), ("superseded",),
                                   ("affiliationChanged",)])
    assert sum(isinstance(o, Conflict) for o in outcomes) == 2
    [winner] = [o for o in outcomes if isinstance(o, str)]
    with transaction(sessions) as session:
        record = authority.find_certificate(session, authority.get_ca(session, "Root"), serial)
        assert record.revocation_reason == winner


def test_hold_release_and_latest_crl(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    csr = write(tmp_path, "r.pem", make_csr())
    serial = json.loads(pkiq("ca", "sign", "R", csr, "--json").output)["serial"]
    assert_one_line_error(pkiq("ca", "crl", "R"), 5, "no CRL yet")
    assert pkiq("ca", "revoke", "R", serial, "--reason", "certificateHold").exit_code == 0
    assert pkiq("ca", "gencrl", "R").exit_code == 0
    held = x509.load_pem_x509_crl(pkiq("ca", "crl", "R").stdout_bytes)
    assert held.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    assert pkiq("ca", "release-hold", "R", serial).exit_code == 0
    assert pkiq("ca", "status", "R", serial).output.strip() == f"{serial}=Valid (V)"
    assert pkiq("ca", "gencrl", "R").exit_code == 0
    fresh = x509.load_pem_x509_crl(pkiq("ca", "crl", "R").stdout_bytes)
    assert fresh.get_revoked_certificate_by_serial_number(int(serial, 16)) is None
    assert pkiq("ca", "revoke", "R", serial, "--reason", "keyCompromise").exit_code == 0
    assert_one_line_error(pkiq("ca", "release-hold", "R", serial), 7, "not on hold")


def test_non_utf8_passphrase_file(pkiq, tmp_path):
    assert pkiq("ca", "create", "R", "--subject", "/CN=R", "--key-type", "ec-p256").exit_code == 0
    pf = write(tmp_path, "bin.pass", b"\xff\xfe\x80secret\n")
    csr = write(tmp_path, "r.pem", make_csr())
    assert_one_line_error(pkiq("ca", "sign", "R", csr, "--passphrase-file", pf), 6,
                          "wrong passphrase")

