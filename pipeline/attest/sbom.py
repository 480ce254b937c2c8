"""An SPDX 2.3 JSON SBOM per image, from what the build really used.

SPDX rather than CycloneDX: SPDX 2.3 has files with checksums and a package verification code
as first-class fields (an image *is* a set of files), relationships that say how an input
became the image (GENERATED_FROM, BUILD_TOOL_OF, CONTAINS), and it is what Debian, Flatcar and
the Linux Foundation tooling consume; `spdx-tools` validates it.

The document describes the image package: every regular file in it (SHA1, as SPDX requires,
and SHA256), the recipe's license and homepage; each input archive with its URL and sha256, or
the pinned source (module h1, git commit or tree, Cargo.lock sha256); each tool that built it
with its version; for cargo source builds every crates.io crate of the package's Cargo.lock
dependency graph; and the Wasm engines the binaries embed, read from the crate paths the Rust
compiler leaves in them (`…/wasmtime-27.0.0/src/…`) and from that graph. Output is
deterministic: the creation time is SOURCE_DATE_EPOCH and the document namespace derives from
the build key, so a rebuild writes the same bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.core.artifacts import ImageMeta
from pipeline.core.vocab import ENGINE_CRATES

NAMESPACE = "https://wasm-sysexts.dev/spdx"
# Bumped when what sbom() writes for the same build changes: part of the build key, so an
# image built before is rebuilt with the SBOM this code writes.
FORMAT = "2"
_ENGINE_PATH = re.compile(
    rb"/("
    + b"|".join(re.escape(c.encode()) for c in ENGINE_CRATES)
    + rb")-([0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]+)?)/"
)
_ELF = b"\x7fELF"


def _ref(kind: str, text: str) -> str:
    """An SPDX identifier: letters, digits, '.' and '-' only."""
    return f"SPDXRef-{kind}-" + re.sub(r"[^A-Za-z0-9.-]", "-", text)


def _license(expression: str) -> str:
    return expression or "NOASSERTION"


def _files(root: Path) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Every regular file under `root` as an SPDX file entry, and the engine crates (with
    their versions) whose paths its ELF files carry: one read of each file for both."""
    files = []
    engines: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        if data[:4] == _ELF:
            for match in _ENGINE_PATH.finditer(data):
                engines.setdefault(match.group(1).decode(), set()).add(match.group(2).decode())
        kind = "BINARY" if data[:4] == _ELF else "TEXT" if _is_text(data) else "OTHER"
        files.append(
            {
                "SPDXID": _ref("File", rel),
                "fileName": f"./{rel}",
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": hashlib.sha1(data).hexdigest()},
                    {"algorithm": "SHA256", "checksumValue": hashlib.sha256(data).hexdigest()},
                ],
                "fileTypes": [kind],
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            }
        )
    return files, {k: sorted(v) for k, v in sorted(engines.items())}


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in data


def _verification_code(files: list[dict[str, Any]]) -> str:
    """SPDX 2.3 §7.9: SHA1 over the sorted SHA1s of the package's files."""
    sha1s = sorted(
        c["checksumValue"] for f in files for c in f["checksums"] if c["algorithm"] == "SHA1"
    )
    return hashlib.sha1("".join(sha1s).encode()).hexdigest()


def _package(
    ref: str, name: str, version: str | None, location: str, **extra: Any
) -> dict[str, Any]:
    package: dict[str, Any] = {
        "SPDXID": ref,
        "name": name,
        "downloadLocation": location,
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    }
    if version:
        package["versionInfo"] = version
    package.update(extra)
    return package


def _sha256(value: str) -> list[dict[str, str]]:
    return [{"algorithm": "SHA256", "checksumValue": value}]


def _source_package(source: dict[str, Any], license_: str) -> dict[str, Any]:
    """The pinned source a source build used, as a package."""
    kind = str(source.get("kind"))
    ref = _ref("Source", kind)
    common = {
        "licenseDeclared": _license(license_),
        "primaryPackagePurpose": "SOURCE",
        "comment": f"{kind} source build; pin: "
        + json.dumps(
            {k: v for k, v in source.items() if k not in ("kind", "toolchain")}, sort_keys=True
        ),
    }
    if "module" in source:
        module, version = str(source["module"]), str(source.get("version", ""))
        return _package(
            ref,
            module,
            version,
            f"https://proxy.golang.org/{module}/@v/v{version}.zip",
            externalRefs=[_purl_ref(f"pkg:golang/{module}@v{version}")],
            **common,
        )
    if isinstance(source.get("git"), dict):
        git = source["git"]
        return _package(ref, str(git["url"]), None, f"git+{git['url']}@{git['commit']}", **common)
    if isinstance(source.get("archive"), dict):
        archive = source["archive"]
        extra = {"checksums": _sha256(archive["sha256"])} if archive.get("sha256") else {}
        return _package(
            ref,
            str(archive["url"]).rsplit("/", 1)[-1],
            None,
            str(archive["url"]),
            **extra,
            **common,
        )
    return _package(ref, kind, None, "NOASSERTION", **common)


