"""Step 1: load and validate recipes (`sysexts/<name>.yaml`).

A recipe is data. Loading checks every field and reports every problem at once, one line each,
as `FILE: field: message`, so a maintainer fixes a recipe in one pass.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.osv import Package
from pipeline.core.resources import recipes_dir
from pipeline.core.vocab import (
    HANDLER_RE,
    OS_FIELD_RE,
    RUNTIME_TYPE_RE,
    SHA256_RE,
    Arch,
    homepage_problem,
    license_problem,
    name_problem,
    version_problem,
)
from pipeline.recipe.containerd import OPTION_RE, shim_binary
from pipeline.recipe.containerd import files as containerd_files
from pipeline.recipe.model import (
    CRATE_NAME_RE,
    CRATE_URL,
    PLACEHOLDERS,
    SMOKE_PLACEHOLDERS,
    BuildFrom,
    ContainerdRuntime,
    ExtraFile,
    Fetched,
    GitPin,
    Input,
    Install,
    Recipe,
    RecipeError,
    Source,
    SourceKind,
    SourcePin,
    TargetOS,
    Versions,
)

MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
TOP_LEVEL = {
    "name",
    "summary",
    "homepage",
    "license",
    "version",
    "versions",
    "install",
    "files",
    "smoke",
    "os",
    "checksums",
    "source",
    "from",
    "containerd",
    "package",
}
CONTAINERD_KEYS = {"handler", "runtime_type", "options", "pods"}
GIT_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
H1_RE = re.compile(r"^h1:[A-Za-z0-9+/]{43}=$")
# Per kind: the source fields it takes besides kind, versions, directory, prepare, arches.
SOURCE_FIELDS = {
    SourceKind.GO: {"module", "packages", "ldflags", "tags"},
    SourceKind.CARGO: {"package", "features", "outputs", "crate"},
    SourceKind.CMAKE: {"configure", "target", "outputs"},
    SourceKind.MAKE: {"configure", "target", "outputs"},
}
SOURCE_COMMON = {"kind", "versions", "directory", "prepare", "arches"}
OS_KEYS = {"id", "sysext_level", "version_id"}


def default_recipes_dir() -> Path:
    """The repository's recipes, as shipped in the package."""
    return recipes_dir()


def load_all(recipes_dir: Path) -> list[Recipe]:
    """Load every `*.yaml` in `recipes_dir`, sorted by name; all problems reported together."""
    if not recipes_dir.is_dir():
        raise PipelineError(f"{recipes_dir}: recipes directory not found")
    recipes: list[Recipe] = []
    problems: list[str] = []
    for path in sorted(recipes_dir.glob("*.yaml")):
        try:
            recipes.append(load(path))
        except RecipeError as err:
            problems.extend(err.problems)
    if problems:
        raise RecipeError(problems)
    return recipes


