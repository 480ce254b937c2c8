"""`list`, `lock`, `new`, `outdated` and `bump`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from pipeline.build.cli import fetcher
from pipeline.core import log, options
from pipeline.core.osv import Database, Package, fixed_by, open_database
from pipeline.core.resources import advisories_dir
from pipeline.core.vocab import Arch
from pipeline.recipe.bump import Status, bump, outdated
from pipeline.recipe.load import find, load_all
from pipeline.recipe.lock import lock, lock_source
from pipeline.recipe.model import BuildFrom, Recipe
from pipeline.recipe.scaffold import from_crate, placeholders, scaffold
from pipeline.recipe.upstream import GITHUB_API, GITHUB_API_ENV, TOKEN_ENV, Client


def _arches(recipe: Recipe) -> dict[str, str]:
    """arch -> "available" or "unavailable: <why>", for the default version."""
    states = {}
    release = recipe.versions.get(recipe.version, {})
    for arch in Arch:
        if recipe.builds_from(recipe.version) is BuildFrom.RELEASE and arch not in release:
            continue
        why = recipe.unavailable(recipe.version, arch)
        states[str(arch)] = f"unavailable: {why}" if why else "available"
    return states


def cmd_list(args: argparse.Namespace) -> int:
    recipes = load_all(args.recipes)
    if args.check:  # CI: no default version may build from an unpinned input
        unpinned = [line for r in recipes for line in r.unpinned_default()]
        # Advisories are matched by package: a recipe that names none could never be flagged.
        unnamed = [
            f"{r.path}: package: missing (the upstream purl advisories are matched against)"
            for r in recipes
            if not r.packages
        ] + [line for r in recipes for line in placeholders(r)]
        for line in unpinned + unnamed:
            print(line, file=sys.stderr)
        summary = [f"{len(unpinned)} unpinned default input(s)"] if unpinned else []
        summary += [f"{len(unnamed)} unfinished field(s)"] if unnamed else []
        print(
            f"{len(recipes)} recipe(s): "
            + (", ".join(summary) or "every default version pinned and its package named")
        )
        return 1 if unpinned or unnamed else 0
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "version": r.version,
                        "summary": r.summary,
                        "license": r.license,
                        "homepage": r.homepage,
                        "packages": list(r.purls(r.version)),
                        "versions": r.all_versions,
                        "arches": _arches(r),
                        "from": str(r.builds_from(r.version)),
                        "source": str(r.source.kind) if r.source else None,
                        "pinned": r.pinned(r.version),
                    }
                    for r in recipes
                ],
                indent=2,
            )
        )
        return 0
    width = max((len(r.name) for r in recipes), default=4)
    for r in recipes:
        arches = ",".join(a for a, state in _arches(r).items() if state == "available")
        pinned = "" if r.pinned(r.version) else "  (unpinned: run lock)"
        print(f"{r.name:<{width}}  {r.version:<10}  {arches:<13}  {r.summary}{pinned}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    for name in args.names:
        recipe = find(args.recipes, name)
        version = args.version or recipe.version
        pin = (
            lock_source
            if recipe.builds_from(version, args.build_from) is BuildFrom.SOURCE
            else lock
        )
        for line in pin(recipe, version, fetcher(args)):
            print(f"{name}: {line}")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    if args.crate:
        path = from_crate(args.recipes, args.name, args.crate, fetcher(args))
        print(
            f"wrote {path}: pinned from crates.io; review it, then run: wasm-sysexts build "
            f"{args.name} --recipes {args.recipes}"
        )
        return 0
    path = scaffold(args.recipes, args.name)
    print(f"wrote {path}; fill it in, then run: wasm-sysexts lock {args.name}")
    return 0


def cmd_outdated(args: argparse.Namespace) -> int:
    recipes = (
        [find(args.recipes, n) for n in dict.fromkeys(args.names)]
        if args.names
        else load_all(args.recipes)
    )
    client = Client.from_env(args.github_api, args.mirror)
    statuses = _with_fixes(args, recipes, [outdated(r, client) for r in recipes])
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
        return 0
    rows = [("NAME", "VERSION", "NEWEST", "NEWER", "FIXES", "UPSTREAM")]
    for s in statuses:
        shown = list(s.newer[:3]) + ([f"+{len(s.newer) - 3}"] if len(s.newer) > 3 else [])
        where = (
            f"{s.upstream.kind} {s.upstream.url}"
            if s.upstream
            else "unknown: cannot derive it from the recipe's URLs"
        )
        fixes = ",".join(s.fixes.get(s.newest or "", [])) or "-"
        rows.append((s.name, s.version, s.newest or "-", ",".join(shown) or "-", fixes, where))
    print(log.table(rows), end="")
    for s in statuses:
        if s.problem:
            print(f"{s.name}: {s.problem}")
    return 0


def _advisories(args: argparse.Namespace, packages: list[Package]) -> Database:
    feed = args.advisories if args.advisories is not None else advisories_dir()
    return open_database(packages, feed, args.db)


def _with_fixes(
    args: argparse.Namespace, recipes: list[Recipe], statuses: list[Status]
) -> list[Status]:
    """Each status with the known advisories of its default that each newer release fixes."""
    by_name = {r.name: r for r in recipes}
    versions = {(s.name, v) for s in statuses for v in (s.version, *s.newer)}
    db = _advisories(args, [p for n, v in versions for p in by_name[n].upstream_packages(v)])
    return [
        replace(
            s,
            fixes={
                v: fixed
                for v in s.newer
                if (
                    fixed := fixed_by(
                        db,
                        by_name[s.name].upstream_packages(s.version),
                        by_name[s.name].upstream_packages(v),
                    )
                )
            },
        )
        for s in statuses
    ]


def cmd_bump(args: argparse.Namespace) -> int:
    recipe = find(args.recipes, args.name)
    client = Client.from_env(args.github_api, args.mirror)
    report = bump(recipe, client, fetcher(args), args.to)
    before, after = (
        recipe.upstream_packages(report.previous),
        recipe.upstream_packages(report.version),
    )
    report.fixes = fixed_by(_advisories(args, [*before, *after]), before, after)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(f"{report.name}: {line}")
    return 0


def _add_upstream(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--github-api",
        default=os.environ.get(GITHUB_API_ENV),
        metavar="URL",
        help=f"GitHub REST API base (env {GITHUB_API_ENV}, default {GITHUB_API}); "
        f"a token in {TOKEN_ENV} is sent to it",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="list recipes")
    options.add_recipes(p)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--check",
        action="store_true",
        help="fail when a default version has an unpinned input (CI runs this)",
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("lock", help="download assets and pin their sha256 in the recipe")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--version", dest="version", help="version to pin (default: the recipe's)")
    p.add_argument(
        "--from",
        dest="build_from",
        type=BuildFrom,
        choices=list(BuildFrom),
        help="pin the release assets or the source (default: the recipe's default)",
    )
    p.add_argument("--quiet", action="store_true")
    options.add_recipes(p)
    options.add_fetch(p)
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser(
        "new", help="scaffold a commented recipe, or write a pinned one from crates.io"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--crate",
        metavar="CRATE[@V]",
        help="a crates.io crate with binaries (default version: the newest not yanked)",
    )
    options.add_recipes(p)
    options.add_fetch(p)
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("outdated", help="list upstream releases newer than each recipe's version")
    p.add_argument("names", nargs="*", metavar="NAME", help="recipes to check (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    options.add_recipes(p)
    options.add_mirror(p)
    options.add_advisories(p)
    _add_upstream(p)
    p.set_defaults(func=cmd_outdated)

    p = sub.add_parser(
        "bump", help="add an upstream release to a recipe, lock it and make it the default"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", metavar="V", help="the version (default: upstream's newest release)")
    options.add_recipes(p)
    options.add_fetch(p)
    options.add_advisories(p)
    _add_upstream(p)
    options.add_output(p, "print the report as JSON on stdout")
    p.set_defaults(func=cmd_bump)