def _purl_ref(locator: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    }


def sbom(meta: ImageMeta, root: Path, purls: tuple[str, ...] = ()) -> bytes:
    """The SPDX document of the image whose staged tree is `root`, described by `meta`; `purls`
    name the upstream packages it ships (the recipe's `package:`), which advisories match."""
    image_ref = "SPDXRef-Image"
    files, engines = _files(root)
    recipe = meta.recipe
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": image_ref,
            "name": meta.name,
            "versionInfo": meta.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": True,
            "packageVerificationCode": {"packageVerificationCodeValue": _verification_code(files)},
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": _license(recipe.get("license", "")),
            "licenseInfoFromFiles": ["NOASSERTION"],
            "copyrightText": "NOASSERTION",
            "homepage": recipe.get("homepage") or "NOASSERTION",
            "summary": recipe.get("summary", ""),
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "supplier": "Organization: wasm-sysexts",
            **({"externalRefs": [_purl_ref(p) for p in purls]} if purls else {}),
            "comment": f"systemd-sysext image {meta.image.file} ({meta.format}, {meta.arch}), "
            f"built from recipe {recipe.get('file', '?')}",
        }
    ]
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_ref,
        }
    ]
    relationships += [
        {
            "spdxElementId": image_ref,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": f["SPDXID"],
        }
        for f in files
    ]
    for i, item in enumerate(meta.inputs):
        ref = _ref("Input", str(i))
        packages.append(
            _package(
                ref,
                item.url.rsplit("/", 1)[-1],
                meta.version,
                item.url,
                checksums=_sha256(item.sha256),
                licenseDeclared=_license(recipe.get("license", "")),
                primaryPackagePurpose="ARCHIVE",
            )
        )
        relationships.append(
            {
                "spdxElementId": image_ref,
                "relationshipType": "GENERATED_FROM",
                "relatedSpdxElement": ref,
            }
        )
    if meta.source:
        package = _source_package(meta.source, recipe.get("license", ""))
        packages.append(package)
        relationships.append(
            {
                "spdxElementId": image_ref,
                "relationshipType": "GENERATED_FROM",
                "relatedSpdxElement": package["SPDXID"],
            }
        )
    for tool, version in sorted(meta.tools.items()):
        ref = _ref("Tool", tool)
        packages.append(
            _package(ref, tool, version, "NOASSERTION", primaryPackagePurpose="APPLICATION")
        )
        relationships.append(
            {
                "spdxElementId": ref,
                "relationshipType": "BUILD_TOOL_OF",
                "relatedSpdxElement": image_ref,
            }
        )
    # A cargo source build's whole dependency graph (Cargo.lock, walked from the package);
    # the crates that are Wasm engines, with those the binaries' crate paths name, are marked.
    locked = {(str(n), str(v)) for n, v in (meta.source or {}).get("crates", [])}
    found = {(crate, v) for crate, versions in engines.items() for v in versions}
    for crate, version in sorted(locked | found):
        engine = crate in ENGINE_CRATES
        seen = "the binaries' crate paths" if (crate, version) in found else ""
        from_lock = "Cargo.lock" if (crate, version) in locked else ""
        ref = _ref("Engine" if engine else "Crate", f"{crate}-{version}")
        what = "Wasm engine embedded in the image's binaries" if engine else "Rust crate built in"
        packages.append(
            _package(
                ref,
                crate,
                version,
                f"https://crates.io/crates/{crate}/{version}",
                primaryPackagePurpose="LIBRARY",
                externalRefs=[_purl_ref(f"pkg:cargo/{crate}@{version}")],
                comment=f"{what} (found in {' and '.join(x for x in (seen, from_lock) if x)})",
            )
        )
        relationships.append(
            {"spdxElementId": image_ref, "relationshipType": "CONTAINS", "relatedSpdxElement": ref}
        )
    for module, version in (meta.source or {}).get("modules", []):
        ref = _ref("Module", f"{module}-{version}")
        packages.append(
            _package(
                ref,
                str(module),
                str(version),
                f"https://proxy.golang.org/{module}/@v/{version}.zip",
                primaryPackagePurpose="LIBRARY",
                externalRefs=[_purl_ref(f"pkg:golang/{module}@{version}")],
                comment="Go module linked into the image's binaries (their build info)",
            )
        )
        relationships.append(
            {"spdxElementId": image_ref, "relationshipType": "CONTAINS", "relatedSpdxElement": ref}
        )
    created = datetime.datetime.fromtimestamp(meta.source_date_epoch, datetime.UTC)
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": meta.image.file,
        "documentNamespace": f"{NAMESPACE}/{meta.name}/{meta.version}/{meta.arch}/"
        f"{meta.build_key or meta.sha256}",
        "creationInfo": {
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creators": [f"Tool: wasm-sysexts-{__version__}", "Organization: wasm-sysexts"],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
