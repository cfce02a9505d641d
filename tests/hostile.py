"""Answers a hostile distribution point gives, made quickly and shared by
tests/test_crl_hostile_fetch.py and bench/bench_crl.py: decompression bombs built by hand
(no gigabytes are compressed to make them), endless bodies, and junk near the size cap."""

from __future__ import annotations

import base64
import gzip
import os
import struct
import tarfile
import zlib

from .httpd import LocalServer, Reply

MiB = 2**20
TWO_MIB_OF_BOMB = 2048  # MiB of zeros in about 2 MiB of deflate


def deflate_of_zeros(mebibytes: int) -> bytes:
    """Raw deflate of ``mebibytes`` MiB of zeros, made in a blink: one compressed MiB,
    byte-aligned by a full flush, repeated, then an empty final block."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = deflate.compress(bytes(MiB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    return one * mebibytes + b"\x03\x00"


def zip_of(members: list[tuple[str, bytes, int]], *, declared: int | None = None) -> bytes:
    """A zip built by hand: (name, deflated data, inflated size) per member; ``declared``:
    the compressed size each member claims, if not its own."""
    out, central = b"", b""
    for name, data, size in members:
        offset, raw = len(out), name.encode()
        claimed = len(data) if declared is None else declared
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, claimed,
                           size, len(raw), 0) + raw + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0,
                               0, claimed, size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    return out + central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members),
                                       len(members), len(central), len(out), 0)


def gzip_of_zeros(mebibytes: int) -> bytes:
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflate_of_zeros(mebibytes)
            + struct.pack("<II", 0, 0))


def tar_gz_of_zeros(mebibytes: int) -> bytes:
    header = tarfile.TarInfo("zeros.crl")
    header.size = mebibytes * MiB
    head = header.tobuf(format=tarfile.USTAR_FORMAT)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + start + deflate_of_zeros(mebibytes)
            + struct.pack("<II", 0, 0))


def endless_points(server: LocalServer, count: int) -> list[str]:
    """``count`` points that send random bytes (chunked, 256 MiB each: more than any cap)
    until the client hangs up."""
    junk = os.urandom(256 * 1024)
    for n in range(count):
        server.route(f"/endless/{n}", Reply(body=junk, repeat=1024))
    return [server.url(f"/endless/{n}") for n in range(count)]


def big_junk(server: LocalServer) -> dict[str, str]:
    """Near the 64 MiB cap: a DER SEQUENCE of random bytes, a PEM block of them, and that
    PEM gzipped: each must be read whole (DER) or decoded (PEM) before the parser says no."""
    size = 60 * MiB
    der = b"\x30\x84" + struct.pack(">I", size - 6) + os.urandom(size - 6)
    text = base64.encodebytes(os.urandom(44 * MiB))
    pem = b"-----BEGIN X509 CRL-----\n" + text + b"-----END X509 CRL-----\n"
    bodies = {"/junk.der": der, "/junk.pem": pem, "/junk.pem.gz": gzip.compress(pem, 1),
              "/bomb.zip": zip_of([("bomb.crl", deflate_of_zeros(TWO_MIB_OF_BOMB),
                                    TWO_MIB_OF_BOMB * MiB)]),
              "/bomb.gz": gzip_of_zeros(TWO_MIB_OF_BOMB)}
    for path, body in bodies.items():
        server.route(path, Reply(body=body))
    return {path: server.url(path) for path in bodies}


def serve() -> int:
    """``python -m tests.hostile``: the points above on 127.0.0.1 until SIGTERM, their URLs
    printed as one JSON line (bench/bench_crl.py's hostile run)."""
    import json
    import signal
    import threading

    with LocalServer() as server:
        urls = {"endless": endless_points(server, 16), "others": big_junk(server)}
        print(json.dumps(urls), flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
