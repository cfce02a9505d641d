"""``pkiq verify``: the path, each rule broken by several kinds of certificate, revocation of
every certificate with Expressway's sources and fallback, CDP downloads from a real HTTP
server, a node's trusted list and CRLs from the database, and bad input in one line.

Certificates are made here with cryptography's builders (EC keys: fast) around ``T0``, and
every check runs at ``--at T0`` unless it moves the time on purpose.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pkiq.cli import cli

from . import httpd
from .conftest import make_csr
from .httpd import Reply
from .test_cli import assert_one_line_error
from .test_nodes import js, make_estate, ok

http_server = httpd.http_server

T0 = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)
AT = T0.isoformat()
DAY = dt.timedelta(days=1)
_KEY = ec.generate_private_key(ec.SECP256R1())  # leaves may share one; CAs get their own


@dataclass
class Made:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def make(cn: str, issuer: Made | None = None, *, ca: bool | None = False,
         path_len: int | None = None, before: dt.datetime = T0 - DAY,
         after: dt.datetime = T0 + 30 * DAY, eku=(ExtendedKeyUsageOID.SERVER_AUTH,),
         sans: tuple[str, ...] = (), ips: tuple[str, ...] = (), cdp: str | None = None,
         key_usage: str | None = None, serial: int | None = None,
         issuer_name: x509.Name | None = None) -> Made:
    """One certificate; ``ca=None`` leaves out basicConstraints altogether."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1()) if ca or ca is None else _KEY
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                         x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = issuer or Made(None, key)  # type: ignore[arg-type]
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_name or (issuer.cert.subject if issuer else subject))
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(before).not_valid_after(after)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()), False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len),
                                        critical=True)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=key_usage != "no-crl-sign", encipher_only=False, decipher_only=False),
            critical=True)
    elif eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), False)
    names = [x509.DNSName(s) for s in sans] + [x509.IPAddress(ipaddress.ip_address(i))
                                              for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    if cdp:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(cdp)], None, None, None)]), False)
    return Made(builder.sign(signer.key, hashes.SHA256()), key)


