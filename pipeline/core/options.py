"""Command-line options several steps share, defined once."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.vocab import Arch

MIRROR_ENV = "WASM_SYSEXTS_MIRROR"
CACHE_ENV = "WASM_SYSEXTS_CACHE"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get(CACHE_ENV, Path(base) / "wasm-sysexts"))


def add_recipes(parser: argparse.ArgumentParser) -> None:
    # Resolved after parsing (pipeline.cli), so a command given --recipes never needs the
    # packaged recipes.
    parser.add_argument(
        "--recipes",
        type=Path,
        default=None,
        help="directory of recipes (default: the repository's sysexts/)",
    )


def add_cache(parser: argparse.ArgumentParser, what: str = "downloads") -> None:
    parser.add_argument(
        "--cache",
        type=Path,
        default=default_cache_dir(),
        help=f"cache for {what} (default: %(default)s)",
    )


def add_mirror(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mirror",
        default=os.environ.get(MIRROR_ENV),
        help=f"fetch https://HOST/PATH from MIRROR/HOST/PATH (env {MIRROR_ENV})",
    )


def add_fetch(parser: argparse.ArgumentParser) -> None:
    from pipeline.build.extract import MAX_TOTAL_BYTES
    from pipeline.build.fetch import DEADLINE, MAX_DOWNLOAD

    add_mirror(parser)
    add_cache(parser)
    parser.add_argument("--offline", action="store_true", help="use only the cache")
    parser.add_argument(
        "--max-download",
        type=size,
        default=MAX_DOWNLOAD,
        metavar="SIZE",
        help="largest file a download may be, e.g. 512M (default 4G)",
    )
    parser.add_argument(
        "--download-timeout",
        type=float,
        default=DEADLINE,
        metavar="SECONDS",
        help="longest one file may take to download (default %(default).0f)",
    )
    parser.add_argument(
        "--max-unpack",
        type=size,
        default=MAX_TOTAL_BYTES,
        metavar="SIZE",
        help="most one input may unpack to, e.g. 2G (default 4G)",
    )


def size(value: str) -> int:
    """`512M`, `4G`, `1048576`: a byte count for argparse."""
    match = re.fullmatch(r"([0-9]+)([KMGT]?)", value.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size like 512M or 4G")
    return int(match[1]) << (10 * " KMGT".index(match[2] or " "))


def add_output(
    parser: argparse.ArgumentParser, json_help: str = "print results as JSON on stdout"
) -> None:
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_advisories(parser: argparse.ArgumentParser) -> None:
    """The advisory sources `audit` and `build` read (pipeline/core/osv.py)."""
    parser.add_argument(
        "--db",
        action="append",
        type=Path,
        default=[],
        metavar="DIR|ZIP",
        help="an OSV export (a directory of records or osv.dev's all.zip), repeatable",
    )
    parser.add_argument(
        "--advisories",
        type=Path,
        default=None,
        metavar="DIR",
        help="the project's advisory feed and waivers.yaml (default: the repository's advisories/)",
    )


def add_arches(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        action="append",
        type=Arch,
        choices=list(Arch),
        help=f"target arch, repeatable (default: {Arch.host()})",
    )


EPOCH_MAX = (1 << 32) - 1  # squashfs stores 32-bit times


def epoch() -> int:
    """SOURCE_DATE_EPOCH (default 0): the time stamped into every image."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not (value.isascii() and value.isdigit()) or int(value) > EPOCH_MAX:
        raise PipelineError(
            f"SOURCE_DATE_EPOCH: {value!r} is not a whole number of seconds from 0 to {EPOCH_MAX}"
        )
    return int(value)
