"""`list`, `lock` and `new`."""

from __future__ import annotations

import argparse
import json

from pipeline.build.cli import fetcher
from pipeline.core import options
from pipeline.core.vocab import Arch
from pipeline.recipe.load import find, load_all
from pipeline.recipe.lock import lock, lock_source
from pipeline.recipe.model import BuildFrom, Recipe
from pipeline.recipe.scaffold import scaffold


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
    if args.json:
        print(json.dumps([{
            "name": r.name, "version": r.version, "summary": r.summary, "license": r.license,
            "homepage": r.homepage, "versions": r.all_versions, "arches": _arches(r),
            "from": str(r.builds_from(r.version)),
            "source": str(r.source.kind) if r.source else None,
            "pinned": r.pinned(r.version),
        } for r in recipes], indent=2))
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
        pin = lock_source if recipe.builds_from(version, args.build_from) is BuildFrom.SOURCE \
            else lock
        for line in pin(recipe, version, fetcher(args)):
            print(f"{name}: {line}")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    path = scaffold(args.recipes, args.name)
    print(f"wrote {path}; fill it in, then run: wasm-sysexts lock {args.name}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="list recipes")
    options.add_recipes(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("lock", help="download assets and pin their sha256 in the recipe")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--version", dest="version", help="version to pin (default: the recipe's)")
    p.add_argument("--from", dest="build_from", type=BuildFrom, choices=list(BuildFrom),
                   help="pin the release assets or the source (default: the recipe's default)")
    p.add_argument("--quiet", action="store_true")
    options.add_recipes(p)
    options.add_fetch(p)
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser("new", help="scaffold a commented recipe")
    p.add_argument("name", metavar="NAME")
    options.add_recipes(p)
    p.set_defaults(func=cmd_new)