def crl(issuer: Made, revoked: tuple[Made, ...] = (), *, this: dt.datetime = T0 - DAY,
        nxt: dt.datetime = T0 + 7 * DAY, number: int = 1, reason=None,
        signer: Made | None = None) -> bytes:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(this).next_update(nxt)
               .add_extension(x509.CRLNumber(number), False))
    for made in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(made.cert.serial_number)
                 .revocation_date(this))
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign((signer or issuer).key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki():
    root = make("Verify Root", ca=True)
    issuing = make("Verify Issuing", root, ca=True, path_len=0)
    leaf = make("peer.example.com", issuing, sans=("peer.example.com", "sip.example.com"))
    return root, issuing, leaf


class Files:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.count = 0

    def __call__(self, data: bytes | Made, name: str | None = None) -> Path:
        self.count += 1
        path = self.dir / (name or f"f{self.count}.pem")
        path.write_bytes(data.pem if isinstance(data, Made) else data)
        return path


@pytest.fixture
def files(tmp_path) -> Files:
    return Files(tmp_path)


def run(*args, at: str = AT):
    """``pkiq verify`` in-process, without a database (files mode)."""
    return CliRunner().invoke(cli, ["verify", *[str(a) for a in args], "--at", at,
                                    "--no-use-ocsp", "--no-cdp-downloads"],
                              catch_exceptions=False)


def verdict(result) -> dict:
    return json.loads(result.stdout)


def check(files, pki, leaf: Made, *extra, crls=None, chain=None, at: str = AT):
    root, issuing, _ = pki
    args = [files(leaf), "--trusted", files(root)]
    for made in (chain if chain is not None else [issuing]):
        args += ["--intermediate", files(made)]
    for data in (crls if crls is not None else [crl(issuing), crl(root)]):
        args += ["--crl", files(data)]
    return run(*args, *extra, "--json", at=at)


def assert_invalid_at(result, position: int, fragment: str, code: int = 4):
    assert result.exit_code == code, result.output
    out = verdict(result)
    line = out["path"][position]
    assert line["state"] in {"invalid", "revoked", "undetermined"}, out
    assert fragment in line["detail"], line["detail"]
    return out


# ------------------------------------------------------------------ the good path

def test_a_good_chain_is_valid_with_one_line_per_certificate(files, pki):
    root, issuing, leaf = pki
    result = run(files(leaf), "--trusted", files(root), "--intermediate", files(issuing),
                 "--crl", files(crl(issuing)), "--crl", files(crl(root)),
                 "--purpose", "serverAuth", "--host", "sip.example.com")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("verdict: VALID")
    assert lines[0].startswith("[0] end-entity: /O=Example/CN=peer.example.com: OK")
    assert "not revoked" in lines[0] and "sip.example.com matches" in lines[0]
    assert lines[1].startswith("[1] intermediate: /O=Example/CN=Verify Issuing: OK")
    assert lines[2].startswith("[2] trust anchor: /O=Example/CN=Verify Root: OK")


def test_json_names_each_certificate_and_the_settings(files, pki):
    out = verdict(check(files, pki, pki[2], "--fallback", "revoked"))
    assert out["result"] == "valid"
    assert [p["role"] for p in out["path"]] == ["end-entity", "intermediate", "trust anchor"]
    assert [p["revocation"] for p in out["path"]] == ["good", "good", None]
    assert out["revocation"] == {"use_ocsp": False, "use_crls": True, "cdp_downloads": False,
                                 "fallback": "revoked"}


def test_the_chain_may_come_with_the_certificate_itself(files, pki):
    root, issuing, leaf = pki
    result = run(files(leaf.pem + issuing.pem), "--trusted", files(root), "--crl",
                 files(crl(issuing)), "--crl", files(crl(root)), "--fallback", "revoked")
    assert result.exit_code == 0, result.output


def test_an_intermediate_in_the_trusted_list_is_not_an_anchor(files, pki):
    """OpenSSL (so Expressway) builds up to a root and checks every CA below it: the
    intermediate's own CRL is still asked for."""
    root, issuing, leaf = pki
    result = run(files(leaf), "--trusted", files(root.pem + issuing.pem), "--crl",
                 files(crl(issuing)), "--fallback", "revoked", "--json")
    assert result.exit_code == 9, result.output
    assert [p["role"] for p in verdict(result)["path"]][-1] == "trust anchor"
    assert verdict(result)["path"][1]["state"] == "undetermined"


# ------------------------------------------------------------------ validity

@pytest.mark.parametrize(("which", "before", "after", "fragment"), [
    ("leaf", T0 - 30 * DAY, T0 - DAY, "expired"),
    ("leaf", T0 + DAY, T0 + 30 * DAY, "not valid until"),
    ("leaf", T0 - 30 * DAY, T0 - dt.timedelta(seconds=5), "expired"),
    ("intermediate", T0 - 30 * DAY, T0 - DAY, "expired"),
    ("intermediate", T0 + DAY, T0 + 60 * DAY, "not valid until"),
])
def test_outside_its_validity(files, pki, which, before, after, fragment):
    root, issuing, _ = pki
    if which == "leaf":
        leaf = make("peer.example.com", issuing, before=before, after=after)
        assert_invalid_at(check(files, pki, leaf), 0, fragment)
    else:
        other = make("Verify Issuing", root, ca=True, before=before, after=after)
        leaf = make("peer.example.com", other)
        assert_invalid_at(check(files, pki, leaf, chain=[other]), 1, fragment)


def test_at_moves_the_check_in_time(files, pki):
    later = (T0 + 40 * DAY).isoformat()
    result = check(files, pki, pki[2], at=later, crls=[])
    assert result.exit_code == 4
    out = verdict(result)  # pyhanko stops at the first broken rule, from the anchor down
    assert "expired" in out["reason"] and out["path"][0]["state"] == "unchecked"
    assert check(files, pki, pki[2], at=(T0 + 20 * DAY).isoformat()).exit_code == 4  # CRLs


# ------------------------------------------------------------------ issuer and signature

def test_wrong_issuer_has_no_path(files, pki):
    stranger = make("Stranger CA", ca=True)
    leaf = make("peer.example.com", stranger)
    out = assert_invalid_at(check(files, pki, leaf), 0, "no path to a trusted root")
    assert "Stranger CA" in out["path"][0]["detail"]


def test_issuer_named_right_but_another_key_fails_the_signature(files, pki):
    root, issuing, _ = pki
    other_key = ec.generate_private_key(ec.SECP256R1())
    leaf = make("peer.example.com", Made(issuing.cert, other_key))  # names it, signed by another
    out = assert_invalid_at(check(files, pki, leaf), 0, "signature")
    assert out["path"][1]["state"] == "ok"


def test_trusted_list_without_a_root(files, pki):
    root, issuing, leaf = pki
    result = run(files(leaf), "--trusted", files(issuing), "--json")
    assert_invalid_at(result, 0, "no trust anchor")


@pytest.mark.parametrize("which", ["leaf", "intermediate"])
def test_a_tampered_signature(files, pki, which):
    root, issuing, leaf = pki
    target = leaf if which == "leaf" else issuing
    der = bytearray(target.cert.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x55  # inside the signature value
    try:
        bad = x509.load_der_x509_certificate(bytes(der))
    except ValueError:  # an EC signature that no longer parses: flip elsewhere
        der[-3] ^= 0x55
        der[-10] ^= 0x01
        bad = x509.load_der_x509_certificate(bytes(der))
    tampered = Made(bad, target.key)
    if which == "leaf":
        result = check(files, pki, tampered)
        position = 0
    else:
        result = check(files, pki, leaf, chain=[tampered])
        position = 1
    assert result.exit_code == 4, result.output
    out = verdict(result)
    assert "signature" in out["reason"] or "no path" in out["reason"], out
    assert out["path"][0]["state"] == "invalid" or out["path"][position]["state"] == "invalid"


# ------------------------------------------------------------------ basic constraints

def test_path_length_of_the_intermediate_exceeded(files, pki):
    root, issuing, _ = pki  # issuing has pathLen 0
    sub = make("Verify Sub", issuing, ca=True)
    leaf = make("peer.example.com", sub)
    result = check(files, pki, leaf, chain=[issuing, sub],
                   crls=[crl(issuing), crl(root), crl(sub)])
    assert result.exit_code == 4
    assert "path length" in verdict(result)["reason"].lower()


def test_path_length_of_the_root_exceeded(files):
    root = make("Tight Root", ca=True, path_len=0)
    issuing = make("Tight Issuing", root, ca=True)
    leaf = make("peer.example.com", issuing)
    result = run(files(leaf), "--trusted", files(root), "--intermediate", files(issuing),
                 "--json")
    assert result.exit_code == 4
    assert "path length" in verdict(result)["reason"].lower()


@pytest.mark.parametrize("ca_flag", [False, None], ids=["CA:FALSE", "no basicConstraints"])
def test_an_intermediate_that_is_not_a_ca(files, pki, ca_flag):
    root = pki[0]
    fake = make("Not A CA", root, ca=ca_flag, eku=())
    leaf = make("peer.example.com", fake)
    result = check(files, pki, leaf, chain=[fake])
    out = assert_invalid_at(result, 1, "")
    assert out["path"][1]["state"] == "invalid"
    assert "CA" in out["reason"] or "basic constraints" in out["reason"].lower()


def test_an_intermediate_without_key_cert_sign_cannot_issue(files, pki):
    root = pki[0]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "No CertSign CA")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(root.cert.subject)
            .public_key(key.public_key()).serial_number(7).not_valid_before(T0 - DAY)
            .not_valid_after(T0 + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, True, False,
                                         False), True)
            .sign(root.key, hashes.SHA256()))
    ca = Made(cert, key)
    leaf = make("peer.example.com", ca)
    result = check(files, pki, leaf, chain=[ca])
    assert result.exit_code == 4
    assert "not allowed to sign certificates" in verdict(result)["reason"]


