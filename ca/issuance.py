"""Building certificates: pure functions from a request, a profile and a CA to a signed cert.

No database and no clock here; serials, ``now`` and the signer are handed in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from .errors import BadInput
from .general_names import check_general_names
from .keys import Signer
from .profiles import Profile
from .serials import check_serial

COPY_MODES = ("none", "copy", "copyall")


@dataclass(frozen=True)
class CaUrls:
    """Where relying parties find this CA's CRL, its certificate and its OCSP responder."""

    crl: tuple[str, ...] = ()
    ca_issuers: tuple[str, ...] = ()
    ocsp: tuple[str, ...] = ()


@dataclass
class Issued:
    certificate: x509.Certificate
    warnings: list[str] = field(default_factory=list)


def validity_window(now: dt.datetime, days: int, skew: dt.timedelta,
                    ca_not_after: dt.datetime | None) -> tuple[dt.datetime, dt.datetime, list[str]]:
    """notBefore backdated by the clock-skew margin; notAfter never past the CA's own."""
    if days < 1:
        raise BadInput(f"validity must be at least one day, not {days}")
    not_before = (now - skew).replace(microsecond=0)
    not_after = (now + dt.timedelta(days=days)).replace(microsecond=0)
    warnings = []
    if ca_not_after is not None and not_after > ca_not_after:
        not_after = ca_not_after
        warnings.append(f"validity cut to the CA's own notAfter "
                        f"({ca_not_after:%Y-%m-%d %H:%M:%S}Z)")
    return not_before, not_after, warnings


def key_usage(public_key, *, is_ca: bool) -> x509.KeyUsage:
    """CAs sign certificates and CRLs; TLS end entities sign, RSA ones also encipher keys."""
    return x509.KeyUsage(
        digital_signature=not is_ca,
        content_commitment=False,
        key_encipherment=not is_ca and isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer_cert: x509.Certificate | None, issuer_public_key):
    if issuer_cert is not None:
        try:
            ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
        except x509.ExtensionNotFound:
            pass
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key)


def _url_extensions(urls: CaUrls) -> list[tuple[x509.ExtensionType, bool]]:
    out: list[tuple[x509.ExtensionType, bool]] = []
    if urls.crl:
        out.append((x509.CRLDistributionPoints([
            x509.DistributionPoint([x509.UniformResourceIdentifier(u)], None, None, None)
            for u in urls.crl]), False))
    access = [x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                     x509.UniformResourceIdentifier(u)) for u in urls.ocsp]
    access += [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                      x509.UniformResourceIdentifier(u)) for u in urls.ca_issuers]
    if access:
        out.append((x509.AuthorityInformationAccess(access), False))
    return out


def request_extensions(
    csr: x509.CertificateSigningRequest, profile: Profile, mode: str,
) -> tuple[list[tuple[x509.ExtensionType, bool]], list[str]]:
    """OpenSSL's ``copy_extensions`` over an allow-list: ``copy`` and ``copyall`` bring only
    the extensions the profile lists as copyable (the subjectAltName, its names checked by
    type for the profile); everything else a request carries (key usages, extended key
    usages, basic constraints, ocspNoCheck, policies, URLs) is the CA's statement and
    ignored, with one warning naming what was. ``none`` ignores the request's extensions.
    The profile sets none of the copyable ones, so ``copy`` and ``copyall`` agree."""
    if mode not in COPY_MODES:
        raise BadInput(f"copy_extensions must be one of {', '.join(COPY_MODES)}, not {mode!r}")
    if mode == "none":
        return [], []
    out: list[tuple[x509.ExtensionType, bool]] = []
    warnings: list[str] = []
    ignored: list[str] = []
    for ext in csr.extensions:
        if ext.oid not in profile.copyable:
            note = _not_copied(ext, profile)
            if note:
                ignored.append(note)
            continue
        if ext.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            names, notes = check_general_names(list(ext.value), profile.san_types,
                                               profile.name)
            warnings += notes
            if names:  # critical only for an empty subject (RFC 5280 4.2.1.6): never here
                out.append((x509.SubjectAlternativeName(names), False))
        else:
            out.append((ext.value, ext.critical))
    if ignored:
        warnings.append(f"the request asks for what profile {profile.name} does not give; "
                        f"not copied: {'; '.join(ignored)}")
    return out, warnings


def _not_copied(ext: x509.Extension, profile: Profile) -> str | None:
    """What to tell the requester about an extension the profile decides, or None where the
    request only asked for what the profile gives anyway (the guide's CSRs ask for serverAuth
    and clientAuth, which ``webclientandserver`` sets)."""
    if ext.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
        return None  # pkiq computes it from the key, as the request would
    if ext.oid == ExtensionOID.BASIC_CONSTRAINTS:
        return None if ext.value.ca == profile.is_ca else (
            f"basicConstraints (CA:{str(ext.value.ca).upper()})")
    if ext.oid == ExtensionOID.KEY_USAGE:
        asks_ca = ext.value.key_cert_sign or ext.value.crl_sign
        return "keyUsage (keyCertSign/cRLSign)" if asks_ca and not profile.is_ca else None
    if ext.oid == ExtensionOID.EXTENDED_KEY_USAGE:
        extra = [_oid_name(oid) for oid in ext.value if oid not in profile.extended_key_usage]
        return f"extendedKeyUsage ({', '.join(extra)})" if extra else None
    return _oid_name(ext.oid)


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return name if name and name != "Unknown OID" else oid.dotted_string


def build_certificate(
    *,
    signer: Signer,
    issuer_cert: x509.Certificate | None,
    subject: x509.Name,
    public_key,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    profile: Profile,
    urls: CaUrls = CaUrls(),
    requested: list[tuple[x509.ExtensionType, bool]] = (),
    digest: str | None = None,
) -> Issued:
    """Sign one certificate. ``issuer_cert`` None means self-signed (a root); ``requested``
    holds what ``request_extensions`` let through from the request."""
    check_serial(serial)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=profile.is_ca, path_length=profile.path_length), True),
        (key_usage(public_key, is_ca=profile.is_ca), True),
    ]
    if profile.extended_key_usage:
        extensions.append((x509.ExtendedKeyUsage(list(profile.extended_key_usage)), False))
    extensions.append((x509.SubjectKeyIdentifier.from_public_key(public_key), False))
    extensions.append((_authority_key_id(issuer_cert, signer.public_key()), False))
    if issuer_cert is not None:
        extensions.extend(_url_extensions(urls))
    extensions.extend(requested)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    return Issued(signer.sign_certificate(builder, digest))
