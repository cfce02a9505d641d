"""Decoding fetched or uploaded CRL files by their content: PEM, DER, ZIP, gzip, tar.gz.

Distribution points serve whatever their operators chose, under any name and Content-Type,
so the format is read from the bytes. The input is bytes or a file (a download spooled to
disk): archives are read from it as streams, PEM text is searched in windows, and only a
CRL's own DER is ever held whole (the library parses bytes). Member names are shown
(sanitised, shortened), never used as paths. Every decompression is counted on the bytes it
actually produces against the compressed bytes it actually consumed, never against sizes an
archive declares, and what it produces goes to a ``ca.spool.Spool`` (memory while the shared
budget allows, then a temporary file), so a bomb is refused after a few megabytes and a big
archive never needs its inflated size in memory.

Messages quote nothing of the content beyond a short hex prefix, and the library's parser
errors are said in words. Signatures and dates are checked elsewhere (``ca.crl_install``).
"""

from __future__ import annotations

import io
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from cryptography import x509

from .encoding import EncodingError, TooManyPemBlocks, der_size, pem_blocks, pem_label
from .errors import BadInput
from .spool import DEFAULT_BUDGET, FileView, MemoryBudget, Spool

PEM_LABEL = "X509 CRL"
PEM_BEGIN = b"-----BEGIN X509 CRL-----"
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_LOCAL_ENTRY = b"PK\x03\x04"
_ZIP_CENTRAL_ENTRY = b"PK\x01\x02"
_CHUNK_IN = 256 * 1024
_CHUNK_OUT = 1024 * 1024
# Small inputs may expand by more than the ratio (headers, a tiny PEM): allow this much extra.
_SLACK = 1024 * 1024
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_HEX_SHOWN = 8  # bytes of content a message may show, as hex

View = bytes | FileView  # what the parsers read: the bytes, or a file searched in windows


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
    # After decompression, all members together: as much as a plain download may be
    # (the refresh passes its per-download cap), so an archive cannot smuggle in more.
    max_total_bytes: int = 64 * 2**20
    max_ratio: int = 200  # produced / consumed, checked as each layer expands
    max_members: int = 10_000  # zip or tar members, or PEM blocks
    memory_bytes: int = DEFAULT_BUDGET  # inflated bytes kept in memory; beyond, a temp file


def decode_crls(data: bytes | BinaryIO, limits: DecodeLimits = DecodeLimits(), *,
                budget: MemoryBudget | None = None) -> tuple[list[DecodedCrl], list[str]]:
    """Every CRL in ``data`` (bytes, or a seekable file such as a spooled download) and
    notes on what was skipped (non-CRL zip members, ...). ``budget``: the memory shared with
    the caller's other spools (by default one of ``limits.memory_bytes`` for this call).

    Raises CrlFormatError, with one sentence a PKI engineer can act on, when the file holds
    no CRL at all, is damaged, or exceeds ``limits``."""
    notes: list[str] = []
    view = _view(data)
    budget = budget or MemoryBudget(limits.memory_bytes)
    head = view[:4]
    if head in _ZIP_MAGIC:
        crls = _from_zip(data, view, limits, budget, notes)
    elif head[:2] == _GZIP_MAGIC:
        crls = _from_gzip(view, limits, budget, notes)
    else:
        crls = _plain(view, "", limits)
    return crls, notes


def _view(data: bytes | BinaryIO) -> View:
    return data if isinstance(data, bytes) else FileView(data)


def _whole(view: View) -> bytes:
    """The content as one bytes object: the same object for bytes, one read for a file."""
    return view if isinstance(view, bytes) else view[0:len(view)]


# ---------------------------------------------------------------- plain: PEM or DER


def _plain(view: View, container: str, limits: DecodeLimits) -> list[DecodedCrl]:
    """A PEM or DER file, on its own (``container`` "") or inside an archive member."""
    head = view[:512]
    if _declared(head) == len(view) or (head[:1] == b"\x30" and PEM_BEGIN not in view
                                        and not _is_text(head)):
        return [_load_der(_whole(view), container or "der", _prefix(container))]
    if PEM_BEGIN in view:
        return _pem_blocks(view, container, limits)
    raise CrlFormatError(_prefix(container) + _what_else(view))


def _prefix(container: str) -> str:
    return f"{container}: " if container else ""


def _declared(data: bytes) -> int | None:
    """The size a leading SEQUENCE declares, header included, or None when there is none
    (``data`` needs only the first few bytes)."""
    if data[:1] != b"\x30":
        return None
    try:
        return der_size(data)
    except EncodingError:
        return None


