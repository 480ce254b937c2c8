"""`build` and `build-all`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.build.fetch import Fetcher
from pipeline.build.orchestrate import Options, build_many, fetch_one, summary_table
from pipeline.core import options
from pipeline.core.artifacts import format_sums, merge_dirs
from pipeline.core.osv import Advisory, Package, open_database
from pipeline.core.resources import advisories_dir
from pipeline.core.vocab import BUILD_FORMATS, Arch, BuildStatus, ImageFormat
from pipeline.recipe.load import find, load_all
from pipeline.recipe.model import BuildFrom, Recipe


def fetcher(args: argparse.Namespace) -> Fetcher:
    return Fetcher(
        cache_dir=args.cache,
        mirror=args.mirror or None,
        offline=args.offline,
        max_bytes=args.max_download,
        deadline=args.download_timeout,
        max_unpack=args.max_unpack,
    )


def _jobs(args: argparse.Namespace, recipes: list[Recipe]) -> list[tuple[Recipe, str, Arch]]:
    """(recipe, version, arch) for each named recipe and `--arch`; `build X X` builds X once."""
    arches = list(dict.fromkeys(args.arch or [Arch.host()]))
    unique = list({r.name: r for r in recipes}.values())
    return [(r, args.version or r.version, a) for r in unique for a in arches]


def known_advisories(
    args: argparse.Namespace, wanted: list[tuple[Recipe, str]]
) -> dict[tuple[str, str], tuple[tuple[Package, Advisory], ...]]:
    """(name, version) -> the advisories of the packages each recipe version ships, from the
    project's feed and any --db (offline: a build does not wait on osv.dev)."""
    packages = {(r.name, v): r.upstream_packages(v) for r, v in wanted}
    feed = args.advisories if args.advisories is not None else advisories_dir()
    db = open_database((p for ps in packages.values() for p in ps), feed, args.db)
    return {key: tuple((p, a) for p in ps for a in db.matching(p)) for key, ps in packages.items()}


def _run_builds(args: argparse.Namespace, recipes: list[Recipe]) -> int:
    jobs = _jobs(args, recipes)
    opts = Options(
        out_dir=args.out,
        fmt=args.fmt,
        epoch=options.epoch(),
        build_from=args.build_from,
        advisories=known_advisories(args, [(r, v) for r, v, _ in jobs]),
        accepted=frozenset(args.accept_advisory),
        keep_work=args.keep_work,
    )
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


def cmd_fetch(args: argparse.Namespace) -> int:
    fetch = fetcher(args)
    for recipe, version, arch in _jobs(args, [find(args.recipes, n) for n in args.names]):
        done = fetch_one(recipe, version, arch, fetch, args.build_from)
        print(f"{recipe.name} {version} {arch}: {done}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    sums = merge_dirs(args.dirs, args.out)
    if args.json:
        print(json.dumps(sums, indent=2, sort_keys=True))
    else:
        print(format_sums(sums), end="")
    return 0


def _selection_args(parser: argparse.ArgumentParser) -> None:
    """Which version, arches and kind of build: the same for build and fetch."""
    parser.add_argument("--version", dest="version", help="recipe version (default: its version)")
    options.add_arches(parser)
    parser.add_argument(
        "--from",
        dest="build_from",
        type=BuildFrom,
        choices=list(BuildFrom),
        help="build from upstream's release or from pinned source (default: each recipe's)",
    )


def _build_args(parser: argparse.ArgumentParser) -> None:
    options.add_recipes(parser)
    options.add_fetch(parser)
    _selection_args(parser)
    parser.add_argument(
        "--format",
        dest="fmt",
        type=ImageFormat,
        choices=BUILD_FORMATS,
        default=ImageFormat.SQUASHFS,
    )
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    parser.add_argument("--jobs", type=int, default=2, help="images built at once")
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep each build's work tree (source, build directory) in OUT/<image>.work",
    )
    options.add_advisories(parser)
    parser.add_argument(
        "--accept-advisory",
        action="append",
        default=[],
        metavar="ID",
        help="build even though this critical advisory (id or alias) applies, repeatable",
    )
    options.add_output(parser)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build the images of the named recipes")
    p.add_argument("names", nargs="+", metavar="NAME")
    _build_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("build-all", help="build every recipe's image")
    _build_args(p)
    p.set_defaults(func=cmd_build_all)

    p = sub.add_parser(
        "fetch",
        help="download and verify what the named recipes' builds read "
        "by pin, into the cache, without building",
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    options.add_recipes(p)
    options.add_fetch(p)
    _selection_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser(
        "merge",
        help="gather the images of several build outputs into one new "
        "directory with one SHA256SUMS",
    )
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="build output directory")
    p.add_argument("--out", type=Path, required=True, help="new directory to write")
    options.add_output(p, "print the merged SHA256SUMS as a JSON object")
    p.set_defaults(func=cmd_merge)