# ------------------------------------------------------------------ purpose and host

@pytest.mark.parametrize(("eku", "purpose"), [
    ((ExtendedKeyUsageOID.SERVER_AUTH,), "clientAuth"),
    ((ExtendedKeyUsageOID.CLIENT_AUTH,), "serverAuth"),
    ((ExtendedKeyUsageOID.CODE_SIGNING,), "serverAuth"),
    ((ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING), "clientAuth"),
])
def test_wrong_extended_key_usage(files, pki, eku, purpose):
    leaf = make("peer.example.com", pki[1], eku=eku)
    assert_invalid_at(check(files, pki, leaf, "--purpose", purpose), 0, "does not allow")


@pytest.mark.parametrize("purpose", ["serverAuth", "clientAuth"])
def test_both_purposes_and_no_eku_at_all(files, pki, purpose):
    both = make("peer.example.com", pki[1], eku=(ExtendedKeyUsageOID.SERVER_AUTH,
                                                 ExtendedKeyUsageOID.CLIENT_AUTH))
    assert check(files, pki, both, "--purpose", purpose).exit_code == 0
    none = make("peer.example.com", pki[1], eku=())
    assert check(files, pki, none, "--purpose", purpose).exit_code == 0


@pytest.mark.parametrize(("cn", "sans", "ips", "host"), [
    ("peer.example.com", ("peer.example.com",), (), "other.example.com"),
    ("peer.example.com", (), (), "peer.example.org"),
    ("peer.example.com", ("*.example.com",), (), "a.b.example.com"),
    ("peer.example.com", ("peer.example.com",), ("192.0.2.10",), "192.0.2.11"),
    ("peer.example.com", ("*.example.com",), (), "example.com"),
])
def test_wrong_host(files, pki, cn, sans, ips, host):
    leaf = make(cn, pki[1], sans=sans, ips=ips)
    assert_invalid_at(check(files, pki, leaf, "--host", host), 0, "is neither the subject CN")


