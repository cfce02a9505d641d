"""Decoding fetched or uploaded CRL files by their content: PEM, DER, ZIP, gzip, tar.gz.

Distribution points serve whatever their operators chose, under any name and Content-Type,
so the format is read from the bytes. Archives are opened in memory only: member names are
shown (sanitised), never used as paths. Every decompression is bounded in total size and in
ratio while it runs, so a small bomb is refused after a few megabytes, not after gigabytes.
Signatures and dates are checked elsewhere (``ca.crl_install``); this module only parses.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field

from cryptography import x509

from .encoding import EncodingError, TooManyPemBlocks, der_size, pem_blocks, pem_label
from .errors import BadInput

PEM_LABEL = "X509 CRL"
PEM_BEGIN = b"-----BEGIN X509 CRL-----"
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_CENTRAL_ENTRY = b"PK\x01\x02"
_CHUNK_IN = 256 * 1024
_CHUNK_OUT = 1024 * 1024
# Small inputs may expand by more than the ratio (headers, a tiny PEM): allow this much extra.
_SLACK = 1024 * 1024
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


class CrlFormatError(BadInput):
    """The bytes are not a CRL, or not one we can read safely."""


class _NotACrl(CrlFormatError):
    """Well-formed, but something else (a certificate): skipped inside an archive."""


@dataclass(frozen=True)
class DecodedCrl:
    crl: x509.CertificateRevocationList = field(repr=False)
    der: bytes = field(repr=False)
    source: str  # where in the file: "der", "pem #2", "zip member 3 (a.crl)", "gzip", ...

    def __repr__(self) -> str:
        return (f"DecodedCrl(source={self.source!r}, issuer={self.crl.issuer.rfc4514_string()!r},"
                f" bytes={len(self.der)})")


@dataclass(frozen=True)
class DecodeLimits:
    max_total_bytes: int = 512 * 2**20  # after decompression, all members together
    max_ratio: int = 200  # decompressed / compressed, checked as each layer expands
    max_members: int = 10_000  # zip or tar members, or PEM blocks


def decode_crls(data: bytes, limits: DecodeLimits = DecodeLimits()) -> tuple[
        list[DecodedCrl], list[str]]:
    """Every CRL in ``data`` and notes on what was skipped (non-CRL zip members, ...).

    Raises CrlFormatError, with one sentence a PKI engineer can act on, when the file holds
    no CRL at all, is damaged, or exceeds ``limits``."""
    notes: list[str] = []
    if data[:4] in _ZIP_MAGIC:
        crls = _from_zip(data, limits, notes)
    elif data[:2] == _GZIP_MAGIC:
        crls = _from_gzip(data, limits, notes)
    else:
        crls = _plain(data, "", limits)
    return crls, notes


# ---------------------------------------------------------------- plain: PEM or DER


def _plain(data: bytes, container: str, limits: DecodeLimits) -> list[DecodedCrl]:
    """A PEM or DER file, on its own (``container`` "") or inside an archive member."""
    if _der_fills(data) or (data[:1] == b"\x30" and PEM_BEGIN not in data
                            and not _is_text(data[:512])):
        return [_load_der(data, container or "der", _prefix(container))]
    if PEM_BEGIN in data:
        return _pem_blocks(data, container, limits)
    raise CrlFormatError(_prefix(container) + _what_else(data))


def _prefix(container: str) -> str:
    return f"{container}: " if container else ""


def _der_fills(data: bytes) -> bool:
    """A DER SEQUENCE whose declared length is exactly the file (so not text that starts
    with the character "0")."""
    return _declared(data) == len(data)


def _declared(data: bytes) -> int | None:
    """The size a leading SEQUENCE declares, header included, or None when there is none."""
    if data[:1] != b"\x30":
        return None
    try:
        return der_size(data)
    except EncodingError:
        return None


def _load_der(der: bytes, source: str, where: str) -> DecodedCrl:
    """``where`` prefixes error messages ("zip member 2 (a.crl): ", "" for a plain file)."""
    declared = _declared(der)
    if declared is not None and declared > len(der):
        raise CrlFormatError(f"{where}truncated DER CRL: the outer SEQUENCE declares "
                             f"{declared:,} bytes but only {len(der):,} are present")
    if declared is not None and declared < len(der):
        raise CrlFormatError(f"{where}DER CRL followed by {len(der) - declared:,} bytes "
                             "of trailing data (two files joined, or a damaged download?)")
    try:
        return DecodedCrl(x509.load_der_x509_crl(der), der, source)
    except x509.InvalidVersion as exc:
        raise CrlFormatError(f"{where}unsupported CRL version: {exc}") from None
    except ValueError as exc:
        problem = exc
    if _is_certificate(der):
        raise _NotACrl(f"{where}this is an X.509 certificate, not a CRL")
    raise CrlFormatError(f"{where}truncated or malformed DER CRL: {problem}")


def _is_certificate(der: bytes) -> bool:
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return True


def _pem_blocks(data: bytes, container: str, limits: DecodeLimits) -> list[DecodedCrl]:
    """Every ``X509 CRL`` block; text between and around blocks is ignored (RFC 7468 5)."""
    crls: list[DecodedCrl] = []
    prefix = _prefix(container)
    try:
        for number, block in enumerate(pem_blocks(data, [PEM_LABEL],
                                                  max_blocks=limits.max_members,
                                                  max_bytes=limits.max_total_bytes), 1):
            source = f"{container}, pem #{number}" if container else f"pem #{number}"
            crls.append(_load_der(block.der, source, f"{prefix}PEM block #{number}: "))
    except TooManyPemBlocks:
        raise CrlFormatError(f"{prefix}more than {limits.max_members:,} PEM CRL blocks"
                             ) from None
    except EncodingError as exc:
        raise CrlFormatError(f"{prefix}{exc}") from None
    return crls


def _what_else(data: bytes) -> str:
    """Name what the bytes are instead of a CRL, as precisely as cheaply possible."""
    if not data:
        return "the file is empty"
    if not data[:4096].strip() and not data.strip():
        return "the file holds only whitespace"
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")) or (
            head.startswith(b"<") and (b"<html" in head or b"<body" in head)):
        return "the file is HTML, not a CRL (an error page served with status 200?)"
    if head.startswith(b"<?xml"):
        return "the file is XML, not a CRL"
    if head.startswith((b"{", b"[")):
        return "the file looks like JSON, not a CRL"
    label = pem_label(data)
    if label:
        return f"the PEM file holds {label} blocks, not X509 CRL"
    if _is_text(data[:512]):
        shown = data[:40].decode("ascii", "replace").strip().encode("unicode_escape").decode()
        return f"not a CRL: the file is text starting {shown!r}"
    return ("not a CRL: the content is neither PEM, DER, ZIP nor gzip (first bytes "
            f"{data[:8].hex(' ')})")


def _is_text(sample: bytes) -> bool:
    return all(32 <= byte < 127 or byte in b"\t\r\n" for byte in sample)


# ---------------------------------------------------------------- bounded expansion


class _Budget:
    """What one archive may expand to: ``max_total_bytes`` in all, at most ``max_ratio``
    times the archive's size, and for each member (or gzip stream) at most ``max_ratio``
    times the compressed bytes consumed so far. Small inputs get a little slack."""

    def __init__(self, limits: DecodeLimits, archive_size: int):
        self.limits = limits
        self.allowed = min(limits.max_total_bytes, limits.max_ratio * archive_size + _SLACK)
        self.used = 0

    def take(self, chunk: int, member_out: int, member_in: int, what: str) -> None:
        self.used += chunk
        if self.used > self.limits.max_total_bytes:
            raise CrlFormatError(f"{what} expands beyond {self.limits.max_total_bytes:,} bytes "
                                 "(a decompression bomb?); refused")
        if self.used > self.allowed or member_out > self.limits.max_ratio * member_in + _SLACK:
            raise CrlFormatError(f"{what} expands more than {self.limits.max_ratio} times its "
                                 "compressed size (a decompression bomb?); refused")


# ---------------------------------------------------------------- gzip, tar.gz


def _from_gzip(data: bytes, limits: DecodeLimits, notes: list[str]) -> list[DecodedCrl]:
    """One gzip file: a single CRL (PEM or DER) or a tar of CRLs (POSIX ustar magic)."""
    plain = _gunzip(data, _Budget(limits, len(data)))
    if plain[257:262] == b"ustar":
        return _from_tar(plain, limits, notes)
    return _plain(plain, "gzip", limits)


def _gunzip(data: bytes, budget: _Budget) -> bytes:
    """Stream-decompress in bounded chunks, checking the budget after each one.
    Concatenated gzip members (RFC 1952 2.2) are read as one stream, as gunzip does."""
    view = memoryview(data)
    chunks: list[bytes] = []
    produced = position = 0
    while position < len(data):
        if data[position:position + 2] != _GZIP_MAGIC:
            if not data[position:].strip(b"\x00"):
                break  # zero padding after the last member, which gzip(1) accepts
            raise CrlFormatError(f"{len(data) - position:,} bytes of trailing garbage after "
                                 "the gzip stream")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        tail = b""
        try:
            while not inflater.eof:
                if not tail and position < len(data):
                    tail = view[position:position + _CHUNK_IN]
                    position += len(tail)
                chunk = inflater.decompress(tail, _CHUNK_OUT)
                tail = inflater.unconsumed_tail
                if not (chunk or tail or inflater.eof) and position >= len(data):
                    raise CrlFormatError("truncated gzip file: the compressed stream ends "
                                         "early (an interrupted download?)")
                produced += len(chunk)
                budget.take(len(chunk), produced, position - len(tail), "the gzip file")
                chunks.append(chunk)
        except zlib.error as exc:
            raise CrlFormatError(f"damaged gzip file: {exc}") from None
        position -= len(inflater.unused_data)
    return b"".join(chunks)


def _from_tar(plain: bytes, limits: DecodeLimits, notes: list[str]) -> list[DecodedCrl]:
    """Regular files of a tar are read from memory; links, devices and the like are noted."""
    crls: list[DecodedCrl] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
            for number, member in enumerate(tar, 1):
                if number > limits.max_members:
                    raise CrlFormatError(f"the tar archive has more than "
                                         f"{limits.max_members:,} members")
                where = f"tar member {number} ({_shown(member.name)})"
                if not member.isreg() or member.issparse():
                    notes.append(f"{where}: skipped, not a regular file")
                    continue
                content = tar.extractfile(member).read()
                crls.extend(_member(content, where, limits, notes))
                _check_count(crls, limits, "tar.gz archive")
    except (tarfile.TarError, EOFError, ValueError, OSError) as exc:
        raise CrlFormatError(f"damaged tar archive inside the gzip file: {_why(exc)}") from None
    if not crls:
        raise CrlFormatError("the tar.gz archive holds no CRL" + _listed(notes))
    return crls


# ---------------------------------------------------------------- zip


def _from_zip(data: bytes, limits: DecodeLimits, notes: list[str]) -> list[DecodedCrl]:
    # zipfile builds one object per central-directory entry before we see any; each entry
    # starts with this signature, so counting it bounds them cheaply (APPNOTE 4.3.12).
    if data.count(_ZIP_CENTRAL_ENTRY) > limits.max_members:
        raise CrlFormatError(f"the zip archive has more than {limits.max_members:,} members")
    budget = _Budget(limits, len(data))
    crls: list[DecodedCrl] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for number, info in enumerate(archive.infolist(), 1):
                where = f"zip member {number} ({_shown(info.filename)})"
                skipped = _zip_skip_reason(info)
                if skipped:
                    notes.append(f"{where}: skipped, {skipped}")
                    continue
                content = _read_member(archive, info, min(info.compress_size, len(data)),
                                       budget, where)
                crls.extend(_member(content, where, limits, notes))
                _check_count(crls, limits, "zip archive")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError,
            ValueError, OSError, struct.error) as exc:
        raise CrlFormatError(f"damaged zip archive: {_why(exc)}") from None
    if not crls:
        raise CrlFormatError("the zip archive holds no CRL" + _listed(notes))
    return crls


def _zip_skip_reason(info: zipfile.ZipInfo) -> str | None:
    if info.is_dir():
        return "a directory"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.compress_type not in _ZIP_METHODS:
        # bzip2 and LZMA inflate without an output bound in zipfile; CRL zips use deflate.
        return f"compression method {info.compress_type} is not supported"
    return None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, compressed: int,
                 budget: _Budget, where: str) -> bytes:
    """Read through ZipFile.open in chunks, counting: the declared size is not trusted."""
    chunks = []
    produced = 0
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK_OUT):
            produced += len(chunk)
            budget.take(len(chunk), produced, compressed, where)
            chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- archive members


def _member(content: bytes, where: str, limits: DecodeLimits,
            notes: list[str]) -> list[DecodedCrl]:
    """CRLs in one archive member. Anything else is noted and skipped (a README, the CA
    certificate, a nested archive); a member that is a damaged CRL is an error."""
    if content[:4] in _ZIP_MAGIC or content[:2] == _GZIP_MAGIC:
        notes.append(f"{where}: skipped, a nested archive (not supported)")
        return []
    if PEM_BEGIN not in content and (content[:1] != b"\x30" or _is_text(content[:512])):
        notes.append(f"{where}: skipped, {_what_else(content)}")
        return []
    try:
        return _plain(content, where, limits)
    except _NotACrl:
        notes.append(f"{where}: skipped, an X.509 certificate, not a CRL")
        return []


def _check_count(crls: list[DecodedCrl], limits: DecodeLimits, what: str) -> None:
    """Members times PEM blocks each could be millions of CRL objects: cap the total."""
    if len(crls) > limits.max_members:
        raise CrlFormatError(f"the {what} holds more than {limits.max_members:,} CRLs")


def _why(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the data ends early"
    return str(exc) or type(exc).__name__


def _shown(name: str) -> str:
    """A member name safe to print: no control characters, at most 80 characters."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)
    return clean if len(clean) <= 80 else clean[:77] + "..."


def _listed(notes: list[str]) -> str:
    if not notes:
        return ""
    more = f" (and {len(notes) - 3} more)" if len(notes) > 3 else ""
    return ": " + "; ".join(notes[:3]) + more
