"""crates.io as a source: a crate's `.crate` file, the registry index's checksum of it, and what
its (normalized) manifest says it builds and needs.

A `.crate` is a gzip tar of `<name>-<version>/` holding the manifest cargo normalized at publish
time (explicit `[[bin]]` targets, `rust-version`) and, for a crate with binaries, the
Cargo.lock they were tested with. The sparse index (https://index.crates.io) records each
version's sha256 as `cksum`, a pin checkable without GitHub or the crates.io API.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pipeline.build.fetch import Fetcher
from pipeline.core.errors import PipelineError
from pipeline.core.osv import version_key

INDEX = "https://index.crates.io"


def index_url(crate: str) -> str:
    """The sparse index file of `crate` (cargo's layout: 1/, 2/, 3/<c>/, then <ab>/<cd>/)."""
    name = crate.lower()
    if len(name) <= 2:
        prefix = str(len(name))
    elif len(name) == 3:
        prefix = f"3/{name[0]}"
    else:
        prefix = f"{name[:2]}/{name[2:4]}"
    return f"{INDEX}/{prefix}/{name}"


def index(fetcher: Fetcher, crate: str) -> list[dict[str, Any]]:
    """Every version's record in the index (cksum, yanked, rust_version...), oldest first."""
    url = index_url(crate)
    records = []
    for line in fetcher.fetch(url, None).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise PipelineError(f"{url}: not a crates.io index file") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def entry(records: list[dict[str, Any]], crate: str, version: str) -> dict[str, Any]:
    for record in records:
        if record.get("vers") == version:
            return record
    raise PipelineError(f"{index_url(crate)}: crates.io has no {crate} {version}")


def newest(records: list[dict[str, Any]], crate: str) -> str:
    """The newest version that is neither yanked nor a pre-release."""
    versions = [
        str(r["vers"]) for r in records if not r.get("yanked") and "-" not in str(r.get("vers"))
    ]
    if not versions:
        raise PipelineError(f"{index_url(crate)}: no release of {crate} that is not yanked")
    return max(versions, key=version_key)


def package(tree: Path) -> dict[str, Any]:
    """The manifest's [package] table."""
    value = _manifest(tree).get("package", {})
    return value if isinstance(value, dict) else {}


def binaries(tree: Path) -> list[str]:
    """The binary targets the crate's manifest declares (cargo's auto-discovery where the
    manifest leaves it on: src/main.rs, src/bin/*.rs)."""
    manifest = _manifest(tree)
    package = manifest.get("package", {})
    named = [str(b["name"]) for b in manifest.get("bin", []) if isinstance(b, dict) and "name" in b]
    if package.get("autobins", True):
        if (tree / "src/main.rs").is_file():
            named.append(str(package.get("name", "")))
        named += [p.stem for p in sorted((tree / "src/bin").glob("*.rs"))]
    return sorted(set(n for n in named if n))


def rust_version(tree: Path) -> str | None:
    """The crate's minimum Rust (`package.rust-version`), if it names one."""
    value = _manifest(tree).get("package", {}).get("rust-version")
    return str(value) if value else None


def _manifest(tree: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads((tree / "Cargo.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise PipelineError(f"{tree.name}/Cargo.toml: not a readable manifest: {err}") from None
    return data
