"""`keys generate`, `sign` and `verify`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from pipeline.core import options, secret
from pipeline.core.errors import PipelineError
from pipeline.core.vocab import SIGNATURE, SUMS
from pipeline.sign.keys import DEFAULT_NAME, generate_keys
from pipeline.sign.openpgp import Signer
from pipeline.sign.sign import Verity, VerityState, sign_directory
from pipeline.sign.verify import verify_directory


def cmd_keys_generate(args: argparse.Namespace) -> int:
    info = generate_keys(args.out, args.name, args.email)
    print(f"OpenPGP signing key (Ed25519): {info['openpgp_fingerprint']}")
    print(f"  secret: {info['gpg_secret_key']} (0600; store as a CI secret, then delete)")
    print(f"  public: {info['gpg_pubring']} (hosts: /etc/systemd/import-pubring.gpg and .pgp)")
    print(f"dm-verity certificate (RSA-3072) SHA256: {info['verity_cert_sha256']}")
    print(f"  secret: {info['verity_key']} (0600; store as a CI secret, then delete)")
    print(f"  public: {info['verity_cert']} (hosts: /etc/verity.d/ or the kernel keyring)")
    return 0


def add_signer(parser: argparse.ArgumentParser, required: bool, what: str) -> None:
    """--gpg-key and --gpg-passphrase (sign, publish static)."""
    parser.add_argument(
        "--gpg-key",
        required=required,
        metavar="FILE|env:VAR",
        action=secret.option("--gpg-key"),
        help=what,
    )
    parser.add_argument(
        "--gpg-passphrase",
        metavar="FILE|env:VAR",
        action=secret.option("--gpg-passphrase"),
        help="passphrase of the OpenPGP key, if it has one",
    )


def signer(args: argparse.Namespace) -> Signer | None:
    return Signer(args.gpg_key, args.gpg_passphrase) if args.gpg_key else None


def cmd_sign(args: argparse.Namespace) -> int:
    if (args.verity_key is None) != (args.verity_cert is None):
        raise PipelineError("--verity-key and --verity-cert go together")
    verity = Verity(args.verity_key, args.verity_cert) if args.verity_key else None
    fpr, signed = sign_directory(
        args.directory, args.out, Signer(args.gpg_key, args.gpg_passphrase), verity, args.cache
    )
    if args.json:
        print(
            json.dumps(
                {
                    "signer": fpr,
                    "directory": str(args.out),
                    "sums": SUMS,
                    "signature": SIGNATURE,
                    "files": [{**asdict(s), "verity": str(s.verity)} for s in signed],
                },
                indent=2,
            )
        )
        return 0
    notes = {
        VerityState.CONVERTED: "  (now a verity-signed DDI)",
        VerityState.ALREADY_SIGNED: "  (verity-signed DDI)",
    }
    for s in signed:
        print(f"{s.sha256}  {s.file}{notes.get(s.verity, '')}")
    print(f"{args.out}: {SUMS} and {SIGNATURE} written; signed by OpenPGP key {fpr}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    checks = verify_directory(args.directory, args.keyring, args.verity_cert)
    ok = all(c.ok for c in checks)
    if args.json:
        print(
            json.dumps(
                {"ok": ok, "directory": str(args.directory), "files": [asdict(c) for c in checks]},
                indent=2,
            )
        )
    else:
        for c in checks:
            print(f"{c.file}: OK ({c.detail})" if c.ok else f"{c.file}: FAILED: {c.detail}")
        failed = sum(not c.ok for c in checks)
        print(
            f"{args.directory}: "
            + (
                f"all {len(checks)} checks OK"
                if ok
                else f"FAILED ({failed} of {len(checks)} checks)"
            )
        )
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="manage signing keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "generate", help="make a new OpenPGP key and dm-verity key + certificate"
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the four key files")
    p.add_argument("--name", default=DEFAULT_NAME, help="key owner name (OpenPGP UID, cert CN)")
    p.add_argument("--email", default="release@wasm-sysexts.invalid", help="OpenPGP UID e-mail")
    p.set_defaults(func=cmd_keys_generate)

    p = sub.add_parser(
        "sign",
        help="copy images into a new directory with a signed SHA256SUMS; "
        "optionally as verity-signed DDIs",
    )
    p.add_argument("directory", type=Path, metavar="DIR", help="directory of *.raw images")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="SIGNED",
        help="new (or empty) directory for the signed images",
    )
    add_signer(p, True, "OpenPGP secret key (armored or binary)")
    p.add_argument(
        "--verity-key",
        metavar="FILE|env:VAR",
        action=secret.option("--verity-key"),
        help="PEM RSA private key: turn plain images into verity-signed DDIs",
    )
    p.add_argument(
        "--verity-cert", type=Path, metavar="FILE", help="PEM certificate of --verity-key"
    )
    options.add_cache(p, "the Debian root that runs systemd-repart")
    options.add_output(p)
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser(
        "verify", help="check SHA256SUMS.gpg, hashes, verity signatures and signed provenance"
    )
    p.add_argument(
        "directory",
        type=Path,
        metavar="DIR|FILE.intoto.jsonl",
        help="a signed directory, or one provenance file (its subjects beside it)",
    )
    p.add_argument(
        "--keyring",
        type=Path,
        required=True,
        help="OpenPGP public keyring (binary, like /etc/systemd/import-pubring.gpg)",
    )
    p.add_argument(
        "--verity-cert",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="PEM certificate that must have signed every image's verity root hash "
        "(repeat it during a key rotation: either may have signed)",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.set_defaults(func=cmd_verify)
