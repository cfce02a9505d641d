"""DER lengths and PEM blocks, read by hand in this one place.

The library parses certificates and CRLs; what it does not offer is done here: telling a
DER file from text by its declared length, taking the signed bytes of a CRL or the
certificate out of OpenSSL's TRUSTED CERTIFICATE as received (no re-encoding), and
splitting PEM text into blocks, so that a CRL file, a trust bundle and ``pkiq x509`` agree
on what a block is and refuse a damaged one with the same sentence.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Collection, Iterator
from typing import NamedTuple

from .errors import BadInput

MAX_LENGTH_OCTETS = 4  # a length of up to 4 GiB: more than anything pkiq reads
MAX_PEM_BLOCKS = 10_000
MAX_PEM_BYTES = 512 * 2**20
_BEGIN = b"-----BEGIN "
_DASHES = b"-----"
_MAX_LABEL = 80
_WHITESPACE = b" \t\r\n\v\f"
_STEP = 1 << 20  # base64 text decoded per step of a large block


class EncodingError(BadInput):
    """DER or PEM that cannot be read; the message names where."""


class TooManyPemBlocks(EncodingError):
    def __init__(self, limit: int):
        super().__init__(f"more than {limit:,} PEM blocks")
        self.limit = limit


# ---------------------------------------------------------------- DER


def der_length(data, at: int = 0) -> tuple[int, int]:
    """(where the content starts, its length) of the DER element at ``at``: a one-byte tag
    and a definite length, short or long form (X.690 8.1.2-8.1.3; DER has no indefinite
    length). The content itself is not looked at, nor whether it is all there."""
    if len(data) < at + 2:
        raise EncodingError(f"DER element at byte {at}: truncated before its length")
    if data[at] & 0x1F == 0x1F:
        raise EncodingError(f"DER element at byte {at}: a multi-byte tag")
    first = data[at + 1]
    if first < 0x80:
        return at + 2, first
    size = first & 0x7F
    if size == 0:
        raise EncodingError(f"DER element at byte {at}: indefinite length (BER, not DER)")
    if size > MAX_LENGTH_OCTETS:
        raise EncodingError(f"DER element at byte {at}: a length of {size} octets")
    if len(data) < at + 2 + size:
        raise EncodingError(f"DER element at byte {at}: truncated in its length")
    return at + 2 + size, int.from_bytes(data[at + 2:at + 2 + size], "big")


def der_size(data, at: int = 0) -> int:
    """How many bytes the element at ``at`` declares, header included."""
    start, length = der_length(data, at)
    return start - at + length


def der_element(data, at: int = 0) -> memoryview:
    """The whole element at ``at`` (tag, length, content) without copying; EncodingError if
    ``data`` ends before it does."""
    size = der_size(data, at)
    if at + size > len(data):
        raise EncodingError(f"DER element at byte {at} declares {size:,} bytes but only "
                            f"{len(data) - at:,} are present")
    return memoryview(data)[at:at + size]


# ---------------------------------------------------------------- PEM


class PemBlock(NamedTuple):
    label: str  # "X509 CRL", "CERTIFICATE", ...
    der: bytes


def pem_label(data: bytes, at: int = 0) -> str | None:
    """The label of the first BEGIN line at or after ``at``, or None."""
    found = _next_begin(data, at)
    return found[0].decode("ascii", "replace") if found else None


def pem_blocks(data: bytes, labels: Collection[str] | None = None, *,
               max_blocks: int = MAX_PEM_BLOCKS, max_bytes: int = MAX_PEM_BYTES
               ) -> Iterator[PemBlock]:
    """Each PEM block of ``data`` in order (RFC 7468), as (label, DER). Text around the
    blocks is ignored (RFC 7468 5.2), and so are blocks whose label is not in ``labels``;
    header lines (RFC 1421 ``Name: value``) are skipped. Blocks are decoded as they are
    reached, so a caller handling each in turn meets the first problem first.

    Raises EncodingError naming the block ("PEM block #2: ..."; blocks numbered among those
    asked for) when its END line is missing or its base64 is not valid (strict: only the
    base64 alphabet, line breaks and final padding), TooManyPemBlocks past ``max_blocks``,
    and EncodingError for input over ``max_bytes``."""
    if len(data) > max_bytes:
        raise EncodingError(f"{len(data):,} bytes of PEM: more than the limit of "
                            f"{max_bytes:,}")
    wanted = None if labels is None else {label.encode("ascii") for label in labels}
    number = 0
    found = _next_begin(data, 0)
    while found is not None:
        label, body = found
        if wanted is not None and label not in wanted:
            found = _next_begin(data, body)
            continue
        number += 1
        if number > max_blocks:
            raise TooManyPemBlocks(max_blocks)
        end_line = b"-----END " + label + _DASHES
        end = data.find(end_line, body)
        if end == -1 or data.find(_BEGIN, body, end) != -1:
            raise EncodingError(f"PEM block #{number}: no '{end_line.decode('ascii')}' line "
                                "(a truncated or badly joined file?)")
        yield PemBlock(label.decode("ascii"), _base64(data, body, end, number))
        found = _next_begin(data, end + len(end_line))


def _next_begin(data: bytes, at: int) -> tuple[bytes, int] | None:
    """(label, where the block's text starts) of the next ``-----BEGIN label-----``."""
    start = data.find(_BEGIN, at)
    while start != -1:
        label_start = start + len(_BEGIN)
        label_end = data.find(_DASHES, label_start, label_start + _MAX_LABEL + len(_DASHES))
        label = data[label_start:label_end] if label_end != -1 else b""
        if label_end != -1 and label.isascii() and b"\n" not in label:
            return label, label_end + len(_DASHES)
        start = data.find(_BEGIN, label_start)
    return None


def _base64(data: bytes, body: int, end: int, number: int) -> bytes:
    try:
        if end - body > _STEP and data.find(b":", body, end) == -1:
            return _base64_in_steps(data, body, end)
        text = data[body:end]
        if b":" in text:  # RFC 1421 headers (Proc-Type: ...), not base64
            text = b"\n".join(line for line in text.splitlines() if b":" not in line)
        return binascii.a2b_base64(text.translate(None, _WHITESPACE), strict_mode=True)
    except binascii.Error as exc:
        raise EncodingError(f"PEM block #{number}: not valid base64: {exc}") from None


def _base64_in_steps(data, body: int, end: int) -> bytes:
    """A large block (a CRL of millions of entries) decoded a window at a time into one
    buffer, so neither its text nor a white-space-free copy of it is ever held whole; works
    on ``bytes`` and on ``ca.spool.FileView`` alike. Strict as the one-step decode: padding
    anywhere but at the very end is refused."""
    out = io.BytesIO()
    carry = b""
    for start in range(body, end, _STEP):
        last = start + _STEP >= end
        piece = carry + data[start:min(start + _STEP, end)].translate(None, _WHITESPACE)
        cut = len(piece) if last else len(piece) - len(piece) % 4
        if not last and b"=" in piece[:cut]:
            raise binascii.Error("Excess data after padding")
        out.write(binascii.a2b_base64(piece[:cut], strict_mode=True))
        carry = piece[cut:]
    return out.getvalue()
