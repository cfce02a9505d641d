"""Adopting an OpenSSL demoCA and writing one back that ``openssl ca`` keeps using.

``read_democa`` turns a folder into plain data (reading only inside it, see ca.confined),
``adopt`` stores it, ``render_democa`` turns a pkiq CA back into a mapping of file names to
bytes that the caller writes.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
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
from .confined import Folder, read_regular, shown
from .crl import REASONS
from .csr import check_key
from .errors import BadInput, PolicyViolation, WrongPassphrase
from .keys import SoftwareSigner, decrypt_key, encrypt_key, signature_hash
from .models import Certificate, CertificateAuthority
from .names import check_name, check_value, field_oid, openssl_oneline
from .openssl_conf import OpenSSLConfig, yes
from .policy import POLICY_ANYTHING, Policy
from .serials import check_serial, random_serial, serial_hex

CONFIG_NAMES = ("openssl.cnf", "openssl_local.cfg", "openssl.cfg", "openssl_local.cnf")


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

def parse_asn1_time(text: str, where: str = "index.txt") -> dt.datetime:
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
        raise BadInput(f"{where}: expected an ASN.1 time (YYMMDDHHMMSSZ)") from None
    return value.replace(tzinfo=dt.UTC)


def format_asn1_time(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    return value.strftime("%y%m%d%H%M%SZ") if 1950 <= value.year < 2050 else value.strftime(
        "%Y%m%d%H%M%SZ")


# ---------------------------------------------------------------- reading
#
# A demoCA may come from anyone: every path stays inside DIR (ca.confined), every file is
# read bounded, and an error names the file, the line and what was expected, never what the
# file holds (it may be a secret a symlink or a config line pointed at).

MAX_INDEX_BYTES = 512 * 1024 * 1024
MAX_FILE_BYTES = 1024 * 1024  # a certificate, a key, a config
MAX_NUMBER_BYTES = 4096  # serial, crlnumber
_MAX_NOTED = 5


def parse_index(text: str) -> list[IndexRow]:
    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 is data
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        where = f"index.txt line {lineno}"
        cols = line.split("\t")
        if len(cols) != 6 or cols[0] not in ("V", "R", "E"):
            raise BadInput(f"{where}: expected 6 tab-separated fields starting with V, R or E")
        status, expires, revinfo, serial_text, _filename, subject = cols
        revoked_at = reason = invalidity = None
        if status == "R":
            revoked_at, reason, invalidity = _parse_revinfo(revinfo, where)
        serial = _hex_number(serial_text, f"{where}: the serial")
        try:
            check_serial(serial)
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None
        check_index_subject(subject, f"{where} (serial {serial_hex(serial)})")
        rows.append(IndexRow(status, parse_asn1_time(expires, f"{where}: the expiry date"),
                             revoked_at, reason, invalidity, serial, subject))
    return rows


def _parse_revinfo(text: str, where: str):
    parts = text.split(",")
    revoked_at = parse_asn1_time(parts[0], f"{where}: the revocation date")
    reason = invalidity = None
    if len(parts) > 1:
        reason = parts[1]
        if reason in ("keyTime", "CAkeyTime"):
            if len(parts) < 3:
                raise BadInput(f"{where}: {reason} without a compromise time")
            invalidity = parse_asn1_time(parts[2], f"{where}: the compromise time")
            reason = "keyCompromise" if reason == "keyTime" else "CACompromise"
        elif reason == "holdInstruction":
            reason = "certificateHold"
        elif reason not in REASONS:
            raise BadInput(f"{where}: an unknown revocation reason (expected one of "
                           f"{', '.join(REASONS)}, keyTime, CAkeyTime)")
    return revoked_at, reason, invalidity


def _hex_number(text: str, what: str) -> int:
    """A hexadecimal number as OpenSSL writes serials and CRL numbers; longer than RFC 5280's
    20 octets is refused before it is parsed or shown."""
    text = text.strip()
    if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise BadInput(f"{what} should be a hexadecimal number")
    if len(text.lstrip("0")) > 40:
        raise BadInput(f"{what} is out of range: longer than 20 octets (RFC 5280 4.1.2.2)")
    return int(text, 16)


_ONELINE_ATTRIBUTE = re.compile(r"/([A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)=")
_ESCAPED_OCTET = re.compile(r"\\x([0-9A-Fa-f]{2})")
_ANY_NAME = x509.ObjectIdentifier("2.5.4.41")  # X.520 id-at-name, for names pkiq doesn't know


def check_index_subject(subject: str, where: str) -> None:
    """The names rules (ca.names.check_value) for each attribute of an index subject, read
    as OpenSSL's X509_NAME_oneline writes it: ``\\xHH`` escapes are the UTF-8 octets of the
    value, so an escaped control character is refused as a raw one is."""
    starts = list(_ONELINE_ATTRIBUTE.finditer(subject))
    ends = [m.start() for m in starts[1:]] + [len(subject)]
    pieces = [(m.group(1), subject[m.end():end]) for m, end in zip(starts, ends, strict=True)]
    if not starts or starts[0].start() > 0:
        pieces.append(("subject", subject[:starts[0].start() if starts else len(subject)]))
    for key, value in pieces:
        try:
            oid = field_oid(key)
        except BadInput:
            try:
                oid = x509.ObjectIdentifier(key)
            except ValueError:
                oid = _ANY_NAME
        try:
            check_value(oid, _unescape(value))
        except BadInput as exc:
            raise BadInput(f"{where}: {exc}") from None


def _unescape(value: str) -> str:
    if "\\x" not in value:
        return value
    octets = bytearray()
    at = 0
    for match in _ESCAPED_OCTET.finditer(value):
        octets += value[at:match.start()].encode("utf-8") + bytes([int(match.group(1), 16)])
        at = match.end()
    octets += value[at:].encode("utf-8")
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:  # not UTF-8 underneath: check the escapes' octets one by one
        return octets.decode("latin-1")


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} is not a text file (not UTF-8)") from None


def _read_config(folder: Folder, config_path: Path | None) -> tuple[OpenSSLConfig | None, str]:
    """The config: the one given (anywhere: the operator chose it), else the first of
    CONFIG_NAMES in the folder (read from inside it). Its ``dir`` is the folder."""
    if config_path is not None:
        name, data = config_path.name, read_regular(config_path, limit=MAX_FILE_BYTES,
                                                    what="the config")
    else:
        name = next((n for n in CONFIG_NAMES if os.path.lexists(folder.root / n)), None)
        if name is None:
            return None, ""
        data = folder.read(folder.locate(name, name), name, MAX_FILE_BYTES)
    return OpenSSLConfig(_text(data, name), overrides={"dir": str(folder.root)},
                         what=name), name


def read_democa(folder_path: Path, config_path: Path | None = None) -> DemoCA:
    """Read a demoCA laid out as the Expressway guide (and ``openssl ca``) lay it out."""
    folder = Folder(folder_path)
    notes: list[str] = []
    conf, config_name = _read_config(folder, config_path)
    ca_sec: dict[str, str] = {}
    if conf is not None:
        if conf.ignored:
            notes.append(f"{config_name}: ignored {len(conf.ignored)} directive(s): " + ", ".join(
                shown(d, 40) for d in conf.ignored[:_MAX_NOTED]))
        default_ca = conf.get("ca", "default_ca")
        if default_ca is None:
            raise BadInput(f"{config_name}: no default_ca in the [ ca ] section")
        ca_sec = conf.section(default_ca)

    def path_of(key: str, default: str) -> tuple[Path, str]:
        """Where ``key`` points (inside the folder), and how an error names it; a path the
        folder lacks falls back to the demoCA's usual one, with a note."""
        value = ca_sec.get(key)
        if not value:
            return folder.locate(default, default), default
        what = f"{config_name}: {key} = {shown(value, 120)}"
        real = folder.locate(value, what)
        if os.path.lexists(real):
            return real, what
        usual = folder.locate(default, default)
        if usual == real or not os.path.lexists(usual):
            return real, what
        notes.append(f"{what} is not in the folder: {default} read instead")
        return usual, default

    cert_path, what = path_of("certificate", "cacert.pem")
    try:
        cert = x509.load_pem_x509_certificate(folder.read(cert_path, what, MAX_FILE_BYTES))
    except ValueError:
        raise BadInput(f"{what} is not a PEM certificate") from None
    key_pem = folder.read(*path_of("private_key", "private/cakey.pem"), MAX_FILE_BYTES)
    index_path, what = path_of("database", "index.txt")
    rows = parse_index(_text(folder.read(index_path, what, MAX_INDEX_BYTES), "index.txt"))
    for row in rows:
        if row.reason == "removeFromCRL":  # a released hold: valid again (RFC 5280 5.3.1)
            row.status, row.revoked_at, row.reason, row.invalidity_date = "V", None, None, None
            notes.append(f"serial {serial_hex(row.serial)}: removeFromCRL (a released hold) "
                         "imported as valid; it leaves the next full CRL")
    highest = max((row.serial for row in rows), default=0)
    try:
        check_serial(highest + 1)
    except BadInput as exc:
        raise BadInput(f"index.txt leaves no serial to issue after {serial_hex(highest)}: "
                       f"{exc}") from None
    bodies = _read_bodies(folder, *path_of("new_certs_dir", "newcerts"), rows, cert, notes)
    attr_name = index_path.name + ".attr"
    attr = folder.read(folder.locate(str(index_path) + ".attr", attr_name), attr_name,
                       MAX_FILE_BYTES, missing_ok=True)
    unique = yes(ca_sec.get("unique_subject"), True)
    if attr is not None:
        attrs = OpenSSLConfig(_text(attr, attr_name), what=attr_name)
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
    crl_hours = _number(config_name, ca_sec, "default_crl_days", 0) * 24 + _number(
        config_name, ca_sec, "default_crl_hours", 0)
    options = CaOptions(policy=policy, copy_extensions=copy_ext, unique_subject=unique,
                        default_days=_number(config_name, ca_sec, "default_days", 365),
                        crl_hours=crl_hours or 30 * 24, serial_mode="sequential")
    check_ca_certificate(cert)
    next_serial = _read_number(folder, *path_of("serial", "serial"))
    if next_serial is not None:
        check_serial(next_serial)
    next_crl = _read_number(folder, *path_of("crlnumber", "crlnumber"))
    if next_crl is not None and not 0 < next_crl < (1 << 63):
        raise BadInput(f"crlnumber {next_crl:X} is out of range: pkiq keeps CRL numbers "
                       "between 1 and 2^63-1")
    return DemoCA(cert, key_pem, rows, bodies, options, next_serial, next_crl, notes)


