"""`publish static`, `publish oci` and `pull oci`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.core import options, secret
from pipeline.core.errors import PipelineError
from pipeline.core.fs import os_problem, write_atomic
from pipeline.core.secret import SecretSpec
from pipeline.core.vocab import Arch
from pipeline.publish.oci.client import Client, split_reference
from pipeline.publish.oci.layout import publish_oci
from pipeline.publish.oci.pull import pull_oci
from pipeline.publish.static import INDEX, compose, publish_static
from pipeline.sign.cli import add_signer, signer
from pipeline.sign.keys import VERITY_CERT


def _password(args: argparse.Namespace) -> SecretSpec | None:
    if args.password_env:
        return SecretSpec.env_var(args.password_env, "--password-env")
    if args.password_file:
        return SecretSpec(option="--password-file", file=args.password_file)
    spec: SecretSpec | None = args.password
    return spec


def _client(args: argparse.Namespace, repository: str) -> Client:
    spec = _password(args)
    return Client(
        repository,
        insecure=args.insecure,
        username=args.username,
        password=spec.line().decode() if spec else None,
    )


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP and unverified TLS to the registry",
    )
    parser.add_argument("--username", help="registry user (default: Docker config auths)")
    given = parser.add_mutually_exclusive_group()
    given.add_argument(
        "--password",
        metavar="FILE|env:VAR",
        action=secret.option("--password"),
        help="registry password or token",
    )
    given.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the registry password or token",
    )
    given.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file holding the registry password or token",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


DEFAULT_VERITY_CERT = Path("keys") / VERITY_CERT  # the repository's, from the checkout


def cmd_publish_static(args: argparse.Namespace) -> int:
    certs: list[Path] = args.verity_cert or []
    if not certs and not args.allow_unsigned:
        if not DEFAULT_VERITY_CERT.is_file():
            raise PipelineError(
                f"{DEFAULT_VERITY_CERT}: missing (the default --verity-cert); pass "
                "--verity-cert FILE, or --allow-unsigned to publish images hosts do not verify"
            )
        certs = [DEFAULT_VERITY_CERT]
    index = publish_static(
        args.dir,
        args.dest,
        args.base_url,
        args.keep,
        signer(args),
        args.keyring,
        certs,
        args.allow_unsigned,
        args.cache if args.trust_canary else None,
    )
    if args.json:
        print(json.dumps(index, indent=2, sort_keys=True))
    else:
        for name, entry in index["extensions"].items():
            print(f"{name}: {', '.join(v['version'] for v in entry['versions'])}")
    return 0


def cmd_publish_butane(args: argparse.Namespace) -> int:
    tree: Path = args.tree
    index_path = tree / INDEX
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{index_path}: missing (not a tree publish static wrote)") from None
    except (OSError, ValueError) as err:
        raise PipelineError(f"{index_path}: cannot read as JSON: {err}") from None

    def read(rel: str) -> bytes:
        if not (tree / rel).resolve().is_relative_to(tree.resolve()):
            raise PipelineError(f"{index_path}: names {rel!r}, which is outside the tree")
        try:
            return (tree / rel).read_bytes()
        except OSError as err:
            raise PipelineError(f"{tree / rel}: {os_problem(err)}") from None

    try:
        text = compose(index, read, args.names, args.arch, str(index_path))
    except (KeyError, IndexError, TypeError, AttributeError):
        raise PipelineError(f"{index_path}: not an index publish static wrote") from None
    if args.out:
        write_atomic(args.out, text)
    else:
        print(text, end="")
    return 0


def cmd_publish_oci(args: argparse.Namespace) -> int:
    pushed = publish_oci(
        args.dir, _client(args, args.repository), tag_latest=args.tag_latest, keyring=args.keyring
    )
    if args.json:
        print(json.dumps(pushed, indent=2))
    else:
        for ref in pushed:
            print(f"{ref['reference']}@{ref['digest']}")
    return 0


def cmd_pull_oci(args: argparse.Namespace) -> int:
    repository, reference = split_reference(args.ref)
    path = pull_oci(
        _client(args, repository), reference, args.out, args.arch or Arch.host(), args.keyring
    )
    print(path)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    publish = sub.add_parser("publish", help="publish signed images (static tree or OCI)")
    targets = publish.add_subparsers(dest="target", required=True, metavar="TARGET")

    p = targets.add_parser("static", help="merge images into a static sysupdate server tree")
    p.add_argument(
        "dir",
        type=Path,
        metavar="DIR",
        help="directory with *.raw images, SHA256SUMS and SHA256SUMS.gpg",
    )
    p.add_argument(
        "--dest",
        type=Path,
        required=True,
        metavar="PATH",
        help="the served tree (a symlink to its current generation)",
    )
    p.add_argument("--base-url", help="URL PATH is served at (default: the tree's index.json)")
    p.add_argument(
        "--keep",
        type=int,
        default=5,
        metavar="N",
        help="newest versions kept per extension and arch (0: all; default %(default)s)",
    )
    add_signer(p, False, "secret key that signs the merged SHA256SUMS")
    p.add_argument(
        "--keyring",
        type=Path,
        metavar="FILE",
        help="public keyring verifying the input (default: --gpg-key's public key)",
    )
    p.add_argument(
        "--verity-cert",
        type=Path,
        action="append",
        metavar="FILE",
        help="PEM certificate hosts verify the images with: every image must be a DDI it "
        f"signed (repeat it to trust an old and a new one; default {DEFAULT_VERITY_CERT})",
    )
    p.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="publish images without verity signatures: the Butane configs then install no "
        "certificate and no image policy",
    )
    p.add_argument(
        "--trust-canary",
        action="store_true",
        help="add an image signed by a throwaway key, and a unit failing on any host that "
        "merges it (docs/publishing.md)",
    )
    options.add_cache(p, "the Debian root that runs systemd-repart (--trust-canary)")
    options.add_output(p, "print index.json on stdout")
    p.set_defaults(func=cmd_publish_static)

    p = targets.add_parser(
        "butane", help="write the Butane config for a host running some of a tree's extensions"
    )
    p.add_argument("tree", type=Path, metavar="TREE", help="a tree publish static wrote (--dest)")
    p.add_argument("names", nargs="*", metavar="NAME", help="extensions (default: all)")
    p.add_argument(
        "--arch",
        type=Arch,
        choices=list(Arch),
        help="the host's arch (default: x86-64 where published, else arm64)",
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=cmd_publish_butane)

    p = targets.add_parser("oci", help="push images as OCI artifacts with signature referrers")
    p.add_argument(
        "dir",
        type=Path,
        metavar="DIR",
        help="directory with *.raw images, SHA256SUMS and SHA256SUMS.gpg",
    )
    p.add_argument(
        "--repository",
        required=True,
        metavar="REGISTRY/NAMESPACE",
        help="images go to REGISTRY/NAMESPACE/<name>",
    )
    p.add_argument("--tag-latest", action="store_true", help="also move the tag latest")
    p.add_argument(
        "--keyring",
        type=Path,
        metavar="FILE",
        help="verify SHA256SUMS.gpg with this keyring before pushing",
    )
    p.add_argument("--json", action="store_true", help="print pushed digests as JSON")
    _client_args(p)
    p.set_defaults(func=cmd_publish_oci)

    pull = sub.add_parser("pull", help="fetch a published image back and verify it")
    sources = pull.add_subparsers(dest="source", required=True, metavar="SOURCE")
    p = sources.add_parser("oci", help="pull REGISTRY/NAMESPACE/NAME:TAG (or @DIGEST)")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--out", type=Path, required=True, help="directory to write the image into")
    p.add_argument(
        "--arch",
        type=Arch,
        choices=list(Arch),
        help=f"arch to pick from an index (default: {Arch.host()})",
    )
    p.add_argument(
        "--keyring",
        type=Path,
        required=True,
        metavar="FILE",
        help="OpenPGP keyring the signature must verify against",
    )
    _client_args(p)
    p.set_defaults(func=cmd_pull_oci)