@pytest.mark.parametrize(("cn", "sans", "ips", "host"), [
    ("peer.example.com", ("other.example.com",), (), "PEER.example.com."),  # CN beside a SAN
    ("cn.example.com", ("peer.example.com",), (), "peer.example.com"),
    ("peer.example.com", ("*.example.com",), (), "x.example.com"),
    ("peer.example.com", (), ("192.0.2.10",), "192.0.2.10"),
    ("192.0.2.20", (), (), "192.0.2.20"),
])
def test_host_in_cn_or_san_as_tls_verify_mode(files, pki, cn, sans, ips, host):
    leaf = make(cn, pki[1], sans=sans, ips=ips)
    result = check(files, pki, leaf, "--host", host)
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ revocation

@pytest.mark.parametrize("reason", [None, x509.ReasonFlags.key_compromise,
                                    x509.ReasonFlags.superseded])
def test_a_revoked_leaf(files, pki, reason):
    root, issuing, leaf = pki
    result = check(files, pki, leaf, crls=[crl(issuing, (leaf,), reason=reason), crl(root)])
    out = assert_invalid_at(result, 0, "revoked")
    assert out["path"][0]["state"] == "revoked"
    assert (reason.value if reason else "unspecified") in out["path"][0]["detail"]
    assert out["path"][1]["state"] == "ok"


def test_a_revoked_intermediate(files, pki):
    root, issuing, leaf = pki
    result = check(files, pki, leaf, crls=[crl(issuing), crl(root, (issuing,))])
    out = assert_invalid_at(result, 1, "revoked")
    assert out["path"][0]["state"] == "ok" and out["path"][1]["state"] == "revoked"


def test_a_crl_issued_after_the_time_asked_is_no_answer_then(files, pki):
    root, issuing, leaf = pki
    later = crl(issuing, (leaf,), this=T0 + DAY, nxt=T0 + 8 * DAY)
    assert check(files, pki, leaf, crls=[later, crl(root)],
                 at=(T0 + 2 * DAY).isoformat()).exit_code == 4
    # at T0 the CRL is not yet issued: no answer for the leaf, the fallback decides
    early = check(files, pki, leaf, "--fallback", "revoked", crls=[later, crl(root)])
    assert early.exit_code == 9
    assert check(files, pki, leaf, crls=[later, crl(root)]).exit_code == 0


@pytest.mark.parametrize("missing", ["leaf", "intermediate", "both"])
def test_crl_missing_falls_back(files, pki, missing):
    root, issuing, leaf = pki
    crls = {"leaf": [crl(root)], "intermediate": [crl(issuing)], "both": []}[missing]
    lenient = check(files, pki, leaf, crls=crls)
    assert lenient.exit_code == 0, lenient.output
    assert "treated as not revoked (fallback)" in lenient.output
    strict = check(files, pki, leaf, "--fallback", "revoked", crls=crls)
    assert strict.exit_code == 9, strict.output
    out = verdict(strict)
    assert out["result"] == "undetermined"
    undetermined = [p["position"] for p in out["path"] if p["state"] == "undetermined"]
    assert undetermined == {"leaf": [0], "intermediate": [1], "both": [0, 1]}[missing]


