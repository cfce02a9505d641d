"""Interoperability with the real ``openssl`` binary, both ways, on SQLite and PostgreSQL.

A demoCA built exactly as the Expressway guide builds it (genrsa -aes256, req -x509 -extensions
v3_ca, ``openssl ca`` with copy_extensions = copy and policy_anything) is adopted by
``pkiq ca import-openssl``; a pkiq CA written out by ``pkiq ca export-openssl`` is kept in use by
``openssl ca`` (-status, -gencrl, signing) and ``openssl verify``. Bad input must change nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from .conftest import FakeClock, guide_csr, openssl

pytestmark = pytest.mark.openssl

LEGACY_PASSPHRASE = "guide demoCA passphrase 42"  # the old CA key's, not pkiq's
CERT_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", re.S)

GUIDE_CA_CONFIG = """\
# openssl_local.cfg, edited as the Expressway guide says: dir, copy_extensions, policy_anything
HOME = .

[ ca ]
default_ca = CA_default

[ CA_default ]
dir = {dir}
certs = $dir/certs
crl_dir = $dir/crl
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/cacert.pem
serial = $dir/serial
crlnumber = $dir/crlnumber
crl = $dir/crl.pem
private_key = $dir/private/cakey.pem
x509_extensions = usr_cert
name_opt = ca_default
cert_opt = ca_default
copy_extensions = copy
default_days = 730
default_crl_days = 30
default_md = sha256
preserve = no
policy = policy_anything
unique_subject = no

[ policy_match ]
countryName = match
stateOrProvinceName = match
organizationName = match
organizationalUnitName = optional
commonName = supplied
emailAddress = optional

[ policy_anything ]
countryName = optional
stateOrProvinceName = optional
localityName = optional
organizationName = optional
organizationalUnitName = optional
commonName = supplied
emailAddress = optional

[ req ]
default_bits = 2048
distinguished_name = req_distinguished_name
prompt = no
x509_extensions = v3_ca

[ req_distinguished_name ]
C = GB
ST = England
O = Example Ltd
CN = Example Guide CA

[ usr_cert ]
basicConstraints = CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer

[ v3_ca ]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer
basicConstraints = critical, CA:true
keyUsage = critical, cRLSign, keyCertSign
"""
POLICY_ANYTHING_FIELDS = [
    ["countryName", "optional"], ["stateOrProvinceName", "optional"],
    ["localityName", "optional"], ["organizationName", "optional"],
    ["organizationalUnitName", "optional"], ["commonName", "supplied"],
    ["emailAddress", "optional"],
]


@pytest.fixture
def clock() -> FakeClock:
    """pkiq's clock set to the wall clock, which the openssl binary reads: otherwise pkiq's
    notBefore / thisUpdate would lie hours ahead of what ``openssl verify`` calls now."""
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


# ---------------------------------------------------------------- helpers

def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result


def as_json(result):
    return json.loads(ok(result).stdout)


def run_openssl(*args, cwd: Path | None = None):
    proc = openssl(*map(str, args), cwd=cwd, check=False)
    assert proc.returncode == 0, (f"openssl {' '.join(map(str, args))} failed:\n"
                                  f"{proc.stdout.decode()}{proc.stderr.decode()}")
    return proc


def der_to_pem_csr(der: Path) -> Path:
    pem = der.with_suffix(".pem")
    run_openssl("req", "-in", der, "-inform", "DER", "-out", pem, "-outform", "PEM")
    return pem


def cert_pems(text: str) -> list[str]:
    return CERT_PEM.findall(text)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def serial_of(path: Path) -> str:
    """OpenSSL's spelling of a serial: upper-case hex, whole octets."""
    text = f"{load_cert(path).serial_number:X}"
    return text if len(text) % 2 == 0 else "0" + text


def asn1_time(text: str) -> dt.datetime:
    fmt = "%y%m%d%H%M%SZ" if len(text) == 13 else "%Y%m%d%H%M%SZ"
    return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)


def read_index(folder: Path) -> dict[str, dict]:
    rows = {}
    for line in (folder / "index.txt").read_text().splitlines():
        status, expires, revinfo, serial, _file, subject = line.split("\t")
        parts = revinfo.split(",") if revinfo else []
        rows[serial] = {"status": status, "expires": asn1_time(expires), "subject": subject,
                        "revoked_at": asn1_time(parts[0]) if parts else None,
                        "revinfo": parts[1:]}
    return rows