def _number(config_name: str, section: dict[str, str], key: str, default: int) -> int:
    value = section.get(key)
    if not value:
        return default
    if not value.strip().isdigit() or len(value.strip()) > 9:
        raise BadInput(f"{config_name}: {key} should be a whole number")
    return int(value)


def _read_number(folder: Folder, path: Path, what: str) -> int | None:
    data = folder.read(path, what, MAX_NUMBER_BYTES, missing_ok=True)
    return None if data is None else _hex_number(_text(data, what), what)


def _read_bodies(folder: Folder, newcerts: Path, what: str, rows: list[IndexRow],
                 ca_cert: x509.Certificate, notes: list[str]) -> dict[int, bytes]:
    """The certificates in newcerts/, each attached to its index row only if it holds that
    serial and the CA's key signed it: a file anyone could have put there is not what
    ``cert get`` hands out for the CA."""
    bodies: dict[int, bytes] = {}
    skipped: list[str] = []
    present = folder.is_folder(newcerts, what)
    for row in rows if present else []:
        name = f"{serial_hex(row.serial)}.pem"
        path = folder.locate(str(newcerts / name), f"newcerts/{name}")
        data = folder.read(path, f"newcerts/{name}", MAX_FILE_BYTES, missing_ok=True)
        if data is None:
            continue
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            skipped.append(f"{name} is not a PEM certificate")
            continue
        if cert.serial_number != row.serial:
            skipped.append(f"{name} holds serial {serial_hex(cert.serial_number)}")
            continue
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            skipped.append(f"{name} is not signed by this CA's key")
            continue
        bodies[row.serial] = cert.public_bytes(serialization.Encoding.DER)
    for text in skipped[:_MAX_NOTED]:
        notes.append(f"{text}; kept the index entry without it")
    if len(skipped) > _MAX_NOTED:
        notes.append(f"{len(skipped) - _MAX_NOTED} more newcerts/ files skipped the same way")
    missing = len(rows) - len(bodies)
    if missing:
        notes.append(f"{missing} index entries have no certificate in newcerts/; their status "
                     "is kept, their certificates cannot be fetched")
    return bodies


# ---------------------------------------------------------------- adopting

def check_ca_certificate(cert: x509.Certificate) -> None:
    """An adopted CA must be a CA: basicConstraints CA:TRUE and, if keyUsage is present,
    keyCertSign (RFC 5280 4.2.1.3, 4.2.1.9); its key strong enough to sign with; its subject,
    the issuer of all it will sign, within the name rules ``ca create`` applies (an
    emailAddress, common in old CAs, is let be: the certificate exists already)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CN over 64 characters: check_name says so
        subject = cert.subject
    check_name(subject, "CA certificate's subject", ca=True)
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


def validity_notes(cert: x509.Certificate, now: dt.datetime) -> list[str]:
    """An expired (or not yet valid) CA is still adopted: its index and certificates are
    records worth keeping, and status look-ups need them. It is said, not refused."""
    if now >= cert.not_valid_after_utc:
        return [f"the CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z: "
                "its index and certificates are kept, but pkiq signs no certificate with it"]
    if now < cert.not_valid_before_utc:
        return [f"the CA certificate is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z: what it signs until then "
                "will not verify"]
    return []


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
    demo.notes += validity_notes(demo.cert, now)
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
