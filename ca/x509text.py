"""Reading certificates, requests and CRLs (PEM or DER) and describing them for people."""

from __future__ import annotations

import binascii
import contextlib
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .csr import verify_csr_signature
from .encoding import pem_blocks
from .errors import BadInput
from .keys import describe_key
from .names import openssl_oneline
from .serials import serial_hex

MAX_FILE_BYTES = 64 * 1024 * 1024
_PEM_LABELS = {
    "CERTIFICATE": "certificate",
    "CERTIFICATE REQUEST": "csr",
    "NEW CERTIFICATE REQUEST": "csr",
    "X509 CRL": "crl",
}
_DER_LOADERS = {"certificate": x509.load_der_x509_certificate,
                "crl": x509.load_der_x509_crl, "csr": x509.load_der_x509_csr}


@dataclass(frozen=True)
class Decoded:
    kind: str  # certificate | csr | crl
    obj: object

    def der(self) -> bytes:
        return self.obj.public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.obj.public_bytes(serialization.Encoding.PEM)


def decode_all(data: bytes) -> list[Decoded]:
    """Every object in a PEM bundle, or the one object in a DER file, told apart by content."""
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"file is larger than {MAX_FILE_BYTES} bytes")
    if b"-----BEGIN " in data:
        return _decode_pem(data)
    for kind, loader in _DER_LOADERS.items():
        try:
            obj = loader(data)
        except ValueError:
            continue
        try:
            _touch(kind, obj)
        except ValueError as exc:
            raise BadInput(f"damaged {kind}: {exc}") from None
        return [Decoded(kind, obj)]
    raise BadInput("not a certificate, certificate request or CRL in PEM or DER form")


def _touch(kind: str, obj) -> None:
    """Force parsing of the parts loaders read lazily, so garbage fails here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoding shows what is there, RFC-breaking or not
        obj.subject if kind != "crl" else obj.issuer  # noqa: B018
        list(obj.extensions)
        if kind == "crl":
            for entry in obj:
                list(entry.extensions)


def _decode_pem(data: bytes) -> list[Decoded]:
    out = []
    for block in pem_blocks(data, max_bytes=MAX_FILE_BYTES):
        kind = _PEM_LABELS.get(block.label)
        if kind is None:
            if "PRIVATE KEY" in block.label:
                raise BadInput("this file holds a private key; pkiq does not decode keys here "
                               "(keep it secret)")
            continue
        try:
            obj = _DER_LOADERS[kind](block.der)
            _touch(kind, obj)
        except ValueError:
            raise BadInput(f"damaged PEM block {block.label}") from None
        out.append(Decoded(kind, obj))
    if not out:
        raise BadInput("no certificate, certificate request or CRL found in the PEM file")
    return out


def _hex(value: bytes) -> str:
    return binascii.hexlify(value, ":").decode().upper()


def describe(item: Decoded) -> dict:
    """A JSON-friendly description (``--json``); ``render`` prints it for people."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # show RFC-breaking names as they are
        return _describe(item)


def _describe(item: Decoded) -> dict:
    obj = item.obj
    out: dict = {"type": item.kind}
    if item.kind == "certificate":
        out.update(
            serial=serial_hex(obj.serial_number), issuer=openssl_oneline(obj.issuer),
            subject=openssl_oneline(obj.subject),
            not_before=obj.not_valid_before_utc.isoformat(),
            not_after=obj.not_valid_after_utc.isoformat(),
            public_key=describe_key(obj.public_key()),
            signature_algorithm=obj.signature_algorithm_oid._name,
            sha256_fingerprint=_hex(obj.fingerprint(hashes.SHA256())),
        )
    elif item.kind == "csr":
        out.update(subject=openssl_oneline(obj.subject), public_key=describe_key(obj.public_key()),
                   signature_algorithm=obj.signature_algorithm_oid._name,
                   signature_valid=_csr_signature_valid(obj))
    else:
        number = None
        with contextlib.suppress(x509.ExtensionNotFound):
            number = obj.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        out.update(
            issuer=openssl_oneline(obj.issuer), crl_number=number,
            this_update=obj.last_update_utc.isoformat(),
            next_update=obj.next_update_utc.isoformat() if obj.next_update_utc else None,
            signature_algorithm=obj.signature_algorithm_oid._name,
            revoked=[_revoked(r) for r in obj],
        )
    out["extensions"] = [_extension(e) for e in obj.extensions]
    return out


def _csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    try:
        verify_csr_signature(csr)
    except BadInput:
        return False
    return True


