"""`outdated` and `bump`: compare recipes with upstream's releases, and add a new version.

`bump` adds the version to the recipe *text* (like `lock`, never a re-dump of the YAML, so
comments and layout survive): a `versions:` entry templated from the default version's URLs,
each asset checked against the release's asset list first, with `sha256: null`. It then runs
`lock` (downloads, the `checksums:` cross-check, the archive checks a build makes), checks each
pin against the sha256 digest GitHub records for the release asset where it has one, and makes
the version the default `version:` only when every arch is pinned. All of that happens on a copy in
a scratch directory; the recipe is replaced, atomically, only once everything succeeded.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pipeline.build.fetch import Fetcher
from pipeline.core.errors import PipelineError
from pipeline.core.fs import write_atomic
from pipeline.core.log import redact
from pipeline.core.vocab import Arch
from pipeline.publish.versions import strverscmp_improved
from pipeline.recipe.load import load
from pipeline.recipe.lock import lock
from pipeline.recipe.model import BuildFrom, Recipe, RecipeError
from pipeline.recipe.upstream import (
    GITHUB_RELEASE_RE,
    Client,
    Kind,
    NotDerivable,
    Release,
    Upstream,
    derive,
    encoded_tag,
    newer,
)

VERSIONS_LINE_RE = re.compile(r"^versions:[ \t]*(#.*)?$")
VERSION_LINE_RE = re.compile(r"""^version:[ \t]*("[^"\n]*"|'[^'\n]*'|[^\s#]+)""")
MATCHES = "(matches upstream checksums)"  # how lock reports a cross-checked input


@dataclass(frozen=True)
class Status:
    """One recipe against its upstream (`outdated`)."""

    name: str
    version: str  # the recipe's default
    upstream: Upstream | None
    newest: str | None = None
    newer: tuple[str, ...] = ()  # newest first
    problem: str | None = None  # why the upstream is unknown
    fixes: dict[str, list[str]] = field(default_factory=dict)  # newer version -> advisory ids

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "newest": self.newest,
            "newer": list(self.newer),
            "fixes": self.fixes,
            "outdated": bool(self.newer),
            "upstream": self.upstream.to_json() if self.upstream else None,
            "problem": self.problem,
        }


def outdated(recipe: Recipe, client: Client) -> Status:
    """Upstream's releases newer than the recipe's default version. A recipe whose upstream
    cannot be derived is reported as such; a failure to list releases raises."""
    try:
        upstream = derive(recipe)
    except NotDerivable as err:
        return Status(recipe.name, recipe.version, None, problem=str(err))
    versions = [r.version for r in client.releases(upstream)]
    return Status(
        recipe.name,
        recipe.version,
        upstream,
        versions[0] if versions else None,
        tuple(newer(versions, recipe.version)),
    )


@dataclass
class Report:
    """What `bump` did."""

    name: str
    version: str
    previous: str  # the default version before
    upstream: Upstream
    tag: str
    added: bool  # False: the version was there already and was only locked again
    default: bool  # the version is the default now
    note: str  # why it is, or is not, the default
    checksums: str | None  # the upstream checksum file the downloads were checked against
    lock: list[str] = field(default_factory=list)  # lock's lines, one per input
    digests: list[str] = field(default_factory=list)  # pins GitHub's asset digests confirm
    changed: bool = False  # the recipe file changed
    fixes: list[str] = field(default_factory=list)  # advisories of `previous` this version fixes

    @property
    def cross_check(self) -> str:
        """One line: what the pins were checked against besides the download itself."""
        checks = []
        if self.checksums:  # lock refuses a download the checksum file does not vouch for
            matched = sum(line.endswith(MATCHES) for line in self.lock)
            checks.append(
                f"every download matches {self.checksums}"
                if matched == len(self.lock)
                else f"{matched} of {len(self.lock)} match {self.checksums}"
            )
        if self.digests:
            checks.append(f"{len(self.digests)} of {len(self.lock)} match GitHub's asset digests")
        return "; ".join(checks) or (
            "none: no upstream checksum file (checksums:) and no "
            "GitHub asset digests; compare the pins with another "
            "source (docs/pins.md)"
        )

    @property
    def release_url(self) -> str:
        return (
            f"https://github.com/{self.upstream.owner}/{self.upstream.repo}/releases/tag/"
            f"{encoded_tag(self.tag)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "previous": self.previous,
            "added": self.added,
            "default": self.default,
            "note": self.note,
            "upstream": self.upstream.to_json(),
            "tag": self.tag,
            "release": self.release_url,
            "checksums": self.checksums,
            "cross_check": self.cross_check,
            "lock": self.lock,
            "digests": self.digests,
            "changed": self.changed,
            "fixes": self.fixes,
        }

    def lines(self) -> list[str]:
        what = "added" if self.added else "already in the recipe, locked again:"
        return [
            f"{what} {self.version} ({self.release_url})",
            *self.lock,
            *self.digests,
            f"cross-check: {self.cross_check}",
            *(
                [f"fixes known advisories of {self.previous}: {', '.join(self.fixes)}"]
                if self.fixes
                else []
            ),
            self.note,
        ]


