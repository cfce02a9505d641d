"""Adopting an OpenSSL demoCA and writing one back that ``openssl ca`` keeps using.

``read_democa`` turns a folder into plain data, ``adopt`` stores it, ``render_democa`` turns
a pkiq CA back into a mapping of file names to bytes; only the CLI touches the file system.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from .authority import (
    CaOptions,
    ca_certificate,
    check_key_matches,
    check_name_free,
    latest_crl,
    new_ca_row,
    subject_key,
)
from .crl import REASONS
from .csr import check_key
from .errors import BadInput, PolicyViolation, WrongPassphrase
from .keys import SoftwareSigner, decrypt_key, encrypt_key, signature_hash
from .models import Certificate, CertificateAuthority
from .names import openssl_oneline
from .openssl_conf import OpenSSLConfig, yes
from .policy import POLICY_ANYTHING, Policy
from .serials import check_serial, parse_serial, random_serial, serial_hex

CONFIG_NAMES = ("openssl.cnf", "openssl_local.cfg", "openssl.cfg", "openssl_local.cnf")
MAX_INDEX_BYTES = 512 * 1024 * 1024


@dataclass
class IndexRow:
    status: str
    expires: dt.datetime
    revoked_at: dt.datetime | None
    reason: str | None
    invalidity_date: dt.datetime | None
    serial: int
    subject: str


@dataclass
class DemoCA:
    cert: x509.Certificate
    key_pem: bytes
    rows: list[IndexRow]
    bodies: dict[int, bytes]  # serial -> DER, from newcerts/
    options: CaOptions
    next_serial: int | None
    next_crl_number: int | None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- times

def parse_asn1_time(text: str) -> dt.datetime:
    """UTCTime ``YYMMDDHHMMSSZ`` (RFC 5280 4.1.2.5.1: 50-99 -> 19xx) or GeneralizedTime."""
    text = text.strip()
    try:
        if len(text) == 13 and text.endswith("Z"):
            value = dt.datetime.strptime(text, "%y%m%d%H%M%SZ")
            if value.year >= 2050:
                value = value.replace(year=value.year - 100)
        elif len(text) == 15 and text.endswith("Z"):
            value = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise ValueError
    except ValueError:
        raise BadInput(f"index.txt: {text!r} is not an ASN.1 time (YYMMDDHHMMSSZ)") from None
    return value.replace(tzinfo=dt.UTC)


def format_asn1_time(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    return value.strftime("%y%m%d%H%M%SZ") if 1950 <= value.year < 2050 else value.strftime(
        "%Y%m%d%H%M%SZ")


# ---------------------------------------------------------------- reading

def parse_index(text: str) -> list[IndexRow]:
    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 is data
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 6 or cols[0] not in ("V", "R", "E"):
            raise BadInput(f"index.txt line {lineno}: expected 6 tab-separated fields starting "
                           "with V, R or E")
        status, expires, revinfo, serial, _filename, subject = cols
        revoked_at = reason = invalidity = None
        if status == "R":
            revoked_at, reason, invalidity = _parse_revinfo(revinfo, lineno)
        rows.append(IndexRow(status, parse_asn1_time(expires), revoked_at, reason, invalidity,
                             parse_serial(serial), subject))
    return rows


def _parse_revinfo(text: str, lineno: int):
    parts = text.split(",")
    revoked_at = parse_asn1_time(parts[0])
    reason = invalidity = None
    if len(parts) > 1:
        reason = parts[1]
        if reason in ("keyTime", "CAkeyTime"):
            if len(parts) < 3:
                raise BadInput(f"index.txt line {lineno}: {reason} without a compromise time")
            invalidity = parse_asn1_time(parts[2])
            reason = "keyCompromise" if reason == "keyTime" else "CACompromise"
        elif reason == "holdInstruction":
            reason = "certificateHold"
        elif reason not in REASONS:
            raise BadInput(f"index.txt line {lineno}: unknown revocation reason {reason!r}")
    return revoked_at, reason, invalidity


def _read(path: Path, what: str, limit: int = 1024 * 1024) -> bytes:
    if not path.is_file():
        raise BadInput(f"{what} not found: {path}")
    if path.stat().st_size > limit:
        raise BadInput(f"{what} is larger than {limit} bytes: {path}")
    return path.read_bytes()


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} is not a text file (not UTF-8)") from None


def read_democa(folder: Path, config_path: Path | None = None) -> DemoCA:
    """Read a demoCA laid out as the Expressway guide (and ``openssl ca``) lay it out."""
    if not folder.is_dir():
        raise BadInput(f"{folder} is not a directory")
    notes: list[str] = []
    conf = None
    if config_path is None:
        config_path = next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), None)
    if config_path is not None:
        conf = OpenSSLConfig(_text(_read(config_path, "openssl config"), config_path.name),
                             overrides={"dir": str(folder)})
        notes += [f"ignored config directive {d}" for d in conf.ignored]
    ca_sec = {}
    if conf is not None:
        default_ca = conf.get("ca", "default_ca")
        if default_ca is None:
            raise BadInput(f"{config_path}: no default_ca in the [ ca ] section")
        ca_sec = conf.section(default_ca)

    def path_of(key: str, default: str) -> Path:
        value = ca_sec.get(key)
        candidate = Path(value) if value else folder / default
        return candidate if candidate.exists() else folder / default

    cert_pem = _read(path_of("certificate", "cacert.pem"), "CA certificate")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise BadInput("cacert.pem is not a PEM certificate") from None
    key_pem = _read(path_of("private_key", "private/cakey.pem"), "CA private key")
    index_path = path_of("database", "index.txt")
    rows = parse_index(_text(_read(index_path, "index.txt", MAX_INDEX_BYTES), "index.txt"))
    for row in rows:
        if row.reason == "removeFromCRL":  # a released hold: valid again (RFC 5280 5.3.1)
            row.status, row.revoked_at, row.reason, row.invalidity_date = "V", None, None, None
            notes.append(f"serial {serial_hex(row.serial)}: removeFromCRL (a released hold) "
                         "imported as valid; it leaves the next full CRL")
    bodies = _read_bodies(path_of("new_certs_dir", "newcerts"), rows, notes)
    attr = index_path.with_name(index_path.name + ".attr")
    unique = yes(ca_sec.get("unique_subject"), True)
    if attr.is_file():
        attrs = OpenSSLConfig(_text(_read(attr, attr.name), attr.name))
        unique = yes(attrs.get("default", "unique_subject"), unique)
    policy = POLICY_ANYTHING
    if not ca_sec.get("policy"):
        notes.append("no openssl config with a policy found: policy_anything assumed "
                     "(change it with pkiq ca set --policy)")
    else:
        section = conf.section(ca_sec["policy"])
        policy = Policy(ca_sec["policy"], tuple(section.items()),
                        yes(ca_sec.get("preserve"), False))
    copy_ext = (ca_sec.get("copy_extensions") or "none").lower()
    if ca_sec.get("default_md", "").lower() in ("sha1", "md5"):
        notes.append(f"default_md = {ca_sec['default_md']} ignored: pkiq signs with SHA-256 "
                     "or stronger (SHA-1 certificates are refused by current TLS clients)")
    crl_hours = _number(ca_sec, "default_crl_days", 0) * 24 + _number(
        ca_sec, "default_crl_hours", 0)
    options = CaOptions(policy=policy, copy_extensions=copy_ext, unique_subject=unique,
                        default_days=_number(ca_sec, "default_days", 365),
                        crl_hours=crl_hours or 30 * 24, serial_mode="sequential")
    check_ca_certificate(cert)
    next_serial = _read_hex(path_of("serial", "serial"))
    if next_serial is not None:
        check_serial(next_serial)
    next_crl = _read_hex(path_of("crlnumber", "crlnumber"))
    if next_crl is not None and not 0 < next_crl < (1 << 63):
        raise BadInput(f"crlnumber {next_crl:X} is out of range: pkiq keeps CRL numbers "
                       "between 1 and 2^63-1")
    return DemoCA(cert, key_pem, rows, bodies, options, next_serial, next_crl, notes)


def _number(section: dict[str, str], key: str, default: int) -> int:
    value = section.get(key)
    if not value:
        return default
    if not value.strip().isdigit():
        raise BadInput(f"openssl config: {key} = {value!r} is not a whole number")
    return int(value)


def _read_hex(path: Path) -> int | None:
    if not path.is_file():
        return None
    text = _text(_read(path, path.name, 4096), path.name).strip()
    try:
        return int(text, 16)
    except ValueError:
        raise BadInput(f"{path.name} should hold a hexadecimal number, not {text[:20]!r}") from None


def _read_bodies(newcerts: Path, rows: list[IndexRow], notes: list[str]) -> dict[int, bytes]:
    bodies = {}
    for row in rows:
        path = newcerts / f"{serial_hex(row.serial)}.pem"
        if not path.is_file():
            continue
        try:
            cert = x509.load_pem_x509_certificate(_read(path, "certificate"))
        except ValueError:
            notes.append(f"{path.name} is not a PEM certificate; kept the index entry only")
            continue
        if cert.serial_number != row.serial:
            notes.append(f"{path.name} holds serial {serial_hex(cert.serial_number)}; skipped")
            continue
        bodies[row.serial] = cert.public_bytes(serialization.Encoding.DER)
    missing = len(rows) - len(bodies)
    if missing:
        notes.append(f"{missing} index entries have no certificate in newcerts/; their status "
                     "is kept, their certificates cannot be fetched")
    return bodies


# ---------------------------------------------------------------- adopting

def check_ca_certificate(cert: x509.Certificate) -> None:
    """An adopted CA must be a CA: basicConstraints CA:TRUE and, if keyUsage is present,
    keyCertSign (RFC 5280 4.2.1.3, 4.2.1.9); and its key strong enough to sign with."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PolicyViolation("cacert.pem is not a CA certificate (no basicConstraints "
                              "CA:TRUE); refusing to sign with it", "basicConstraints", "ca")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            raise PolicyViolation("cacert.pem's keyUsage lacks keyCertSign", "keyUsage", "ca")
    except x509.ExtensionNotFound:
        pass
    check_key(cert.public_key())


