"""Signing profiles as data: what an issued certificate may be used for.

Names follow the Microsoft templates the Expressway guide uses: ``webserver`` (WebServer,
serverAuth) and ``webclientandserver`` (Webclientandserver, serverAuth + clientAuth, needed for
mutual TLS between Expressways in TLS verify mode).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from .errors import BadInput
from .general_names import DNS, IP

TLS_SAN_TYPES = (DNS, IP)


@dataclass(frozen=True)
class Profile:
    """What a certificate of this kind says. Key usage, extended key usage and basic
    constraints are the profile's statements only; ``copyable`` lists the request extensions
    ``copy_extensions`` may bring (an allow-list: anything else in a request is ignored, with
    a warning), and ``san_types`` the subjectAltName types it accepts, each syntax-checked."""

    name: str
    description: str
    extended_key_usage: tuple = ()
    is_ca: bool = False
    path_length: int | None = None
    default_days: int | None = None  # None: the CA's default_days
    san_types: tuple[str, ...] = TLS_SAN_TYPES
    copyable: frozenset = frozenset({ExtensionOID.SUBJECT_ALTERNATIVE_NAME})


PROFILES = {
    p.name: p
    for p in (
        Profile("webserver", "TLS server (serverAuth)", (ExtendedKeyUsageOID.SERVER_AUTH,)),
        Profile(
            "webclientandserver",
            "TLS server and client (serverAuth + clientAuth), for Expressway mutual TLS",
            (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        ),
        Profile("client", "TLS client (clientAuth)", (ExtendedKeyUsageOID.CLIENT_AUTH,)),
        Profile("subca", "Subordinate CA (CA:TRUE, pathlen 0)", is_ca=True, path_length=0,
                default_days=1825, san_types=(), copyable=frozenset()),
    )
}
DEFAULT_PROFILE = "webclientandserver"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise BadInput(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None
