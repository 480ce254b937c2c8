"""`lock`: download a version's assets, cross-check upstream checksum files, write pins back.

Pins are written into the recipe text itself (not a re-dump of the YAML), so comments and layout
survive: the line holding an input's URL gets its `sha256:` value replaced.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from pipeline.build import crates
from pipeline.build.fetch import Fetcher, input_filename
from pipeline.build.orchestrate import unpacked
from pipeline.build.source import cargo_lock_sha256, go_h1, go_zip_url
from pipeline.core import run
from pipeline.core.errors import PipelineError
from pipeline.core.fs import sha256_file, write_atomic
from pipeline.core.log import labelled, redact
from pipeline.recipe.load import load
from pipeline.recipe.model import Fetched, Recipe, SourceKind

PIN_RE = re.compile(r'\bsha256:\s*("[^"]*"|\'[^\']*\'|[^,}\s]+)')
CHECKSUM_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(?:\./)?(\S+)\s*$")


def parse_checksum_file(text: str) -> dict[str, str]:
    """sha256sum-style lines (`<hex>  <file>`); other lines (signatures, comments) are ignored."""
    result = {}
    for line in text.splitlines():
        match = CHECKSUM_LINE.match(line.strip())
        if match:
            result[match.group(2).rsplit("/", 1)[-1]] = match.group(1).lower()
    return result


def lock(recipe: Recipe, version: str, fetcher: Fetcher) -> list[str]:
    """Pin every input of `version`; returns one line per input saying what was done."""
    report: list[str] = []
    pins: dict[str, str] = {}  # raw URL template as written in the recipe -> sha256
    if version not in recipe.versions:
        raise PipelineError(
            f"{recipe.path}: versions: no version {version!r}; add it with sha256: null first"
        )
    for arch in sorted(recipe.versions[version]):
        if recipe.unavailable(version, arch):
            continue
        upstream: dict[str, str] = {}
        sums_url = recipe.checksums_url(version, arch)
        with labelled(f"{recipe.name} {version} {arch}"):
            if sums_url:
                sums_path = fetcher.fetch(sums_url, None)
                upstream = parse_checksum_file(
                    sums_path.read_text(encoding="utf-8", errors="replace")
                )
            urls = [(i, recipe.expand(i.url, version, arch)) for i in recipe.inputs(version, arch)]
            paths = [(item, url, fetcher.fetch(url, None)) for item, url in urls]
        for item, url, path in paths:
            digest = sha256_file(path)
            name = input_filename(url)
            # What gets pinned must be the archive it claims to be (not a login page), and
            # safe to unpack: the same checks a build makes, before the pin is written.
            unpacked(fetcher, path, digest, url, fetcher.max_unpack)
            source = "downloaded"
            if sums_url:
                if name not in upstream:
                    raise PipelineError(f"{redact(sums_url)}: does not list {name}")
                if upstream[name] != digest:
                    raise PipelineError(
                        f"{redact(url)}: sha256 {digest} does not match "
                        f"{upstream[name]} in {redact(sums_url)}"
                    )
                source = "matches upstream checksums"
            if item.sha256 and item.sha256 != digest:
                raise PipelineError(
                    f"{recipe.path}: versions.{version}.{arch}: pinned "
                    f"{item.sha256} but {redact(url)} now has {digest}; "
                    "upstream replaced the file, investigate before re-pinning"
                )
            if pins.get(item.url, digest) != digest:
                raise PipelineError(
                    f"{recipe.path}: cannot find one line with url "
                    f"{item.url!r} for one sha256: arches that share it "
                    "download different files; write each arch's URL out"
                )
            if item.sha256 != digest:  # an input shared by several arches is written once
                pins[item.url] = digest
            report.append(f"{name}: {digest} ({source})")
    if not report:
        raise PipelineError(f"{recipe.path}: versions: no downloadable inputs for {version!r}")
    if pins:
        _write_pins(recipe.path, pins)
    load(recipe.path)  # the rewritten recipe must still validate
    return report


def lock_source(recipe: Recipe, version: str, fetcher: Fetcher) -> list[str]:
    """Pin a source version: a Go module's h1: (cross-checked against the checksum database,
    as `go` does), a crate's sha256 (cross-checked against the crates.io index), the sha256 of
    archives and inputs left null, then the sha256 of the Cargo.lock the build will use."""

    source = recipe.source
    pin = recipe.source_pin(version)
    assert source is not None
    report: list[str] = []
    pins: dict[str, str] = {}
    arch = source.arches[0]
    with labelled(f"{recipe.name} {version} source"):
        if source.kind is SourceKind.GO and not pin.h1:
            url = go_zip_url(source.module, f"v{version}")
            h1 = go_h1(fetcher.fetch(url, None), fetcher.max_unpack, redact(url))
            recorded = checksum_database_h1(source.module, f"v{version}")
            if h1 != recorded:
                raise PipelineError(
                    f"{redact(url)}: module hash {h1} is not what the checksum "
                    f"database records ({recorded})"
                )
            _write_h1(recipe.path, version, h1)
            report.append(f"{source.module}@v{version}: {h1} (matches the checksum database)")
        if source.crate and pin.archive and not pin.archive.sha256:
            digest = _crate_sha256(recipe, version, fetcher)
            _write_version_key(recipe.path, version, "sha256", digest)
            report.append(f"{source.crate}-{version}.crate: {digest} (matches the crates.io index)")
            recipe = load(recipe.path)
        fetched = [f for _, f in pin.inputs if isinstance(f, Fetched)] + (
            [pin.archive] if pin.archive and not source.crate else []
        )
        for item in fetched:
            if item.sha256 or item.tree:
                continue
            url = recipe.expand(item.url, version, arch)
            path = fetcher.fetch(url, None)
            digest = sha256_file(path)
            unpacked(fetcher, path, digest, url, fetcher.max_unpack)
            pins[item.url] = digest
            report.append(f"{input_filename(url)}: {digest} (downloaded)")
        if pins:
            _write_pins(recipe.path, pins)
            recipe = load(recipe.path)
        if source.kind is SourceKind.CARGO and not pin.lock_sha256:
            # Everything it is made from is pinned now: the lock is what a build would use.
            digest = cargo_lock_sha256(recipe, version, fetcher)
            _write_version_key(recipe.path, version, "lock_sha256", digest)
            report.append(f"Cargo.lock: {digest} (the lock the build uses, after prepare)")
    if not report:
        raise PipelineError(f"{recipe.path}: source.versions.{version}: nothing to pin")
    load(recipe.path)
    return report


def checksum_database_h1(module: str, version: str) -> str:
    """`module@version`'s h1 as the Go checksum database records it, verified by `go` itself:
    the signed tree head against the key go embeds and the record's inclusion proof. A bare
    lookup answer is unsigned; whoever serves the module zip could serve a matching one."""
    from pipeline.build.source import GO_PROXY, go_telemetry_off

    gosumdb = os.environ.get("GOSUMDB") or f"sum.golang.org {GO_PROXY}/sumdb/sum.golang.org"
    if gosumdb.split()[0] == "off":
        raise PipelineError("GOSUMDB=off: lock needs the checksum database to vouch for a hash")
    with tempfile.TemporaryDirectory(prefix="wsx-gosumdb-") as tmp:
        go_telemetry_off(Path(tmp))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "GOPATH": f"{tmp}/go",
            "GOCACHE": f"{tmp}/cache",
            "GOPROXY": os.environ.get("GOPROXY", GO_PROXY),
            "GOSUMDB": gosumdb,
            "GOFLAGS": "-mod=mod -modcacherw",
            "GOTOOLCHAIN": "local",
        }
        proc = run.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=Path(tmp),
            env=env,
            check=False,
            what=f"go mod download {module}@{version}",
        )
    try:
        data = json.loads(proc.stdout or b"{}")
    except ValueError:
        data = {}
    problem = (
        data.get("Error")
        or (
            proc.stderr.decode(errors="replace").strip().splitlines()
            or [f"go exit {proc.returncode}"]
        )[-1]
    )
    if proc.returncode or not isinstance(data.get("Sum"), str):
        raise PipelineError(
            f"{module}@{version}: the checksum database does not vouch for it: {problem}"
        )
    return str(data["Sum"])


def _crate_sha256(recipe: Recipe, version: str, fetcher: Fetcher) -> str:
    """The .crate's sha256, which must be what the crates.io index records for it."""
    archive = recipe.source_pin(version).archive
    assert recipe.source is not None and archive is not None
    crate = recipe.source.crate
    url = recipe.expand(archive.url, version, recipe.source.arches[0])
    digest = sha256_file(fetcher.fetch(url, None))
    recorded = crates.entry(crates.index(fetcher, crate), crate, version).get("cksum")
    if digest != recorded:
        raise PipelineError(
            f"{recipe.path}: source.versions.{version}.sha256: {redact(url)} has sha256 "
            f"{digest}, but the crates.io index records {recorded}"
        )
    return digest