def adopt(session: Session, demo: DemoCA, *, name: str, import_passphrase: bytes | None,
          passphrase: bytes, now: dt.datetime) -> CertificateAuthority:
    """Store a read demoCA as pkiq CA ``name``; its key is re-encrypted with ``passphrase``."""
    check_name_free(session, name, demo.cert)
    try:
        key = decrypt_key(demo.key_pem, import_passphrase, what="private/cakey.pem")
    except WrongPassphrase as exc:
        raise WrongPassphrase(f"{exc} (give it with --import-passphrase-file or "
                              "--import-passphrase-env when it differs from pkiq's)") from None
    check_key_matches(SoftwareSigner(key), demo.cert, name)
    ca = new_ca_row(name, demo.cert, encrypt_key(key, passphrase), now)
    ca.crl_number = (demo.next_crl_number - 1) if demo.next_crl_number else 0
    demo.options.apply_to(ca)
    highest = max((row.serial for row in demo.rows), default=0)
    ca.next_serial = serial_hex(max(demo.next_serial or 1, highest + 1))
    session.add(ca)
    session.flush()
    seen: set[int] = set()
    active: dict[str, str] = {}
    for row in demo.rows:
        if row.serial in seen:
            raise BadInput(f"index.txt lists serial {serial_hex(row.serial)} twice")
        seen.add(row.serial)
        der = demo.bodies.get(row.serial)
        body = x509.load_der_x509_certificate(der) if der else None
        subject = openssl_oneline(body.subject) if body else row.subject
        key_of_subject = None
        if row.status == "V" and ca.unique_subject:
            if subject in active:
                raise BadInput(
                    f"index.txt holds two valid certificates for {subject} (serials "
                    f"{active[subject]} and {serial_hex(row.serial)}) but unique_subject = yes "
                    "(openssl ca would refuse this index too): set unique_subject = no in "
                    "index.txt.attr, or revoke one first")
            active[subject] = serial_hex(row.serial)
            key_of_subject = subject_key(subject)
        session.add(Certificate(
            ca_id=ca.id, serial=serial_hex(row.serial), status=row.status, subject=subject,
            active_subject=key_of_subject,
            not_before=body.not_valid_before_utc if body else None,
            not_after=row.expires, revoked_at=row.revoked_at, revocation_reason=row.reason,
            invalidity_date=row.invalidity_date, profile=None, der=der, created_at=now))
    session.flush()
    return ca


