"""NIST PKITS (the 2011 edition shipped in ``cryptography-vectors``): pkiq verify's verdict on
every end-entity test certificate, and OpenSSL's ``verify -crl_check_all -extended_crl
-use_deltas`` on the same files in the same run, side by side.

Expected results come from the test names, as the PKITS document defines them: every test
certificate is ``<Valid|Invalid><topic>Test<n>EE.crt``, and a test is to succeed exactly when
its name starts with ``Valid``. The section comes from the topic (the document groups its
tests by topic: section 4.1 signature verification, 4.2 validity periods, ... ``SECTIONS``
below). Every test uses the document's default settings: the one trust anchor
``TrustAnchorRootCertificate``, any policy acceptable, no explicit policy required, and
revocation status required for every certificate in the path (so pkiq runs with
``--fallback revoked``: undetermined counts as not valid, and ``--no-cdp-downloads``, as the
distribution points named inside PKITS point nowhere). Certificates are valid 2010-2030 and
checked at ``AT``.

End-entity files without the Valid/Invalid prefix (section 4.8, certificate policies) are
no cases here: their result depends on the initial policy set the document varies per test,
which the name does not carry. They are not offered as intermediates either.

Paths are built, not given: every CA certificate of the suite is offered as an intermediate
and every CRL as a CRL at hand, and each validator has to find the right ones (the
document's test descriptions list them; a validator that needs to be told the path is
easier to pass).

pkiq must get every case right but those listed in ``KNOWN_MISSES``, each with its reason,
and at least as many as OpenSSL.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.errors import BadInput
from ca.verify import RevocationSettings
from service.verify import Check, CrlCache, verify_files

pytestmark = pytest.mark.openssl

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ANCHOR = "TrustAnchorRootCertificate.crt"
EE_NAME = re.compile(r"^(Valid|Invalid)(?P<topic>.+?)Test(?P<n>\d+)EE\.crt$")

# The PKITS document's sections, by the topic its test names carry.
SECTIONS = {
    "4.1 signature verification": ["CertificatePath", "CASignature", "EESignature",
                                   "DSASignatures", "DSAParameterInheritance", "DSASignature"],
    "4.2 validity periods": ["CAnotBeforeDate", "EEnotBeforeDate", "pre2000UTCnotBeforeDate",
                             "GeneralizedTimenotBeforeDate", "CAnotAfterDate", "EEnotAfterDate",
                             "pre2000UTCEEnotAfterDate", "GeneralizedTimenotAfterDate"],
    "4.3 name chaining": ["NameChaining", "NameChainingOrder", "NameChainingWhitespace",
                          "NameChainingCapitalization", "NameUIDs",
                          "RFC3280MandatoryAttributeTypes", "RFC3280OptionalAttributeTypes",
                          "UTF8StringEncodedNames", "RolloverfromPrintableStringtoUTF8String",
                          "UTF8StringCaseInsensitiveMatch"],
    "4.4 basic CRLs": ["MissingCRL", "RevokedCA", "RevokedEE", "BadCRLSignature",
                       "BadCRLIssuerName", "WrongCRL", "TwoCRLs", "UnknownCRLEntryExtension",
                       "UnknownCRLExtension", "OldCRLnextUpdate", "pre2000CRLnextUpdate",
                       "GeneralizedTimeCRLnextUpdate", "NegativeSerialNumber",
                       "LongSerialNumber", "SeparateCertificateandCRLKeys"],
    "4.5 self-issued certificates": ["BasicSelfIssuedOldWithNew", "BasicSelfIssuedNewWithOld",
                                     "BasicSelfIssuedCRLSigningKey"],
    "4.6 basic constraints": ["MissingbasicConstraints", "cAFalse",
                              "basicConstraintsNotCritical", "pathLenConstraint",
                              "SelfIssuedpathLenConstraint"],
    "4.7 key usage": ["keyUsageCriticalkeyCertSignFalse", "keyUsageNotCriticalkeyCertSignFalse",
                      "keyUsageNotCritical", "keyUsageCriticalcRLSignFalse",
                      "keyUsageNotCriticalcRLSignFalse"],
    "4.8 certificate policies": ["AllCertificatesSamePolicies", "AllCertificatesNoPolicies",
                                 "DifferentPolicies", "OverlappingPolicies",
                                 "AllCertificatesanyPolicy", "CPSPointerQualifier",
                                 "UserNoticeQualifier", "AnyPolicy"],
    "4.9 require explicit policy": ["requireExplicitPolicy", "SelfIssuedrequireExplicitPolicy"],
    "4.10 policy mappings": ["PolicyMapping", "MappingFromanyPolicy", "MappingToanyPolicy"],
    "4.11 inhibit policy mapping": ["inhibitPolicyMapping", "SelfIssuedinhibitPolicyMapping"],
    "4.12 inhibit any policy": ["inhibitAnyPolicy", "SelfIssuedinhibitAnyPolicy"],
    "4.13 name constraints": ["DNnameConstraints", "RFC822nameConstraints",
                              "DNandRFC822nameConstraints", "DNSnameConstraints",
                              "URInameConstraints"],
    "4.14 distribution points": ["distributionPoint", "NoissuingDistributionPoint",
                                 "onlyContainsUserCerts", "onlyContainsCACerts",
                                 "onlyContainsAttributeCerts", "onlySomeReasons",
                                 "IDPwithindirectCRL", "cRLIssuer"],
    "4.15 delta CRLs": ["deltaCRLIndicatorNoBase", "deltaCRL"],
    "4.16 private certificate extensions": ["UnknownNotCriticalCertificateExtension",
                                            "UnknownCriticalCertificateExtension"],
}
TOPIC_SECTION = {topic: section for section, topics in SECTIONS.items() for topic in topics}
# The sections the conformance promise covers; the others are run and shown too.
REQUIRED = ["4.1", "4.2", "4.3", "4.4", "4.6", "4.7", "4.14", "4.15"]

# Cases pkiq gets wrong, and why. The test fails if this list is not exactly the misses.
KNOWN_MISSES = {
    "ValidDSAParameterInheritanceTest5EE": (
        "the end-entity's DSA key inherits its parameters from the issuer's (RFC 3279 "
        "2.3.2); cryptography cannot load such a key, so pkiq refuses the file as "
        "unreadable (exit 3), and the CA certificate DSAParametersInheritedCACert likewise "
        "cannot be offered as an intermediate"),
}


def _data() -> Path:
    import cryptography_vectors

    return Path(cryptography_vectors.__file__).parent / "x509" / "PKITS_data"


def _pem(der: bytes, label: str) -> bytes:
    """PEM by hand, without parsing: OpenSSL gets every file, parseable by pyca or not."""
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN " + label + b"-----\n" + lines + b"\n-----END " + label + b"-----\n"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    data = _data()
    work = tmp_path_factory.mktemp("pkits")
    certs = sorted((data / "certs").glob("*.crt"))
    ees = [c for c in certs if EE_NAME.match(c.name)]
    cas = [c for c in certs if not re.search(r"Test\d+EE\.crt$", c.name) and c.name != ANCHOR]
    loadable, every = [], []
    for path in cas:
        der = path.read_bytes()
        every.append(_pem(der, b"CERTIFICATE"))
        with contextlib.suppress(ValueError):  # DSAParametersInheritedCACert: KNOWN_MISSES
            loadable.append(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
    (work / "pool-all.pem").write_bytes(b"".join(every))
    (work / "anchor.pem").write_bytes(_pem((data / "certs" / ANCHOR).read_bytes(),
                                           b"CERTIFICATE"))
    crls = sorted((data / "crls").glob("*.crl"))
    (work / "crls.pem").write_bytes(b"".join(_pem(p.read_bytes(), b"X509 CRL") for p in crls))
    return {"dir": work, "ees": ees, "pool": b"".join(loadable), "crls": crls,
            "anchor": data / "certs" / ANCHOR}


def _expected(path: Path) -> bool:
    return path.name.startswith("Valid")


def _pkiq(suite, ee: Path, cache: CrlCache) -> tuple[bool | None, str]:
    settings = RevocationSettings(use_ocsp=False, use_crls=True, cdp_downloads=False,
                                  fallback="revoked")
    try:
        outcome = verify_files(Check(ee.read_bytes(), (suite["pool"],), AT, None, None,
                                     settings), [suite["anchor"]], suite["crls"], now=AT,
                               cache=cache)
    except BadInput as exc:
        return None, f"refused: {exc}"
    return outcome.verdict.result == "valid", outcome.verdict.reason


def _openssl(suite, ee: Path) -> tuple[bool, str]:
    work = suite["dir"]
    pem = work / (ee.stem + ".pem")
    pem.write_bytes(_pem(ee.read_bytes(), b"CERTIFICATE"))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(work / "anchor.pem"), "-untrusted",
         str(work / "pool-all.pem"), "-CRLfile", str(work / "crls.pem"), "-crl_check_all",
         "-extended_crl", "-use_deltas", "-attime", str(int(AT.timestamp())), str(pem)],
        capture_output=True, text=True, timeout=60)
    error = [line for line in (done.stdout + done.stderr).splitlines() if "error" in line]
    return done.returncode == 0, (error[0] if error else "OK")


def test_pkits_pkiq_matches_the_expected_results_and_at_least_openssl(suite, capsys):
    cache = CrlCache()
    rows = []
    unknown_topics = []
    for ee in suite["ees"]:
        match = EE_NAME.match(ee.name)
        section = TOPIC_SECTION.get(match["topic"])
        if section is None:
            unknown_topics.append(ee.name)
            continue
        expected = _expected(ee)
        pkiq_ok, pkiq_why = _pkiq(suite, ee, cache)
        ssl_ok, ssl_why = _openssl(suite, ee)
        rows.append((section, f"{section.split()[0]}.{match['n']}", ee.stem, expected,
                     pkiq_ok == expected, pkiq_why, ssl_ok == expected, ssl_why))
    assert unknown_topics == [], "a PKITS test whose topic no section claims"

    def counts(selected):
        total = Counter(r[0] for r in selected)
        mine = Counter(r[0] for r in selected if r[4])
        theirs = Counter(r[0] for r in selected if r[6])
        return total, mine, theirs

    total, mine, theirs = counts(rows)
    in_scope = [r for r in rows if r[0].split()[0] in REQUIRED]
    with capsys.disabled():
        print(f"\nPKITS at {AT:%Y-%m-%d}: cases right, pkiq verify vs openssl verify "
              "-crl_check_all -extended_crl -use_deltas")
        print(f"  {'section':42} {'cases':>5} {'pkiq':>5} {'openssl':>7}")
        for section in SECTIONS:
            if total[section]:
                mark = "*" if section.split()[0] in REQUIRED else " "
                print(f" {mark}{section:42} {total[section]:5} {mine[section]:5} "
                      f"{theirs[section]:7}")
        scope = (len(in_scope), sum(r[4] for r in in_scope), sum(r[6] for r in in_scope))
        print(f"  {'required sections (*)':42} {scope[0]:5} {scope[1]:5} {scope[2]:7}")
        print(f"  {'all sections':42} {len(rows):5} {sum(r[4] for r in rows):5} "
              f"{sum(r[6] for r in rows):7}")
        for r in rows:
            if not r[4]:
                print(f"  pkiq wrong: {r[1]} {r[2]} (expected "
                      f"{'valid' if r[3] else 'invalid'}): {r[5][:160]}")
        for r in rows:
            if not r[6]:
                print(f"  openssl wrong: {r[1]} {r[2]} (expected "
                      f"{'valid' if r[3] else 'invalid'}): {r[7][:120]}")
    misses = {r[2]: r[5] for r in rows if not r[4]}
    assert set(misses) == set(KNOWN_MISSES), misses
    assert sum(r[4] for r in in_scope) >= sum(r[6] for r in in_scope)
    assert sum(r[4] for r in rows) >= sum(r[6] for r in rows)


def test_pkits_names_map_to_sections_as_the_document_numbers_them():
    """A handful of fixed points of the PKITS document, so the mapping cannot drift."""
    names = {p.name for p in (_data() / "certs").glob("*EE.crt")}
    for name, section in [("InvalidRevokedEETest3EE.crt", "4.4"),
                          ("ValidpathLenConstraintTest7EE.crt", "4.6"),
                          ("InvalidkeyUsageCriticalcRLSignFalseTest4EE.crt", "4.7"),
                          ("InvalidNameChainingOrderTest2EE.crt", "4.3"),
                          ("InvaliddeltaCRLTest3EE.crt", "4.15"),
                          ("ValidcRLIssuerTest28EE.crt", "4.14"),
                          ("InvalidEEnotAfterDateTest6EE.crt", "4.2"),
                          ("InvalidEESignatureTest3EE.crt", "4.1")]:
        assert name in names
        assert TOPIC_SECTION[EE_NAME.match(name)["topic"]].split()[0] == section
