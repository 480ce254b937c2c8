"""`wasm-sysexts sign DIR`: SHA256SUMS + detached OpenPGP signature, optionally verity DDIs.

With --verity-key/--verity-cert every plain image in DIR is first turned into a verity-signed
DDI under the same name (see ddi.py and docs/signing.md for why signing, not building, does
this). Everything is prepared beside the outputs first; only when every image is converted and
the signature made are images, SHA256SUMS and SHA256SUMS.gpg renamed into place, so a failure
leaves DIR as it was.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import openpgp
from pipeline.ddi import check_ddi, make_signed_ddi
from pipeline.errors import PipelineError
from pipeline.fetch import default_cache_dir, sha256_file
from pipeline.gpt import is_gpt
from pipeline.keys import load_cert, load_verity_key, read_secret
from pipeline.log import Reporter
from pipeline.sums import SUMS, format_sums, locked, write_atomic

SIGNATURE = f"{SUMS}.gpg"


@dataclass
class Signed:
    file: str
    sha256: str
    verity: str  # converted | already-signed | none


@dataclass(frozen=True)
class Verity:
    key_spec: str
    cert: Path


def sign_directory(directory: Path, gpg_key: str, passphrase: str | None, verity: Verity | None,
                   cache_dir: Path, reporter: Reporter) -> tuple[str, list[Signed]]:
    """Sign DIR's images; returns the OpenPGP signer fingerprint and what was signed."""
    images = sorted(directory.glob("*.raw"))
    if not images:
        raise PipelineError(f"{directory}: no *.raw images to sign")
    secret = read_secret(gpg_key, "--gpg-key")
    phrase = read_secret(passphrase, "--gpg-passphrase").rstrip(b"\r\n") if passphrase else None
    pending: dict[Path, Path] = {}  # image -> its converted DDI, not yet in place
    states = {image.name: "none" for image in images}
    try:
        if verity is not None:
            cert = load_cert(verity.cert, "--verity-cert")
            key_pem = load_verity_key(verity.key_spec, cert)
            cert_pem = verity.cert.read_bytes()
            for image in images:
                if is_gpt(image):
                    try:
                        check_ddi(image, verity.cert)
                    except PipelineError as err:
                        raise PipelineError(f"{err}; rebuild the plain image and sign again") \
                            from None
                    states[image.name] = "already-signed"
                    reporter.info("sign", f"{image.name}: already a DDI signed by this cert")
                    continue
                reporter.info("sign", f"{image.name}: making a verity-signed DDI")
                ddi = image.with_name(f".{image.name}.ddi-{os.getpid()}")
                pending[image] = ddi
                make_signed_ddi(image, ddi, key_pem, cert_pem, cache_dir, reporter)
                check_ddi(ddi, verity.cert)  # what hosts will check, before it replaces anything
                states[image.name] = "converted"
        sums = {image.name: sha256_file(pending.get(image, image)) for image in images}
        text = format_sums(sums).encode()
        fpr, signature = openpgp.detach_sign(text, secret, phrase, "--gpg-key")
        with locked(directory):
            if sorted(directory.glob("*.raw")) != images:
                raise PipelineError(f"{directory}: images changed while signing; sign again")
            for image, ddi in pending.items():
                os.replace(ddi, image)
            write_atomic(directory / SUMS, text)
            write_atomic(directory / SIGNATURE, signature)
    finally:
        for ddi in pending.values():
            ddi.unlink(missing_ok=True)
    reporter.info("sign", f"{SIGNATURE}: signed by {fpr}")
    return fpr, [Signed(name, digest, states[name]) for name, digest in sorted(sums.items())]


def cmd_sign(args: argparse.Namespace) -> int:
    if (args.verity_key is None) != (args.verity_cert is None):
        raise PipelineError("--verity-key and --verity-cert go together")
    verity = Verity(args.verity_key, args.verity_cert) if args.verity_key else None
    reporter = Reporter(quiet=args.quiet)
    fpr, signed = sign_directory(args.directory, args.gpg_key, args.gpg_passphrase, verity,
                                 args.cache, reporter)
    if args.json:
        print(json.dumps({"signer": fpr, "sums": SUMS, "signature": SIGNATURE,
                          "files": [asdict(s) for s in signed]}, indent=2))
        return 0
    for s in signed:
        note = {"converted": "  (now a verity-signed DDI)",
                "already-signed": "  (verity-signed DDI)"}.get(s.verity, "")
        print(f"{s.sha256}  {s.file}{note}")
    print(f"{SUMS} and {SIGNATURE} written; signed by OpenPGP key {fpr}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sign", help="write and sign SHA256SUMS; optionally verity DDIs")
    p.add_argument("directory", type=Path, metavar="DIR", help="directory of *.raw images")
    p.add_argument("--gpg-key", required=True, metavar="FILE|env:VAR",
                   help="OpenPGP secret key (armored or binary)")
    p.add_argument("--gpg-passphrase", metavar="FILE|env:VAR",
                   help="passphrase of the OpenPGP key, if it has one")
    p.add_argument("--verity-key", metavar="FILE|env:VAR",
                   help="PEM RSA private key: turn plain images into verity-signed DDIs")
    p.add_argument("--verity-cert", type=Path, metavar="FILE",
                   help="PEM certificate of --verity-key")
    p.add_argument("--cache", type=Path, default=default_cache_dir(),
                   help="cache for the Debian root that runs systemd-repart (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_sign)
