"""ca.crl_decode: every container format, every kind of junk, and bombs refused cheaply."""

from __future__ import annotations

import contextlib
import gzip
import io
import random
import resource
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.crl_decode import CrlFormatError, DecodeLimits, decode_crls
from ca.errors import BadInput

from . import crlfactory

DER = crlfactory.crl_der(3, number=1)
DER2 = crlfactory.crl_der(5, number=2)
PEM = crlfactory.pem(DER)
PEM2 = crlfactory.pem(DER2)
CA_DER = crlfactory.issuer().cert.public_bytes(serialization.Encoding.DER)


def numbers(crls) -> list[int]:
    return [c.crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            for c in crls]


def refused(data: bytes, limits: DecodeLimits | None = None) -> str:
    with pytest.raises(CrlFormatError) as caught:
        decode_crls(data, limits or DecodeLimits())
    return str(caught.value)


def make_zip(members: list[tuple[str, bytes]], method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return out.getvalue()


def make_tar_gz(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return out.getvalue()


# ---------------------------------------------------------------- formats


def test_der_is_decoded_without_a_copy():
    crls, notes = decode_crls(DER)
    assert [c.source for c in crls] == ["der"] and notes == []
    assert crls[0].der is DER
    assert len(crls[0].crl) == 3


def test_pem_with_text_around_the_block():
    crls, _ = decode_crls(b"Issuer: CN=CRL Test CA\r\nsome notes\r\n" + PEM + b"\ntrailer\n")
    assert [c.source for c in crls] == ["pem #1"]
    assert crls[0].der == DER


def test_several_pem_blocks_in_order():
    crls, _ = decode_crls(b"first\n" + PEM + b"second\n" + PEM2)
    assert [c.source for c in crls] == ["pem #1", "pem #2"]
    assert numbers(crls) == [1, 2]


def test_repr_names_the_source_not_the_bytes():
    crl = decode_crls(DER)[0][0]
    assert repr(crl) == ("DecodedCrl(source='der', issuer='CN=CRL Test CA,O=Example', "
                         f"bytes={len(DER)})")


def test_zip_with_mixed_members(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_zip([("../../x.crl", DER), ("sub/", b""), ("README.txt", b"CRLs of Example\n"),
                     ("both.pem", b"two:\n" + PEM + PEM2), ("ca.cer", CA_DER),
                     ("evil\x1b[31m.crl", DER2)])
    crls, notes = decode_crls(data)
    assert [c.source for c in crls] == [
        "zip member 1 (../../x.crl)", "zip member 4 (both.pem), pem #1",
        "zip member 4 (both.pem), pem #2", "zip member 6 (evil?[31m.crl)"]
    assert numbers(crls) == [1, 1, 2, 2]
    assert notes == [
        "zip member 2 (sub/): skipped, a directory",
        "zip member 3 (README.txt): skipped, not a CRL: the file is text (first bytes "
        "43 52 4c 73 20 6f 66 20)",
        "zip member 5 (ca.cer): skipped, an X.509 certificate, not a CRL"]
    assert list(tmp_path.iterdir()) == []  # nothing was written, whatever the names say


def test_zip_stored_members_too():
    crls, _ = decode_crls(make_zip([("a.crl", DER)], method=zipfile.ZIP_STORED))
    assert crls[0].der == DER


def test_zip_encrypted_member_is_skipped_with_a_note():
    data = bytearray(make_zip([("secret.crl", DER), ("open.crl", DER2)]))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    for offset in (local + 6, central + 8):  # general purpose flag, bit 0: encrypted
        data[offset] |= 0x01
    crls, notes = decode_crls(bytes(data))
    assert numbers(crls) == [2]
    assert notes == ["zip member 1 (secret.crl): skipped, encrypted"]


def test_zip_without_any_crl_is_an_error():
    message = refused(make_zip([("index.html", b"<html><body>Moved</body></html>"),
                                ("ca.cer", CA_DER)]))
    assert message.startswith("the zip archive holds no CRL: zip member 1 (index.html): "
                              "skipped, the file is HTML")


def test_zip_with_a_damaged_crl_member_is_an_error():
    message = refused(make_zip([("a.crl", DER[:-20])]))
    assert message.startswith("zip member 1 (a.crl): truncated DER CRL")


def test_empty_zip():
    assert refused(make_zip([])) == "the zip archive holds no CRL"


def test_gzip_of_der_and_of_pem():
    crls, _ = decode_crls(gzip.compress(DER))
    assert [c.source for c in crls] == ["gzip"] and crls[0].der == DER
    crls, _ = decode_crls(gzip.compress(PEM + PEM2))
    assert [c.source for c in crls] == ["gzip, pem #1", "gzip, pem #2"]


def test_concatenated_gzip_members_read_as_one_stream():
    crls, _ = decode_crls(gzip.compress(PEM) + gzip.compress(PEM2) + b"\0" * 16)
    assert numbers(crls) == [1, 2]


def test_tar_gz_of_several_crls_links_ignored():
    link = tarfile.TarInfo("link.crl")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    data = make_tar_gz([("crls/a.crl", DER), link, device, ("crls/b.pem", PEM2),
                        ("notes.txt", b"hello\n")])
    crls, notes = decode_crls(data)
    assert [c.source for c in crls] == ["tar member 1 (crls/a.crl)",
                                        "tar member 4 (crls/b.pem), pem #1"]
    assert notes == ["tar member 2 (link.crl): skipped, not a regular file",
                     "tar member 3 (dev): skipped, not a regular file",
                     "tar member 5 (notes.txt): skipped, not a CRL: the file is text "
                     "(first bytes 68 65 6c 6c 6f 0a)"]


def test_tar_gz_without_crls_is_an_error():
    assert refused(make_tar_gz([("notes.txt", b"hello\n")])).startswith(
        "the tar.gz archive holds no CRL: tar member 1 (notes.txt)")


# ---------------------------------------------------------------- junk


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "the file is empty"),
    (b" \r\n\t", "the file holds only whitespace"),
    (b"\n<!DOCTYPE html>\n<html><head><title>404</title></head></html>",
     "the file is HTML, not a CRL (an error page served with status 200?)"),
    (b"<HEAD><TITLE>Error</TITLE></HEAD><BODY>no</BODY>",
     "the file is HTML, not a CRL (an error page served with status 200?)"),
    (b'{"error": "not found"}', "the file looks like JSON, not a CRL"),
    (bytes(range(200, 256)), "not a CRL: the content is neither PEM, DER, ZIP nor gzip "
                             "(first bytes c8 c9 ca cb cc cd ce cf)"),
    (b"0 entries\n", "not a CRL: the file is text (first bytes 30 20 65 6e 74 72 69 65)"),
    (DER[:-1], f"truncated DER CRL: the outer SEQUENCE declares {len(DER):,} bytes but only "
               f"{len(DER) - 1:,} are present"),
    (DER + DER2, f"DER CRL followed by {len(DER2):,} bytes of trailing data"),
    (b"\x30\x03\x02\x01\x01", "truncated or malformed DER CRL: a field of the wrong type in "
                            "the signed part of the CRL"),
    (DER.replace(b"\x02\x01\x01", b"\x02\x01\x07", 1),
     "unsupported CRL version: 7 is not a valid CRL version"),
    (PEM[:-30], "PEM block #1: no '-----END X509 CRL-----' line"),
    (PEM[:-30] + PEM2, "PEM block #1: no '-----END X509 CRL-----' line"),
    (PEM[:25] + b"AAAA" + PEM[29:], "PEM block #1: truncated or malformed DER CRL"),
    (PEM[:25] + PEM[26:], "PEM block #1: not valid base64"),
    (PEM2 + PEM[:40] + b"=" + PEM[40:], "PEM block #2: "),
    (crlfactory.issuer().cert_pem, "the PEM file holds CERTIFICATE blocks, not X509 CRL"),
    (CA_DER, "this is an X.509 certificate, not a CRL"),
    (gzip.compress(DER)[:-12], "truncated gzip file: the compressed stream ends early"),
    (gzip.compress(DER)[:10] + b"\xff" * 40, "damaged gzip file: Error -3 while decompressing "
                                             "data: invalid block type"),
    (gzip.compress(DER) + b"junk", "4 bytes of trailing garbage after the gzip stream"),
    (gzip.compress(b"<html>oops</html>"), "gzip: the file is HTML, not a CRL"),
    (gzip.compress(b""), "gzip: the file is empty"),
    (b"PK\x03\x04" + b"\0" * 40, "damaged zip archive: File is not a zip file"),
])
def test_junk_gets_one_clear_message(data, expected):
    message = refused(data)
    assert message.startswith(expected), message
    assert "\n" not in message and "Traceback" not in message


