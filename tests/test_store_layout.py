"""A node's store contents (ca.store_layout) and OpenSSL's name hash (ca.name_hash), judged
by the real openssl binary: ``x509 -hash``, ``crl -hash``, ``rehash`` and ``verify``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.bundles import crl_bundle
from ca.errors import BadInput, PolicyViolation
from ca.name_hash import subject_hash
from ca.store_layout import (
    MANIFEST,
    StoreInputs,
    check_trusted_list,
    crl_pem,
    store_files,
    unique_certificates,
)

from .conftest import openssl
from .storepki import T0, key_pem, make_ca, make_leaf, name, pem, pki

pytestmark = pytest.mark.openssl

# (subject as ``openssl req -subj`` takes it, string_mask, -multivalue-rdn)
SUBJECTS = [
    ("/C=GB/O=  Mixed   CASE  Org /CN=Host.Example.COM", "utf8only", False),
    ("/C=GB/O=  Mixed   CASE  Org /CN=Host.Example.COM", "default", False),
    ("/C=GB/O=  Mixed   CASE  Org /CN=Host.Example.COM", "nombstr", False),
    ("/CN=Ünïcödé  ÀÑame /emailAddress=Foo@Example.COM", "utf8only", False),
    # outside Latin-1, so BMPString (Latin-1 text would be a T61String pyca cannot read)
    ("/CN=ΩMEGA  Ünï /emailAddress=Foo@Example.COM", "default", False),
    ("/CN=Ünïcödé  ÀÑame /emailAddress=Foo@Example.COM", "pkix", False),
    ("/O=X Corp+OU=Video  Team/CN=a", "utf8only", True),
    ("/OU=b+OU=A+CN=Same/O=z", "default", True),
    ("/DC=Example/DC=COM/CN=Tab\there", "utf8only", False),
    ("/DC=Example/DC=COM/CN=Tab\there", "nombstr", False),  # T61String with a tab
    ("/serialNumber=AB  12/CN=  lead and trail  ", "default", False),
    ("/", "utf8only", False),  # the empty name
]


def _req_cert(folder: Path, index: int, subject: str, mask: str, multi: bool) -> Path:
    config = folder / f"req{index}.cnf"
    config.write_text(f"[req]\ndistinguished_name=dn\nstring_mask={mask}\n[dn]\n")
    key = folder / "key.pem"
    if not key.exists():
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    out = folder / f"cert{index}.pem"
    openssl("req", "-x509", "-new", "-key", str(key), "-days", "1", "-utf8",
            "-config", str(config), "-subj", subject, "-out", str(out),
            *(["-multivalue-rdn"] if multi else []))
    return out


def test_subject_hash_equals_openssl_x509_hash(tmp_path):
    types_seen = set()
    for index, (subject, mask, multi) in enumerate(SUBJECTS):
        path = _req_cert(tmp_path, index, subject, mask, multi)
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        expected = openssl("x509", "-hash", "-noout", "-in", str(path)).stdout.decode().strip()
        assert subject_hash(cert.subject) == expected, (subject, mask)
        parsed = openssl("asn1parse", "-in", str(path)).stdout.decode("latin-1")
        types_seen.update(kind for kind in ("UTF8STRING", "PRINTABLESTRING", "BMPSTRING",
                                            "T61STRING", "IA5STRING") if kind in parsed)
    # the list above really exercised every string type OpenSSL converts
    assert types_seen == {"UTF8STRING", "PRINTABLESTRING", "BMPSTRING", "T61STRING",
                          "IA5STRING"}


def test_names_differing_only_in_case_and_spaces_share_a_hash_others_do_not():
    base = subject_hash(name((NameOID.COMMON_NAME, "Issuing CA")))
    assert subject_hash(name((NameOID.COMMON_NAME, "  ISSUING    ca "))) == base
    assert subject_hash(name((NameOID.COMMON_NAME, "Issuing CA 2"))) != base
    # non-ASCII letters are not folded (OpenSSL lower-cases ASCII only)
    assert subject_hash(name((NameOID.COMMON_NAME, "É"))) != subject_hash(
        name((NameOID.COMMON_NAME, "é")))


def test_subject_hash_equals_openssl_crl_hash(tmp_path):
    for index, issuer in enumerate([
        name((NameOID.COUNTRY_NAME, "GB"), (NameOID.COMMON_NAME, "CRL  Issuer  ONE")),
        name((NameOID.ORGANIZATION_NAME, "Ünïcödé"), (NameOID.EMAIL_ADDRESS, "X@Y.Z")),
        x509.Name([x509.RelativeDistinguishedName([
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "z"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "A")])]),
        x509.Name([]),
    ]):
        ca = make_ca(issuer)
        path = tmp_path / f"crl{index}.der"
        path.write_bytes(ca.crl())
        expected = openssl("crl", "-inform", "DER", "-hash", "-noout", "-in",
                           str(path)).stdout.decode().splitlines()[0].strip()
        assert subject_hash(issuer) == expected, issuer


def _inputs(**changes) -> StoreInputs:
    p = pki()
    values = dict(server_cert=p.leaf, chain=(p.intermediate.cert, p.root.cert),
                  private_key_pem=key_pem(p.leaf_key),
                  trusted=(p.root.cert, p.intermediate.cert), crls=p.crls(),
                  reason="test")
    values.update(changes)
    return StoreInputs(**values)


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for file_name, data in files.items():
        target = folder / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_store_files_have_the_expected_names_and_content():
    p = pki()
    content = store_files(_inputs(), T0)
    files = content.files
    hashes_ = {subject_hash(p.root.cert.subject), subject_hash(p.intermediate.cert.subject)}
    assert list(files)[:9] == ["server.pem", "chain.pem", "fullchain.pem", "privkey.pem",
                               "trusted-ca.pem", "crls.pem", "trusted-ca-with-crls.pem",
                               "crls.zip", "crls.tar.gz"]
    ders = list(p.crls())
    assert files["crls.zip"] == crl_bundle(ders, "zip")  # the bundles Expressways fetch
    assert files["crls.tar.gz"] == crl_bundle(ders, "tgz")
    assert list(files)[-1] == MANIFEST
    assert {f for f in files if f.startswith("capath/")} == (
        {f"capath/{h}.0" for h in hashes_} | {f"capath/{h}.r0" for h in hashes_})
    assert files["server.pem"] == pem(p.leaf)
    assert files["chain.pem"] == pem(p.intermediate.cert) + pem(p.root.cert)
    assert files["fullchain.pem"] == pem(p.leaf) + files["chain.pem"]
    assert files["trusted-ca-with-crls.pem"] == files["trusted-ca.pem"] + files["crls.pem"]
    assert content.private == frozenset({"privkey.pem"})
    assert files["privkey.pem"].endswith(b"-----\n") and not files["privkey.pem"].endswith(
        b"\n\n")
    manifest = json.loads(files[MANIFEST])
    assert manifest["published_at"] == "2026-11-27T10:00:00Z"
    assert manifest["digest"] == content.digest
    assert manifest["server"]["fingerprint"] == hashlib.sha256(
        p.leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert manifest["server"]["serial"] == f"{p.leaf.serial_number:X}"
    for file_name, entry in manifest["files"].items():
        assert entry == {"sha256": hashlib.sha256(files[file_name]).hexdigest(),
                         "size": len(files[file_name])}
    assert set(manifest["files"]) == set(files) - {MANIFEST}
    numbers = {(crl["issuer"], crl["number"]) for crl in manifest["crls"]}
    assert numbers == {("/O=Example/CN=Store Root CA", 3),
                       ("/O=Example/CN=Store Issuing CA", 7)}
    assert all(crl["scope"]["complete"] and not crl["scope"]["idp"]
               for crl in manifest["crls"])


def test_the_key_is_one_block_ending_in_exactly_one_newline():
    key = key_pem(pki().leaf_key).rstrip(b"\n")
    for given in (key, key + b"\n", key + b"\n\n\r\n",
                  b"Bag Attributes\n    localKeyID: 01\n" + key + b"\ntrailing words\n"):
        assert store_files(_inputs(private_key_pem=given), T0).files["privkey.pem"] == (
            key + b"\n")
    traditional = pki().leaf_key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption())
    written = store_files(_inputs(private_key_pem=traditional), T0).files["privkey.pem"]
    assert written == traditional and written.startswith(b"-----BEGIN EC PRIVATE KEY")


def test_an_encrypted_or_foreign_key_is_refused():
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(PolicyViolation, match="does not belong"):
        store_files(_inputs(private_key_pem=key_pem(other)), T0)
    encrypted = pki().leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-pass"))
    with pytest.raises(BadInput, match="unencrypted"):
        store_files(_inputs(private_key_pem=encrypted), T0)
    with pytest.raises(BadInput, match="without its server certificate"):
        store_files(_inputs(server_cert=None), T0)


def test_same_inputs_in_another_order_and_time_give_the_same_files_and_digest():
    p = pki()
    first = store_files(_inputs(), T0)
    later = T0 + dt.timedelta(days=1)
    second = store_files(_inputs(trusted=(p.intermediate.cert, p.root.cert, p.root.cert),
                                 crls=tuple(reversed(p.crls())), reason="again"), later)
    assert first.digest == second.digest
    assert {k: v for k, v in first.files.items() if k != MANIFEST} == {
        k: v for k, v in second.files.items() if k != MANIFEST}
    assert store_files(_inputs(), T0).files == first.files  # byte-identical, manifest too
    newer = store_files(_inputs(crls=(p.root.crl(number=4), p.intermediate.crl(7))), T0)
    assert newer.digest != first.digest


def test_empty_store_and_certificate_only_store():
    empty = store_files(StoreInputs(None, (), None, (), (), "nothing yet"), T0)
    assert list(empty.files) == [MANIFEST]
    assert json.loads(empty.files[MANIFEST])["server"] is None
    p = pki()
    lone = store_files(StoreInputs(p.leaf, (), None, (), (), "cert only"), T0)
    assert list(lone.files) == ["server.pem", "fullchain.pem", MANIFEST]
    assert lone.files["fullchain.pem"] == lone.files["server.pem"]


def test_two_cas_with_one_issuer_and_subject_are_refused_repeats_collapsed():
    p = pki()
    again = make_ca(p.root.cert.subject)  # a new key, the same names: a re-keyed root
    check_trusted_list([p.root.cert, p.root.cert, p.intermediate.cert])
    assert unique_certificates([p.root.cert, p.intermediate.cert, p.root.cert]) == (
        p.root.cert, p.intermediate.cert)
    with pytest.raises(PolicyViolation, match="one per issuer and subject") as caught:
        store_files(_inputs(trusted=(p.root.cert, p.intermediate.cert, again.cert)), T0)
    assert caught.value.field == "trusted"
    assert "\n" not in str(caught.value)


def test_scoped_crl_is_described_in_the_manifest():
    p = pki()
    scoped = p.intermediate.crl(number=9, idp_url="http://crl.example.com/issuing.crl")
    manifest = json.loads(store_files(_inputs(crls=(scoped,)), T0).files[MANIFEST])
    (entry,) = manifest["crls"]
    assert entry["scope"]["idp"] and not entry["scope"]["complete"]
    assert entry["scope"]["full_name"] == ["URI:http://crl.example.com/issuing.crl"]
    assert entry["number"] == 9 and entry["next_update"] == "2026-12-04T10:00:00Z"


def test_capath_names_equal_openssl_rehash_and_hash_collisions_count_up(tmp_path):
    p = pki()
    # the issuing CA cross-signed by a second root (same subject and key, another issuer)
    # and a second, scoped CRL of the same issuer: each shares a hash, so rehash counts .1
    other_root = make_ca(name((NameOID.COMMON_NAME, "Other Root")))
    cross = make_ca(p.intermediate.cert.subject, other_root, key=p.intermediate.key)
    scoped = p.intermediate.crl(number=8, idp_url="http://crl.example.com/i.crl")
    inputs = _inputs(trusted=(p.root.cert, p.intermediate.cert, cross.cert, other_root.cert),
                     crls=(*p.crls(), scoped))
    files = store_files(inputs, T0).files
    ours = {n.removeprefix("capath/") for n in files if n.startswith("capath/")}
    issuing = subject_hash(p.intermediate.cert.subject)
    assert {f"{issuing}.0", f"{issuing}.1", f"{issuing}.r0", f"{issuing}.r1"} <= ours
    loose = tmp_path / "loose"
    loose.mkdir()
    for index, cert in enumerate(inputs.trusted):
        (loose / f"ca{index}.pem").write_bytes(pem(cert))
    for index, der in enumerate(inputs.crls):
        (loose / f"crl{index}.pem").write_bytes(crl_pem(der))
    openssl("rehash", str(loose))
    theirs = {path.name for path in loose.iterdir() if path.is_symlink()}
    assert ours == theirs


def test_openssl_verify_with_the_capath_accepts_good_and_refuses_revoked(tmp_path):
    p = pki()
    files = store_files(_inputs(), T0).files
    _write(tmp_path, files)
    revoked = tmp_path / "revoked.pem"
    revoked.write_bytes(pem(p.revoked_leaf))
    when = str(int((T0 + dt.timedelta(hours=1)).timestamp()))
    ok = openssl("verify", "-CApath", str(tmp_path / "capath"), "-crl_check_all",
                 "-attime", when, str(tmp_path / "server.pem"), check=False)
    assert ok.returncode == 0, ok.stderr
    bad = openssl("verify", "-CApath", str(tmp_path / "capath"), "-crl_check_all",
                  "-attime", when, str(revoked), check=False)
    assert bad.returncode != 0 and b"revoked" in bad.stdout + bad.stderr
    # the Expressway-style single file does the same job as the folder
    single = openssl("verify", "-CAfile", str(tmp_path / "trusted-ca-with-crls.pem"),
                     "-crl_check_all", "-attime", when, str(revoked), check=False)
    assert single.returncode != 0 and b"revoked" in single.stdout + single.stderr


def test_the_leaf_and_key_files_load_as_a_tls_server_would(tmp_path):
    _write(tmp_path, store_files(_inputs(), T0).files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "fullchain.pem", tmp_path / "privkey.pem")
    _write(tmp_path / "other", store_files(_inputs(
        server_cert=make_leaf(pki().intermediate, "expe3.example.com")[0],
        private_key_pem=None), T0).files)
    with pytest.raises(ssl.SSLError):  # a key that is not the certificate's is refused
        context.load_cert_chain(tmp_path / "other" / "server.pem", tmp_path / "privkey.pem")