def _load_der(der: bytes, source: str, where: str) -> DecodedCrl:
    """``where`` prefixes error messages ("zip member 2 (a.crl): ", "" for a plain file)."""
    declared = _declared(der[:16])
    if declared is not None and declared > len(der):
        raise CrlFormatError(f"{where}truncated DER CRL: the outer SEQUENCE declares "
                             f"{declared:,} bytes but only {len(der):,} are present")
    if declared is not None and declared < len(der):
        raise CrlFormatError(f"{where}DER CRL followed by {len(der) - declared:,} bytes "
                             "of trailing data (two files joined, or a damaged download?)")
    try:
        return DecodedCrl(x509.load_der_x509_crl(der), der, source)
    except x509.InvalidVersion as exc:
        raise CrlFormatError(f"{where}unsupported CRL version: {exc.parsed_version} is not a "
                             "valid CRL version (only v1 and v2 exist)") from None
    except ValueError as exc:
        problem = parser_problem(exc)
    if _is_certificate(der):
        raise _NotACrl(f"{where}this is an X.509 certificate, not a CRL")
    raise CrlFormatError(f"{where}truncated or malformed DER CRL: {problem}")


# The library's ASN.1 parser says what went wrong as a Rust debug dump ("ParseError { kind:
# ShortData { needed: 5 } }, location: [...]"); an operator gets it in words.
_PARSE_KINDS = {
    "ShortData": "the data ends early", "ExtraData": "extra data after a field",
    "UnexpectedTag": "a field of the wrong type", "InvalidValue": "a field with an invalid value",
    "InvalidLength": "a field with an invalid length", "InvalidTag": "an invalid field tag",
    "IntegerOverflow": "a number too large", "InvalidSetOrdering": "a set out of DER order",
    "EncodedDefault": "a default value encoded (not DER)", "OidTooLong": "an OID too long",
    "UnknownDefinedBy": "an unknown algorithm or extension parameter",
}
_PARSE_PLACES = {
    "user_certificate": "a revoked serial number", "revocation_date": "a revocation date",
    "raw_crl_entry_extensions": "the extensions of a revoked entry",
    "revoked_certificates": "the list of revoked certificates",
    "raw_crl_extensions": "the CRL extensions", "crl_extensions": "the CRL extensions",
    "this_update": "thisUpdate", "next_update": "nextUpdate", "issuer": "the issuer name",
    "signature": "the signature algorithm", "version": "the version",
    "tbs_cert_list": "the signed part of the CRL",
    "signature_algorithm": "the signature algorithm", "signature_value": "the signature",
}


def parser_problem(exc: BaseException) -> str:
    """The library's parse error in words: what and, when it says so, where."""
    text = str(exc)
    kind = re.search(r"kind: (\w+)", text)
    what = _PARSE_KINDS.get(kind[1], "the ASN.1 structure cannot be read") if kind else \
        "the ASN.1 structure cannot be read"
    places = re.findall(r"::(\w+)", text)
    where = next((_PARSE_PLACES[p] for p in places if p in _PARSE_PLACES), None)
    return f"{what} in {where}" if where else what


def _is_certificate(der: bytes) -> bool:
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return True