# ---------------------------------------------------------------- exporting

_EXT_SECTIONS = {
    "webserver": "serverAuth",
    "webclientandserver": "serverAuth, clientAuth",
    "client": "clientAuth",
}


def _index_line(row: Certificate, now: dt.datetime, notes: list[str]) -> str:
    status = "E" if row.status == "V" and row.not_after <= now else row.status
    revinfo = ""
    if row.status == "R":
        revinfo = format_asn1_time(row.revoked_at)
        reason = row.revocation_reason
        if reason in ("keyCompromise", "CACompromise") and row.invalidity_date:
            tag = "keyTime" if reason == "keyCompromise" else "CAkeyTime"
            revinfo += f",{tag},{row.invalidity_date.strftime('%Y%m%d%H%M%SZ')}"
        elif reason in ("privilegeWithdrawn", "AACompromise"):
            notes.append(f"serial {row.serial}: OpenSSL's index cannot hold reason {reason}; "
                         "written without a reason")
        elif reason and reason != "unspecified":
            revinfo += f",{reason}"
    subject = row.subject.replace("\t", " ")
    return "\t".join([status, format_asn1_time(row.not_after), revinfo, row.serial, "unknown",
                      subject])


def render_democa(session: Session, ca: CertificateAuthority, folder: Path,
                  now: dt.datetime) -> tuple[dict[str, bytes], list[str]]:
    """The files of a demoCA for ``ca`` (relative name -> bytes) and notes for the user.

    The key stays encrypted (PKCS#8, the pkiq passphrase); ``openssl ca -passin`` reads it."""
    notes: list[str] = []
    cert = ca_certificate(ca)
    files: dict[str, bytes] = {
        "cacert.pem": cert.public_bytes(serialization.Encoding.PEM),
        "private/cakey.pem": ca.key_pem.encode("ascii"),
    }
    rows = list(session.scalars(select(Certificate).where(Certificate.ca_id == ca.id)
                                .order_by(Certificate.id)))
    files["index.txt"] = "".join(_index_line(r, now, notes) + "\n" for r in rows).encode()
    files["index.txt.attr"] = f"unique_subject = {'yes' if ca.unique_subject else 'no'}\n".encode()
    for row in rows:
        if row.der is not None:
            files[f"newcerts/{row.serial}.pem"] = x509.load_der_x509_certificate(
                row.der).public_bytes(serialization.Encoding.PEM)
    next_serial = (int(ca.next_serial, 16) if ca.serial_mode == "sequential"
                   else random_serial())
    files["serial"] = (serial_hex(next_serial) + "\n").encode()
    files["crlnumber"] = (serial_hex(ca.crl_number + 1) + "\n").encode()
    crl = latest_crl(session, ca)
    if crl is not None:
        files["crl.pem"] = x509.load_der_x509_crl(crl.der).public_bytes(
            serialization.Encoding.PEM)
    files["openssl.cnf"] = _config(ca, folder, cert).encode()
    return files, notes