def _revoked(entry: x509.RevokedCertificate) -> dict:
    out = {"serial": serial_hex(entry.serial_number),
           "revoked_at": entry.revocation_date_utc.isoformat()}
    for ext in entry.extensions:
        if isinstance(ext.value, x509.CRLReason):
            out["reason"] = ext.value.reason.name
        elif isinstance(ext.value, x509.InvalidityDate):
            out["invalidity_date"] = ext.value.invalidity_date_utc.isoformat()
    return out


def _extension(ext: x509.Extension) -> dict:
    return {"name": ext.oid._name if ext.oid._name != "Unknown OID" else ext.oid.dotted_string,
            "critical": ext.critical, "value": _ext_value(ext.value)}


def _ext_value(value) -> str:
    if isinstance(value, x509.BasicConstraints):
        text = f"CA:{'TRUE' if value.ca else 'FALSE'}"
        return text + (f", pathlen:{value.path_length}" if value.path_length is not None else "")
    if isinstance(value, x509.KeyUsage):
        names = ["digital_signature", "content_commitment", "key_encipherment",
                 "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign"]
        used = [n for n in names if getattr(value, n)]
        if value.key_agreement:
            used += [n for n in ("encipher_only", "decipher_only") if getattr(value, n)]
        return ", ".join(_camel(n) for n in used)
    if isinstance(value, x509.ExtendedKeyUsage):
        return ", ".join(oid._name for oid in value)
    if isinstance(value, x509.SubjectAlternativeName | x509.IssuerAlternativeName):
        return ", ".join(_general_name(n) for n in value)
    if isinstance(value, x509.SubjectKeyIdentifier):
        return _hex(value.digest)
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return f"keyid:{_hex(value.key_identifier)}" if value.key_identifier else "(issuer+serial)"
    if isinstance(value, x509.CRLDistributionPoints):
        return ", ".join(_general_name(n) for dp in value for n in (dp.full_name or []))
    if isinstance(value, x509.AuthorityInformationAccess):
        return ", ".join(f"{d.access_method._name} - {_general_name(d.access_location)}"
                         for d in value)
    if isinstance(value, x509.CRLNumber):
        return str(value.crl_number)
    if isinstance(value, x509.UnrecognizedExtension):
        return _hex(value.value)
    return repr(value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    special = {"key_cert_sign": "keyCertSign", "crl_sign": "cRLSign"}
    return special.get(name) or head + "".join(p.title() for p in rest)


def _general_name(name) -> str:
    prefix = {x509.DNSName: "DNS", x509.IPAddress: "IP Address", x509.RFC822Name: "email",
              x509.UniformResourceIdentifier: "URI", x509.DirectoryName: "DirName"}
    return f"{prefix.get(type(name), 'othername')}:{name.value}"


def render(item: Decoded) -> str:
    """Text in the spirit of ``openssl x509 -text``: the fields a PKI engineer checks."""
    info = describe(item)
    title = {"certificate": "Certificate", "csr": "Certificate Request",
             "crl": "Certificate Revocation List (CRL)"}[item.kind]
    lines = [f"{title}:"]
    order = ["serial", "signature_algorithm", "issuer", "not_before", "not_after", "subject",
             "public_key", "crl_number", "this_update", "next_update", "signature_valid",
             "sha256_fingerprint"]
    labels = {"serial": "Serial Number", "signature_algorithm": "Signature Algorithm",
              "issuer": "Issuer", "not_before": "Not Before", "not_after": "Not After",
              "subject": "Subject", "public_key": "Public Key", "crl_number": "CRL Number",
              "this_update": "Last Update", "next_update": "Next Update",
              "signature_valid": "Signature Valid", "sha256_fingerprint": "SHA256 Fingerprint"}
    for key in order:
        if key in info:
            lines.append(f"    {labels[key]}: {info[key]}")
    if info["extensions"]:
        lines.append("    X509v3 extensions:")
        for ext in info["extensions"]:
            crit = " critical" if ext["critical"] else ""
            lines.append(f"        {ext['name']}:{crit}")
            lines.append(f"            {ext['value']}")
    if item.kind == "crl":
        lines.append(f"    Revoked Certificates: {len(info['revoked'])}")
        for entry in info["revoked"]:
            extra = f"  reason {entry['reason']}" if "reason" in entry else ""
            lines.append(f"        {entry['serial']}  {entry['revoked_at']}{extra}")
    return "\n".join(lines)