def crl_entries(crl: x509.CertificateRevocationList) -> dict[int, tuple]:
    """serial -> (reason name or None, revocation date, invalidity date or None)."""
    out = {}
    for entry in crl:
        reason = invalidity = None
        for ext in entry.extensions:
            if isinstance(ext.value, x509.CRLReason):
                reason = ext.value.reason.name
            elif isinstance(ext.value, x509.InvalidityDate):
                invalidity = ext.value.invalidity_date_utc
        out[entry.serial_number] = (reason, entry.revocation_date_utc, invalidity)
    return out


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def one_error_line(result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pkiq: error:"), lines[0]
    return lines[0]


def write_guide_config(folder: Path) -> Path:
    cfg = folder / "openssl_local.cfg"
    cfg.write_text(GUIDE_CA_CONFIG.format(dir=folder))
    return cfg


# ---------------------------------------------------------------- the guide's demoCA

@pytest.fixture(scope="module")
def guide_democa(tmp_path_factory) -> Path:
    """A demoCA built with the openssl binary as the guide builds it, once per module:
    three guide CSRs signed, one revoked keyCompromise, one with -crl_compromise, a CRL."""
    work = tmp_path_factory.mktemp("guide")
    demo = work / "demoCA"
    for sub in ("certs", "newcerts", "private", "crl"):
        (demo / sub).mkdir(parents=True)
    (demo / "index.txt").write_text("")
    (demo / "serial").write_text("10\n")
    (demo / "crlnumber").write_text("1000\n")
    cfg = write_guide_config(demo)
    legacy = work / "legacy.pass"
    legacy.write_text(LEGACY_PASSPHRASE + "\n")
    passin = f"file:{legacy}"
    run_openssl("genrsa", "-aes256", "-passout", passin, "-out", demo / "private/cakey.pem",
                "2048")
    run_openssl("req", "-new", "-x509", "-days", "3650", "-key", demo / "private/cakey.pem",
                "-passin", passin, "-config", cfg, "-sha256", "-extensions", "v3_ca",
                "-out", demo / "cacert.pem")
    for n in (1, 2, 3):
        csr = der_to_pem_csr(guide_csr(work, cn=f"cluster{n}.example.com",
                                       peers=(f"peer{n}a.example.com",), name=f"certcsr{n}"))
        run_openssl("ca", "-batch", "-config", cfg, "-passin", passin, "-cert",
                    demo / "cacert.pem", "-keyfile", demo / "private/cakey.pem", "-in", csr,
                    "-out", demo / f"certs/server{n}.pem")
    run_openssl("ca", "-config", cfg, "-passin", passin, "-revoke", demo / "newcerts/10.pem",
                "-crl_reason", "keyCompromise")
    run_openssl("ca", "-config", cfg, "-passin", passin, "-revoke", demo / "newcerts/11.pem",
                "-crl_compromise", "20261101000000Z")
    run_openssl("ca", "-config", cfg, "-passin", passin, "-gencrl", "-out", demo / "crl.pem")
    index = read_index(demo)
    assert {s: r["status"] for s, r in index.items()} == {"10": "R", "11": "R", "12": "V"}
    assert index["10"]["revinfo"] == ["keyCompromise"]
    assert index["11"]["revinfo"] == ["keyTime", "20261101000000Z"]
    return demo


@pytest.fixture
def democa(guide_democa, tmp_path) -> Path:
    """A private copy of the guide's demoCA (its config pointing at the copy)."""
    demo = tmp_path / "demoCA"
    shutil.copytree(guide_democa, demo)
    write_guide_config(demo)
    return demo


@pytest.fixture
def legacy_pass(tmp_path) -> Path:
    path = tmp_path / "legacy.pass"
    path.write_text(LEGACY_PASSPHRASE + "\n")
    return path


# ---------------------------------------------------------------- 1. import

def test_import_guide_democa_keeps_index_serial_crlnumber_and_settings(
        pkiq, democa, legacy_pass, passfile, tmp_path):
    index = read_index(democa)
    serial_file = int((democa / "serial").read_text(), 16)
    crlnumber_file = int((democa / "crlnumber").read_text(), 16)
    assert (serial_file, crlnumber_file) == (0x13, 0x1001)  # openssl moved both on

    info = as_json(pkiq("ca", "import-openssl", "Imported", democa,
                        "--import-passphrase-file", legacy_pass, "--passphrase-file", passfile,
                        "--json"))
    assert info["imported"] == {"V": 1, "R": 2, "E": 0}
    assert info["policy"]["name"] == "policy_anything"
    assert info["policy"]["fields"] == POLICY_ANYTHING_FIELDS
    assert info["policy"]["preserve"] is False
    assert info["copy_extensions"] == "copy"
    assert info["default_days"] == 730
    assert info["crl_hours"] == 30 * 24
    assert info["unique_subject"] is False
    assert info["serial_mode"] == "sequential"
    assert int(info["next_serial"], 16) == serial_file
    assert info["subject"] == "/C=GB/ST=England/O=Example Ltd/CN=Example Guide CA"

    # Every index.txt row, with its status, revocation time, reason and compromise time.
    for serial, row in index.items():
        got = as_json(pkiq("ca", "status", "Imported", serial, "--json"))
        assert got["serial"] == serial
        assert got["status"] == {"V": "valid", "R": "revoked"}[row["status"]], serial
        assert got["subject"] == row["subject"]
        assert dt.datetime.fromisoformat(got["not_after"]) == row["expires"]
        if row["status"] == "R":
            assert dt.datetime.fromisoformat(got["revoked_at"]) == row["revoked_at"]
        else:
            assert got["revoked_at"] is None and got["reason"] is None
    k10 = as_json(pkiq("ca", "status", "Imported", "10", "--json"))
    assert (k10["reason"], k10["invalidity_date"]) == ("keyCompromise", None)
    k11 = as_json(pkiq("ca", "status", "Imported", "11", "--json"))
    assert k11["reason"] == "keyCompromise"
    assert dt.datetime.fromisoformat(k11["invalidity_date"]) == dt.datetime(
        2026, 11, 1, tzinfo=dt.UTC)
    assert pkiq("ca", "status", "Imported", "12").stdout.strip() == "12=Valid (V)"

    # The certificates themselves, byte for byte as newcerts/ holds them.
    for serial in index:
        got = ok(pkiq("cert", "get", serial, "--ca", "Imported")).stdout
        assert got == cert_pems((democa / "newcerts" / f"{serial}.pem").read_text())[0]

    # pkiq carries on where openssl stopped: serial from `serial`, CRL number from `crlnumber`.
    csr = guide_csr(tmp_path, cn="cluster4.example.com", name="next")
    issued = as_json(pkiq("ca", "sign", "Imported", csr, "--passphrase-file", passfile,
                          "--out", tmp_path / "next.pem", "--json"))
    assert int(issued["serial"], 16) == serial_file
    assert load_cert(tmp_path / "next.pem").serial_number == serial_file
    run_openssl("verify", "-CAfile", democa / "cacert.pem", tmp_path / "next.pem")

    crl_info = as_json(pkiq("ca", "gencrl", "Imported", "--passphrase-file", passfile,
                            "--out", tmp_path / "crl.pem", "--json"))
    assert crl_info["crl_number"] == crlnumber_file
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl_number(crl) == crlnumber_file
    entries = crl_entries(crl)
    assert entries == {
        0x10: ("key_compromise", index["10"]["revoked_at"], None),
        0x11: ("key_compromise", index["11"]["revoked_at"],
               dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
    }
    check = run_openssl("crl", "-in", tmp_path / "crl.pem", "-CAfile", democa / "cacert.pem",
                        "-noout")
    assert b"verify OK" in check.stdout + check.stderr


# ---------------------------------------------------------------- 2. export

def test_export_is_kept_in_use_by_openssl_ca(pkiq, passfile, tmp_path):
    ok(pkiq("ca", "create", "R", "--subject", "/C=GB/O=Example Ltd/CN=Example pkiq Root",
            "--key-type", "rsa2048", "--passphrase-file", passfile))
    certs = []
    for n in (1, 2, 3):
        csr = guide_csr(tmp_path, cn=f"expe{n}.example.com",
                        peers=(f"expe{n}b.example.com",), name=f"req{n}")
        out = tmp_path / f"cert{n}.pem"
        ok(pkiq("ca", "sign", "R", csr, "--out", out, "--passphrase-file", passfile))
        certs.append(out)
    serials = [serial_of(c) for c in certs]
    assert len(set(serials)) == 3
    valid, compromised, superseded = serials
    ok(pkiq("ca", "revoke", "R", compromised, "--reason", "keyCompromise"))
    ok(pkiq("ca", "revoke", "R", superseded, "--reason", "superseded"))
    pkiq_crl_path = tmp_path / "pkiq_crl.pem"
    ok(pkiq("ca", "gencrl", "R", "--out", pkiq_crl_path, "--passphrase-file", passfile))
    pkiq_crl = x509.load_pem_x509_crl(pkiq_crl_path.read_bytes())

    export = tmp_path / "exported"
    ok(pkiq("ca", "export-openssl", "R", export))
    cnf, cacert = export / "openssl.cnf", export / "cacert.pem"
    passin = ("-passin", f"file:{passfile}")

    # openssl ca -status reads the exported index (it answers on stderr).
    for serial, word in ((valid, "Valid (V)"), (compromised, "Revoked (R)"),
                         (superseded, "Revoked (R)")):
        proc = openssl("ca", "-config", str(cnf), *passin, "-status", serial, check=False)
        assert f"{serial}={word}" in proc.stderr.decode(), proc.stderr.decode()

    # openssl ca -gencrl: the same entries and reasons as pkiq's CRL, a higher number.
    ossl_crl_path = tmp_path / "openssl_crl.pem"
    run_openssl("ca", "-config", cnf, *passin, "-gencrl", "-out", ossl_crl_path)
    ossl_crl = x509.load_pem_x509_crl(ossl_crl_path.read_bytes())
    expected = {int(compromised, 16): "key_compromise", int(superseded, 16): "superseded"}
    assert {s: e[0] for s, e in crl_entries(pkiq_crl).items()} == expected
    assert crl_entries(ossl_crl) == crl_entries(pkiq_crl)
    assert crl_number(ossl_crl) > crl_number(pkiq_crl)
    for crl_path in (pkiq_crl_path, ossl_crl_path):
        check = run_openssl("crl", "-in", crl_path, "-CAfile", cacert, "-noout")
        assert b"verify OK" in check.stdout + check.stderr

    # openssl verify -crl_check against pkiq's own CRL.
    verify = ("verify", "-crl_check", "-CAfile", str(cacert), "-CRLfile", str(pkiq_crl_path))
    run_openssl(*verify, certs[0])
    for revoked in certs[1:]:
        proc = openssl(*verify, str(revoked), check=False)
        assert proc.returncode != 0
        assert "certificate revoked" in (proc.stdout + proc.stderr).decode()
    proc = openssl("verify", "-crl_check", "-CAfile", str(cacert), "-CRLfile",
                   str(ossl_crl_path), str(certs[1]), check=False)
    assert proc.returncode != 0 and b"certificate revoked" in proc.stdout + proc.stderr

    # openssl ca signs a new guide request on the export; the result chains to cacert.pem.
    next_serial = int((export / "serial").read_text(), 16)
    new_csr = der_to_pem_csr(guide_csr(tmp_path, cn="expe4.example.com",
                                       peers=("expe4b.example.com",), name="new.csr"))
    new_pem = tmp_path / "new.pem"
    run_openssl("ca", "-batch", "-config", cnf, *passin, "-in", new_csr, "-out", new_pem)
    run_openssl("verify", "-CAfile", cacert, new_pem)
    new_cert = load_cert(new_pem)
    assert new_cert.serial_number == next_serial
    assert new_cert.issuer == load_cert(cacert).subject
    sans = new_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"expe4.example.com",
                                                           "expe4b.example.com"}
    new_serial = serial_of(new_pem)
    assert read_index(export)[new_serial]["status"] == "V"
    proc = openssl("ca", "-config", str(cnf), *passin, "-status", new_serial, check=False)
    assert f"{new_serial}=Valid (V)" in proc.stderr.decode()


# ---------------------------------------------------------------- 3. sub CA

def test_sub_ca_chain_verifies_with_openssl(pkiq, passfile, tmp_path):
    ok(pkiq("ca", "create", "R", "--subject", "/C=GB/O=Example Ltd/CN=Example Root",
            "--key-type", "rsa2048", "--passphrase-file", passfile))
    ok(pkiq("ca", "create", "Issuing", "--parent", "R", "--subject",
            "/C=GB/O=Example Ltd/CN=Example Issuing CA", "--key-type", "rsa2048",
            "--parent-passphrase-file", passfile, "--passphrase-file", passfile))
    root, issuing, leaf = tmp_path / "root.pem", tmp_path / "issuing.pem", tmp_path / "leaf.pem"
    root.write_text(ok(pkiq("ca", "show", "R", "--pem")).stdout)
    issuing.write_text(ok(pkiq("ca", "show", "Issuing", "--pem")).stdout)
    csr = guide_csr(tmp_path, cn="expe.example.com", name="leaf")
    ok(pkiq("ca", "sign", "Issuing", csr, "--out", leaf, "--passphrase-file", passfile))
    assert load_cert(issuing).issuer == load_cert(root).subject
    assert load_cert(leaf).issuer == load_cert(issuing).subject

    proc = run_openssl("verify", "-CAfile", root, "-untrusted", issuing, leaf)
    assert proc.stdout.decode().strip() == f"{leaf}: OK"
    missing = openssl("verify", "-CAfile", str(root), str(leaf), check=False)
    assert missing.returncode != 0  # the intermediate really is needed

    chain = cert_pems(ok(pkiq("cert", "get", serial_of(leaf), "--chain")).stdout)
    assert chain == [leaf.read_text(), issuing.read_text(), root.read_text()]
    parts = [tmp_path / f"chain{i}.pem" for i in range(3)]
    for path, pem in zip(parts, chain, strict=True):
        path.write_text(pem)
    proc = run_openssl("verify", "-CAfile", parts[2], "-untrusted", parts[1], parts[0])
    assert proc.stdout.decode().strip() == f"{parts[0]}: OK"


# ---------------------------------------------------------------- 4. bad input

def test_import_with_wrong_passphrase_changes_nothing(pkiq, democa, legacy_pass, passfile,
                                                      tmp_path):
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the guide passphrase\n")
    result = pkiq("ca", "import-openssl", "Imported", democa,
                  "--import-passphrase-file", wrong, "--passphrase-file", passfile)
    assert result.exit_code == 6
    assert "passphrase" in one_error_line(result)
    assert as_json(pkiq("ca", "list", "--json")) == []
    # Nothing half-made: the same import with the right passphrase goes through.
    ok(pkiq("ca", "import-openssl", "Imported", democa,
            "--import-passphrase-file", legacy_pass, "--passphrase-file", passfile))
    assert [c["name"] for c in as_json(pkiq("ca", "list", "--json"))] == ["Imported"]


def test_import_keeps_the_old_argument_order_for_one_release(pkiq, democa, legacy_pass,
                                                             passfile):
    """'FOLDER --name NAME' (before every 'pkiq ca' command named the CA first) still works,
    saying what to type instead; a mix of both forms is a usage error that changes nothing."""
    mixed = pkiq("ca", "import-openssl", "Imported", democa, "--name", "Other",
                 "--import-passphrase-file", legacy_pass, "--passphrase-file", passfile)
    assert mixed.exit_code == 2 and "only FOLDER" in mixed.output
    missing = pkiq("ca", "import-openssl", democa, "--passphrase-file", passfile)
    assert missing.exit_code == 2 and "NAME, then the demoCA FOLDER" in missing.output
    assert as_json(pkiq("ca", "list", "--json")) == []
    old = pkiq("ca", "import-openssl", democa, "--name", "Imported",
               "--import-passphrase-file", legacy_pass, "--passphrase-file", passfile)
    assert old.exit_code == 0, old.output
    assert f"use 'pkiq ca import-openssl Imported {democa}'" in old.stderr
    assert [c["name"] for c in as_json(pkiq("ca", "list", "--json"))] == ["Imported"]


@pytest.mark.parametrize("garbage", [b"this is not an OpenSSL index\n",
                                     b"\xff\xfe\x00\x81garbage\x80\xc3\n"],
                         ids=["text", "binary"])
def test_import_of_garbage_index_changes_nothing(pkiq, democa, legacy_pass, passfile,
                                                 garbage):
    (democa / "index.txt").write_bytes(garbage)
    result = pkiq("ca", "import-openssl", "Imported", democa,
                  "--import-passphrase-file", legacy_pass, "--passphrase-file", passfile)
    assert result.exit_code == 3, result.output
    assert "index.txt" in one_error_line(result)
    assert as_json(pkiq("ca", "list", "--json")) == []


def test_export_into_non_empty_folder_changes_nothing(pkiq, passfile, tmp_path):
    ok(pkiq("ca", "create", "R", "--subject", "/C=GB/O=Example Ltd/CN=Example Root",
            "--key-type", "ec-p256", "--passphrase-file", passfile))
    target = tmp_path / "busy"
    target.mkdir()
    keep = target / "index.txt"
    keep.write_text("V\t300101000000Z\t\t01\tunknown\t/CN=someone else's CA\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = pkiq("ca", "export-openssl", "R", target)
    assert result.exit_code != 0
    one_error_line(result)
    assert keep.read_text() == "V\t300101000000Z\t\t01\tunknown\t/CN=someone else's CA\n"
    assert [p.name for p in target.iterdir()] == ["index.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging left behind