def test_crl_of_another_issuer_or_badly_signed_is_no_answer(files, pki):
    root, issuing, leaf = pki
    stranger = make("Stranger CA", ca=True)
    forged = crl(issuing, (), signer=stranger)  # the issuer's name, another key
    for crls in ([crl(stranger), crl(root)], [forged, crl(root)]):
        assert check(files, pki, leaf, "--fallback", "revoked", crls=crls).exit_code == 9
        assert check(files, pki, leaf, crls=crls).exit_code == 0


def test_crl_from_a_ca_without_crl_sign_is_no_answer(files, pki):
    root = pki[0]
    no_sign = make("No CRLSign CA", root, ca=True, key_usage="no-crl-sign")
    leaf = make("peer.example.com", no_sign)
    result = check(files, pki, leaf, "--fallback", "revoked", chain=[no_sign],
                   crls=[crl(no_sign), crl(root)])
    assert result.exit_code == 9, result.output


@pytest.mark.parametrize("which", ["leaf", "intermediate"])
def test_an_expired_crl_revokes_as_expressway_treats_it(files, pki, which):
    root, issuing, leaf = pki
    old = dict(this=T0 - 10 * DAY, nxt=T0 - DAY)
    crls = [crl(issuing, **old), crl(root)] if which == "leaf" else \
        [crl(issuing), crl(root, **old)]
    position = 0 if which == "leaf" else 1
    for fallback in ("not-revoked", "revoked"):
        result = check(files, pki, leaf, "--fallback", fallback, crls=crls)
        out = assert_invalid_at(result, position, "expired")
        assert out["path"][position]["state"] == "revoked"


def test_a_current_crl_beside_an_expired_one_answers(files, pki):
    root, issuing, leaf = pki
    crls = [crl(issuing, this=T0 - 10 * DAY, nxt=T0 - DAY), crl(issuing, number=2), crl(root)]
    assert check(files, pki, leaf, "--fallback", "revoked", crls=crls).exit_code == 0


def test_no_revocation_source_enabled(files, pki):
    result = check(files, pki, pki[2], "--no-use-crls", "--fallback", "revoked", crls=[])
    assert result.exit_code == 0  # revocation checking off: nothing to fall back from
    assert "revocation not checked" in result.output


# ------------------------------------------------------------------ CDP downloads

def test_cdp_downloads_fetch_the_crl_a_certificate_names(files, pki, http_server):
    root, issuing, _ = pki
    http_server.route("/issuing.crl", Reply(body=x509.load_pem_x509_crl(
        crl(issuing, ())).public_bytes(serialization.Encoding.DER)))
    leaf = make("peer.example.com", issuing, cdp=http_server.url("/issuing.crl"))
    leaf_r = make("peer.example.com", issuing, cdp=http_server.url("/revoked.crl"))
    http_server.route("/revoked.crl", Reply(body=crl(issuing, (leaf_r,))))
    args = ["--trusted", files(root), "--intermediate", files(issuing), "--crl",
            files(crl(root)), "--no-use-ocsp", "--fallback", "revoked", "--at", AT, "--json"]
    runner = CliRunner()
    good = runner.invoke(cli, ["verify", str(files(leaf)), *map(str, args)])
    assert good.exit_code == 0, good.output
    assert "/issuing.crl" in http_server.paths()
    bad = runner.invoke(cli, ["verify", str(files(leaf_r)), *map(str, args)])
    assert bad.exit_code == 4, bad.output
    assert json.loads(bad.stdout)["path"][0]["state"] == "revoked"
    off = runner.invoke(cli, ["verify", str(files(leaf_r)), *map(str, args),
                              "--no-cdp-downloads"])
    assert off.exit_code == 9, off.output


