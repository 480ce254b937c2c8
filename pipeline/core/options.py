"""Command-line options several steps share, defined once."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.vocab import Arch

MIRROR_ENV = "WASM_SYSEXTS_MIRROR"
CACHE_ENV = "WASM_SYSEXTS_CACHE"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get(CACHE_ENV, Path(base) / "wasm-sysexts"))


def add_recipes(parser: argparse.ArgumentParser) -> None:
    from pipeline.recipe.load import default_recipes_dir

    parser.add_argument("--recipes", type=Path, default=default_recipes_dir(),
                        help="directory of recipes (default: the repository's sysexts/)")


def add_cache(parser: argparse.ArgumentParser, what: str = "downloads") -> None:
    parser.add_argument("--cache", type=Path, default=default_cache_dir(),
                        help=f"cache for {what} (default: %(default)s)")


def add_mirror(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mirror", default=os.environ.get(MIRROR_ENV),
                        help=f"fetch https://HOST/PATH from MIRROR/HOST/PATH (env {MIRROR_ENV})")


def add_fetch(parser: argparse.ArgumentParser) -> None:
    add_mirror(parser)
    add_cache(parser)
    parser.add_argument("--offline", action="store_true", help="use only the cache")


def add_output(parser: argparse.ArgumentParser, json_help: str = "print results as JSON on "
               "stdout") -> None:
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_arches(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", action="append", type=Arch, choices=list(Arch),
                        help=f"target arch, repeatable (default: {Arch.host()})")


def epoch() -> int:
    """SOURCE_DATE_EPOCH (default 0): the time stamped into every image."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not value.isdigit():
        raise PipelineError(f"SOURCE_DATE_EPOCH: {value!r} is not a whole number of seconds")
    return int(value)
