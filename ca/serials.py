"""Serial numbers as OpenSSL spells them and as RFC 5280 bounds them."""

from __future__ import annotations

import os
from collections.abc import Callable

from .errors import BadInput

Random = Callable[[int], bytes]
MAX_SERIAL_BITS = 159  # RFC 5280 4.1.2.2: at most 20 octets, and positive


def serial_hex(serial: int) -> str:
    """OpenSSL's spelling: upper-case hex, whole octets (``0A``, ``10``, ``01F4``)."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def parse_serial(text: str) -> int:
    """A serial as users paste it: hex (OpenSSL's form), with or without ``0x`` or colons."""
    cleaned = text.strip().replace(":", "").lower().removeprefix("0x")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise BadInput(f"{text!r} is not a hexadecimal serial number") from None
    check_serial(value)
    return value


def check_serial(value: int) -> None:
    if not 0 < value < (1 << MAX_SERIAL_BITS):
        raise BadInput(f"serial {value:X} is out of range: serial numbers are positive and at "
                       "most 20 octets (RFC 5280 4.1.2.2)")


def random_serial(rng: Random = os.urandom) -> int:
    """126 random bits with the top bit set: fixed length, positive, within RFC 5280's 20
    octets, and well over the CA/Browser Forum's 64 bits of CSPRNG output."""
    return (int.from_bytes(rng(16), "big") >> 1) | (1 << 126)