def _config_path(folder: Path) -> str:
    """The folder as an openssl.cnf value: quoted (for '#' and spaces); '$', quotes and
    backslashes would be expanded or eaten by NCONF, so such paths are refused."""
    text = str(folder.resolve())
    if any(c in text for c in '"$\\\n'):
        raise BadInput(f"{text!r}: choose a folder whose path has no quote, '$' or backslash "
                       "(openssl.cnf would misread it)")
    return text


def _config(ca: CertificateAuthority, folder: Path, cert: x509.Certificate) -> str:
    policy = Policy.from_dict(ca.policy)
    digest = signature_hash(cert.public_key())
    md = digest.name if digest else "default"
    lines = [
        f"# Written by pkiq export-openssl for CA {ca.name}.",
        "# openssl ca -config openssl.cnf -passin env:PASS -in req.pem -extensions webserver",
        f'dir = "{_config_path(folder)}"',
        "", "[ ca ]", "default_ca = CA_default", "", "[ CA_default ]",
        "certs = $dir/certs", "crl_dir = $dir/crl", "database = $dir/index.txt",
        "new_certs_dir = $dir/newcerts", "certificate = $dir/cacert.pem",
        "serial = $dir/serial", "crlnumber = $dir/crlnumber", "crl = $dir/crl.pem",
        "private_key = $dir/private/cakey.pem",
        f"default_days = {ca.default_days}",
        "default_crl_days = 0", f"default_crl_hours = {ca.crl_hours}",
        f"default_md = {md}",
        f"preserve = {'yes' if policy.preserve else 'no'}",
        f"policy = {policy.name if policy.name.startswith('policy_') else 'policy_pkiq'}",
        f"copy_extensions = {ca.copy_extensions}",
        f"unique_subject = {'yes' if ca.unique_subject else 'no'}",
        "x509_extensions = webclientandserver", "crl_extensions = crl_ext",
        "name_opt = ca_default", "cert_opt = ca_default",
        "",
        f"[ {policy.name if policy.name.startswith('policy_') else 'policy_pkiq'} ]",
        *[f"{f} = {r}" for f, r in policy.fields],
        "", "[ crl_ext ]", "authorityKeyIdentifier = keyid:always",
    ]
    urls = []
    if ca.crl_urls:
        urls.append("crlDistributionPoints = " + ", ".join(f"URI:{u}" for u in ca.crl_urls))
    aia = [f"OCSP;URI:{u}" for u in ca.ocsp_urls] + [f"caIssuers;URI:{u}"
                                                     for u in ca.ca_issuers_urls]
    if aia:
        urls.append("authorityInfoAccess = " + ", ".join(aia))
    for name, eku in _EXT_SECTIONS.items():
        lines += ["", f"[ {name} ]", "basicConstraints = critical, CA:FALSE",
                  "keyUsage = critical, digitalSignature, keyEncipherment",
                  f"extendedKeyUsage = {eku}", "subjectKeyIdentifier = hash",
                  "authorityKeyIdentifier = keyid:always", *urls]
    lines += ["", "[ subca ]", "basicConstraints = critical, CA:TRUE, pathlen:0",
              "keyUsage = critical, keyCertSign, cRLSign", "subjectKeyIdentifier = hash",
              "authorityKeyIdentifier = keyid:always", *urls, ""]
    return "\n".join(lines)
