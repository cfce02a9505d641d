"""The scope of a CRL: which of its issuer's certificates it speaks for.

RFC 5280 5.2.5: a CRL without an issuingDistributionPoint is complete (it covers every
certificate of its issuer, for every reason); one with it covers only what the extension
names: the certificates whose CRL distribution point is the IDP's distributionPoint
(fullName or nameRelativeToCRLIssuer), only end-entity or only CA certificates, only some
reasons. CRL numbers rise per issuer and scope (RFC 5280 5.2.3), and a CRL of one scope says
nothing about another: so pkiq keeps one current CRL per issuer and scope, and a CRL
replaces only the one of its own scope. A Microsoft CA puts the same IDP (its CDP URLs) in
every CRL: that issuer has one scope, as before.

A scope is named by a canonical text (``complete``, or the IDP's names sorted and its flags
in a fixed order, non-printable bytes escaped) and keyed by that text's SHA-256, which is
what the database's unique index holds (fixed size, whatever the URLs' length).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509

from .general_names import type_name

COMPLETE = "complete"
_SEPARATOR = " | "


@dataclass(frozen=True)
class Scope:
    text: str
    key: str

    @property
    def complete(self) -> bool:
        return self.text == COMPLETE

    def __str__(self) -> str:
        return self.text


def scope_of_text(text: str) -> Scope:
    return Scope(text, hashlib.sha256(text.encode()).hexdigest())


COMPLETE_SCOPE = scope_of_text(COMPLETE)


def scope_of(crl: x509.CertificateRevocationList) -> Scope:
    """The scope ``crl`` covers (its extensions parse: ``check_structure`` has read them)."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return COMPLETE_SCOPE
    return scope_of_text(idp_text(idp))


def idp_text(idp: x509.IssuingDistributionPoint) -> str:
    """The canonical text of an IDP: the same IDP always gives the same text, whatever the
    order of its names; an IDP that narrows nothing is ``complete``. The indirect and
    attribute-certificate flags are not here: such CRLs are refused before (crl_install)."""
    parts = sorted(_general_name(name) for name in idp.full_name or ())
    if idp.relative_name is not None:
        parts.append("relativeName:" + _printable(idp.relative_name.rfc4514_string()))
    if idp.only_contains_user_certs:
        parts.append("onlyContainsUserCerts")
    if idp.only_contains_ca_certs:
        parts.append("onlyContainsCACerts")
    if idp.only_some_reasons:
        parts.append("onlySomeReasons:" + ",".join(sorted(
            reason.value for reason in idp.only_some_reasons)))
    return _SEPARATOR.join(parts) or COMPLETE


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DirectoryName):
        value = name.value.rfc4514_string()
    elif isinstance(name, x509.OtherName):
        value = f"{name.type_id.dotted_string}:{name.value.hex()}"
    elif isinstance(name, x509.RegisteredID):
        value = name.value.dotted_string
    else:
        value = str(name.value)
    return f"{type_name(name)}:{_printable(value)}"


def _printable(value: str) -> str:
    """Printable ASCII as is; anything else (and the backslash and the separator's bar) as
    ``\\xHH`` of its UTF-8 bytes, so the text is one safe line and still tells names apart."""
    out = []
    for char in value:
        if " " <= char <= "~" and char not in "\\|":
            out.append(char)
        else:
            out.extend(f"\\x{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)
