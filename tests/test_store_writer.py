"""The node store on disk (shell.stores.NodeStore): real files under tmp_path, real
concurrent readers and writers, real OS errors (EFBIG from a file-size limit, ENOSPC from a
small tmpfs, EACCES from a read-only folder)."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from ca.errors import BadInput, Conflict, NotFound
from ca.store_layout import MANIFEST, StoreContent, StoreInputs, store_files
from shell.stores import NodeStore, StoreWriteError

from .storepki import T0, key_pem, pki

REPO = Path(__file__).resolve().parent.parent
_INPUTS: dict[int, StoreInputs] = {}
_CONTENTS: dict[int, StoreContent] = {}


def inputs(version: int) -> StoreInputs:
    """A distinct, complete store per ``version`` (the root's CRL number changes)."""
    if version not in _INPUTS:
        p = pki()
        _INPUTS[version] = StoreInputs(
            server_cert=p.leaf, chain=(p.intermediate.cert,),
            private_key_pem=key_pem(p.leaf_key), trusted=(p.root.cert, p.intermediate.cert),
            crls=(p.root.crl(number=version), p.crls()[1]), reason=f"version {version}")
    return _INPUTS[version]


def content(version: int) -> StoreContent:
    if version not in _CONTENTS:
        _CONTENTS[version] = store_files(inputs(version), T0 + dt.timedelta(minutes=version))
    return _CONTENTS[version]


def check_generation(folder: Path) -> dict:
    """Every file the manifest lists is there with its SHA-256 and size; return it."""
    manifest = json.loads((folder / MANIFEST).read_bytes())
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return manifest


def leftovers(root: Path) -> list[str]:
    return ([p.name for p in (root / "generations").iterdir() if p.name.startswith(".")]
            + [p.name for p in root.iterdir() if p.name.startswith(".current-")])


def test_first_publish_lays_out_the_store_with_its_modes(tmp_path):
    root = tmp_path / "node" / "expe1"
    old_umask = os.umask(0)
    try:
        outcome = NodeStore(root).publish(content(1))
    finally:
        os.umask(old_umask)
    assert outcome.changed and outcome.generation == 1 and outcome.removed == []
    assert outcome.path == root / "generations" / "1"
    assert outcome.bytes_written == sum(len(d) for d in content(1).files.values())
    assert os.readlink(root / "current") == "generations/1"
    for name, data in content(1).files.items():
        assert (root / "current" / name).read_bytes() == data
    mode = {path.relative_to(outcome.path).as_posix(): stat.S_IMODE(path.stat().st_mode)
            for path in outcome.path.rglob("*")}
    assert mode.pop("privkey.pem") == 0o600
    assert mode.pop("capath") == 0o755
    assert set(mode.values()) == {0o644}
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "generations").stat().st_mode) == 0o755
    assert stat.S_IMODE(outcome.path.stat().st_mode) == 0o755
    store = NodeStore(root)
    assert store.current_generation() == 1 and store.generations() == [1]
    assert store.current_manifest()["digest"] == content(1).digest
    check_generation(root / "current")


def test_unchanged_content_writes_nothing(tmp_path):
    store = NodeStore(tmp_path / "store")
    store.publish(content(1))
    watched = [tmp_path / "store", tmp_path / "store" / "generations",
               tmp_path / "store" / "generations" / "1",
               tmp_path / "store" / "generations" / "1" / "server.pem"]
    before = [(os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p in watched]
    link_before = os.lstat(tmp_path / "store" / "current")
    # the same certificates and CRLs, given in another order, later, for another reason
    given = inputs(1)
    again = store_files(replace(given, trusted=given.trusted[::-1], crls=given.crls[::-1],
                                reason="nightly"), T0 + dt.timedelta(days=3))
    assert again.files[MANIFEST] != content(1).files[MANIFEST]
    outcome = store.publish(again)
    assert (outcome.changed, outcome.generation, outcome.bytes_written) == (False, 1, 0)
    assert [(os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p in watched] == before
    link_after = os.lstat(tmp_path / "store" / "current")
    assert (link_after.st_ino, link_after.st_mtime_ns) == (link_before.st_ino,
                                                           link_before.st_mtime_ns)
    assert store.generations() == [1]


def test_only_the_last_generations_are_kept(tmp_path):
    store = NodeStore(tmp_path / "store", keep=3)
    removed = []
    for version in range(1, 7):
        outcome = store.publish(content(version))
        assert outcome.generation == version
        removed += outcome.removed
    assert store.generations() == [4, 5, 6]
    assert removed == [1, 2, 3]
    assert store.current_generation() == 6


def test_rollback_then_publish(tmp_path):
    store = NodeStore(tmp_path / "store")
    with pytest.raises(NotFound, match="nothing is published"):
        store.rollback()
    for version in (1, 2, 3):
        store.publish(content(version))
    assert store.rollback() == 2
    assert store.current_manifest()["digest"] == content(2).digest
    assert (tmp_path / "store" / "current" / "crls.pem").read_bytes() == (
        content(2).files["crls.pem"])
    assert store.rollback() == 1
    with pytest.raises(NotFound, match="no generation older than 1"):
        store.rollback()
    outcome = store.publish(content(4))  # numbered after the highest kept, not after 1
    assert outcome.generation == 4 and store.generations() == [1, 2, 3, 4]
    assert store.rollback() == 3
    assert not store.publish(content(3)).changed  # what is current again: no change
    assert store.publish(content(5)).generation == 5
    assert store.current_manifest()["digest"] == content(5).digest


def test_a_folder_that_is_not_a_store_is_refused(tmp_path):
    own = tmp_path / "own"
    (own / "current").mkdir(parents=True)
    (own / "current" / "server.pem").write_text("mine")
    with pytest.raises(Conflict, match="not pkiq's link"):
        NodeStore(own).publish(content(1))
    assert (own / "current" / "server.pem").read_text() == "mine"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "current").symlink_to(tmp_path)
    with pytest.raises(Conflict, match="not at generations/<N>"):
        NodeStore(elsewhere).publish(content(1))

    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "real-generations").mkdir()
    (linked / "generations").symlink_to(tmp_path / "real-generations")
    with pytest.raises(Conflict, match="generations is a symbolic link"):
        NodeStore(linked).publish(content(1))
    assert list((tmp_path / "real-generations").iterdir()) == []

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "generations").write_text("a file")
    with pytest.raises(Conflict, match="not a folder"):
        NodeStore(plain).publish(content(1))


