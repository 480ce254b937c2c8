"""`wasm-sysexts verify DIR`: everything a host would check before trusting DIR's images.

- SHA256SUMS.gpg is a good signature over SHA256SUMS by a key in --keyring (real gpg, the same
  options as systemd-sysupdate);
- every file listed in SHA256SUMS exists and has that hash;
- every `*.raw` in DIR is listed (an unlisted image would be trusted by nobody, so it is an
  error: it means the directory is not what was signed);
- every DDI's verity tree matches its data and the root hash in its signature partition; with
  --verity-cert, that signature is by that certificate's key and every image must be such a DDI.

Each file gets one OK or FAILED line; any failure makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.ddi import check_ddi
from pipeline.errors import PipelineError
from pipeline.fetch import sha256_file
from pipeline.gpt import is_gpt
from pipeline.keys import load_cert
from pipeline.openpgp import verify_detached
from pipeline.sign import SIGNATURE
from pipeline.sums import SUMS, read_sums


@dataclass
class Check:
    file: str
    ok: bool
    detail: str


def _check_signature(directory: Path, keyring: Path) -> Check:
    sums, sig = directory / SUMS, directory / SIGNATURE
    for path in (sums, sig):
        if not path.is_file():
            return Check(SIGNATURE, False, f"{path.name} is missing")
    try:
        return Check(SIGNATURE, True, f"good signature by {verify_detached(sums, sig, keyring)}")
    except PipelineError as err:
        return Check(SIGNATURE, False, str(err))


def _check_file(directory: Path, name: str, digest: str, cert: Path | None) -> Check:
    path = directory / name
    if not path.is_file():
        return Check(name, False, f"listed in {SUMS} but missing")
    actual = sha256_file(path)
    if actual != digest:
        return Check(name, False, f"sha256 {actual[:16]}… differs from {SUMS} ({digest[:16]}…)")
    if not name.endswith(".raw"):
        return Check(name, True, "sha256 matches")
    if not is_gpt(path):
        if cert is not None:
            return Check(name, False, "not a verity-signed DDI (--verity-cert requires one)")
        return Check(name, True, "sha256 matches")
    try:
        ddi = check_ddi(path, cert)
    except PipelineError as err:
        return Check(name, False, str(err).removeprefix(f"{name}: "))
    trust = f"verity signature by {ddi.signed_by}" if ddi.signed_by else \
        "verity signature not checked (no --verity-cert)"
    return Check(name, True, f"sha256 matches; DDI {ddi.arch}, root hash {ddi.root_hash[:16]}…, "
                             f"{trust}")


def verify_directory(directory: Path, keyring: Path, cert: Path | None) -> list[Check]:
    if not directory.is_dir():
        raise PipelineError(f"{directory}: not a directory")
    if not keyring.is_file():
        raise PipelineError(f"--keyring {keyring}: not a file")
    if cert is not None:
        load_cert(cert, "--verity-cert")  # a bad cert is a usage error, not a failed image
    checks = [_check_signature(directory, keyring)]
    try:
        sums = read_sums(directory / SUMS)
    except PipelineError as err:
        checks.append(Check(SUMS, False, str(err).removeprefix(f"{directory / SUMS}: ")))
        sums = {}
    for name, digest in sorted(sums.items()):
        checks.append(_check_file(directory, name, digest, cert))
    for image in sorted(directory.glob("*.raw")):
        if image.name not in sums:
            checks.append(Check(image.name, False, f"not listed in {SUMS}"))
    return checks


def cmd_verify(args: argparse.Namespace) -> int:
    checks = verify_directory(args.directory, args.keyring, args.verity_cert)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "directory": str(args.directory),
                          "files": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{c.file}: OK ({c.detail})" if c.ok else f"{c.file}: FAILED: {c.detail}")
        failed = sum(not c.ok for c in checks)
        print(f"{args.directory}: " + (f"all {len(checks)} checks OK" if ok else
                                        f"FAILED ({failed} of {len(checks)} checks)"))
    return 0 if ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="check SHA256SUMS.gpg, hashes and verity signatures")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--keyring", type=Path, required=True,
                   help="OpenPGP public keyring (binary, like /etc/systemd/import-pubring.gpg)")
    p.add_argument("--verity-cert", type=Path, metavar="FILE",
                   help="PEM certificate that must have signed every image's verity root hash")
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.set_defaults(func=cmd_verify)
