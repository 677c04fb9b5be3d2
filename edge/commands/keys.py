"""`onen keys generate --out DIR` and `onen sign BUNDLE --key KEY.pem`: the release team's signing tools.

A station whose config lists `updates.trusted_keys` installs only bundles whose `signature` (ed25519 over
manifest.json, which holds every file's sha256) verifies with one of those public keys.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="signing keys for model bundles (ed25519)",
        description="Manage the ed25519 keys that sign model bundles.",
    )
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION")
    actions.required = True
    generate = actions.add_parser(
        "generate",
        help="write a new key pair: NAME.pem (private) and NAME.pub.pem (public)",
        description="Writes NAME.pem (private, mode 0600: keep it with the release team) and "
        "NAME.pub.pem (public: list it under updates.trusted_keys in station configs).",
    )
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the key files")
    generate.add_argument("--name", default="onen-signing", help="file name stem (default onen-signing)")
    generate.set_defaults(handler=run_generate)

    sign = subparsers.add_parser(
        "sign",
        help="sign a model bundle directory (writes its 'signature' file)",
        description="Checks the bundle's sha256s, then writes BUNDLE/signature: an ed25519 signature "
        "over manifest.json.",
    )
    sign.add_argument("bundle", type=Path, metavar="BUNDLE", help="model bundle directory")
    sign.add_argument(
        "--key", required=True, type=Path, metavar="KEY.pem", help="private key from `onen keys generate`"
    )
    sign.set_defaults(handler=run_sign)


def run_generate(args: argparse.Namespace) -> int:
    from onen.edge.updates import generate_keys, key_fingerprint, load_public_key

    private, public = generate_keys(args.out, args.name)
    print(f"private key {private} (keep it secret; sign with `onen sign BUNDLE --key {private}`)")
    print(
        f"public key  {public} (fingerprint {key_fingerprint(load_public_key(public))}; add it to the station config: "
        f"updates: {{trusted_keys: [{public}]}})"
    )
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from onen.edge.cli import UsageError
    from onen.edge.updates import key_fingerprint, load_private_key, sign_bundle

    if not args.bundle.is_dir():
        raise UsageError(
            f"{args.bundle}: expected a bundle directory (for a .tar use `onen push BUNDLE.tar --sign-key KEY.pem`)"
        )
    key = load_private_key(args.key)
    path = sign_bundle(args.bundle, key)
    print(f"signed {args.bundle} with key {key_fingerprint(key)}: {path}")
    return 0
