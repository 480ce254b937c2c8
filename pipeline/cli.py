"""The `wasm-sysexts` command line: the interface the Dagger module and CI run.

Core commands live here; later pipeline steps (sign, verify, smoke-test, publish) each
register their own subcommands from their module through `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline import __version__
from pipeline.arch import ARCHES, host_arch
from pipeline.build import Options, build_many, summary_table
from pipeline.errors import PipelineError
from pipeline.fetch import MIRROR_ENV, Fetcher, default_cache_dir
from pipeline.image import FORMATS
from pipeline.lock import lock
from pipeline.log import Reporter
from pipeline.recipe import Recipe, default_recipes_dir, find, load_all
from pipeline.scaffold import scaffold

# Modules that add subcommands of later pipeline steps: each has register(subparsers).
STEP_MODULES: list[str] = ["pipeline.publish", "pipeline.keys", "pipeline.sign",
                           "pipeline.verify", "pipeline.smoke"]


def _epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not value.isdigit():
        raise PipelineError(f"SOURCE_DATE_EPOCH: {value!r} is not a whole number of seconds")
    return int(value)


def add_recipes_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipes", type=Path, default=default_recipes_dir(),
                        help="directory of recipes (default: the repository's sysexts/)")


def add_fetch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mirror", default=os.environ.get(MIRROR_ENV),
                        help=f"fetch https://HOST/PATH from MIRROR/HOST/PATH (env {MIRROR_ENV})")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(),
                        help="download cache directory (default: %(default)s)")
    parser.add_argument("--offline", action="store_true", help="use only the cache")


def _build_args(parser: argparse.ArgumentParser) -> None:
    add_recipes_arg(parser)
    add_fetch_args(parser)
    parser.add_argument("--version", dest="version", help="recipe version (default: its version)")
    parser.add_argument("--arch", action="append", choices=sorted(ARCHES),
                        help=f"target arch, repeatable (default: {host_arch()})")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="squashfs")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    parser.add_argument("--jobs", type=int, default=2, help="images built at once")
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _fetcher(args: argparse.Namespace, reporter: Reporter) -> Fetcher:
    return Fetcher(cache_dir=args.cache, reporter=reporter, mirror=args.mirror or None,
                   offline=args.offline)


def _run_builds(args: argparse.Namespace, recipes: list[Recipe]) -> int:
    reporter = Reporter(quiet=args.quiet)
    arches = args.arch or [host_arch()]
    jobs = [(r, args.version or r.version, a) for r in recipes for a in arches]
    opts = Options(out_dir=args.out, fmt=args.fmt, epoch=_epoch())
    results = build_many(jobs, _fetcher(args, reporter), opts, reporter, args.jobs)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(summary_table(results), end="")
    return 1 if any(r.status == "failed" for r in results) else 0


def cmd_build(args: argparse.Namespace) -> int:
    return _run_builds(args, [find(args.recipes, name) for name in args.names])


def cmd_build_all(args: argparse.Namespace) -> int:
    return _run_builds(args, load_all(args.recipes))


def cmd_list(args: argparse.Namespace) -> int:
    recipes = load_all(args.recipes)
    rows = [{
        "name": r.name, "version": r.version, "summary": r.summary, "license": r.license,
        "homepage": r.homepage, "versions": sorted(r.versions),
        "arches": {a: ("available" if not r.unavailable(r.version, a) else
                       f"unavailable: {r.unavailable(r.version, a)}")
                   for a in sorted(r.versions[r.version])},
        "pinned": all(i.sha256 for a in r.versions[r.version] if not r.unavailable(r.version, a)
                      for i in r.inputs(r.version, a)),
    } for r in recipes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        arches = ",".join(a for a, s in row["arches"].items() if s == "available")
        pinned = "" if row["pinned"] else "  (unpinned: run lock)"
        print(f"{row['name']:<{width}}  {row['version']:<10}  {arches:<13}  {row['summary']}"
              f"{pinned}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    reporter = Reporter(quiet=args.quiet)
    fetcher = _fetcher(args, reporter)
    for name in args.names:
        recipe = find(args.recipes, name)
        for line in lock(recipe, args.version or recipe.version, fetcher, reporter):
            print(f"{name}: {line}")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    path = scaffold(args.recipes, args.name)
    print(f"wrote {path}; fill it in, then run: wasm-sysexts lock {args.name}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="wasm-sysexts", description=(
        "Build WebAssembly runtimes as systemd-sysext images for Flatcar Container Linux."))
    top.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list recipes")
    add_recipes_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("build", help="build the images of the named recipes")
    p.add_argument("names", nargs="+", metavar="NAME")
    _build_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("build-all", help="build every recipe's image")
    _build_args(p)
    p.set_defaults(func=cmd_build_all)

    p = sub.add_parser("lock", help="download assets and pin their sha256 in the recipe")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--version", dest="version", help="version to pin (default: the recipe's)")
    p.add_argument("--quiet", action="store_true")
    add_recipes_arg(p)
    add_fetch_args(p)
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser("new", help="scaffold a commented recipe")
    p.add_argument("name", metavar="NAME")
    add_recipes_arg(p)
    p.set_defaults(func=cmd_new)

    for module_name in STEP_MODULES:
        module = importlib.import_module(module_name)
        register: Callable[[argparse._SubParsersAction], None] = module.register
        register(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PipelineError as err:
        for line in str(err).splitlines() or ["error"]:
            print(f"wasm-sysexts: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wasm-sysexts: interrupted", file=sys.stderr)
        return 130