def find(recipes_dir: Path, name: str) -> Recipe:
    if problem := name_problem(name):  # a name, never a path (`build ../evil`)
        raise PipelineError(f"recipe name {problem}")
    path = recipes_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(recipes_dir.glob("*.yaml"))) or "none"
        raise PipelineError(f"{path}: no recipe named {name!r} (known: {known})")
    return load(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a key given twice (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# A recipe is a page of YAML; anything near this size is not one (and YAML's aliases make a
# big file expensive to load).
MAX_RECIPE_BYTES = 256 << 10


def load(path: Path) -> Recipe:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise RecipeError([f"{path}: file: larger than {MAX_RECIPE_BYTES} bytes"])
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except OSError as err:
        raise RecipeError([f"{path}: cannot read: {err.strerror}"]) from err
    except UnicodeDecodeError as err:
        raise RecipeError([f"{path}: file: not UTF-8 text (byte {err.start})"]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError([f"{path}: {where}: invalid YAML: {reason}"]) from err
    return _Validator(path).recipe(data)


class _Validator:
    """Walks the parsed YAML, collecting problems instead of stopping at the first one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(f"{self.path}: {where}: {message}")

    def text(self, data: dict[str, Any], key: str, required: bool = True) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.bad(key, "missing")
            return ""
        if not isinstance(value, str) or not value.strip():
            self.bad(key, "must be a non-empty string")
            return ""
        return value

    def recipe(self, data: Any) -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError([f"{self.path}: file: must be a mapping of recipe fields"])
        for key in sorted(set(data) - TOP_LEVEL, key=str):
            self.bad(str(key), f"unknown field (known: {', '.join(sorted(TOP_LEVEL))})")
        name = self.text(data, "name")
        if name and name_problem(name):
            self.bad("name", str(name_problem(name)))
        elif name and name != self.path.stem:
            self.bad("name", f"{name!r} must equal the file name {self.path.stem!r}")
        summary = self.text(data, "summary")
        homepage = self.text(data, "homepage")
        if homepage and (problem := homepage_problem(homepage)):
            self.bad("homepage", problem)
        license_ = self.text(data, "license")
        if license_ and (problem := license_problem(license_)):
            self.bad("license", problem)
        version = data.get("version")
        if isinstance(version, (int, float)):
            self.bad("version", "must be a quoted string (YAML reads 1.10 as the number 1.1)")
            version = ""
        elif version is None:
            self.bad("version", "missing")
            version = ""
        elif version_problem(version):
            self.bad("version", str(version_problem(version)))
            version = ""
        source = self.source(data.get("source")) if "source" in data else None
        versions = self.versions(data.get("versions"), required=source is None)
        known = set(versions) | set(source.versions if source else ())
        if version and known and version not in known:
            self.bad("version", f"{version!r} has no entry under versions or source.versions")
        default_from = BuildFrom.SOURCE if source and not versions else BuildFrom.RELEASE
        if "from" in data:
            if data["from"] not in set(BuildFrom):
                self.bad("from", f"must be one of {', '.join(BuildFrom)}")
            elif data["from"] == BuildFrom.SOURCE and source is None:
                self.bad("from", "source needs a source: section")
            else:
                default_from = BuildFrom(data["from"])
        # `input:` indexes must exist for every version and arch (unknown while those are broken).
        counts = {
            len(e)
            for arches in versions.values()
            for e in arches.values()
            if not isinstance(e, str) and e
        }
        install = self.install(data.get("install"), min(counts) if counts else None)
        files = self.files(data.get("files"))
        containerd = (
            self.containerd(data.get("containerd"), install) if "containerd" in data else None
        )
        if containerd is not None:
            files += containerd_files(containerd, name)
        smoke = self.smoke(data.get("smoke"))
        os_ = self.target_os(data.get("os"))
        checksums = data.get("checksums")
        if checksums is not None:
            if not isinstance(checksums, str) or not checksums.startswith("https://"):
                self.bad("checksums", "must be an https:// URL template")
                checksums = None
            else:
                self.placeholders("checksums", checksums, PLACEHOLDERS)
        packages = self.packages(data.get("package"))
        if self.problems:
            raise RecipeError(self.problems)
        return Recipe(
            path=self.path,
            name=name,
            summary=summary,
            homepage=homepage,
            license=license_,
            version=str(version),
            versions=versions,
            install=install,
            files=files,
            smoke=smoke,
            os=os_,
            checksums=checksums,
            source=source,
            default_from=default_from,
            containerd=containerd,
            packages=packages,
        )

    def packages(self, value: Any) -> tuple[str, ...]:
        """`package:` a purl template (or a list: what else the image ships, e.g. a bundled
        server) naming the upstream package advisories are matched against."""
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        good = []
        for i, item in enumerate(items):
            where = f"package[{i}]" if isinstance(value, list) else "package"
            if not isinstance(item, str) or "@" not in item:
                self.bad(where, "must be a purl with a version, e.g. pkg:cargo/NAME@{version}")
                continue
            try:
                Package.from_purl(item.replace("{version}", "1.0.0"))
            except PipelineError as err:
                self.bad(where, str(err))
                continue
            self.placeholders(where, item, frozenset({"version"}))
            good.append(item)
        return tuple(good)

    def placeholders(self, where: str, template: str, allowed: frozenset[str]) -> None:
        try:
            fields = [
                (f, spec, conv)
                for _, f, spec, conv in string.Formatter().parse(template)
                if f is not None
            ]
        except ValueError as err:
            self.bad(where, f"bad placeholder syntax: {err}")
            return
        if any(spec or conv for _, spec, conv in fields):
            self.bad(
                where,
                "placeholders take no format spec or conversion (write {version}, "
                "not {version:...} or {version!r})",
            )
            return
        names = {f for f, _, _ in fields}
        for unknown in sorted(names - allowed):
            self.bad(
                where,
                f"unknown placeholder {{{unknown}}} (known: "
                f"{', '.join('{' + p + '}' for p in sorted(allowed))})",
            )

    def versions(self, data: Any, required: bool = True) -> Versions:
        if data is None and not required:
            return {}
        if not isinstance(data, dict) or not data:
            self.bad("versions", "must be a non-empty mapping of version -> arch -> input")
            return {}
        result: Versions = {}
        for ver, arches in data.items():
            where = f"versions.{ver}"
            if not isinstance(ver, str):
                self.bad(where, 'version keys must be quoted strings like "1.2.3"')
                continue
            if version_problem(ver):
                self.bad(where, str(version_problem(ver)))
                continue
            if not isinstance(arches, dict) or not arches:
                self.bad(where, f"must map arches ({', '.join(Arch)}) to inputs")
                continue
            entries: dict[Arch, tuple[Input, ...] | str] = {}
            for arch, entry in arches.items():
                if arch not in set(Arch):
                    self.bad(f"{where}.{arch}", f"unknown arch (known: {', '.join(Arch)})")
                    continue
                parsed = self.arch_entry(f"{where}.{arch}", entry)
                if parsed is not None:
                    entries[Arch(arch)] = parsed
            result[ver] = entries
        return result

    def arch_entry(self, where: str, entry: Any) -> tuple[Input, ...] | str | None:
        if isinstance(entry, dict) and set(entry) == {"unavailable"}:
            reason = entry["unavailable"]
            if not isinstance(reason, str) or not reason.strip():
                self.bad(f"{where}.unavailable", "must say why, as a string")
                return None
            return reason
        items = entry if isinstance(entry, list) else [entry]
        if not items:
            self.bad(where, "needs at least one input")
            return None
        inputs: list[Input] = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if isinstance(entry, list) else where
            if not isinstance(item, dict) or set(item) != {"url", "sha256"}:
                self.bad(at, "must be {url: ..., sha256: ...} (or {unavailable: reason})")
                continue
            url, sha = item["url"], item["sha256"]
            if not isinstance(url, str) or not url.startswith("https://"):
                self.bad(f"{at}.url", "must be an https:// URL")
                continue
            self.placeholders(f"{at}.url", url, PLACEHOLDERS)
            if sha is not None and (not isinstance(sha, str) or not SHA256_RE.match(sha)):
                self.bad(f"{at}.sha256", "must be 64 lowercase hex digits, or null until locked")
                continue
            inputs.append(Input(url=url, sha256=sha))
        return tuple(inputs)

    def source(self, data: Any) -> Source | None:
        where = "source"
        if not isinstance(data, dict) or "kind" not in data:
            self.bad(where, "must be a mapping with kind (go, cargo, cmake or make) and versions")
            return None
        if data["kind"] not in set(SourceKind):
            self.bad(f"{where}.kind", f"must be one of {', '.join(SourceKind)}")
            return None
        kind = SourceKind(data["kind"])
        allowed = SOURCE_COMMON | SOURCE_FIELDS[kind]
        for key in sorted(set(data) - allowed, key=str):
            self.bad(
                f"{where}.{key}",
                f"unknown field for kind {kind} (known: {', '.join(sorted(allowed))})",
            )
        crate = data.get("crate")
        if crate is not None and (not isinstance(crate, str) or not CRATE_NAME_RE.match(crate)):
            self.bad(f"{where}.crate", "must be a crates.io crate name")
            crate = None
        pins = self.source_versions(data.get("versions"), kind, crate)
        inputs = {n for pin in pins.values() for n, _ in pin.inputs}
        allowed_placeholders = PLACEHOLDERS | {"triple"} | inputs
        strings = {
            k: self.template(f"{where}.{k}", data.get(k, ""), allowed_placeholders)
            for k in ("directory", "module", "ldflags", "package", "target")
        }
        if kind is SourceKind.GO and not strings["module"]:
            self.bad(f"{where}.module", "missing (the Go module path)")
        directory = strings["directory"]
        if directory.startswith("/") or ".." in directory.split("/"):
            # The pin names every byte a build starts from: nothing outside the pinned tree.
            self.bad(f"{where}.directory", "must be a relative path inside the source tree")
        lists = {
            k: self.string_list(f"{where}.{k}", data.get(k), allowed_placeholders)
            for k in ("prepare", "features", "configure", "tags")
        }
        packages = self.string_map(f"{where}.packages", data.get("packages"))
        outputs = self.string_map(f"{where}.outputs", data.get("outputs"))
        if kind is SourceKind.GO and not packages:
            self.bad(
                f"{where}.packages",
                "missing (output name -> Go package, e.g. {wazero: ./cmd/wazero})",
            )
        if kind is not SourceKind.GO and not outputs and not crate:
            # A crate's manifest names its binaries; anything else says what it builds.
            self.bad(f"{where}.outputs", "missing (output name -> built file)")
        for name, built in {**packages, **outputs}.items():
            if "/" in name or name in ("", ".", ".."):
                self.bad(f"{where}.outputs", f"{name!r}: an output name is a plain file name")
            if built.startswith("/") or ".." in built.split("/"):
                self.bad(f"{where}.outputs.{name}", "must be a relative path inside the build")
        arches = data.get("arches", list(Arch))
        if not isinstance(arches, list) or not arches or not set(arches) <= set(Arch):
            self.bad(f"{where}.arches", f"must be a list of {', '.join(Arch)}")
            arches = list(Arch)
        return Source(
            kind=kind,
            versions=pins,
            directory=strings["directory"] or ".",
            prepare=tuple(lists["prepare"]),
            outputs=outputs,
            module=strings["module"],
            packages=packages,
            ldflags=strings["ldflags"],
            package=strings["package"],
            features=tuple(lists["features"]),
            configure=tuple(lists["configure"]),
            target=strings["target"],
            tags=tuple(lists["tags"]),
            arches=tuple(Arch(a) for a in arches),
            crate=crate or "",
        )

    def template(self, where: str, value: Any, allowed: frozenset[str]) -> str:
        if not isinstance(value, str):
            self.bad(where, "must be a string")
            return ""
        self.placeholders(where, value, allowed)
        return value

    def string_list(self, where: str, value: Any, allowed: frozenset[str]) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(where, "must be a list of strings")
            return []
        for i, item in enumerate(value):
            self.placeholders(f"{where}[{i}]", item, allowed)
        return list(value)

    def string_map(self, where: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.bad(where, "must map names to strings")
            return {}
        return dict(value)

    def source_versions(
        self, data: Any, kind: SourceKind, crate: str | None = None
    ) -> dict[str, SourcePin]:
        where = "source.versions"
        if not isinstance(data, dict) or not data:
            self.bad(where, "must map versions to their pins")
            return {}
        pins: dict[str, SourcePin] = {}
        for ver, pin in data.items():
            at = f"{where}.{ver}"
            if not isinstance(ver, str) or version_problem(ver):
                self.bad(at, str(version_problem(ver)))
                continue
            if not isinstance(pin, dict):
                self.bad(at, "must be a mapping (archive, git, h1, inputs, lock_sha256)")
                continue
            if crate is not None:
                pins[ver] = self.crate_pin(at, pin, crate)
                continue
            for key in sorted(
                set(pin) - {"archive", "git", "h1", "inputs", "lock_sha256"}, key=str
            ):
                self.bad(
                    f"{at}.{key}", "unknown field (known: archive, git, h1, inputs, lock_sha256)"
                )
            archive = self.fetched(f"{at}.archive", pin["archive"]) if "archive" in pin else None
            git = self.git(f"{at}.git", pin["git"]) if "git" in pin else None
            h1 = pin.get("h1")
            if h1 is not None and (not isinstance(h1, str) or not H1_RE.match(h1)):
                self.bad(f"{at}.h1", "must be the module's go.sum hash, h1:<base64>=")
                h1 = None
            if kind is SourceKind.GO:
                if archive or git:
                    self.bad(
                        at, "a go source is the module from the proxy: give h1, not archive or git"
                    )
                if "h1" not in pin:
                    self.bad(f"{at}.h1", "missing (null until `wasm-sysexts lock`)")
            elif bool(archive) == bool(git):
                self.bad(at, "needs exactly one of archive or git")
            lock = pin.get("lock_sha256")
            if lock is not None and (not isinstance(lock, str) or not SHA256_RE.match(lock)):
                self.bad(f"{at}.lock_sha256", "must be 64 lowercase hex digits")
                lock = None
            if kind is SourceKind.CARGO and "lock_sha256" not in pin:
                self.bad(f"{at}.lock_sha256", "missing: the Cargo.lock the build must use")
            inputs = pin.get("inputs") or {}
            if not isinstance(inputs, dict):
                self.bad(
                    f"{at}.inputs",
                    "must map placeholder names to {url, sha256|tree} or {url, commit}",
                )
                inputs = {}
            named = []
            for name, item in inputs.items():
                if (
                    not isinstance(name, str)
                    or not name.isidentifier()
                    or name in PLACEHOLDERS | {"triple"}
                ):
                    self.bad(f"{at}.inputs.{name}", "must be a plain name (not a placeholder)")
                    continue
                if isinstance(item, dict) and "commit" in item:
                    pinned: Fetched | GitPin | None = self.git(f"{at}.inputs.{name}", item)
                else:
                    pinned = self.fetched(f"{at}.inputs.{name}", item)
                if pinned:
                    named.append((name, pinned))
            pins[ver] = SourcePin(
                archive=archive, git=git, h1=h1, inputs=tuple(named), lock_sha256=lock
            )
        return pins

    def crate_pin(self, at: str, pin: dict[str, Any], crate: str) -> SourcePin:
        """A crates.io version: the .crate's sha256 (the index's cksum) and its Cargo.lock's."""
        for key in sorted(set(pin) - {"sha256", "lock_sha256"}, key=str):
            self.bad(f"{at}.{key}", "unknown field for a crate (known: sha256, lock_sha256)")
        for key in ("sha256", "lock_sha256"):
            value = pin.get(key, "")
            if key not in pin:
                self.bad(f"{at}.{key}", "missing (null until `wasm-sysexts lock --from source`)")
            elif value is not None and (not isinstance(value, str) or not SHA256_RE.match(value)):
                self.bad(f"{at}.{key}", "must be 64 lowercase hex digits, or null until locked")
        sha, lock = pin.get("sha256"), pin.get("lock_sha256")
        return SourcePin(
            archive=Fetched(CRATE_URL.format(crate=crate), sha if isinstance(sha, str) else None),
            lock_sha256=lock if isinstance(lock, str) else None,
        )

    def fetched(self, where: str, item: Any) -> Fetched | None:
        if (
            not isinstance(item, dict)
            or "url" not in item
            or not set(item) <= {"url", "sha256", "tree"}
        ):
            self.bad(where, "must be {url: ..., sha256: ...} or {url: ..., tree: <git tree id>}")
            return None
        url, sha, tree = item["url"], item.get("sha256"), item.get("tree")
        if not isinstance(url, str) or not url.startswith("https://"):
            self.bad(f"{where}.url", "must be an https:// URL")
            return None
        self.placeholders(f"{where}.url", url, PLACEHOLDERS)
        if sha is not None and (not isinstance(sha, str) or not SHA256_RE.match(sha)):
            self.bad(f"{where}.sha256", "must be 64 lowercase hex digits, or null until locked")
            return None
        if tree is not None and (not isinstance(tree, str) or not GIT_COMMIT_RE.match(tree)):
            self.bad(f"{where}.tree", "must be a 40-hex git tree id")
            return None
        if "sha256" not in item and "tree" not in item:
            self.bad(where, "needs sha256 (or tree); null until `wasm-sysexts lock`")
        return Fetched(url=url, sha256=sha, tree=tree)

    def git(self, where: str, item: Any) -> GitPin | None:
        if not isinstance(item, dict) or set(item) != {"url", "commit"}:
            self.bad(where, "must be {url: https://..., commit: <40 hex>}")
            return None
        url, commit = item["url"], item["commit"]
        if not isinstance(url, str) or not url.startswith("https://"):
            self.bad(f"{where}.url", "must be an https:// URL")
            return None
        if not isinstance(commit, str) or not GIT_COMMIT_RE.match(commit):
            self.bad(f"{where}.commit", "must be the full 40-hex commit id")
            return None
        return GitPin(url=url, commit=commit)

    def image_path(self, where: str, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith(("/usr/", "/opt/")):
            self.bad(where, "must be an absolute path under /usr/ or /opt/")
            return ""
        if any(part in ("..", ".") for part in value.split("/")) or "//" in value:
            self.bad(where, "must not contain '..', '.' or empty components")
            return ""
        return value

    def mode(self, where: str, value: Any, default: int | None) -> int | None:
        if value is None:
            return default
        if not isinstance(value, str) or not MODE_RE.match(value):
            self.bad(where, 'must be an octal string such as "0755" (quoted)')
            return default
        mode = int(value, 8)
        if mode & 0o7000:
            self.bad(where, "setuid, setgid and sticky bits are not allowed")
        return mode

    def install(self, data: Any, input_count: int | None) -> tuple[Install, ...]:
        if not isinstance(data, list) or not data:
            self.bad("install", "must be a non-empty list of {from, to, mode}")
            return ()
        result: list[Install] = []
        for i, item in enumerate(data):
            where = f"install[{i}]"
            if not isinstance(item, dict) or not {"from", "to"} <= set(item):
                self.bad(where, "must be a mapping with from and to")
                continue
            for key in sorted(set(item) - {"from", "to", "mode", "input"}):
                self.bad(f"{where}.{key}", "unknown field (known: from, to, mode, input)")
            src = item["from"]
            if not isinstance(src, str) or not src or src.startswith("/") or ".." in src.split("/"):
                self.bad(f"{where}.from", "must be a relative archive member path or glob")
                continue
            self.placeholders(f"{where}.from", src, PLACEHOLDERS)
            dst = self.image_path(f"{where}.to", item["to"])
            index = item.get("input", 0)
            if (
                not isinstance(index, int)
                or index < 0
                or (input_count is not None and index >= input_count)
            ):
                self.bad(f"{where}.input", f"must be an input index below {input_count}")
                continue
            mode = self.mode(f"{where}.mode", item.get("mode"), None)
            if dst:
                result.append(Install(src=src, dst=dst, mode=mode, input=index))
        return tuple(result)

    def files(self, data: Any) -> tuple[ExtraFile, ...]:
        if data is None:
            return ()
        if not isinstance(data, list):
            self.bad("files", "must be a list of {path, content, mode}")
            return ()
        result: list[ExtraFile] = []
        for i, item in enumerate(data):
            where = f"files[{i}]"
            if not isinstance(item, dict) or not {"path", "content"} <= set(item):
                self.bad(where, "must be a mapping with path and content")
                continue
            for key in sorted(set(item) - {"path", "content", "mode"}):
                self.bad(f"{where}.{key}", "unknown field (known: path, content, mode)")
            path = self.image_path(f"{where}.path", item["path"])
            if not isinstance(item["content"], str):
                self.bad(f"{where}.content", "must be a string")
                continue
            mode = self.mode(f"{where}.mode", item.get("mode"), 0o644)
            if path and mode is not None:
                result.append(ExtraFile(path=path, content=item["content"], mode=mode))
        return tuple(result)

    def containerd(self, data: Any, install: tuple[Install, ...]) -> ContainerdRuntime | None:
        where = "containerd"
        if not isinstance(data, dict) or not {"handler", "runtime_type"} <= set(data):
            self.bad(where, "must be a mapping with handler and runtime_type")
            return None
        for key in sorted(set(data) - CONTAINERD_KEYS, key=str):
            self.bad(
                f"{where}.{key}", f"unknown field (known: {', '.join(sorted(CONTAINERD_KEYS))})"
            )
        handler, runtime_type = data["handler"], data["runtime_type"]
        ok = True
        if not isinstance(handler, str) or not HANDLER_RE.match(handler):
            self.bad(
                f"{where}.handler",
                "must be a DNS label ([a-z0-9-], at most 63), as a RuntimeClass handler is",
            )
            ok = False
        if not isinstance(runtime_type, str) or not RUNTIME_TYPE_RE.match(runtime_type):
            self.bad(f"{where}.runtime_type", "must be io.containerd.<name>.v<N>")
            return None
        binary = f"/usr/bin/{shim_binary(runtime_type)}"
        if install and not any(
            i.dst.rstrip("/") == binary
            or (i.dst == "/usr/bin/" and i.src.rsplit("/", 1)[-1] == binary[9:])
            for i in install
        ):
            self.bad(
                f"{where}.runtime_type",
                f"{runtime_type} runs {binary}, which install does not ship",
            )
            ok = False
        options: list[tuple[str, bool | int | str]] = []
        raw = data.get("options") or {}
        if not isinstance(raw, dict):
            self.bad(f"{where}.options", "must be a mapping of option -> value")
            raw = {}
        for key, value in raw.items():
            if (
                not isinstance(key, str)
                or not OPTION_RE.match(key)
                or not isinstance(value, bool | int | str)
            ):
                self.bad(
                    f"{where}.options.{key}",
                    "must be a name mapped to a boolean, integer or string",
                )
                ok = False
            else:
                options.append((key, value))
        pods = data.get("pods", True)
        if not isinstance(pods, bool):
            self.bad(f"{where}.pods", "must be true or false")
            ok = False
        if not ok:
            return None
        return ContainerdRuntime(handler, runtime_type, tuple(options), pods)

    def smoke(self, data: Any) -> tuple[str, ...]:
        if data is None:
            return ()
        if not isinstance(data, list) or not all(isinstance(c, str) and c for c in data):
            self.bad("smoke", "must be a list of shell command strings")
            return ()
        for i, cmd in enumerate(data):
            self.placeholders(f"smoke[{i}]", cmd, SMOKE_PLACEHOLDERS)
        return tuple(data)

    def target_os(self, data: Any) -> TargetOS:
        if data is None:
            return TargetOS()
        if not isinstance(data, dict) or "id" not in data:
            self.bad("os", "must be a mapping with id (and sysext_level or version_id)")
            return TargetOS()
        for key in sorted(set(data) - OS_KEYS):
            self.bad(f"os.{key}", f"unknown field (known: {', '.join(sorted(OS_KEYS))})")
        values: dict[str, str | None] = {}
        for key in sorted(OS_KEYS):
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or not OS_FIELD_RE.match(value)):
                self.bad(f"os.{key}", "must be a quoted string of [A-Za-z0-9._+~-]")
                return TargetOS()
            values[key] = value
        os_id = values["id"] or TargetOS.id
        if os_id != TargetOS.id and not (values["sysext_level"] or values["version_id"]):
            self.bad("os", "a specific os.id needs sysext_level or version_id")
        return TargetOS(
            id=os_id, sysext_level=values["sysext_level"], version_id=values["version_id"]
        )
