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
from .keys import Signer
from .profiles import Profile
from .serials import check_serial

COPY_MODES = ("none", "copy", "copyall")
# Extensions that are the CA's statements, never the requester's: CA-ness and constraints,
# key identifiers, and where relying parties look for revocation, the issuer and policies
# (a requester who sets the CRL distribution point chooses which CRL is checked).
_NEVER_COPIED = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ExtensionOID.FRESHEST_CRL,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
}


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


def copy_request_extensions(
    csr: x509.CertificateSigningRequest, chosen: list[tuple[x509.ExtensionType, bool]],
    mode: str, *, is_ca: bool,
) -> tuple[list[tuple[x509.ExtensionType, bool]], list[str]]:
    """OpenSSL's ``copy_extensions``: ``copy`` adds request extensions the profile did not set,
    ``copyall`` lets them replace the profile's; ``none`` ignores them. Never copied: CA-ness,
    key identifiers, constraints — nor a CA keyUsage into an end-entity certificate."""
    if mode not in COPY_MODES:
        raise BadInput(f"copy_extensions must be one of {', '.join(COPY_MODES)}, not {mode!r}")
    warnings: list[str] = []
    if mode == "none":
        return chosen, warnings
    result = list(chosen)
    present = {ext.oid for ext, _ in result}
    for ext in csr.extensions:
        if ext.oid in _NEVER_COPIED:
            if ext.oid == ExtensionOID.BASIC_CONSTRAINTS and ext.value.ca and not is_ca:
                warnings.append("the request asks for CA:TRUE; ignored, the profile decides")
            continue
        if isinstance(ext.value, x509.UnrecognizedExtension) and ext.critical:
            raise BadInput("the request carries an unknown critical extension "
                           f"{ext.oid.dotted_string}")
        if ext.oid == ExtensionOID.KEY_USAGE and not is_ca and (
            ext.value.key_cert_sign or ext.value.crl_sign
        ):
            warnings.append("the request asks for a CA keyUsage (keyCertSign/cRLSign); ignored")
            continue
        if ext.oid in present:
            if mode == "copy":
                continue
            result = [(e, c) for e, c in result if e.oid != ext.oid]
        result.append((ext.value, ext.critical))
        present.add(ext.oid)
    return result, warnings


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
    csr: x509.CertificateSigningRequest | None = None,
    copy_mode: str = "none",
    digest: str | None = None,
) -> Issued:
    """Sign one certificate. ``issuer_cert`` None means self-signed (a root)."""
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
    warnings: list[str] = []
    if csr is not None:
        extensions, warnings = copy_request_extensions(csr, extensions, copy_mode,
                                                       is_ca=profile.is_ca)
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
    return Issued(signer.sign_certificate(builder, digest), warnings)