def test_a_cdp_that_fails_leaves_the_fallback_to_answer(files, pki, http_server):
    root, issuing, _ = pki
    http_server.route("/gone.crl", Reply(status=404))
    leaf = make("peer.example.com", issuing, cdp=http_server.url("/gone.crl"))
    args = ["verify", str(files(leaf)), "--trusted", str(files(root)), "--intermediate",
            str(files(issuing)), "--crl", str(files(crl(root))), "--no-use-ocsp", "--at", AT]
    lenient = CliRunner().invoke(cli, args)
    assert lenient.exit_code == 0 and "404" in lenient.stderr, lenient.output
    strict = CliRunner().invoke(cli, [*args, "--fallback", "revoked"])
    assert strict.exit_code == 9, strict.output


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize(("what", "fragment"), [
    ("garbage-cert", "the certificate to check"),
    ("empty-cert", "the certificate to check"),
    ("garbage-trusted", "no certificate found"),
    ("garbage-crl", "CRL"),
    ("missing-cert", "No such file"),
    ("missing-crl", "No such file"),
    ("bad-at", "not an ISO 8601 time"),
])
def test_bad_input_is_one_line_and_exit_3(files, pki, what, fragment, tmp_path):
    root, issuing, leaf = pki
    cert, trusted, crl_file, at = files(leaf), files(root), files(crl(issuing)), AT
    if what == "garbage-cert":
        cert = files(b"\x30\x82\x01\x00 not a certificate")
    elif what == "empty-cert":
        cert = files(b"")
    elif what == "garbage-trusted":
        trusted = files(b"hello")
    elif what == "garbage-crl":
        crl_file = files(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    elif what == "missing-cert":
        cert = tmp_path / "nope.pem"
    elif what == "missing-crl":
        crl_file = tmp_path / "nope.crl"
    elif what == "bad-at":
        at = "tomorrow"
    result = CliRunner().invoke(cli, ["verify", str(cert), "--trusted", str(trusted), "--crl",
                                      str(crl_file), "--at", at])
    assert_one_line_error(result, 3, fragment)


def test_bad_input_from_the_real_command_has_no_traceback(files):
    garbage = files(b"garbage")
    done = subprocess.run([sys.executable, "-m", "pkiq", "verify", str(garbage), "--trusted",
                           str(garbage)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("pkiq: error: the certificate to check")


def test_node_and_files_together_is_a_usage_error(files, pki):
    result = CliRunner().invoke(cli, ["verify", str(files(pki[2])), "--node", "x",
                                      "--trusted", str(files(pki[0]))])
    assert result.exit_code == 2


# ------------------------------------------------------------------ a node, from pkiq

def _peer_of_node(pkiq, tmp_path: Path) -> tuple[Path, dict]:
    """The nodes estate with Root's first CRL, and a peer certificate Root signed: its file
    and ``pkiq ca sign``'s view of it."""
    make_estate(pkiq)
    ok(pkiq("ca", "gencrl", "Root"))
    csr = tmp_path / "peer.csr"
    csr.write_bytes(make_csr("peer.example.com", sans=("peer.example.com",)))
    leaf_file = tmp_path / "peer.pem"
    return leaf_file, js(pkiq("ca", "sign", "Root", csr, "--out", leaf_file, "--json"))


def test_a_node_checks_with_its_trusted_list_and_pkiq_crls(pkiq, clock, tmp_path):
    leaf_file, issued = _peer_of_node(pkiq, tmp_path)
    args = ["verify", leaf_file, "--node", "expe1.example.com", "--host", "peer.example.com",
            "--no-use-ocsp", "--no-cdp-downloads", "--fallback", "revoked", "--json"]
    good = pkiq(*args)
    assert good.exit_code == 0, good.output
    out = json.loads(good.stdout)
    assert out["source"] == "node expe1.example.com"
    assert out["path"][-1]["subject"] == "/C=GB/O=Example/CN=Example Root"
    assert out["path"][0]["revocation"] == "good"

    stranger = make("peer.example.com", make("Stranger CA", ca=True))
    other = tmp_path / "stranger.pem"
    other.write_bytes(stranger.pem)
    assert pkiq("verify", other, *args[2:]).exit_code == 4

    clock.advance(minutes=5)
    ok(pkiq("ca", "revoke", "Root", issued["serial"], "--reason", "keyCompromise"))
    assert pkiq(*args).exit_code == 0  # not on a CRL yet: the node cannot know
    clock.advance(minutes=5)
    ok(pkiq("ca", "gencrl", "Root"))
    revoked = pkiq(*args)
    assert revoked.exit_code == 4, revoked.output
    assert "keyCompromise" in json.loads(revoked.stdout)["path"][0]["detail"]


def test_a_node_whose_crl_expired_treats_the_ca_as_revoking(pkiq, clock, tmp_path):
    leaf_file, _issued = _peer_of_node(pkiq, tmp_path)
    clock.advance(days=60)  # past the CRL's nextUpdate, the leaf still valid
    result = pkiq("verify", leaf_file, "--node", "expe1.example.com", "--no-use-ocsp",
                  "--no-cdp-downloads", "--json")
    assert result.exit_code == 4, result.output
    assert "expired" in json.loads(result.stdout)["path"][0]["detail"]


def test_an_unknown_node_is_not_found(pkiq, tmp_path, pki):
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(pki[2].pem)
    assert_one_line_error(pkiq("verify", leaf, "--node", "nope.example.com"), 5, "no node")


# ------------------------------------------------------------------ the API

def test_the_api_answers_as_the_command_does(pkiq, app, tmp_path):
    import requests

    from service import tokens

    from .test_web_downloads import Served

    leaf_file, issued = _peer_of_node(pkiq, tmp_path)
    token = {name: tokens.create_token(app, name, role, None)["token"]
             for name, role in [("alice", "requester"), ("carol", "approver")]}
    served = Served(app)
    try:
        def call(who, **body):
            headers = {"Authorization": f"Bearer {token[who]}"} if who else {}
            return requests.post(served.url("/api/v1/verify"), json=body, headers=headers,
                                 timeout=60)

        body = {"node": "expe1.example.com", "certificate": leaf_file.read_text(),
                "host": "peer.example.com", "purpose": "serverAuth", "fallback": "revoked"}
        answer = call("alice", **body)
        assert answer.status_code == 200, answer.text
        out = answer.json()
        assert out["result"] == "valid" and out["source"] == "node expe1.example.com"
        assert out["revocation"]["use_ocsp"] is False and out["revocation"]["cdp_downloads"] \
            is False
        assert [p["role"] for p in out["path"]] == ["end-entity", "trust anchor"]
        assert call(None, **body).status_code == 401
        refused = call("alice", **body, cdp_downloads=True)
        assert refused.status_code == 403 and "approver" in refused.json()["detail"]
        approver = call("carol", **body).json()
        assert approver["result"] == "valid" and approver["revocation"]["use_ocsp"] is True
        garbage = call("alice", **{**body, "certificate": "not a certificate"})
        assert garbage.status_code == 400 and "certificate" in garbage.json()["detail"]
        assert call("alice", **{**body, "node": "nope.example.com"}).status_code == 404
        assert call("alice", **{**body, "purpose": "codeSigning"}).status_code == 422

        pkiq.app.clock.advance(minutes=5)
        ok(pkiq("ca", "revoke", "Root", issued["serial"], "--reason", "keyCompromise"))
        pkiq.app.clock.advance(minutes=5)
        ok(pkiq("ca", "gencrl", "Root"))
        revoked = call("alice", **body).json()
        assert revoked["result"] == "invalid" and revoked["path"][0]["state"] == "revoked"
    finally:
        served.close()


# ------------------------------------------------------------------ OCSP, openssl as responder

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _responder(tmp_path: Path, issuing: Made, entries: list[str], port: int):
    """``openssl ocsp`` answering on 127.0.0.1:port, signing as the issuer (stopped by the
    caller)."""
    index = tmp_path / f"index-{port}.txt"
    index.write_text("".join(f"{line}\n" for line in entries))
    key = tmp_path / f"issuing-{port}.key"
    key.write_bytes(issuing.key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    ca = tmp_path / f"issuing-{port}.pem"
    ca.write_bytes(issuing.pem)
    proc = subprocess.Popen(["openssl", "ocsp", "-index", str(index), "-port", str(port),
                             "-rsigner", str(ca), "-rkey", str(key), "-CA", str(ca),
                             "-ndays", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # it says so once listening; a probe connection would hold its single-threaded loop
    line = proc.stderr.readline()
    if "waiting" in line.lower():
        return proc
    _stop(proc)
    raise AssertionError(f"openssl ocsp did not start: {line}")


def _stop(proc) -> None:
    proc.kill()
    proc.wait(10)
    proc.stderr.close()


def _with_ocsp(issuer: Made, cn: str, url: str, now: dt.datetime) -> Made:
    leaf = make(cn, issuer, before=now - DAY, after=now + 30 * DAY)
    builder = (x509.CertificateBuilder().subject_name(leaf.cert.subject)
               .issuer_name(issuer.cert.subject).public_key(leaf.key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + 30 * DAY)
               .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                   x509.AuthorityInformationAccessOID.OCSP,
                   x509.UniformResourceIdentifier(url))]), False))
    return Made(builder.sign(issuer.key, hashes.SHA256()), leaf.key)


@pytest.mark.openssl
def test_ocsp_answers_good_and_revoked_and_a_dead_responder_falls_back(files, tmp_path):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    root = make("OCSP Root", ca=True, before=now - DAY, after=now + 90 * DAY)
    issuing = make("OCSP Issuing", root, ca=True, before=now - DAY, after=now + 90 * DAY)
    root_crl = crl(root, this=now - DAY, nxt=now + 7 * DAY)
    expiry = (now + 30 * DAY).strftime("%y%m%d%H%M%SZ")
    gone = (now - DAY).strftime("%y%m%d%H%M%SZ")

    def verify(leaf: Made, *extra):
        return CliRunner().invoke(cli, ["verify", str(files(leaf)), "--trusted", str(files(root)),
                                        "--intermediate", str(files(issuing)), "--crl",
                                        str(files(root_crl)), "--no-cdp-downloads", "--json",
                                        *extra])

    port = _free_port()
    good = _with_ocsp(issuing, "good.example.com", f"http://127.0.0.1:{port}/", now)
    proc = _responder(tmp_path, issuing, [
        f"V\t{expiry}\t\t{good.cert.serial_number:X}\tunknown\t/CN=good.example.com"], port)
    try:
        result = verify(good, "--fallback", "revoked")
    finally:
        _stop(proc)
    assert result.exit_code == 0, (result.output, verdict(result)["notes"])
    assert "OCSP response good" in verdict(result)["path"][0]["detail"]

    port = _free_port()
    bad = _with_ocsp(issuing, "bad.example.com", f"http://127.0.0.1:{port}/", now)
    proc = _responder(tmp_path, issuing, [
        f"R\t{expiry}\t{gone},keyCompromise\t{bad.cert.serial_number:X}\tunknown\t"
        "/CN=bad.example.com"], port)
    try:
        result = verify(bad)
    finally:
        _stop(proc)
    assert result.exit_code == 4, result.output
    line = verdict(result)["path"][0]
    assert line["state"] == "revoked" and "OCSP" in line["detail"]

    dead = _with_ocsp(issuing, "dead.example.com", f"http://127.0.0.1:{_free_port()}/", now)
    strict = verify(dead, "--no-use-crls", "--fallback", "revoked")
    assert strict.exit_code == 9
    assert "gave no answer" in verdict(strict)["path"][0]["detail"]
    assert any(n.startswith("OCSP http://127.0.0.1:") for n in verdict(strict)["notes"])
    lenient = verify(dead, "--no-use-crls")
    assert lenient.exit_code == 0 and "treated as not revoked" in lenient.stdout
    # OCSP off: the CRL (none for the issuer here) and the fallback decide
    assert verify(good, "--no-use-ocsp", "--fallback", "revoked").exit_code == 9


# ------------------------------------------------------------------ the CRL index

def test_the_crl_index_answers_alike_by_scan_and_by_dict(pki):
    from ca.verify import CrlIndex, parse_crls

    root, issuing, leaf = pki
    other = make("other.example.com", issuing)
    [parsed] = parse_crls(crl(issuing, (leaf,)), "test")
    index = CrlIndex(parsed.der, parsed.crl)
    assert index.plain_entries
    assert index.find(leaf.cert.serial_number).serial_number == leaf.cert.serial_number
    assert index.serials is None  # one lookup: the Rust scan, no dict yet
    assert index.find(other.cert.serial_number) is None
    assert index.serials is not None
    assert index.find(leaf.cert.serial_number).serial_number == leaf.cert.serial_number


def test_an_unknown_critical_entry_extension_leaves_the_crl_to_pyhanko(files, pki):
    """RFC 5280 5.3: a CRL whose entry has a critical extension one cannot process must not
    be used; the fast path sees the BOOLEAN TRUE, walks the entries, and hands over."""
    from ca.verify import CrlIndex, parse_crls

    root, issuing, leaf = pki
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    entry = (x509.RevokedCertificateBuilder().serial_number(12345).revocation_date(T0 - DAY)
             .add_extension(odd, critical=True).build())
    data = (x509.CertificateRevocationListBuilder().issuer_name(issuing.cert.subject)
            .last_update(T0 - DAY).next_update(T0 + 7 * DAY)
            .add_revoked_certificate(entry).sign(issuing.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM))
    [parsed] = parse_crls(data, "test")
    assert not CrlIndex(parsed.der, parsed.crl).plain_entries
    result = check(files, pki, leaf, "--fallback", "revoked", crls=[data, crl(root)])
    assert result.exit_code == 9, result.output  # no usable CRL for the leaf