def bump(recipe: Recipe, client: Client, fetcher: Fetcher, to: str | None = None) -> Report:
    """Add upstream release `to` (default: the newest) to `recipe`, pin it, and make it the
    default if every arch is pinned and it is newer; the recipe changes only on success."""
    if recipe.builds_from(recipe.version) is BuildFrom.SOURCE:
        raise PipelineError(
            f"{recipe.path}: builds from source by default (from: source); "
            f"add its source.versions entry by hand (a source pin is reviewed), "
            f"then run: wasm-sysexts lock {recipe.name} --version V --from source"
        )
    upstream = derive(recipe)
    if upstream.kind is not Kind.GITHUB:  # release builds are always GitHub release assets
        raise PipelineError(f"{recipe.path}: cannot bump a {upstream.kind} upstream")
    releases = {r.version: r for r in client.releases(upstream)}
    if not releases:
        raise PipelineError(f"{upstream.url}: no releases tagged {upstream.tag}")
    newest = next(iter(releases))
    version = to or newest
    if version not in releases:
        raise PipelineError(
            f"{recipe.path}: --to {version}: {upstream.owner}/{upstream.repo} has "
            f"no release tagged {upstream.tag_for(version)} (newest: {newest})"
        )
    release = releases[version]
    original = recipe.path.read_text(encoding="utf-8")
    added = version not in recipe.versions
    text = (
        add_version(original, version, entry_for(recipe, upstream, release), recipe.path)
        if added
        else original
    )
    with tempfile.TemporaryDirectory(prefix="wasm-sysexts-bump-") as scratch:
        work = Path(scratch) / recipe.path.name  # load() wants the file named after the recipe
        try:
            work.write_text(text, encoding="utf-8")
            lines = lock(load(work), version, fetcher)
            locked = load(work)
            digests = _check_digests(locked, version, upstream, release)
            default, note = _default(recipe, locked, version)
            if default and version != recipe.version:
                write_atomic(work, set_default(work.read_text(encoding="utf-8"), version, work))
                load(work)
            final = work.read_text(encoding="utf-8")
        except PipelineError as err:
            raise _moved(err, work, recipe.path) from None
    if recipe.path.read_text(encoding="utf-8") != original:
        raise PipelineError(f"{recipe.path}: changed while bumping; nothing written, run again")
    if final != original:
        write_atomic(recipe.path, final, recipe.path.stat().st_mode & 0o777)
    arch = next(iter(recipe.versions[recipe.version]), Arch.X86_64)
    return Report(
        recipe.name,
        version,
        recipe.version,
        upstream,
        release.tag,
        added,
        default,
        note,
        recipe.checksums_url(version, arch),
        lines,
        digests,
        final != original,
    )


def _default(before: Recipe, after: Recipe, version: str) -> tuple[bool, str]:
    """Whether `version` becomes the default, and why (not)."""
    if version == before.version:
        return True, f"{version} is the default version already"
    if strverscmp_improved(version, before.version) < 0:
        return False, f"default stays {before.version}: {version} is older"
    entry = after.versions[version]
    lost = [
        str(a)
        for a in before.versions.get(before.version, {})
        if not before.unavailable(before.version, a)
        and (a not in entry or after.unavailable(version, a))
    ]
    if lost:
        return False, (
            f"default stays {before.version}: {version} has no build for {', '.join(lost)}"
        )
    if not after.pinned(version):
        return False, f"default stays {before.version}: not every arch of {version} is pinned"
    return True, f"{version} is the default version now (was {before.version})"


def _check_digests(recipe: Recipe, version: str, upstream: Upstream, release: Release) -> list[str]:
    """One line per pin of `release`'s assets that GitHub's recorded digest confirms;
    PipelineError for one it contradicts (the download is not what GitHub stored)."""
    confirmed: list[str] = []
    for arch in sorted(recipe.versions[version]):  # lock's order
        if recipe.unavailable(version, arch):
            continue
        for item in recipe.inputs(version, arch):
            url = recipe.expand(item.url, version, arch)
            match = GITHUB_RELEASE_RE.match(url)
            if (
                not match
                or (match["owner"], match["repo"]) != (upstream.owner, upstream.repo)
                or unquote(match["tag"]) != release.tag
            ):
                continue
            name = unquote(match["file"])
            digest = release.digests.get(name)
            if digest is None:
                continue
            if digest != item.sha256:
                raise PipelineError(
                    f"{redact(url)}: sha256 {item.sha256} does not match the "
                    f"digest GitHub records for the release asset, {digest}"
                )
            line = f"{name}: {digest} (matches GitHub's asset digest)"
            if line not in confirmed:
                confirmed.append(line)
    return confirmed