def _pem_blocks(view: View, container: str, limits: DecodeLimits) -> list[DecodedCrl]:
    """Every ``X509 CRL`` block; text between and around blocks is ignored (RFC 7468 5)."""
    crls: list[DecodedCrl] = []
    prefix = _prefix(container)
    try:
        for number, block in enumerate(pem_blocks(view, [PEM_LABEL],
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


def _what_else(view: View) -> str:
    """Name what the bytes are instead of a CRL, as precisely as cheaply possible, quoting
    nothing of them but a few bytes in hex (whatever answered may be an internal page)."""
    if not len(view):
        return "the file is empty"
    if _blank(view, 0, None):
        return "the file holds only whitespace"
    head = view[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")) or (
            head.startswith(b"<") and (b"<html" in head or b"<body" in head)):
        return "the file is HTML, not a CRL (an error page served with status 200?)"
    if head.startswith(b"<?xml"):
        return "the file is XML, not a CRL"
    if head.startswith((b"{", b"[")):
        return "the file looks like JSON, not a CRL"
    label = pem_label(view)
    if label:
        return f"the PEM file holds {_label_shown(label)} blocks, not X509 CRL"
    first = view[:_HEX_SHOWN].hex(" ")
    if _is_text(view[:512]):
        return f"not a CRL: the file is text (first bytes {first})"
    return f"not a CRL: the content is neither PEM, DER, ZIP nor gzip (first bytes {first})"


def _label_shown(label: str) -> str:
    """A PEM label as RFC 7468 spells them (CERTIFICATE, PRIVATE KEY, ...), else "other"."""
    return label if re.fullmatch(r"[A-Z0-9][A-Z0-9 ]{0,39}", label) else "other"


def _blank(view: View, start: int, chars: bytes | None) -> bool:
    """Whether ``view[start:]`` holds only ``chars`` (white space if None), read in windows."""
    step = FileView.WINDOW
    return all(not view[at:at + step].strip(chars) for at in range(start, len(view), step))


def _is_text(sample: bytes) -> bool:
    return all(32 <= byte < 127 or byte in b"\t\r\n" for byte in sample)


# ---------------------------------------------------------------- bounded expansion


class _Inflation:
    """What one archive may expand to: ``max_total_bytes`` in all, at most ``max_ratio``
    times the archive's size, and for each member (or gzip stream) at most ``max_ratio``
    times the compressed bytes it has consumed so far. Small inputs get a little slack."""

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


def _from_gzip(view: View, limits: DecodeLimits, budget: MemoryBudget,
               notes: list[str]) -> list[DecodedCrl]:
    """One gzip file: a single CRL (PEM or DER) or a tar of CRLs (POSIX ustar magic)."""
    with Spool(budget) as plain:
        _gunzip(view, _Inflation(limits, len(view)), plain)
        source = plain.source()
        inner = _view(source)
        if inner[257:262] == b"ustar":
            return _from_tar(source, limits, notes)
        return _plain(inner, "gzip", limits)


def _gunzip(view: View, inflation: _Inflation, sink: Spool) -> None:
    """Stream-decompress in bounded chunks into ``sink``, checking after each one.
    Concatenated gzip members (RFC 1952 2.2) are read as one stream, as gunzip does."""
    produced = position = 0
    size = len(view)
    while position < size:
        if view[position:position + 2] != _GZIP_MAGIC:
            if _blank(view, position, b"\x00"):
                break  # zero padding after the last member, which gzip(1) accepts
            raise CrlFormatError(f"{size - position:,} bytes of trailing garbage after "
                                 "the gzip stream")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        tail = b""
        try:
            while not inflater.eof:
                if not tail and position < size:
                    tail = view[position:position + _CHUNK_IN]
                    position += len(tail)
                chunk = inflater.decompress(tail, _CHUNK_OUT)
                tail = inflater.unconsumed_tail
                if not (chunk or tail or inflater.eof) and position >= size:
                    raise CrlFormatError("truncated gzip file: the compressed stream ends "
                                         "early (an interrupted download?)")
                produced += len(chunk)
                inflation.take(len(chunk), produced, position - len(tail), "the gzip file")
                sink.write(chunk)
        except zlib.error as exc:
            raise CrlFormatError(f"damaged gzip file: {exc}") from None
        position -= len(inflater.unused_data)


def _from_tar(source: bytes | BinaryIO, limits: DecodeLimits,
              notes: list[str]) -> list[DecodedCrl]:
    """Regular files of a tar are read one at a time; links, devices and the like are
    noted. Their total is bounded already: the tar is what the gzip inflated to."""
    crls: list[DecodedCrl] = []
    fileobj = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
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


def _from_zip(data: bytes | BinaryIO, view: View, limits: DecodeLimits, budget: MemoryBudget,
              notes: list[str]) -> list[DecodedCrl]:
    # zipfile builds one object per central-directory entry before we see any; each entry
    # starts with this signature, so counting it bounds them cheaply (APPNOTE 4.3.12).
    if view.count(_ZIP_CENTRAL_ENTRY) > limits.max_members:
        raise CrlFormatError(f"the zip archive has more than {limits.max_members:,} members")
    inflation = _Inflation(limits, len(view))
    crls: list[DecodedCrl] = []
    fileobj = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with zipfile.ZipFile(fileobj) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError,
            ValueError, OSError, struct.error) as exc:
        raise CrlFormatError(f"damaged zip archive: {_why(exc)}") from None
    for number, info in enumerate(infos, 1):
        where = f"zip member {number} ({_shown(info.filename)})"
        skipped = _zip_skip_reason(info)
        if skipped:
            notes.append(f"{where}: skipped, {skipped}")
            continue
        with Spool(budget) as content:
            _inflate_member(view, info, inflation, content, where)
            crls.extend(_member(content.source(), where, limits, notes))
        _check_count(crls, limits, "zip archive")
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


def _inflate_member(view: View, info: zipfile.ZipInfo, inflation: _Inflation, sink: Spool,
                    where: str) -> None:
    """One member's data, found through its local header (APPNOTE 4.3.7) and inflated here
    in bounded steps: the ratio is counted on the compressed bytes actually consumed (a
    member declaring a large compressed size gains nothing), output stops one byte past the
    declared size, and the CRC-32 is checked, as zipfile would."""
    start, end = _member_data(view, info, where)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) \
        if info.compress_type == zipfile.ZIP_DEFLATED else None
    position, produced, crc, tail = start, 0, 0, b""
    try:
        while True:
            if not tail:
                if position >= end:
                    break
                tail = view[position:min(position + _CHUNK_IN, end)]
                position += len(tail)
            room = min(_CHUNK_OUT, info.file_size - produced + 1)  # >= 1: 0 means no limit
            if inflater is None:
                chunk, tail = tail[:room], tail[room:]
            else:
                chunk = inflater.decompress(tail, room)
                tail = inflater.unconsumed_tail
            produced += len(chunk)
            inflation.take(len(chunk), produced, position - start - len(tail), where)
            if produced > info.file_size:
                raise CrlFormatError(f"damaged zip archive: {where} inflates to more than "
                                     f"its declared {info.file_size:,} bytes")
            crc = zlib.crc32(chunk, crc)
            sink.write(chunk)
            if inflater is not None and inflater.eof:
                break
    except zlib.error as exc:
        raise CrlFormatError(f"damaged zip archive: {where}: {exc}") from None
    if (inflater is not None and not inflater.eof) or produced != info.file_size:
        raise CrlFormatError(f"damaged zip archive: {where} ends early (an interrupted "
                             "download?)")
    if crc != info.CRC:
        raise CrlFormatError(f"damaged zip archive: Bad CRC-32 for {where}")


