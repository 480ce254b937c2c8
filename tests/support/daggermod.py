"""Driving the Dagger module (.dagger/) as `dagger call` does, through its public functions.

The module's `source` is loaded exactly as the engine loads a `DefaultPath`/`Ignore` argument
(the context directory at that path, with the ignore patterns as excludes), read from the
annotation itself, so what the tests install is what a user's `dagger call` installs. The
upstream mirror is a host service, the way `--mirror-service tcp://localhost:PORT` passes one.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import dagger
from dagger import DefaultPath, Ignore, dag
from wasm_sysexts import main as module

from support.mirror import Mirror

ROOT = Path(__file__).resolve().parent.parent.parent
BASE_IMAGE = os.environ.get("DAGGER_ENGINE_BASE_IMAGE") or module.BASE_IMAGE
MIRROR_PORT = 8000
MIRROR = f"http://mirror:{MIRROR_PORT}"
T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]], log: Path | None = None) -> T:
    """`body()` inside one engine session (a `dagger call`); progress goes to `log`."""

    async def main() -> T:
        with open(log or os.devnull, "w") as out:
            async with dagger.connection(dagger.Config(log_output=out, timeout=None)):
                return await body()

    return anyio.run(main)


def annotated_source(root: Path = ROOT) -> dagger.Directory:
    """The module's `source` as the engine loads its default from the repository at `root`."""
    source = default_argument(module.WasmSysexts, "source", root)
    assert isinstance(source, dagger.Directory)
    return source


def default_argument(owner: object, name: str, root: Path = ROOT) -> dagger.Directory | dagger.File:
    """What the engine passes for argument `name` of `owner` (the class for constructor
    fields, else the function) when the caller omits it: its `DefaultPath` in the repository
    at `root`, less its `Ignore` patterns."""
    hint = typing.get_type_hints(owner, include_extras=True)[name]
    path = root / next(
        m for m in hint.__metadata__ if isinstance(m, DefaultPath)
    ).from_context.lstrip("/")
    if typing.get_args(hint)[0] is dagger.File:
        return dag.host().file(str(path))
    ignore = [p for m in hint.__metadata__ if isinstance(m, Ignore) for p in m.patterns]
    return dag.host().directory(str(path), exclude=ignore)


def host_mirror(mirror: Mirror) -> dagger.Service:
    """The host's test mirror as a host service (what `--mirror-service tcp://...` makes)."""
    port = int(mirror.url.rsplit(":", 1)[1])
    return dag.host().service([dagger.PortForward(backend=port, frontend=MIRROR_PORT)])


def module_instance(
    mirror: Mirror | None = None, registry: dagger.Service | None = None, root: Path = ROOT
) -> Any:
    """The module object. Typed Any: dagger-io types `@function` with
    `TypeVar("R", infer_variance=True)`, which mypy rejects (every decorated method then looks
    like `(*Any, **Any) -> R?`, not awaitable), and mypy does not apply `@object_type`'s
    dataclass transform (no keyword constructor). tests/test_dagger_module.py checks the
    functions' flags and types instead."""
    make: Callable[..., Any] = module.WasmSysexts
    return make(
        source=annotated_source(root),
        base_image=BASE_IMAGE,
        mirror_service=host_mirror(mirror) if mirror else None,
        registry_service=registry,
    )


def host_dir(path: Path) -> dagger.Directory:
    return dag.host().directory(str(path))


def started(directory: Path) -> dict[str, str]:
    """image file -> when its build ran (`started_on` of its metadata): a build answered from
    the engine's cache keeps the time of the run that executed it."""
    return {
        p.name.removesuffix(".json"): json.loads(p.read_text())["started_on"]
        for p in sorted(directory.glob("*.raw.json"))
    }
