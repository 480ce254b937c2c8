"""The `wasm-sysexts` command line: the interface the Dagger module and CI run.

Each pipeline step registers its own subcommands (`<step>/cli.py`, `register(subparsers)`);
this module assembles them, sets up logging and turns a `PipelineError` into one line per
problem on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from pipeline import __version__
from pipeline.audit import cli as audit_cli
from pipeline.build import cli as build_cli
from pipeline.core import log
from pipeline.core.errors import PipelineError
from pipeline.core.fs import os_error_line
from pipeline.publish import cli as publish_cli
from pipeline.recipe import cli as recipe_cli
from pipeline.recipe.load import default_recipes_dir
from pipeline.sign import cli as sign_cli
from pipeline.smoke import cli as smoke_cli

# In pipeline order: recipes, build, audit, sign/verify, smoke test, publish.
STEPS = (recipe_cli, build_cli, audit_cli, sign_cli, smoke_cli, publish_cli)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="wasm-sysexts",
        description=(
            "Build WebAssembly runtimes as systemd-sysext images for Flatcar Container Linux."
        ),
    )
    top.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for step in STEPS:
        step.register(sub)
    return top


class Terminated(Exception):
    """SIGTERM or SIGHUP: unwind (removing work files) and exit like Ctrl-C does."""


@contextmanager
def _signals_unwind() -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _absolute_paths(args: argparse.Namespace) -> None:
    """Every path option made absolute once, here: steps chdir into work trees (a Go or cargo
    build) and must still find `--out ./out` and `--cache cache`."""
    for key, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, key, value.absolute())
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            setattr(args, key, [v.absolute() for v in value])


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log.setup(quiet=getattr(args, "quiet", False))
    try:
        if "recipes" in vars(args) and args.recipes is None:
            args.recipes = default_recipes_dir()
        _absolute_paths(args)
        with _signals_unwind():
            return int(args.func(args))
    except PipelineError as err:
        for line in str(err).splitlines() or ["error"]:
            print(f"wasm-sysexts: error: {log.printable(line)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # flushed at exit
        return 141
    except OSError as err:  # a full or read-only disk, a missing directory...
        print(f"wasm-sysexts: error: {log.printable(os_error_line(err))}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as err:
        print(f"wasm-sysexts: interrupted ({err or 'SIGINT'})", file=sys.stderr)
        return 130
