"""ca.encoding: the one DER length reader and the one PEM splitter, and the three readers
that use the splitter (CRL files, trust bundles, ``pkiq x509``) agreeing on damaged PEM."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ca import crl_decode, encoding, trust, x509text
from ca.encoding import EncodingError, PemBlock, der_element, der_length, pem_blocks
from ca.errors import BadInput

from . import crlfactory

DER = Encoding.DER


def pem(label: str, der: bytes, headers: bytes = b"") -> bytes:
    body = base64.encodebytes(der)
    return (f"-----BEGIN {label}-----\n".encode() + headers + body
            + f"-----END {label}-----\n".encode())


# ---------------------------------------------------------------- DER


def test_der_length_short_and_long_forms():
    assert der_length(b"\x30\x03abc") == (2, 3)
    assert der_length(b"\x30\x81\x80" + b"x" * 128) == (3, 128)
    assert der_length(b"\x30\x82\x01\x00") == (4, 256)  # the content need not be there
    assert der_length(b"..\x04\x01z", at=2) == (4, 1)


@pytest.mark.parametrize(("data", "words"), [
    (b"", "truncated before its length"),
    (b"\x30", "truncated before its length"),
    (b"\x30\x80abc\x00\x00", "indefinite length (BER, not DER)"),
    (b"\x30\x85\x01\x02\x03\x04\x05", "a length of 5 octets"),
    (b"\x30\x82\x01", "truncated in its length"),
    (b"\x1f\x81\x01\x00", "a multi-byte tag"),
])
def test_der_length_refuses(data, words):
    with pytest.raises(EncodingError) as caught:
        der_length(data)
    assert words in str(caught.value)


def test_der_element_is_the_whole_element_without_copying():
    data = b"\x30\x06\x02\x01\x05\x04\x01z" + b"trailing"
    element = der_element(data)
    assert isinstance(element, memoryview) and bytes(element) == data[:8]
    assert bytes(der_element(data, at=2)) == b"\x02\x01\x05"
    with pytest.raises(EncodingError, match="declares 8 bytes but only 7 are present"):
        der_element(data[:7])


# ---------------------------------------------------------------- PEM


def test_blocks_in_order_with_text_around_and_other_labels_skipped():
    data = (b"explanatory text\n" + pem("CERTIFICATE", b"cert") + b"between\n"
            + pem("X509 CRL", b"crl one") + pem("X509 CRL", b"crl two") + b"after")
    assert list(pem_blocks(data)) == [PemBlock("CERTIFICATE", b"cert"),
                                      PemBlock("X509 CRL", b"crl one"),
                                      PemBlock("X509 CRL", b"crl two")]
    assert [b.der for b in pem_blocks(data, ["X509 CRL"])] == [b"crl one", b"crl two"]
    assert list(pem_blocks(b"no PEM here")) == []
    assert encoding.pem_label(data) == "CERTIFICATE"
    assert encoding.pem_label(b"-----BEGIN nothing") is None


def test_rfc_1421_header_lines_are_skipped():
    block = pem("CERTIFICATE", b"cert", headers=b"Proc-Type: 4,XXX\nComment: x\n\n")
    assert [b.der for b in pem_blocks(block)] == [b"cert"]


@pytest.mark.parametrize(("data", "words"), [
    (pem("X509 CRL", b"crl")[:-10], "PEM block #1: no '-----END X509 CRL-----' line"),
    (pem("X509 CRL", b"crl")[:-20] + pem("X509 CRL", b"crl"),
     "PEM block #1: no '-----END X509 CRL-----' line (a truncated or badly joined file?)"),
    (pem("X509 CRL", b"one") + pem("X509 CRL", b"two").replace(b"dHdv", b"dH*v"),
     "PEM block #2: not valid base64: Only base64 data is allowed"),
    (pem("X509 CRL", b"crl one").replace(b"Y3Js", b"Y3=s"),
     "PEM block #1: not valid base64: Discontinuous padding not allowed"),
    (pem("X509 CRL", b"crl one").replace(b"Y3Js", b"Y3J"),
     "PEM block #1: not valid base64"),
])
def test_damage_is_named_with_its_block(data, words):
    with pytest.raises(EncodingError) as caught:
        list(pem_blocks(data))
    assert str(caught.value).startswith(words), caught.value


def test_blocks_are_decoded_as_they_are_reached():
    blocks = pem_blocks(pem("X509 CRL", b"good") + pem("X509 CRL", b"bad")[:-10])
    assert next(blocks) == PemBlock("X509 CRL", b"good")
    with pytest.raises(EncodingError, match="PEM block #2"):
        next(blocks)


def test_count_and_size_are_bounded():
    three = pem("CERTIFICATE", b"a") * 3
    assert len(list(pem_blocks(three, max_blocks=3))) == 3
    with pytest.raises(encoding.TooManyPemBlocks, match="more than 2 PEM blocks"):
        list(pem_blocks(three, max_blocks=2))
    # only the blocks asked for count
    assert len(list(pem_blocks(three + pem("X509 CRL", b"c"), ["X509 CRL"], max_blocks=1))) == 1
    with pytest.raises(EncodingError, match="more than the limit of 100"):
        list(pem_blocks(three, max_bytes=100))


# ---------------------------------------------------------------- the readers agree

def _bad_base64(label: str, der: bytes) -> bytes:
    text = pem(label, der)
    return text.replace(text.splitlines()[1], b"!" + text.splitlines()[1][1:])


def test_crl_files_trust_bundles_and_x509_decode_refuse_bad_base64_alike():
    """Before, a bad character was skipped silently by two of them (the DER then failed, or
    not) and left to OpenSSL by the third; now each says which block is not base64."""
    issuer = crlfactory.issuer()
    crl = _bad_base64("X509 CRL", crlfactory.crl_der(1))
    cert = _bad_base64("CERTIFICATE", issuer.cert.public_bytes(DER))
    expected = "PEM block #1: not valid base64: Only base64 data is allowed"
    for reader, data in ((crl_decode.decode_crls, crl), (trust.load_bundle, cert),
                         (x509text.decode_all, cert), (x509text.decode_all, crl)):
        with pytest.raises(BadInput) as caught:
            reader(data)
        assert str(caught.value) == expected, (reader, caught.value)


def test_x509_decode_names_a_missing_end_line():
    text = pem("CERTIFICATE", crlfactory.issuer().cert.public_bytes(DER))
    with pytest.raises(BadInput, match="PEM block #1: no '-----END CERTIFICATE-----' line"):
        x509text.decode_all(text[:-20])
