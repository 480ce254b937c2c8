"""Which advisories apply to which image: every package an image's SPDX SBOM names by purl (the
runtime itself, each embedded engine, a source build's module) against an advisory database,
with waivers applied.

Why not osv-scanner: it is the well-kept scanner for this, and was tried first. v2.6.0 (the
newest on the Go module proxy here) needs Go >= 1.27, newer than this machine's and Debian's Go;
its offline mode reads only its own cache layout (`<dir>/osv-scanner/<ecosystem>/all.zip`), so
the project's feed would have to be re-zipped into it on every run; and waivers with an image
glob and an expiry date are ours either way. What remains to match is small: the OSV range
algorithm over three ecosystems (pipeline/core/osv.py).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.audit.waivers import Waiver
from pipeline.core.errors import PipelineError
from pipeline.core.osv import Advisory, Database, Package, Severity, open_database
from pipeline.core.vocab import SBOM_SUFFIX

MAX_SBOM_BYTES = 64 << 20


@dataclass(frozen=True)
class ImageSbom:
    image: str  # the image file the SBOM describes
    path: Path
    packages: tuple[Package, ...]


@dataclass(frozen=True)
class Finding:
    image: str
    advisory: Advisory
    package: Package
    waiver: Waiver | None

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.advisory.id, *self.advisory.aliases)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "id": self.advisory.id,
            "aliases": list(self.advisory.aliases),
            "summary": self.advisory.summary,
            "package": self.package.purl,
            "version": self.package.version,
            "fixed": list(self.advisory.fixed_in(self.package)),
            "severity": str(self.advisory.severity),
            "source": self.advisory.where,
            "waived": {
                "reason": self.waiver.reason,
                "expires": self.waiver.expires.isoformat(),
                "where": self.waiver.where,
            }
            if self.waiver
            else None,
        }


def read_sboms(directories: list[Path]) -> list[ImageSbom]:
    """Every image SBOM (`*.spdx.json`) in `directories`: the image it describes and the purls
    of its packages. An SBOM whose image package names no purl cannot be audited: an error."""
    found: list[ImageSbom] = []
    for directory in directories:
        if not directory.is_dir():
            raise PipelineError(f"{directory}: no such directory of images")
        paths = sorted(directory.glob(f"*{SBOM_SUFFIX}"))
        if not paths:
            raise PipelineError(f"{directory}: no image SBOM (*{SBOM_SUFFIX}) to audit")
        found += [_read_sbom(p) for p in paths]
    return found


def _read_sbom(path: Path) -> ImageSbom:
    if path.stat().st_size > MAX_SBOM_BYTES:
        raise PipelineError(f"{path}: larger than {MAX_SBOM_BYTES} bytes: not one of our SBOMs")
    try:
        document = json.loads(path.read_bytes())
        described = {
            r["relatedSpdxElement"]
            for r in document.get("relationships", [])
            if r.get("relationshipType") == "DESCRIBES"
        }
        packages = document["packages"]
        image = str(document["name"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise PipelineError(f"{path}: not an SPDX JSON document") from None
    purls: dict[str, Package] = {}
    top_has_purl = False
    for package in packages if isinstance(packages, list) else []:
        refs = package.get("externalRefs", []) if isinstance(package, dict) else []
        for ref in refs if isinstance(refs, list) else []:
            if not isinstance(ref, dict) or ref.get("referenceType") != "purl":
                continue
            locator = str(ref.get("referenceLocator", ""))
            try:
                purls[locator] = Package.from_purl(locator)
            except PipelineError as err:
                raise PipelineError(f"{path}: package {package.get('name')!r}: {err}") from None
            top_has_purl |= package.get("SPDXID") in described
    if not top_has_purl:
        raise PipelineError(
            f"{path}: the image package has no purl, so advisories cannot be matched "
            "(rebuild the image; its recipe needs a package: field)"
        )
    return ImageSbom(image, path, tuple(purls[k] for k in sorted(purls)))


def database(
    images: list[ImageSbom], feed: Path, dbs: list[Path], online: dict[str, list[Advisory]]
) -> Database:
    """The project's feed (strictly checked), then each `--db`, then what osv.dev returned."""
    db = open_database((p for i in images for p in i.packages), feed, dbs)
    for advisories in online.values():
        for advisory in advisories:
            db.add(advisory)
    return db


def findings(
    images: list[ImageSbom],
    db: Database,
    waivers: list[Waiver],
    online: dict[str, list[Advisory]],
) -> list[Finding]:
    """One finding per image, advisory and package; osv.dev's own verdicts count as matches."""
    found: list[Finding] = []
    for image in images:
        for package in image.packages:
            matched = {a.id: a for a in db.matching(package)}
            matched.update({a.id: a for a in online.get(package.purl, [])})
            for advisory in sorted(matched.values(), key=lambda a: a.id):
                ids = (advisory.id, *advisory.aliases)
                waiver = next((w for w in waivers if w.covers(image.image, ids)), None)
                found.append(Finding(image.image, advisory, package, waiver))
    return found


def failing(
    found: list[Finding], waivers: list[Waiver], threshold: Severity, today: datetime.date
) -> tuple[list[Finding], list[Waiver]]:
    """The unwaived findings at or above `threshold` (an expired waiver waives nothing), and
    the expired waivers."""
    expired = [w for w in waivers if w.expired(today)]
    bad = [
        f
        for f in found
        if f.advisory.severity.rank >= threshold.rank and (f.waiver is None or f.waiver in expired)
    ]
    return bad, expired
