"""CRL bundles for Expressway's automatic CRL updates: one file holding every CRL a node
needs, fetched from an HTTP(S) URL. The guide ("Automatic CRL updates") accepts PEM or DER
CRL files and ZIP or GZIP archives of them.

Bundles are byte-for-byte deterministic: members in a fixed order under fixed names, one
fixed time (the newest CRL's thisUpdate, so the time still means something), no owner
names, no gzip file name, fixed compression levels. An unchanged set of CRLs therefore
gives an identical file, and the web app's ETag (a hash of the bytes) stays the same, so a
node polling for updates downloads nothing new.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import tarfile
import zipfile
from collections.abc import Sequence

from cryptography import x509

from .crl_order import crl_pem, ordered_crls
from .errors import BadInput
from .name_hash import subject_hash

BUNDLE_TYPES = {"zip": "application/zip", "tgz": "application/gzip",
                "pem": "application/x-pem-file"}
BUNDLE_SUFFIXES = {"zip": ".zip", "tgz": ".tar.gz", "pem": ".pem"}
_ZIP_EPOCH = dt.datetime(1980, 1, 1, tzinfo=dt.UTC)  # the earliest time a ZIP can hold
_MEMBER_MODE = 0o644
# zlib level 6 (its default), not 9: CRLs are mostly random serial numbers, and level 9 took
# four times as long for 0.1% smaller bundles (bench/bench_stores.py: 1.01 s against 0.26 s
# per store holding a 100,000-entry CRL). Fixed, since the bundle's bytes make its ETag.
LEVEL = 6


def crl_bundle(crls: Sequence[bytes], kind: str) -> bytes:
    """``crls`` (DER, validated by the caller; repeats dropped) as one ``kind`` bundle:
    ``zip`` or ``tgz`` with one DER file per CRL, or ``pem`` (the CRLs' PEM blocks one after
    another). An empty set gives a valid empty archive (or an empty PEM file)."""
    if kind not in BUNDLE_TYPES:
        raise BadInput(f"unknown CRL bundle type {kind!r}; choose one of "
                       f"{', '.join(BUNDLE_TYPES)}")
    ordered = ordered_crls(crls)
    if kind == "pem":
        return b"".join(crl_pem(der) for der, _crl in ordered)
    members = _members(ordered)
    moment = _bundle_time(crl for _der, crl in ordered)
    return _zip(members, moment) if kind == "zip" else _tgz(members, moment)


def _members(ordered: Sequence[tuple[bytes, x509.CertificateRevocationList]]
             ) -> list[tuple[str, bytes]]:
    """``NN-<issuer hash>.crl``: the position makes names unique and sort as the CRLs do;
    the hash tells a reader which CA's CRL it is, as in a ``-CApath`` folder."""
    width = max(2, len(str(len(ordered) - 1)))
    return [(f"{index:0{width}d}-{subject_hash(crl.issuer)}.crl", der)
            for index, (der, crl) in enumerate(ordered)]


def _bundle_time(crls) -> dt.datetime:
    """The newest thisUpdate: fixed for a given set, and a date a person recognises."""
    return max((crl.last_update_utc for crl in crls), default=_ZIP_EPOCH)


def _zip(members: list[tuple[str, bytes]], moment: dt.datetime) -> bytes:
    stamp = max(moment, _ZIP_EPOCH).timetuple()[:6]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, der in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the mode below is read as one
            info.external_attr = (0o100000 | _MEMBER_MODE) << 16
            archive.writestr(info, der, compresslevel=LEVEL)
    return out.getvalue()


def _tgz(members: list[tuple[str, bytes]], moment: dt.datetime) -> bytes:
    mtime = int(moment.timestamp())
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, der in members:
            info = tarfile.TarInfo(name)
            info.size = len(der)
            info.mtime = mtime
            info.mode = _MEMBER_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(der))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=mtime,
                       compresslevel=LEVEL) as packed:
        packed.write(tar_bytes.getvalue())
    return out.getvalue()