def _member_data(view: View, info: zipfile.ZipInfo, where: str) -> tuple[int, int]:
    """(start, end) of a member's compressed bytes, within the file whatever it declares."""
    header = view[info.header_offset:info.header_offset + 30]
    if len(header) < 30 or header[:4] != _ZIP_LOCAL_ENTRY:
        raise CrlFormatError(f"damaged zip archive: {where} has no local file header")
    name_size, extra_size = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_size + extra_size
    return start, max(start, min(start + info.compress_size, len(view)))


# ---------------------------------------------------------------- archive members


def _member(content: bytes | BinaryIO, where: str, limits: DecodeLimits,
            notes: list[str]) -> list[DecodedCrl]:
    """CRLs in one archive member. Anything else is noted and skipped (a README, the CA
    certificate, a nested archive); a member that is a damaged CRL is an error."""
    view = _view(content)
    head = view[:512]
    if head[:4] in _ZIP_MAGIC or head[:2] == _GZIP_MAGIC:
        notes.append(f"{where}: skipped, a nested archive (not supported)")
        return []
    if PEM_BEGIN not in view and (head[:1] != b"\x30" or _is_text(head)):
        notes.append(f"{where}: skipped, {_what_else(view)}")
        return []
    try:
        return _plain(view, where, limits)
    except _NotACrl:
        notes.append(f"{where}: skipped, an X.509 certificate, not a CRL")
        return []


def _check_count(crls: list[DecodedCrl], limits: DecodeLimits, what: str) -> None:
    """Members times PEM blocks each could be millions of CRL objects: cap the total."""
    if len(crls) > limits.max_members:
        raise CrlFormatError(f"the {what} holds more than {limits.max_members:,} CRLs")


def _why(exc: BaseException) -> str:
    """A library's complaint about an archive, without anything it quotes from it (member
    names in quotes), short."""
    if isinstance(exc, EOFError):
        return "the data ends early"
    if isinstance(exc, struct.error):
        return "a header is cut short"
    text = (str(exc) or type(exc).__name__).split("'", 1)[0].split('"', 1)[0]
    text = text.strip(" :,(") or type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _shown(name: str) -> str:
    """A member name safe to print: no control characters, at most 40 characters."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)
    return clean if len(clean) <= 40 else clean[:37] + "..."


def _listed(notes: list[str]) -> str:
    if not notes:
        return ""
    more = f" (and {len(notes) - 3} more)" if len(notes) > 3 else ""
    return ": " + "; ".join(notes[:3]) + more
