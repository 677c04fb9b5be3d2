"""What a model install checks before it writes or copies anything (issue 13 item 11): the manifest, its
signature and the members it lists. Real bundles, real tar files, real folders; the staging folder must stay
empty when a push is refused."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from onen.edge.updates import (
    ModelStore,
    SignatureError,
    UpdateError,
    generate_keys,
    load_private_key,
    load_public_key,
    pack_bundle_bytes,
    sign_bundle,
    unpack_into,
)


class Zeros(io.RawIOBase):
    """`size` zero bytes, read as a stream (the 1 GiB file never exists on disk)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


@pytest.fixture(scope="module")
def signed(tmp_path_factory, tiny_bundle):
    folder = tmp_path_factory.mktemp("signed")
    private, public = generate_keys(folder / "keys", "release")
    bundle = shutil.copytree(tiny_bundle, folder / "bundle", ignore=shutil.ignore_patterns("engines", "signature"))
    sign_bundle(bundle, load_private_key(private))
    return {"bundle": bundle, "trusted": [load_public_key(public)]}


def written(staging: Path) -> list[Path]:
    return [p for p in staging.rglob("*")]


def with_extra_member(bundle_tar: bytes, name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(bundle_tar)) as source, tarfile.open(fileobj=out, mode="w") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        target.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_signed_bundle_with_an_unlisted_member_is_refused_before_writing(tmp_path, signed):
    staging = tmp_path / "staging"
    staging.mkdir()
    packed = with_extra_member(pack_bundle_bytes(signed["bundle"]), "/etc/evil.sh", b"#!/bin/sh\n")
    with pytest.raises(UpdateError, match="not listed in its manifest.json"):
        unpack_into(staging, tar_bytes=packed, trusted=signed["trusted"])
    assert written(staging) == []
    root = unpack_into(
        staging, tar_bytes=pack_bundle_bytes(signed["bundle"]), trusted=signed["trusted"]
    )  # the clean one goes in
    assert (root / "manifest.json").is_file() and (root / "model.onnx").is_file()


@pytest.mark.slow
def test_a_gigabyte_of_zeros_is_refused_before_anything_is_written(tmp_path, signed):
    archive_path = tmp_path / "zeros.tar.gz"
    with tarfile.open(archive_path, mode="w:gz", compresslevel=1) as archive:
        archive.add(signed["bundle"] / "manifest.json", arcname="b/manifest.json")
        info = tarfile.TarInfo("b/zeros.bin")
        info.size = 1 << 30
        archive.addfile(info, Zeros(info.size))
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(SignatureError, match="not signed"):  # a station that trusts keys
        unpack_into(staging, path=str(archive_path), trusted=signed["trusted"])
    with pytest.raises(UpdateError, match="'b/zeros.bin' is not listed"):  # and one that does not
        unpack_into(staging, path=str(archive_path))
    assert written(staging) == []


def test_a_folder_without_manifest_and_the_home_folder_are_refused_before_copying(tmp_path, monkeypatch):
    big = tmp_path / "not-a-bundle"
    big.mkdir()
    (big / "data.bin").write_bytes(bytes(1 << 20))
    monkeypatch.setenv("HOME", str(big))
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(UpdateError, match="folder without manifest.json"):
        unpack_into(staging, path=str(big))
    with pytest.raises(UpdateError, match="folder without manifest.json"):
        unpack_into(staging, path="~")
    assert written(staging) == []


def test_a_folder_bundle_copies_only_what_its_manifest_lists(tmp_path, signed):
    source = shutil.copytree(signed["bundle"], tmp_path / "bundle")
    (source / "stray.bin").write_bytes(b"x" * 1000)
    staging = tmp_path / "staging"
    staging.mkdir()
    root = unpack_into(staging, path=str(source), trusted=signed["trusted"])
    assert not (root / "stray.bin").exists() and (root / "model.onnx").is_file() and (root / "signature").is_file()


def test_an_interrupted_install_is_cleaned_up(tmp_path):
    store = ModelStore(tmp_path / "models")
    left = store.staging("m")
    (left / "partial.bin").write_bytes(b"x" * 100)
    hidden = store.folder("m") / ".incoming-abc"
    hidden.mkdir()
    version = store.folder("m") / "1-abc"
    version.mkdir()
    assert sorted(p.name for p in store.clean_interrupted()) == sorted([left.name, hidden.name])
    assert not left.exists() and not hidden.exists() and version.exists()