def test_readers_always_see_one_whole_generation(tmp_path):
    """A reader opens ``current`` (one resolution) and reads the manifest and server.pem
    inside it: during 50 publishes each pair it reads must agree."""
    root = tmp_path / "store"
    store = NodeStore(root, keep=100)  # nothing pruned under the reader's feet
    store.publish(content(100))
    contents = [content(100 + i) for i in range(1, 51)]
    done = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def reader():
        while not done.is_set() or not seen:
            try:
                fd = os.open(root / "current", os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                problems.append(f"current: {exc}")
                continue
            try:
                manifest = json.loads(_read_at(fd, MANIFEST))
                server = _read_at(fd, "server.pem")
            except OSError as exc:
                problems.append(f"read: {exc}")
                continue
            finally:
                os.close(fd)
            if hashlib.sha256(server).hexdigest() != manifest["files"]["server.pem"]["sha256"]:
                problems.append("server.pem does not match its manifest")
            seen.append(manifest["digest"] == contents[-1].digest)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for item in contents:
            store.publish(item)
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert len(seen) > 50
    assert store.current_generation() == 51
    for number in store.generations():
        check_generation(root / "generations" / str(number))


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _child(root: Path, items: list, tmp_path: Path, tag: str,
           fsize_limit: int | None = None) -> subprocess.Popen:
    path = tmp_path / f"{tag}.pickle"
    path.write_bytes(pickle.dumps(items))
    args = [sys.executable, "-m", "tests.store_child", str(root), str(path)]
    if fsize_limit is not None:
        args.append(str(fsize_limit))
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


def test_two_processes_publishing_at_once_leave_a_sound_store(tmp_path):
    root = tmp_path / "store"
    first = _child(root, [content(200 + i) for i in range(12)], tmp_path, "a")
    second = _child(root, [content(300 + i) for i in range(12)], tmp_path, "b")
    results = [_result(first), _result(second)]
    assert all(result["error"] is None for result in results)
    numbers = sorted(g for result in results for _changed, g in result["outcomes"])
    assert numbers == list(range(1, 25))  # each publish got a number of its own
    store = NodeStore(root)
    assert store.generations() == list(range(1, 25))
    for number in store.generations():
        check_generation(root / "generations" / str(number))
    assert leftovers(root) == []


def _assert_failed_cleanly(root: Path, message: str, reason: str) -> None:
    assert str(root) in message and reason in message and "\n" not in message
    store = NodeStore(root)
    assert store.current_generation() == 1 and store.generations() == [1]
    assert store.current_manifest()["digest"] == content(1).digest
    check_generation(root / "current")
    assert leftovers(root) == []


def test_a_write_error_leaves_the_current_generation(tmp_path):
    """RLIMIT_FSIZE makes write(2) fail with EFBIG past the limit, for root too."""
    root = tmp_path / "store"
    NodeStore(root).publish(content(1))
    biggest = max(len(data) for data in content(2).files.values())
    result = _result(_child(root, [content(2)], tmp_path, "limited",
                            fsize_limit=biggest - 1))
    assert result["outcomes"] == [] and result["error"][0] == "StoreWriteError"
    _assert_failed_cleanly(root, result["error"][1], "File too large")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_leaves_the_current_generation(tmp_path):
    """A 1 MiB tmpfs, filled up after the first publish."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        root = mount / "store"
        store = NodeStore(root)
        store.publish(content(1))
        with pytest.raises(OSError) as full, open(mount / "filler", "wb",
                                                  buffering=0) as filler:
            while True:
                filler.write(b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
        with pytest.raises(StoreWriteError) as caught:
            store.publish(content(2))
        _assert_failed_cleanly(root, str(caught.value), "No space left on device")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_bad_file_names_are_refused_before_anything_is_written(tmp_path):
    bad = StoreContent(files={"../escape": b"x"}, private=frozenset(), digest="d")
    with pytest.raises(ValueError, match="not a plain relative path"):
        NodeStore(tmp_path / "store").publish(bad)
    assert not (tmp_path / "store").exists()


def test_a_manifest_damaged_by_hand_is_reported_and_republishing_repairs_it(tmp_path):
    store = NodeStore(tmp_path / "store")
    store.publish(content(1))
    (tmp_path / "store" / "current" / MANIFEST).write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        store.current_manifest()
    outcome = store.publish(content(1))
    assert outcome.changed and outcome.generation == 2
    assert store.current_manifest()["digest"] == content(1).digest
