"""Advisories in the OSV format (https://ossf.github.io/osv-schema/) and the one question asked
of them: which ones affect this package at this version, and which version fixes each.

Packages are named by purl, as SBOMs and recipes name them. Three ecosystems cover what the
images ship: crates.io (Rust engines and CLIs), Go (Go modules) and GIT (a repository whose
releases are tags, such as runwasi's shims). SEMVER and ECOSYSTEM ranges are evaluated with the
OSV algorithm (events sorted by version, "0" lowest); a GIT range cannot be evaluated without the
repository's history, so a GIT package matches through the record's enumerated `versions`
(tags), which osv.dev fills in for every GIT range, as osv-scanner's offline matcher does.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cvss import CVSS3, CVSS4  # type: ignore[import-untyped]
from cvss.exceptions import CVSSError  # type: ignore[import-untyped]

from pipeline.core.errors import PipelineError

MAX_RECORD_BYTES = 4 << 20  # the largest OSV record in osv.dev's exports is well under 1 MiB
MAX_RECORDS = 2_000_000  # osv.dev's whole export holds about 600 000


class Ecosystem(StrEnum):
    CRATES_IO = "crates.io"
    GO = "Go"
    GIT = "GIT"


# purl type -> OSV ecosystem (purl spec: cargo, golang, github).
PURL_TYPES = {"cargo": Ecosystem.CRATES_IO, "golang": Ecosystem.GO, "github": Ecosystem.GIT}


class Severity(StrEnum):
    """Qualitative severity (CVSS 3/4 ratings; GHSA's MODERATE is medium). UNKNOWN ranks above
    critical: a record that says nothing about its severity is not waved through."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


@dataclass(frozen=True)
class Package:
    """One package at one version, as an SBOM or a recipe names it."""

    ecosystem: Ecosystem
    name: str  # crates.io: crate; Go: module path; GIT: repository URL
    version: str  # GIT: the release tag
    purl: str

    @classmethod
    def from_purl(cls, purl: str) -> Package:
        """`pkg:TYPE/NAMESPACE/NAME@VERSION` (percent-encoded) of a type we can match."""
        match = re.fullmatch(r"pkg:([a-z]+)/([^@?#]+)@([^?#]+)(?:[?#].*)?", purl)
        if not match:
            raise PipelineError(f"{purl!r}: not a purl with a version (pkg:TYPE/NAME@VERSION)")
        kind, path, version = match.group(1), unquote(match.group(2)), unquote(match.group(3))
        if kind not in PURL_TYPES:
            raise PipelineError(
                f"{purl!r}: unknown ecosystem {kind!r} (known: {', '.join(PURL_TYPES)})"
            )
        ecosystem = PURL_TYPES[kind]
        name = f"https://github.com/{path}" if ecosystem is Ecosystem.GIT else path
        if ecosystem is Ecosystem.GO:
            version = version.removeprefix("v")
        return cls(ecosystem, name, version, purl)

    def needle(self) -> bytes:
        """Bytes any record about this package contains (JSON escapes '/' at most as '\\/')."""
        return self.name.rsplit("/", 1)[-1].encode()


@dataclass(frozen=True)
class Range:
    type: str  # SEMVER, ECOSYSTEM or GIT
    events: tuple[tuple[str, str], ...]  # (introduced|fixed|last_affected|limit, version)
    repo: str = ""


@dataclass(frozen=True)
class Affected:
    ecosystem: str
    name: str
    ranges: tuple[Range, ...]
    versions: tuple[str, ...]


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str
    severity: Severity
    affected: tuple[Affected, ...]
    where: str  # the file (or URL) it was read from

    def fixed_in(self, package: Package) -> tuple[str, ...]:
        """The versions that fix this advisory for `package`'s line (or every line)."""
        fixes = {
            f"commit {version[:12]}" if r.type == "GIT" else version
            for a in self._about(package)
            for r in a.ranges
            for kind, version in r.events
            if kind == "fixed"
        }
        return tuple(sorted(fixes, key=version_key))

    def affects(self, package: Package) -> bool:
        return any(
            package.version in a.versions
            or (
                package.ecosystem is not Ecosystem.GIT
                and any(_in_range(r, package.version) for r in a.ranges if r.type != "GIT")
            )
            for a in self._about(package)
        )

    def _about(self, package: Package) -> Iterator[Affected]:
        for a in self.affected:
            if package.ecosystem is Ecosystem.GIT:
                repos = {_repo(r.repo) for r in a.ranges if r.type == "GIT"}
                if _repo(package.name) in repos or (
                    a.ecosystem == "GIT" and _repo(a.name) == _repo(package.name)
                ):
                    yield a
            elif a.ecosystem == package.ecosystem and a.name == package.name:
                yield a


def _repo(url: str) -> str:
    return re.sub(r"^(?:https?|git)://", "", url).removesuffix(".git").rstrip("/").lower()


def version_key(version: str) -> tuple[Any, ...]:
    """SemVer 2.0 precedence, leniently: a leading 'v' and missing parts are allowed, build
    metadata is ignored, and a release sorts after its pre-releases. "0" is the lowest."""
    core, _, pre = version.removeprefix("v").split("+", 1)[0].partition("-")
    numbers = tuple(int(p) if p.isdigit() else -1 for p in core.split("."))
    numbers += (0,) * (3 - len(numbers))
    if not pre:
        return (numbers, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (numbers, 0, parts)


def _in_range(r: Range, version: str) -> bool:
    """The OSV evaluation: walk the events in version order; introduced turns the range on,
    fixed (at or below the version) and last_affected (below it) turn it off."""
    key = version_key(version)
    affected = False
    for kind, at in sorted(r.events, key=lambda e: version_key(e[1])):
        bound = version_key(at)
        if kind == "introduced" and (at == "0" or key >= bound):
            affected = True
        elif (kind == "fixed" and key >= bound) or (kind == "last_affected" and key > bound):
            affected = False
    return affected


# --- reading records -------------------------------------------------------------------------

_EVENTS = ("introduced", "fixed", "last_affected", "limit")
_RANGE_TYPES = ("SEMVER", "ECOSYSTEM", "GIT")
_GHSA_SEVERITY = {"LOW": "low", "MODERATE": "medium", "MEDIUM": "medium", "HIGH": "high"}


def parse(data: Any, where: str, strict: bool = False) -> Advisory:
    """One OSV record; PipelineError `where: field: problem`. `strict` (the project's own feed)
    also requires an ecosystem we match and a source URL."""

    def fail(field: str, problem: str) -> PipelineError:
        return PipelineError(f"{where}: {field}: {problem}")

    if not isinstance(data, dict):
        raise fail("(top)", "an OSV record is a JSON object")
    for key in ("id", "modified"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise fail(key, "missing (OSV requires it)")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise fail("aliases", "must be a list of strings")
    affected_list = data.get("affected", [])
    if not isinstance(affected_list, list):
        raise fail("affected", "must be a list")
    affected = tuple(
        _affected(a, f"affected[{i}]", fail, strict) for i, a in enumerate(affected_list)
    )
    if strict:
        references = data.get("references")
        if not isinstance(references, list) or not any(
            isinstance(r, dict) and str(r.get("url", "")).startswith("https://") for r in references
        ):
            raise fail("references", "name the advisory's source URL (an https reference)")
    return Advisory(
        id=data["id"],
        aliases=tuple(aliases),
        summary=str(data.get("summary", "")),
        severity=_severity(data, fail),
        affected=affected,
        where=where,
    )


def _affected(entry: Any, field: str, fail: Any, strict: bool) -> Affected:
    if not isinstance(entry, dict):
        raise fail(field, "must be an object")
    package = entry.get("package", {})
    if not isinstance(package, dict):
        raise fail(f"{field}.package", "must be an object")
    ecosystem, name = str(package.get("ecosystem", "")), str(package.get("name", ""))
    if package and not (ecosystem and name):
        raise fail(f"{field}.package", "needs ecosystem and name")
    known = {str(e) for e in Ecosystem}
    if strict and package and ecosystem not in known:
        raise fail(
            f"{field}.package.ecosystem",
            f"unknown ecosystem {ecosystem!r} (audit matches {', '.join(sorted(known))})",
        )
    ranges = []
    for i, r in enumerate(entry.get("ranges", []) or []):
        where = f"{field}.ranges[{i}]"
        if not isinstance(r, dict) or r.get("type") not in _RANGE_TYPES:
            raise fail(f"{where}.type", f"must be one of {', '.join(_RANGE_TYPES)}")
        events = r.get("events")
        if not isinstance(events, list) or not events:
            raise fail(f"{where}.events", "must be a non-empty list")
        pairs = []
        for j, event in enumerate(events):
            if not (isinstance(event, dict) and len(event) == 1):
                raise fail(f"{where}.events[{j}]", "must be an object with one key")
            [(kind, value)] = event.items()
            if kind not in _EVENTS or not isinstance(value, str) or not value:
                raise fail(f"{where}.events[{j}]", f"must be one of {', '.join(_EVENTS)}")
            pairs.append((kind, value))
        if r["type"] == "GIT" and not isinstance(r.get("repo"), str):
            raise fail(f"{where}.repo", "a GIT range names its repository")
        if r["type"] != "GIT" and not package:
            raise fail(f"{field}.package", f"a {r['type']} range needs a package")
        ranges.append(Range(r["type"], tuple(pairs), str(r.get("repo", ""))))
    versions = entry.get("versions", [])
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise fail(f"{field}.versions", "must be a list of strings")
    return Affected(ecosystem, name, tuple(ranges), tuple(versions))


def _severity(data: dict[str, Any], fail: Any) -> Severity:
    """The GHSA's own rating where the record carries it, else the worst CVSS vector's."""
    specific = data.get("database_specific")
    if isinstance(specific, dict) and isinstance(specific.get("severity"), str):
        rating = specific["severity"].upper()
        if rating == "CRITICAL":
            return Severity.CRITICAL
        if rating in _GHSA_SEVERITY:
            return Severity(_GHSA_SEVERITY[rating])
    worst: Severity | None = None
    for i, item in enumerate(data.get("severity", []) or []):
        if not isinstance(item, dict):
            raise fail(f"severity[{i}]", "must be an object")
        rating = _cvss_rating(str(item.get("type", "")), str(item.get("score", "")))
        if rating is None:
            continue
        if worst is None or rating.rank > worst.rank:
            worst = rating
    return worst or Severity.UNKNOWN


def _cvss_rating(kind: str, vector: str) -> Severity | None:
    try:
        if kind == "CVSS_V3":
            rating = str(CVSS3(vector).severities()[0])
        elif kind == "CVSS_V4":
            rating = str(CVSS4(vector).severity)
        else:
            return None
    except CVSSError:
        return None
    return None if rating == "None" else Severity(rating.lower())


# --- databases -------------------------------------------------------------------------------


class Database:
    """Advisories about a set of packages, read from OSV exports: directories of records (one
    JSON file each, as `advisories/` is) or zip files (osv.dev's `<ecosystem>/all.zip`).

    Only records that mention one of the packages are parsed: the bytes are searched first, so a
    whole-ecosystem export costs a read, not a parse, and a malformed record about an unrelated
    package does not stop an audit."""

    def __init__(self, packages: Iterable[Package]) -> None:
        self.needles = {p.needle() for p in packages}
        self.advisories: dict[str, Advisory] = {}
        self.records = 0

    def load(self, path: Path, strict: bool = False) -> None:
        if path.is_dir():
            for file in sorted(path.rglob("*.json")):
                size = file.stat().st_size
                self._record(
                    b"" if size > MAX_RECORD_BYTES else file.read_bytes(), str(file), strict, size
                )
            for export in sorted(path.rglob("*.zip")):
                self.load(export)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.is_dir() or not info.filename.endswith(".json"):
                        continue
                    where = f"{path}:{info.filename}"
                    if info.file_size > MAX_RECORD_BYTES:
                        raise PipelineError(f"{where}: {info.file_size} bytes: not an OSV record")
                    self._record(archive.read(info), where, strict, info.file_size)
        elif path.exists():
            raise PipelineError(f"{path}: not an OSV export (a directory or a .zip)")
        else:
            raise PipelineError(f"{path}: no such advisory database")

    def _record(self, data: bytes, where: str, strict: bool, size: int) -> None:
        self.records += 1
        if self.records > MAX_RECORDS:
            raise PipelineError(f"{where}: more than {MAX_RECORDS} OSV records: not an OSV export")
        if size > MAX_RECORD_BYTES:
            raise PipelineError(f"{where}: {size} bytes: not an OSV record")
        if not strict and not any(n in data for n in self.needles):
            return
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PipelineError(f"{where}: not valid OSV JSON: {err}") from None
        self.add(parse(record, where, strict))

    def add(self, advisory: Advisory) -> None:
        # The same id from two sources (our feed and osv.dev): the later read wins.
        self.advisories[advisory.id] = advisory

    def matching(self, package: Package) -> list[Advisory]:
        return sorted(
            (a for a in self.advisories.values() if a.affects(package)), key=lambda a: a.id
        )


def open_database(packages: Iterable[Package], feed: Path, dbs: Iterable[Path]) -> Database:
    """Advisories about `packages`: the project's feed (checked strictly), then each `--db`."""
    db = Database(packages)
    if feed.is_dir():
        db.load(feed, strict=True)
    for path in dbs:
        db.load(path)
    return db


def fixed_by(db: Database, before: Iterable[Package], after: Iterable[Package]) -> list[str]:
    """Ids of the advisories that affect a package of `before` and nothing in `after`: what
    moving from one version to the other fixes."""
    later = list(after)
    return sorted(
        {a.id for p in before for a in db.matching(p) if not any(a.affects(q) for q in later)}
    )