def _moved(err: PipelineError, work: Path, path: Path) -> PipelineError:
    """`err` naming the recipe rather than its scratch copy."""
    if isinstance(err, RecipeError):
        return RecipeError([p.replace(str(work), str(path)) for p in err.problems])
    return PipelineError(str(err).replace(str(work), str(path)))


# ---------------------------------------------------------------- the new entry

# arch -> inputs as (raw URL, sha256 or None), or the reason the arch is unavailable.
Entry = dict[Arch, list[tuple[str, str | None]] | str]


def entry_for(recipe: Recipe, upstream: Upstream, release: Release) -> Entry:
    """The `versions:` entry of `release`: the default version's inputs with its tag and
    version replaced (inputs from elsewhere, wasmCloud's nats-server, stay as they are),
    unavailable arches copied. Refuses, naming them, assets the release does not have."""
    old, new = recipe.version, release.version
    old_tag = upstream.tag_for(old)
    base = f"https://github.com/{upstream.owner}/{upstream.repo}/releases/download/"
    entry: Entry = {}
    missing: list[str] = []
    for arch, value in recipe.versions[old].items():
        if isinstance(value, str):
            entry[arch] = value
            continue
        inputs: list[tuple[str, str | None]] = []
        for item in value:
            url = recipe.expand(item.url, old, arch)
            match = GITHUB_RELEASE_RE.match(url)
            if (
                not match
                or (match["owner"], match["repo"]) != (upstream.owner, upstream.repo)
                or unquote(match["tag"]) != old_tag
            ):
                inputs.append((item.url, item.sha256))
                continue
            file = match["file"].replace(old, new)
            if unquote(file) not in release.assets:
                missing.append(f"{unquote(file)} ({arch})")
            literal = f"{base}{encoded_tag(release.tag)}/{file}"
            inputs.append((literal.replace("{", "{{").replace("}", "}}"), None))
        entry[arch] = inputs
    for arch in entry:
        sums = recipe.checksums_url(new, arch)
        match = GITHUB_RELEASE_RE.match(sums or "")
        if (
            match
            and unquote(match["tag"]) == release.tag
            and unquote(match["file"]) not in release.assets
        ):
            missing.append(f"{unquote(match['file'])} (checksums)")
    if missing:
        raise PipelineError(
            f"{upstream.owner}/{upstream.repo} release {release.tag}: no asset "
            f"{', '.join(dict.fromkeys(missing))}; upstream renamed or dropped "
            f"it: add {new} to {recipe.path} by hand, then run: wasm-sysexts "
            f"lock {recipe.name} --version {new}"
        )
    return entry


def add_version(text: str, version: str, entry: Entry, path: Path) -> str:
    """`text` with `entry` inserted as the first key under the top-level `versions:` line,
    indented like the entries already there, each input on one line (what lock rewrites)."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if VERSIONS_LINE_RE.match(line.rstrip("\r\n"))]
    if len(hits) != 1:
        raise PipelineError(
            f"{path}: cannot find one top-level 'versions:' line opening a "
            "block; write versions as an indented block, one version a key"
        )
    at = hits[0]
    body = [line for line in lines[at + 1 :] if line.strip() and not line.lstrip().startswith("#")]
    key = _indent(body[0]) if body else 0
    if not key:
        raise PipelineError(f"{path}: line {at + 1}: 'versions:' has no indented entries")
    arch = _indent(body[1]) if len(body) > 1 and _indent(body[1]) > key else key + 2
    eol = "\r\n" if lines[at].endswith("\r\n") else "\n"
    pad, inner = " " * key, " " * arch
    block = [f'{pad}"{version}":']
    for name, value in entry.items():
        if isinstance(value, str):
            block.append(f"{inner}{name}: {{unavailable: {json.dumps(value)}}}")
        elif len(value) == 1:
            block.append(f"{inner}{name}: {_input(*value[0])}")
        else:
            block.append(f"{inner}{name}:")
            block.extend(f"{inner}  - {_input(url, pin)}" for url, pin in value)
    if not lines[at].endswith(("\n", "\r")):
        lines[at] += eol
    lines[at + 1 : at + 1] = [line + eol for line in block]
    return "".join(lines)


def set_default(text: str, version: str, path: Path) -> str:
    """`text` with the top-level `version:` value replaced (its comment kept)."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if VERSION_LINE_RE.match(line)]
    if len(hits) != 1:
        raise PipelineError(f"{path}: cannot find one top-level 'version:' line")
    line = lines[hits[0]]
    match = VERSION_LINE_RE.match(line)
    assert match is not None
    lines[hits[0]] = line[: match.start(1)] + f'"{version}"' + line[match.end(1) :]
    return "".join(lines)


def _input(url: str, sha256: str | None) -> str:
    pin = f'"{sha256}"' if sha256 else "null"
    return f"{{url: {json.dumps(url)}, sha256: {pin}}}"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))
