"""`build` and `build-all`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.build.fetch import Fetcher
from pipeline.build.orchestrate import Options, build_many, summary_table
from pipeline.core import options
from pipeline.core.vocab import BUILD_FORMATS, Arch, BuildStatus, ImageFormat
from pipeline.recipe.load import find, load_all
from pipeline.recipe.model import BuildFrom, Recipe


def fetcher(args: argparse.Namespace) -> Fetcher:
    return Fetcher(cache_dir=args.cache, mirror=args.mirror or None, offline=args.offline,
                   max_bytes=args.max_download, deadline=args.download_timeout,
                   max_unpack=args.max_unpack)


def _run_builds(args: argparse.Namespace, recipes: list[Recipe]) -> int:
    arches = list(dict.fromkeys(args.arch or [Arch.host()]))
    # `build X X` builds X once.
    unique = list({r.name: r for r in recipes}.values())
    jobs = [(r, args.version or r.version, a) for r in unique for a in arches]
    opts = Options(out_dir=args.out, fmt=args.fmt, epoch=options.epoch(),
                   build_from=args.build_from)
    results = build_many(jobs, fetcher(args), opts, args.jobs)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(summary_table(results), end="")
    return 1 if any(r.status is BuildStatus.FAILED for r in results) else 0


def cmd_build(args: argparse.Namespace) -> int:
    return _run_builds(args, [find(args.recipes, name) for name in args.names])


def cmd_build_all(args: argparse.Namespace) -> int:
    return _run_builds(args, load_all(args.recipes))


def _build_args(parser: argparse.ArgumentParser) -> None:
    options.add_recipes(parser)
    options.add_fetch(parser)
    parser.add_argument("--version", dest="version", help="recipe version (default: its version)")
    options.add_arches(parser)
    parser.add_argument("--format", dest="fmt", type=ImageFormat, choices=BUILD_FORMATS,
                        default=ImageFormat.SQUASHFS)
    parser.add_argument("--from", dest="build_from", type=BuildFrom, choices=list(BuildFrom),
                        help="build from upstream's release or from pinned source (default: "
                             "each recipe's)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    parser.add_argument("--jobs", type=int, default=2, help="images built at once")
    options.add_output(parser)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build the images of the named recipes")
    p.add_argument("names", nargs="+", metavar="NAME")
    _build_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("build-all", help="build every recipe's image")
    _build_args(p)
    p.set_defaults(func=cmd_build_all)
