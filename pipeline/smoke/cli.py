"""`smoke-test`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.core import options
from pipeline.core.errors import PipelineError
from pipeline.core.fs import write_atomic
from pipeline.core.vocab import Arch, Channel
from pipeline.smoke.local import try_image
from pipeline.smoke.payloads import HELLO_TEXT, hello_wasm_module
from pipeline.smoke.report import SmokeReport, render
from pipeline.smoke.run import GuestOS, Target, run


def cmd_smoke_test(args: argparse.Namespace) -> int:
    hello = args.hello_wasm.read_bytes() if args.hello_wasm else hello_wasm_module()
    target = Target(
        args.os,
        args.cache,
        args.channel,
        args.flatcar_version,
        args.mirror or None,
        args.flatcar_keyring,
    )
    try:
        report = run(
            args.dir,
            target,
            args.recipes,
            args.timeout,
            hello,
            args.hello_expect,
            only=args.image,
            arch=args.arch,
        )
    except PipelineError as err:
        # The report is asked for exactly when a run fails: it says why, then the error.
        if args.report:
            failed = SmokeReport(str(args.os), False, [], error=str(err))
            write_atomic(args.report, json.dumps(failed.to_json(), indent=2) + "\n")
        raise
    if args.report:
        write_atomic(args.report, json.dumps(report.to_json(), indent=2) + "\n")
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render(report), end="")
    return 0 if report.passed else 1


def cmd_try(args: argparse.Namespace) -> int:
    failed = 0
    for image in args.images:
        for result in try_image(image, args.recipes, args.cache):
            failed += not result.passed
            print(f"{'PASS' if result.passed else 'FAIL'}  {image.name}: {result.command}")
            for line in result.output.splitlines():
                print(f"      {line}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "try",
        help="run each image's smoke commands locally in seconds (a namespace, no VM)",
        description="Lay each image's /usr over a minimal Debian root of its arch in private "
        "namespaces and run its recipe's smoke commands there (qemu-user for the other "
        "arch). smoke-test, which boots a VM, stays the real gate.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="built *.raw images")
    options.add_recipes(p)
    options.add_cache(p, "the Debian roots")
    p.set_defaults(func=cmd_try)

    p = sub.add_parser(
        "smoke-test",
        help="boot one VM with every image of DIR and run each recipe's smoke commands",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="directory of built images")
    p.add_argument(
        "--os",
        type=GuestOS,
        choices=list(GuestOS),
        default=GuestOS.FLATCAR,
        help="VM to boot: official Flatcar QEMU image, or the Debian trixie "
        "reference VM (default: %(default)s)",
    )
    p.add_argument("--channel", type=Channel, choices=list(Channel), default=Channel.STABLE)
    p.add_argument(
        "--flatcar-version",
        default="current",
        help="Flatcar release, e.g. 4593.2.5 (default: the channel's current)",
    )
    p.add_argument(
        "--flatcar-keyring",
        type=Path,
        help="OpenPGP key that signs Flatcar releases (default: the repository's "
        "keys/flatcar-image-signing.asc)",
    )
    options.add_mirror(p)
    p.add_argument("--image", type=Path, help="test only this image of DIR")
    p.add_argument(
        "--arch",
        type=Arch,
        choices=list(Arch),
        help="boot only this arch's images (default: a VM for each arch in DIR)",
    )
    p.add_argument(
        "--report", type=Path, metavar="FILE", help="also write the report as JSON to FILE"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds before the VM is killed (default: %(default)s)",
    )
    options.add_recipes(p)
    options.add_cache(p, "VM images")
    p.add_argument(
        "--hello-wasm",
        type=Path,
        help="WASI module used as {hello_wasm} (default: a built-in hello world)",
    )
    p.add_argument(
        "--hello-expect",
        default=HELLO_TEXT,
        help="text {hello_wasm} must print (default: %(default)r)",
    )
    options.add_output(p, "print the report as JSON on stdout")
    p.set_defaults(func=cmd_smoke_test)
