"""`new NAME`: a commented recipe skeleton to fill in, or, with `--crate CRATE[@V]`, a complete
pinned recipe written from the registry's own metadata.

The skeleton's placeholders (TODO, the .invalid homepage, OWNER/REPO) fail `list --check`, so
an unfinished recipe cannot pass CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.build import crates
from pipeline.build.fetch import Fetcher
from pipeline.build.orchestrate import unpacked
from pipeline.build.source import top_dir
from pipeline.core.errors import PipelineError
from pipeline.core.fs import sha256_file, write_atomic
from pipeline.core.vocab import homepage_problem, license_problem, name_problem
from pipeline.recipe.model import CRATE_NAME_RE, CRATE_URL, Recipe

PLACEHOLDER_RE = re.compile(r"\bTODO\b|OWNER/REPO|\.invalid\b")

TEMPLATE = """\
# Recipe for {name}: see docs/recipes.md for every field.
name: {name}
summary: TODO one line saying what {name} is
homepage: https://TODO.invalid/{name}
license: LicenseRef-TODO          # the upstream SPDX expression, e.g. Apache-2.0
package: "pkg:github/OWNER/REPO@v{{version}}"   # the upstream package advisories name
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
    path = _new_path(recipes_dir, name)
    write_atomic(path, TEMPLATE.format(name=name))
    return path


def placeholders(recipe: Recipe) -> list[str]:
    """One line per field still holding a `new` placeholder."""
    fields = {
        "summary": recipe.summary,
        "homepage": recipe.homepage,
        "license": recipe.license,
        "package": " ".join(recipe.packages),
        "versions": " ".join(
            i.url
            for arches in recipe.versions.values()
            for entry in arches.values()
            if not isinstance(entry, str)
            for i in entry
        ),
    }
    return [
        f"{recipe.path}: {field}: still the placeholder `new` wrote ({match.group(0)})"
        for field, value in fields.items()
        if (match := PLACEHOLDER_RE.search(value))
    ]


def from_crate(recipes_dir: Path, name: str, spec: str, fetcher: Fetcher) -> Path:
    """Recipe NAME for crates.io crate `spec` (CRATE or CRATE@VERSION, default: the newest
    version not yanked): the .crate checked against the index's checksum, its own Cargo.lock
    pinned, license, homepage, summary and binaries read from its manifest."""
    path = _new_path(recipes_dir, name)
    crate, _, version = spec.partition("@")
    if not CRATE_NAME_RE.match(crate):
        raise PipelineError(f"--crate: {crate!r} is not a crates.io crate name")
    records = crates.index(fetcher, crate)
    version = version or crates.newest(records, crate)
    entry = crates.entry(records, crate, version)
    url = CRATE_URL.format(crate=crate).format(version=version)
    digest = str(entry.get("cksum"))
    archive = fetcher.fetch(url, digest)  # refused unless the bytes match the index
    tree = top_dir(unpacked(fetcher, archive, digest, url))
    lock = tree / "Cargo.lock"
    if not lock.is_file():
        raise PipelineError(
            f"--crate {crate}@{version}: the crate carries no Cargo.lock, so it cannot be "
            "built --locked with what its authors tested"
        )
    built = crates.binaries(tree)
    if not built:
        raise PipelineError(f"--crate {crate}@{version}: the crate builds no binary")
    meta = crates.package(tree)
    license_ = re.sub(r"\s*/\s*", " OR ", str(meta.get("license") or "LicenseRef-TODO"))
    if license_problem(license_):
        license_ = "LicenseRef-TODO"
    homepage = str(meta.get("homepage") or meta.get("repository") or "")
    if not homepage or homepage_problem(homepage):
        homepage = f"https://crates.io/crates/{crate}"
    summary = " ".join(str(meta.get("description") or f"{crate} from crates.io").split())
    recipe = {
        "name": name,
        "summary": summary[:120],
        "homepage": homepage,
        "license": license_,
        "package": f"pkg:cargo/{crate}@{{version}}",
        "version": version,
        "source": {
            "kind": "cargo",
            "crate": crate,
            "versions": {version: _OneLine(sha256=digest, lock_sha256=sha256_file(lock))},
        },
        "install": [_OneLine({"from": b, "to": f"/usr/bin/{b}", "mode": "0755"}) for b in built],
        "smoke": [f"{built[0]} --version"],
    }
    needs = crates.rust_version(tree)
    header = (
        f"# {name}: crates.io crate {crate} {version}, written by `wasm-sysexts new --crate`.\n"
        "# The .crate is pinned by the sha256 the crates.io index records; it is built --locked\n"
        "# with its own Cargo.lock (lock_sha256). Review the smoke commands; docs/recipes.md.\n"
        + (f"# Needs Rust >= {needs} (the crate's rust-version).\n" if needs else "")
    )
    body = yaml.dump(
        recipe,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        width=200,
        allow_unicode=True,
    )
    write_atomic(path, header + body)
    return path


class _Dumper(yaml.SafeDumper):
    """Versions, modes and hashes quoted (YAML would read 1.10 as a number), as `lock`
    writes pins."""


class _OneLine(dict[str, str]):
    """A mapping written on one line, as recipes write pins and install entries."""


_Dumper.add_representer(
    _OneLine,
    lambda dumper, value: dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=True),
)
_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style='"' if re.fullmatch(r"[0-9a-f.]+", value) else None
    ),
)


def _new_path(recipes_dir: Path, name: str) -> Path:
    problem = name_problem(name)
    if problem:
        raise PipelineError(f"NAME: {problem}")
    path = recipes_dir / f"{name}.yaml"
    if path.exists():
        raise PipelineError(f"{path}: already exists")
    recipes_dir.mkdir(parents=True, exist_ok=True)
    return path
