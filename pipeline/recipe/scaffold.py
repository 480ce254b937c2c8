"""`new NAME`: write a commented recipe skeleton for a maintainer to fill in."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.fs import write_atomic
from pipeline.core.vocab import name_problem

TEMPLATE = """\
# Recipe for {name}: see docs/recipes.md for every field.
name: {name}
summary: TODO one line saying what {name} is
homepage: https://example.org/{name}
license: LicenseRef-TODO          # the upstream SPDX expression, e.g. Apache-2.0
version: "0.0.0"                    # the version build-all builds
# checksums: "https://github.com/OWNER/REPO/releases/download/v{{version}}/checksums.txt"
versions:
  "0.0.0":
    # sha256: null until `wasm-sysexts lock {name}` downloads and pins it.
    x86-64: {{url: "https://github.com/OWNER/REPO/releases/download/v0.0.0/{name}-x86_64.tar.gz", sha256: null}}
    arm64: {{url: "https://github.com/OWNER/REPO/releases/download/v0.0.0/{name}-aarch64.tar.gz", sha256: null}}
    # or, where upstream has no build: arm64: {{unavailable: "why"}}
install:                             # archive member (path or glob) -> path under /usr or /opt
  - {{from: "{name}-{{uarch}}/{name}", to: /usr/bin/{name}, mode: "0755"}}
smoke:                               # run on a booted host; {{hello_wasm}} is a WASI hello world
  - "{name} --version"
"""


def scaffold(recipes_dir: Path, name: str) -> Path:
    problem = name_problem(name)
    if problem:
        raise PipelineError(f"NAME: {problem}")
    path = recipes_dir / f"{name}.yaml"
    if path.exists():
        raise PipelineError(f"{path}: already exists")
    recipes_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, TEMPLATE.format(name=name))
    return path