def _write_version_key(path: Path, version: str, key: str, value: str) -> None:
    """Set `key: "value"` in source version `version`'s entry (on its line, or a line of its
    block), where it is null: the recipe text, comments and layout kept."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    pattern = re.compile(rf"\b{re.escape(key)}:\s*(null|~)(?=[\s,}}]|$)")
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if re.match(rf"""\s+["']?{re.escape(version)}["']?:""", line)
            and any(ln.startswith("source:") for ln in lines[:i])
        ),
        None,
    )
    if start is not None:
        indent = len(lines[start]) - len(lines[start].lstrip())
        for i in range(start, len(lines)):
            line = lines[i]
            if i > start and line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            if pattern.search(line):
                lines[i] = pattern.sub(f'{key}: "{value}"', line, count=1)
                write_atomic(path, "".join(lines))
                return
    raise PipelineError(
        f'{path}: source.versions.{version}.{key}: cannot find "{key}: null" in that '
        "version's entry to write the pin into"
    )


def _write_h1(path: Path, version: str, h1: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if f'"{version}"' in line and "h1:" in line]
    if len(hits) != 1:
        raise PipelineError(
            f'{path}: cannot find one line with "{version}" and h1:; write '
            f'source versions as "{version}": {{h1: null}} on one line'
        )
    lines[hits[0]] = re.sub(r"h1:\s*(\"[^\"]*\"|null|~)", f'h1: "{h1}"', lines[hits[0]], count=1)
    write_atomic(path, "".join(lines))


def _write_pins(path: Path, pins: dict[str, str]) -> None:
    """Write each URL's pin on every line that holds that URL (an input several arches share,
    like wasmCloud's nats-server, is the same bytes everywhere)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for url, digest in pins.items():
        hits = [i for i, line in enumerate(lines) if url in line]
        if not hits:
            raise PipelineError(
                f"{path}: cannot find a line with url {url!r} and its sha256; "
                "write inputs as {url: ..., sha256: ...} on one line"
            )
        for hit in hits:
            line = lines[hit]
            # The sha256 key after the URL (a URL may itself contain "sha256:").
            end = line.index(url) + len(url)
            rest, count = PIN_RE.subn(f'sha256: "{digest}"', line[end:], count=1)
            if not count:
                raise PipelineError(
                    f"{path}: line {hit + 1}: no sha256 after url {url!r}; "
                    "write inputs as {url: ..., sha256: ...} on one line"
                )
            lines[hit] = line[:end] + rest
    write_atomic(path, "".join(lines))
