"""CRL bundles (ca.bundles): readable by Python's and the system's archive tools and by
openssl, every CRL back byte for byte, and the same bytes for the same set of CRLs."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
import tarfile
import zipfile

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ca.bundles import BUNDLE_TYPES, crl_bundle
from ca.encoding import pem_blocks
from ca.errors import BadInput
from ca.name_hash import subject_hash

from .conftest import openssl
from .storepki import T0, make_ca, name, pki

pytestmark = pytest.mark.openssl


def _crls() -> list[bytes]:
    p = pki()
    third = make_ca(name((NameOID.COMMON_NAME, "Third CA")))
    return [*p.crls(), third.crl(number=2, this_update=T0 + dt.timedelta(hours=5))]


def _members(kind: str, data: bytes) -> dict[str, bytes]:
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.testzip() is None
            return {info.filename: archive.read(info) for info in archive.infolist()}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {member.name: archive.extractfile(member).read()
                for member in archive.getmembers()}


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_archives_give_back_every_crl_byte_for_byte(kind, tmp_path):
    crls = _crls()
    data = crl_bundle(crls, kind)
    members = _members(kind, data)
    assert sorted(members.values()) == sorted(crls)
    for member_name, der in members.items():
        crl = x509.load_der_x509_crl(der)
        assert member_name.endswith(f"-{subject_hash(crl.issuer)}.crl")
        path = tmp_path / "member.crl"
        path.write_bytes(der)
        openssl("crl", "-inform", "DER", "-noout", "-in", str(path))
    assert list(members) == sorted(members)  # numbered in order


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_system_tools_list_the_archives(kind, tmp_path):
    tool = {"zip": "unzip", "tgz": "tar"}[kind]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    path = tmp_path / f"bundle.{kind}"
    path.write_bytes(crl_bundle(_crls(), kind))
    command = ["unzip", "-l", str(path)] if kind == "zip" else ["tar", "tzf", str(path)]
    listed = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
    for member_name in _members(kind, path.read_bytes()):
        assert member_name.encode() in listed


def test_tar_members_carry_no_owner_and_a_fixed_time():
    with tarfile.open(fileobj=io.BytesIO(crl_bundle(_crls(), "tgz")), mode="r:gz") as tar:
        for member in tar.getmembers():
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mode == 0o644 and member.isreg()
            assert member.mtime == int((T0 + dt.timedelta(hours=5)).timestamp())


def test_pem_bundle_holds_each_crl():
    crls = _crls()
    blocks = list(pem_blocks(crl_bundle(crls, "pem")))
    assert {block.label for block in blocks} == {"X509 CRL"}
    assert sorted(block.der for block in blocks) == sorted(crls)


@pytest.mark.parametrize("kind", sorted(BUNDLE_TYPES))
def test_same_set_in_any_order_gives_identical_bytes(kind):
    crls = _crls()
    first = crl_bundle(crls, kind)
    assert crl_bundle(list(reversed(crls)), kind) == first
    assert crl_bundle(crls + crls[:1], kind) == first  # a repeat is dropped
    assert crl_bundle(crls[:2], kind) != first


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_an_empty_set_gives_a_valid_empty_archive(kind):
    data = crl_bundle([], kind)
    assert _members(kind, data) == {}
    assert crl_bundle([], kind) == data
    assert crl_bundle([], "pem") == b""


def test_unknown_kind_is_refused():
    with pytest.raises(BadInput, match="zip, tgz, pem"):
        crl_bundle(_crls(), "rar")