def test_format_errors_are_bad_input():
    assert issubclass(CrlFormatError, BadInput)


def test_mangled_archives_raise_only_format_errors():
    """Whatever damage, the caller sees CrlFormatError, never zipfile's or zlib's own."""
    samples = [make_zip([("a.crl", DER), ("b.pem", PEM2)]), gzip.compress(DER),
               make_tar_gz([("a.crl", DER), ("b.crl", DER2)]), DER, PEM]
    rng = random.Random(5280)
    for _ in range(400):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
        with contextlib.suppress(CrlFormatError):
            decode_crls(bytes(data))


# ---------------------------------------------------------------- limits and bombs


def gzip_of_zeros(gigabytes: int) -> bytes:
    """A valid-looking gzip that inflates to ``gigabytes`` GiB of zeros, built in a blink:
    one deflate-compressed MiB, byte-aligned by a full flush, repeated. Its trailer CRC is
    not computed (that would mean hashing the gigabytes); a decoder must stop long before."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = deflate.compress(bytes(2**20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    final_block = b"\x03\x00"
    return header + mib * (gigabytes * 1024) + final_block + struct.pack("<II", 0, 0)


def bounded(action) -> tuple[float, int, int]:
    """(seconds, peak bytes allocated by Python, growth of the process's peak RSS in KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    try:
        action()
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return seconds, peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss


def test_gzip_bomb_refused_quickly_in_bounded_memory():
    bomb = gzip_of_zeros(10)
    assert len(bomb) < 12 * 2**20

    def decode():
        assert refused(bomb).startswith("the gzip file expands more than 200 times its "
                                        "compressed size (a decompression bomb?)")

    seconds, peak, rss_growth_kib = bounded(decode)
    assert seconds < 2
    assert peak < 32 * 2**20
    assert rss_growth_kib < 64 * 1024


def test_gzip_beyond_the_total_limit():
    data = gzip.compress(crlfactory.crl_der(20_000))
    message = refused(data, DecodeLimits(max_total_bytes=100_000))
    assert message == ("the gzip file expands beyond 100,000 bytes (a decompression bomb?); "
                       "refused")


def zip_of_zeros(megabytes: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("zeros.crl", "w") as member:
        for _ in range(megabytes):
            member.write(bytes(2**20))
    return out.getvalue()


def test_zip_bomb_by_ratio():
    bomb = zip_of_zeros(64)
    seconds, peak, _ = bounded(lambda: refused(bomb))
    assert refused(bomb).startswith("zip member 1 (zeros.crl) expands more than 200 times")
    assert seconds < 2 and peak < 32 * 2**20


def test_zip_member_lying_about_its_size():
    """Declares 1,000 bytes, inflates to 64 MiB: inflating stops one byte past the declared
    size; nothing more is ever produced."""
    data = bytearray(zip_of_zeros(64))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        data[at + offset:at + offset + 4] = struct.pack("<I", 1000)
    seconds, peak, _ = bounded(lambda: refused(bytes(data)))
    assert refused(bytes(data)) == ("damaged zip archive: zip member 1 (zeros.crl) inflates "
                                    "to more than its declared 1,000 bytes")
    assert seconds < 2 and peak < 8 * 2**20


def test_too_many_members():
    limits = DecodeLimits(max_members=10)
    many = [(f"{n}.txt", b"x") for n in range(11)]
    assert refused(make_zip(many), limits) == "the zip archive has more than 10 members"
    assert refused(make_tar_gz(many), limits).endswith("the tar archive has more than 10 "
                                                       "members")
    assert refused(PEM * 11, limits) == "more than 10 PEM CRL blocks"
    assert refused(make_zip([("a.pem", PEM * 6), ("b.pem", PEM * 6)]), limits) == (
        "the zip archive holds more than 10 CRLs")
    assert len(decode_crls(PEM * 10, limits)[0]) == 10


# ---------------------------------------------------------------- speed


@pytest.fixture(scope="module")
def million() -> bytes:
    return crlfactory.crl_der(1_000_000)


def test_a_million_entries_cost_little_beyond_parsing(million):
    """Decoding adds no copies of a big CRL beyond what inflating needs: memory traced, not
    time (the timings are bench/bench_crl.py's, where the machine's load is reported)."""
    for data, allowed in ((million, 1 << 20), (gzip.compress(million, 1), 2.5 * len(million))):
        tracemalloc.start()
        try:
            crls, _ = decode_crls(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < allowed
        assert len(crls[0].der) == len(million)
