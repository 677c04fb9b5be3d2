"""Model updates for a running station: signing keys, bundle signatures, the on-station model store, messages.

Why signatures: a station that takes models over MQTT must only serve what the maintenance team
released. `manifest.json` lists the sha256 of every file of the bundle, so one detached ed25519
signature over `manifest.json` (the bundle's `signature` file, base64 text) covers the whole bundle;
`edge.bundle.load_bundle` checks the hashes, `verify_bundle_signature` the signature. TensorRT engines
(`engines/`) are not listed in the manifest (they are built per GPU), so a station that requires
signatures drops pushed engines and builds its own from the verified `model.onnx`.

The store keeps every model's versions under `<updates.dir>/<model>/<version>-<sha12>/` with two pointer
files, `current` and `previous` (a version folder name, or an absolute path for the bundle the station
config names). The daemon serves `current` after a restart, and a rollback swaps the two pointers.
Anything older than `previous` is deleted: a Jetson's disk is small.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from onen.edge.bundle import MANIFEST, SIGNATURE, Bundle, load_bundle
from onen.edge.command_message import load_command, request_id_from
from onen.edge.errors import BundleError, OnenError
from onen.edge.pointers import CURRENT, PREVIOUS, read_pointer, write_pointer

INSTALL_SCHEMA = "onen.model-install/1"
ROLLBACK_SCHEMA = "onen.model-rollback/1"


class UpdateError(OnenError):
    """A model update or rollback that the station refuses; the message is the reason it announces."""


class SignatureError(UpdateError, BundleError):
    """A bundle without a valid signature from a trusted key."""


# --- keys -------------------------------------------------------------------------------------------------
def generate_keys(out_dir: str | Path, name: str = "onen-signing") -> tuple[Path, Path]:
    """A new ed25519 key pair as PEM: <name>.pem (private, mode 0600, stays with the release team) and
    <name>.pub.pem (public, goes into the station config's updates.trusted_keys)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / f"{name}.pem", out_dir / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise UpdateError(f"{path}: already exists; not overwriting a key (choose another --out or --name)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise UpdateError(f"{path}: cannot read the signing key ({error.strerror})") from error
    except (ValueError, TypeError) as error:
        raise UpdateError(
            f"{path}: not an unencrypted PEM private key ({error}); make one with `onen keys generate`"
        ) from error
    if not isinstance(key, Ed25519PrivateKey):
        raise UpdateError(f"{path}: expected an ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as error:
        raise UpdateError(f"{path}: cannot read the public key ({error.strerror})") from error
    except (ValueError, TypeError) as error:
        raise UpdateError(
            f"{path}: not a PEM public key ({error}); use the .pub.pem of `onen keys generate`"
        ) from error
    if not isinstance(key, Ed25519PublicKey):
        raise UpdateError(f"{path}: expected an ed25519 public key, got {type(key).__name__}")
    return key


def key_fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Short id of a key pair (sha256 of the raw public key), shown in events and logs."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- signatures -------------------------------------------------------------------------------------------
def sign_bundle(bundle_dir: str | Path, private_key: Ed25519PrivateKey) -> Path:
    """Check the bundle's hashes, then write its detached signature over manifest.json."""
    bundle = load_bundle(bundle_dir)  # never sign a damaged bundle
    signature = private_key.sign((bundle.path / MANIFEST).read_bytes())
    path = bundle.path / SIGNATURE
    path.write_text(base64.b64encode(signature).decode("ascii") + "\n")
    return path


def verify_bundle_signature(bundle: Bundle | str | Path, public_keys: list[Ed25519PublicKey]) -> str:
    """The fingerprint of the trusted key that signed the bundle's manifest; SignatureError otherwise."""
    root = bundle.path if isinstance(bundle, Bundle) else Path(bundle)
    label = f"{bundle.manifest.name!r} version {bundle.manifest.version!r}" if isinstance(bundle, Bundle) else str(root)
    if not public_keys:
        raise SignatureError("no trusted keys to verify the bundle's signature with")
    path = root / SIGNATURE
    if not path.is_file():
        raise SignatureError(
            f"bundle {label} is not signed (no '{SIGNATURE}' file); sign it with `onen sign` or `onen push --sign-key`"
        )
    try:
        signature = base64.b64decode(path.read_text().strip(), validate=True)
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise SignatureError(f"{path}: not a base64 ed25519 signature") from error
    manifest = (root / MANIFEST).read_bytes()
    for key in public_keys:
        try:
            key.verify(signature, manifest)
            return key_fingerprint(key)
        except InvalidSignature:
            continue
    keys = ", ".join(key_fingerprint(key) for key in public_keys)
    why = "signed by another key, or the manifest was changed after signing"
    if path.stat().st_mtime < (root / MANIFEST).stat().st_mtime:
        why = f"{path} is older than {root / MANIFEST}: the bundle was re-exported after signing; sign it again"
    raise SignatureError(f"bundle {label}: {path} does not match {root / MANIFEST} for any trusted key ({keys}): {why}")


# --- messages over MQTT -----------------------------------------------------------------------------------
@dataclass
class InstallRequest:
    model: str | None
    request_id: str
    tar_bytes: bytes | None = None  # the bundle itself, packed
    path: str | None = None  # or a bundle (directory or .tar) already on the station's file system


def pack_bundle_bytes(bundle_dir: str | Path) -> bytes:
    """A bundle directory as .tar bytes (the payload of an install message)."""
    bundle_dir = Path(bundle_dir)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(bundle_dir, arcname=bundle_dir.name)
    return buffer.getvalue()


def install_message(
    *, model: str | None, tar_bytes: bytes | None = None, path: str | None = None, request_id: str | None = None
) -> tuple[bytes, str]:
    """JSON payload for {prefix}/{station}/cmd/model/install, and its request id (echoed in the answer)."""
    if (tar_bytes is None) == (path is None):
        raise ValueError("give the bundle as tar bytes or as a path on the station, not both")
    request_id = request_id or uuid.uuid4().hex[:12]
    message = {"schema": INSTALL_SCHEMA, "model": model, "request_id": request_id}
    if tar_bytes is not None:
        message["bundle_tar_base64"] = base64.b64encode(tar_bytes).decode("ascii")
    else:
        message["bundle_path"] = str(path)
    return json.dumps(message).encode(), request_id


def rollback_message(model: str | None, request_id: str | None = None) -> tuple[bytes, str]:
    request_id = request_id or uuid.uuid4().hex[:12]
    return json.dumps({"schema": ROLLBACK_SCHEMA, "model": model, "request_id": request_id}).encode(), request_id


def parse_install_message(payload: bytes) -> InstallRequest:
    message = load_command(payload, INSTALL_SCHEMA, text_fields=("model", "bundle_tar_base64", "bundle_path"))
    request = InstallRequest(message.get("model"), request_id_from(message) or "")
    if message.get("bundle_tar_base64"):
        try:
            request.tar_bytes = base64.b64decode(message["bundle_tar_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as error:
            raise UpdateError("'bundle_tar_base64' is not base64") from error
    elif isinstance(message.get("bundle_path"), str) and message["bundle_path"]:
        request.path = message["bundle_path"]
    else:
        raise UpdateError("the message carries no bundle ('bundle_tar_base64' or 'bundle_path')")
    return request


def parse_rollback_message(payload: bytes) -> tuple[str | None, str]:
    message = load_command(payload, ROLLBACK_SCHEMA, text_fields=("model",))
    return message.get("model"), request_id_from(message) or ""


# --- unpacking --------------------------------------------------------------------------------------------
def _bundle_root(folder: Path) -> Path:
    """The folder holding manifest.json: the unpacked folder itself or its single top-level directory."""
    if (folder / MANIFEST).is_file():
        return folder
    entries = [p for p in folder.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST).is_file():
        return entries[0]
    raise UpdateError(f"the pushed bundle has no {MANIFEST} at its top level or in its single top-level folder")


MAX_MANIFEST_BYTES = 8 << 20  # a manifest is text; anything bigger is not one
SPACE_MARGIN = 1.1  # the station's disk must hold what the bundle lists with this margin


def _manifest_of(
    manifest_bytes: bytes, signature: bytes | None, trusted: list[Ed25519PublicKey] | None, label: str
) -> set[str]:
    """The files a pushed bundle's manifest lists, after its signature is checked (before anything is written)."""
    from onen.edge.bundle import Manifest

    if trusted:
        if signature is None:
            raise SignatureError(
                f"bundle {label} is not signed (no '{SIGNATURE}' file); sign it with `onen sign` or `onen push "
                "--sign-key`"
            )
        try:
            raw = base64.b64decode(signature.decode("ascii").strip(), validate=True)
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise SignatureError(f"bundle {label}: '{SIGNATURE}' is not a base64 ed25519 signature") from error
        for key in trusted:
            try:
                key.verify(raw, manifest_bytes)
                break
            except InvalidSignature:
                continue
        else:
            raise SignatureError(
                f"bundle {label}: the signature does not match manifest.json for any of the {len(trusted)} trusted "
                "key(s) "
                "(signed by another key, or the manifest was changed after signing)"
            )
    try:
        data = json.loads(manifest_bytes)
    except (ValueError, RecursionError) as error:
        raise UpdateError(f"bundle {label}: {MANIFEST} is not JSON ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise UpdateError(f"bundle {label}: {MANIFEST} has no 'files' table")
    Manifest.from_dict(data, source=f"{label}/{MANIFEST}")
    return {str(name) for name in data["files"]}


def _allowed(relative: str, listed: set[str]) -> bool:
    return (
        relative in listed
        or relative in (MANIFEST, SIGNATURE)
        or relative == "engines"
        or relative.startswith("engines/")
    )


def _check_space(staging: Path, total: int, label: str) -> None:
    free = shutil.disk_usage(staging).free
    if total * SPACE_MARGIN > free:
        raise UpdateError(
            f"bundle {label}: its files take {total / 1e6:.1f} MB, the station has {free / 1e6:.1f} MB free in "
            f"{staging.parent}"
        )


def _unpack_tar(staging: Path, archive: tarfile.TarFile, trusted: list[Ed25519PublicKey] | None, label: str) -> Path:
    members = archive.getmembers()
    names = {m.name.rstrip("/") for m in members}
    top = "" if MANIFEST in names else None
    if top is None:
        nested = sorted(n for n in names if n.count("/") == 1 and n.endswith("/" + MANIFEST))
        if len(nested) != 1:
            raise UpdateError(f"the pushed bundle has no {MANIFEST} at its top level or in its single top-level folder")
        top = nested[0][: -len(MANIFEST)]

    def read(name: str, limit: int) -> bytes | None:
        member = next((m for m in members if m.name.rstrip("/") == top + name), None)
        if member is None:
            return None
        if not member.isfile() or member.size > limit:
            raise UpdateError(f"bundle {label}: {name} is not a regular file of at most {limit} bytes")
        extracted = archive.extractfile(member)
        assert extracted is not None  # a regular file always has content to extract
        return extracted.read()

    manifest = read(MANIFEST, MAX_MANIFEST_BYTES)
    assert manifest is not None  # `top` was chosen where the manifest is
    listed = _manifest_of(manifest, read(SIGNATURE, 4096), trusted, label)
    total = 0
    for member in members:
        name = member.name.rstrip("/")
        if top and name == top.rstrip("/"):
            continue
        if top and not name.startswith(top):
            raise UpdateError(
                f"bundle {label}: member {member.name!r} is outside its folder {top.rstrip('/')!r} and not listed in "
                f"its {MANIFEST}; the station takes only listed files"
            )
        relative = name[len(top) :]
        if not _allowed(relative, listed) and not (
            member.isdir() and any(n.startswith(relative + "/") for n in listed)
        ):
            raise UpdateError(
                f"bundle {label}: member {member.name!r} is not listed in its {MANIFEST}; the station takes only "
                "listed files"
            )
        if not (member.isfile() or member.isdir()):
            raise UpdateError(f"bundle {label}: member {member.name!r} is not a regular file or folder")
        total += member.size
    _check_space(staging, total, label)
    archive.extractall(staging, filter="data")
    return _bundle_root(staging)


def unpack_into(
    staging: Path,
    tar_bytes: bytes | None = None,
    path: str | Path | None = None,
    trusted: list[Ed25519PublicKey] | None = None,
) -> Path:
    """Put the pushed bundle into `staging` and return the folder holding its manifest.

    Before anything is written or copied: the manifest is read, its signature checked (when the station trusts
    keys), every member must be a file the manifest lists (or manifest.json, signature, engines/), and the disk
    must hold the listed files. A .tar is then extracted with tarfile's 'data' filter (no links out, no absolute
    paths, no devices); a folder on the station is copied file by file, only what the manifest lists."""
    if tar_bytes is not None:
        try:
            with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*") as archive:
                return _unpack_tar(staging, archive, trusted, "pushed as .tar")
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as error:
            raise UpdateError(f"the pushed bundle is not a readable .tar ({type(error).__name__}: {error})") from error
    source = Path(str(path)).expanduser()
    if not source.is_absolute():
        raise UpdateError(f"bundle_path must be an absolute path on the station, got {path!r}")
    if source.is_dir():
        manifest = source / MANIFEST
        if not manifest.is_file():
            raise UpdateError(f"bundle_path {source} is a folder without {MANIFEST}: not a bundle (nothing was copied)")
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            raise UpdateError(f"bundle_path {source}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
        signature = source / SIGNATURE
        listed = _manifest_of(
            manifest.read_bytes(), signature.read_bytes() if signature.is_file() else None, trusted, str(source)
        )
        files = []
        for name in sorted(listed):
            file = source / name
            if Path(name).is_absolute() or ".." in Path(name).parts or not file.is_file() or file.is_symlink():
                raise UpdateError(
                    f"bundle_path {source}: listed file {name!r} is missing or not a regular file inside the bundle"
                )
            files.append(name)
        _check_space(staging, sum((source / n).stat().st_size for n in files), str(source))
        root = staging / source.name
        for name in [*files, MANIFEST, *([SIGNATURE] if signature.is_file() else [])]:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, root / name)
        return root
    if source.is_file():
        try:
            with tarfile.open(source, mode="r:*") as archive:
                return _unpack_tar(staging, archive, trusted, str(source))
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as error:
            raise UpdateError(
                f"bundle_path {source} is not a readable .tar ({type(error).__name__}: {error})"
            ) from error
    raise UpdateError(f"bundle_path {source} does not exist on the station")


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def drop_unsigned_engines(root: Path) -> bool:
    """Remove engines/ (not covered by manifest hashes, hence not by the signature); True if there were any."""
    engines = root / "engines"
    if engines.exists():
        shutil.rmtree(engines)
        return True
    return False


# --- the store on the station ---------------------------------------------------------------------------
class ModelStore:
    """Versions of each model under `root/<model>/`, with `current` and `previous` pointer files."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, model: str) -> Path:
        return self.root / model

    def current(self, model: str) -> Path | None:
        return read_pointer(self.folder(model), CURRENT)

    def previous(self, model: str) -> Path | None:
        return read_pointer(self.folder(model), PREVIOUS)

    def clean_interrupted(self) -> list[Path]:
        """Remove what an interrupted install left (its `.incoming-*` staging folders); returns them."""
        left = [p for p in self.root.glob("*/.incoming-*") if p.is_dir()] if self.root.is_dir() else []
        for path in left:
            shutil.rmtree(path, ignore_errors=True)
        return left

    def staging(self, model: str) -> Path:
        """A fresh folder next to the versions (same file system, so adding a version is one rename)."""
        self.folder(model).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.folder(model)))

    def add(self, model: str, bundle_root: Path, bundle: Bundle) -> Path:
        """Move a verified, unpacked bundle into place as a version folder; returns it."""
        name = f"{_safe(bundle.manifest.version)}-{bundle.onnx_sha256[:12]}"
        target = self.folder(model) / name
        if target.exists():
            named = {p.resolve() for p in (self.current(model), self.previous(model)) if p is not None}
            if target.resolve() in named:  # pushed again after a rollback: keep the copy a pointer names
                shutil.rmtree(bundle_root, ignore_errors=True)
                load_bundle(target)  # and make sure it is still intact
                return target
            shutil.rmtree(target)  # a leftover nobody names: the fresh copy wins
        os.replace(bundle_root, target)
        return target

    def promote(self, model: str, new: Path, serving: Path | None) -> None:
        """`new` becomes current, the bundle served until now becomes previous; older versions go."""
        self.folder(model).mkdir(parents=True, exist_ok=True)
        write_pointer(self.folder(model), PREVIOUS, serving)
        write_pointer(self.folder(model), CURRENT, new)
        self.prune(model)

    def rollback(self, model: str) -> None:
        """Swap current and previous (a second rollback undoes the first)."""
        current, previous = self.current(model), self.previous(model)
        if previous is None:
            raise UpdateError(f"model {model!r}: no previous version to roll back to")
        write_pointer(self.folder(model), PREVIOUS, current)
        write_pointer(self.folder(model), CURRENT, previous)

    def prune(self, model: str) -> None:
        keep = {p.resolve() for p in (self.current(model), self.previous(model)) if p is not None}
        for entry in self.folder(model).iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and entry.resolve() not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def discard(self, path: Path) -> None:
        """Remove a staging or version folder that did not make it (never one a pointer names)."""
        model = path.parent.name
        named = {p.resolve() for p in (self.current(model), self.previous(model)) if p is not None}
        if path.resolve() not in named:
            shutil.rmtree(path, ignore_errors=True)


def _safe(text: str) -> str:
    """A manifest version as a folder name."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text)).strip(".")
    return cleaned[:40] or "unversioned"
