"""`publish static`, `publish oci` and `pull oci`: the CLI of the publishing step."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipeline.arch import ARCHES, host_arch
from pipeline.errors import PipelineError
from pipeline.log import Reporter


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file:
        try:
            return args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise PipelineError(f"--password-file {args.password_file}: cannot read: "
                                f"{err.strerror}") from None
    if not args.password_env:
        return None
    value = os.environ.get(args.password_env)
    if not value:
        raise PipelineError(f"--password-env: environment variable {args.password_env} is "
                            "empty or unset")
    return value


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure", action="store_true",
                        help="allow plain HTTP and unverified TLS to the registry")
    parser.add_argument("--username", help="registry user (default: Docker config auths)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password-env", metavar="VAR",
                        help="environment variable holding the registry password or token")
    secret.add_argument("--password-file", type=Path, metavar="FILE",
                        help="file holding the registry password or token")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def cmd_publish_static(args: argparse.Namespace) -> int:
    from pipeline.publish.static import Signer, publish_static

    signer = Signer(args.gpg_key, args.gpg_passphrase) if args.gpg_key else None
    index = publish_static(args.dir, args.dest, args.base_url, args.keep, signer,
                           args.keyring, Reporter(quiet=args.quiet))
    if args.json:
        print(json.dumps(index, indent=2, sort_keys=True))
    else:
        for name, entry in index["extensions"].items():
            versions = ", ".join(v["version"] for v in entry["versions"])
            print(f"{name}: {versions}")
    return 0


def cmd_publish_oci(args: argparse.Namespace) -> int:
    from pipeline.oci import Client, publish_oci

    client = Client(args.repository, insecure=args.insecure, username=args.username,
                    password=_password(args), reporter=Reporter(quiet=args.quiet))
    pushed = publish_oci(args.dir, client, tag_latest=args.tag_latest,
                         keyring=args.keyring)
    if args.json:
        print(json.dumps(pushed, indent=2))
    else:
        for ref in pushed:
            print(f"{ref['reference']}@{ref['digest']}")
    return 0


def cmd_pull_oci(args: argparse.Namespace) -> int:
    from pipeline.oci import Client, pull_oci, split_reference

    repository, reference = split_reference(args.ref)
    client = Client(repository, insecure=args.insecure, username=args.username,
                    password=_password(args), reporter=Reporter(quiet=args.quiet))
    path = pull_oci(client, reference, args.out, args.arch or host_arch(), args.keyring)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    publish = sub.add_parser("publish", help="publish signed images (static tree or OCI)")
    targets = publish.add_subparsers(dest="target", required=True, metavar="TARGET")

    p = targets.add_parser("static", help="merge images into a static sysupdate server tree")
    p.add_argument("dir", type=Path, metavar="DIR",
                   help="directory with *.raw images, SHA256SUMS and SHA256SUMS.gpg")
    p.add_argument("--dest", type=Path, required=True, metavar="PATH",
                   help="the served tree (a symlink to its current generation)")
    p.add_argument("--base-url", help="URL PATH is served at (default: the tree's index.json)")
    p.add_argument("--keep", type=int, default=5, metavar="N",
                   help="newest versions kept per extension and arch (0: all; default %(default)s)")
    p.add_argument("--gpg-key", metavar="FILE|env:VAR",
                   help="secret key that signs the merged SHA256SUMS")
    p.add_argument("--gpg-passphrase", metavar="FILE|env:VAR",
                   help="passphrase of the OpenPGP key, if it has one")
    p.add_argument("--keyring", type=Path, metavar="FILE",
                   help="public keyring verifying the input (default: --gpg-key's public key)")
    p.add_argument("--json", action="store_true", help="print index.json on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_publish_static)

    p = targets.add_parser("oci", help="push images as OCI artifacts with signature referrers")
    p.add_argument("dir", type=Path, metavar="DIR",
                   help="directory with *.raw images, SHA256SUMS and SHA256SUMS.gpg")
    p.add_argument("--repository", required=True, metavar="REGISTRY/NAMESPACE",
                   help="images go to REGISTRY/NAMESPACE/<name>")
    p.add_argument("--tag-latest", action="store_true", help="also move the tag latest")
    p.add_argument("--keyring", type=Path, metavar="FILE",
                   help="verify SHA256SUMS.gpg with this keyring before pushing")
    p.add_argument("--json", action="store_true", help="print pushed digests as JSON")
    _client_args(p)
    p.set_defaults(func=cmd_publish_oci)

    pull = sub.add_parser("pull", help="fetch a published image back and verify it")
    sources = pull.add_subparsers(dest="source", required=True, metavar="SOURCE")
    p = sources.add_parser("oci", help="pull REGISTRY/NAMESPACE/NAME:TAG (or @DIGEST)")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--out", type=Path, required=True, help="directory to write the image into")
    p.add_argument("--arch", choices=sorted(ARCHES),
                   help=f"arch to pick from an index (default: {host_arch()})")
    p.add_argument("--keyring", type=Path, required=True, metavar="FILE",
                   help="OpenPGP keyring the signature must verify against")
    _client_args(p)
    p.set_defaults(func=cmd_pull_oci)
