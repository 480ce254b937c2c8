"""Where a recipe's new versions come from, and which versions upstream has released.

A recipe names no upstream explicitly: it is derived from the URLs its default version builds
from. A release asset `https://github.com/OWNER/REPO/releases/download/TAG/FILE` whose TAG holds
the version gives the repository and a tag template (`v{version}`, `WAMR-{version}`, runwasi's
`containerd-shim-wasmtime/v{version}`, written `%2F` in URLs); a recipe built from source by
default is followed through its source: a Go module through the module proxy's `@v/list`, a
crates.io download through the crates.io API, a GitHub tag archive or release asset through that
repository's releases.

GitHub releases come from the REST API (`GET /repos/OWNER/REPO/releases`, following the `Link:
rel="next"` pages); drafts and prereleases are skipped and only tags matching the template
count. The API base is configurable (a GitHub Enterprise server, or a test's fake) and an
optional token (GITHUB_TOKEN) is sent to that base only, never printed. The module proxy and
crates.io are read through `--mirror` like every other download.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from pipeline import __version__
from pipeline.build.fetch import check_base_url, mirror_url
from pipeline.core import log
from pipeline.core.errors import PipelineError
from pipeline.core.log import redact
from pipeline.core.vocab import VERSION_PATTERN, version_problem
from pipeline.publish.versions import newest_first, strverscmp_improved
from pipeline.recipe.model import BuildFrom, Recipe, SourceKind

_log = log.get("upstream")
GITHUB_API = "https://api.github.com"
GITHUB_API_ENV = "WASM_SYSEXTS_GITHUB_API"
TOKEN_ENV = "GITHUB_TOKEN"
GO_PROXY = "https://proxy.golang.org"
CRATES_API = "https://crates.io/api/v1/crates"
TIMEOUT = (15, 60)  # connect, read
RETRIES = 3  # attempts for 5xx answers and stalled reads
MAX_BYTES = 32 << 20  # one API answer
MAX_PAGES = 50  # 5000 releases: more means a loop, not a repository

GITHUB_RELEASE_RE = re.compile(
    r"^https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)"
    r"/releases/download/(?P<tag>[^/]+)/(?P<file>[^/]+)$"
)
GITHUB_ARCHIVE_RE = re.compile(
    r"^https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)"
    r"/archive/(?:refs/tags/)?(?P<tag>.+?)\.(?:tar\.gz|tgz|zip)$"
)
CRATE_RE = re.compile(
    r"^https://(?:crates\.io/api/v1/crates/(?P<a>[A-Za-z0-9_-]+)/[^/]+/download"
    r"|static\.crates\.io/crates/(?P<b>[A-Za-z0-9_-]+)/[^/]+\.crate)$"
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")  # a release asset's `digest` (GitHub, 2025-)
# Versions that are not releases even where upstream does not flag them (Go's v1.2.0-rc.1).
PRERELEASE_RE = re.compile(r"(?i)(alpha|beta|rc|pre|dev|nightly|snapshot|canary|preview)")


class Kind(StrEnum):
    GITHUB = "github"  # a repository's GitHub releases
    GO = "go"  # a Go module's versions on the module proxy
    CARGO = "cargo"  # a crate's versions on crates.io


@dataclass(frozen=True)
class Release:
    """One upstream release: its version, tag and (GitHub) asset file names, with the sha256
    GitHub computed for each asset where it records one (its `digest`)."""

    version: str
    tag: str
    assets: frozenset[str] = frozenset()
    digests: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Upstream:
    """Where a recipe's releases are listed."""

    kind: Kind
    owner: str = ""  # github
    repo: str = ""  # github
    tag: str = ""  # github: the tag template, `v{version}`
    module: str = ""  # go
    crate: str = ""  # cargo

    @property
    def url(self) -> str:
        """Where a person looks (not where the API is)."""
        if self.kind == Kind.GITHUB:
            return f"https://github.com/{self.owner}/{self.repo}/releases"
        if self.kind == Kind.GO:
            return f"https://pkg.go.dev/{self.module}?tab=versions"
        return f"https://crates.io/crates/{self.crate}"

    def tag_for(self, version: str) -> str:
        return self.tag.replace("{version}", version)

    def version_of(self, tag: str) -> str | None:
        """The version a tag names under the template, or None (another project's tag)."""
        prefix, _, suffix = self.tag.partition("{version}")
        match = re.fullmatch(re.escape(prefix) + f"({VERSION_PATTERN})" + re.escape(suffix), tag)
        return match.group(1) if match else None

    def to_json(self) -> dict[str, str]:
        out = {"kind": str(self.kind), "url": self.url}
        if self.kind == Kind.GITHUB:
            out |= {"repository": f"{self.owner}/{self.repo}", "tag": self.tag}
        elif self.kind == Kind.GO:
            out["module"] = self.module
        else:
            out["crate"] = self.crate
        return out


class NotDerivable(PipelineError):
    """The recipe's URLs do not say where its releases are listed."""


def derive(recipe: Recipe) -> Upstream:
    """The upstream of `recipe`'s default build; NotDerivable saying why there is none."""
    version = recipe.version
    # Release assets name the project's own tag series best, even for a recipe that builds
    # from source by default (a shim built from a shared workspace archive).
    found = _release_upstream(recipe)
    if found:
        return found
    if recipe.builds_from(version) is BuildFrom.RELEASE:
        raise NotDerivable(
            f"{recipe.path}: versions.{version}: no input is a GitHub release "
            "asset (https://github.com/OWNER/REPO/releases/download/TAG/FILE) "
            "whose TAG holds the version"
        )
    source = recipe.source
    assert source is not None  # builds from source
    if source.kind is SourceKind.GO:
        return Upstream(Kind.GO, module=source.module)
    pin = recipe.source_pin(version)
    if pin.archive:
        url = recipe.expand(pin.archive.url, version, source.arches[0])
        found = github_release(url, version) or _github_archive(url, version)
        if found:
            return found
        crate = CRATE_RE.match(url)
        if crate:
            return Upstream(Kind.CARGO, crate=crate["a"] or crate["b"])
    raise NotDerivable(
        f"{recipe.path}: source.versions.{version}: neither a Go module nor a "
        "GitHub or crates.io archive whose URL holds the version"
    )


def _release_upstream(recipe: Recipe) -> Upstream | None:
    """From the release URLs (inputs, then `checksums:`) of the default version, else of the
    other versions: an arch marked unavailable has no URL, the checksums template still does."""
    versions = [recipe.version, *sorted(v for v in recipe.versions if v != recipe.version)]
    for version in versions:
        for arch, entry in recipe.versions.get(version, {}).items():
            urls = (
                []
                if isinstance(entry, str)
                else [recipe.expand(i.url, version, arch) for i in entry]
            )
            checksums = recipe.checksums_url(version, arch)
            for url in [*urls, *([checksums] if checksums else [])]:
                found = github_release(url, version)
                if found:
                    return found
    return None


def github_release(url: str, version: str) -> Upstream | None:
    """The repository and tag template of a GitHub release asset URL whose tag holds `version`."""
    match = GITHUB_RELEASE_RE.match(url)
    if not match:
        return None
    return _github(match["owner"], match["repo"], unquote(match["tag"]), version)


def _github_archive(url: str, version: str) -> Upstream | None:
    match = GITHUB_ARCHIVE_RE.match(url)
    if not match:
        return None
    return _github(match["owner"], match["repo"], unquote(match["tag"]), version)


def _github(owner: str, repo: str, tag: str, version: str) -> Upstream | None:
    if version not in tag or "{" in tag or "}" in tag:
        return None
    upstream = Upstream(
        Kind.GITHUB, owner=owner, repo=repo, tag=tag.replace(version, "{version}", 1)
    )
    # The version must be the whole version-like part of the tag (not `1.0` in `v1.0.1`).
    return upstream if upstream.version_of(tag) == version else None


def encoded_tag(tag: str) -> str:
    """A tag as a release URL's path segment (`/` as %2F, as GitHub writes it)."""
    return quote(tag, safe="")


def newer(versions: list[str], than: str) -> list[str]:
    """The versions newer than `than` (systemd-sysupdate's order), newest first."""
    return [v for v in newest_first(versions) if strverscmp_improved(v, than) > 0]


# ---------------------------------------------------------------- listing releases


@dataclass
class Client:
    """Lists upstream releases; one listing per repository, module or crate per run."""

    github_api: str = GITHUB_API
    token: str | None = None
    mirror: str | None = None  # for the module proxy and crates.io
    go_proxy: str = GO_PROXY
    _seen: dict[tuple[str, ...], list[Release]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, github_api: str | None = None, mirror: str | None = None) -> Client:
        api = github_api or os.environ.get(GITHUB_API_ENV) or GITHUB_API
        check_base_url(api, "--github-api")
        if mirror:
            check_base_url(mirror, "--mirror")
        token = os.environ.get(TOKEN_ENV) or None
        parts = urlsplit(api)
        if (
            token
            and parts.scheme == "http"
            and parts.hostname not in ("127.0.0.1", "::1", "localhost")
        ):
            raise PipelineError(
                f"--github-api {redact(api)}: plain http, which would carry {TOKEN_ENV} in "
                "clear text; use https:// (or unset the token)"
            )
        return cls(
            github_api=api.rstrip("/"),
            token=token,
            mirror=mirror or None,
            go_proxy=_go_proxy(),
        )

    def releases(self, upstream: Upstream) -> list[Release]:
        """Upstream's releases, newest first (systemd-sysupdate's order)."""
        if upstream.kind == Kind.GITHUB:
            every = self._cached(
                ("github", upstream.owner, upstream.repo), lambda: self._github(upstream)
            )
            found = [
                Release(v, r.tag, r.assets, r.digests)
                for r in every
                if (v := upstream.version_of(r.tag)) is not None
            ]
        elif upstream.kind == Kind.GO:
            found = self._cached(("go", upstream.module), lambda: self._go(upstream.module))
        else:
            found = self._cached(("cargo", upstream.crate), lambda: self._crate(upstream.crate))
        usable = {
            r.version: r
            for r in found
            if version_problem(r.version) is None and not PRERELEASE_RE.search(r.version)
        }
        return [usable[v] for v in newest_first(list(usable))]

    def _cached(self, key: tuple[str, ...], get: Callable[[], list[Release]]) -> list[Release]:
        if key not in self._seen:
            self._seen[key] = get()
        return self._seen[key]

    def _github(self, upstream: Upstream) -> list[Release]:
        url: str | None = (
            f"{self.github_api}/repos/{upstream.owner}/{upstream.repo}/releases?per_page=100"
        )
        origin = _origin(self.github_api)
        found: list[Release] = []
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= MAX_PAGES:
                raise PipelineError(
                    f"{self._shown(url)}: release pages do not end (after {len(seen)} pages)"
                )
            if _origin(url) != origin:  # the token is for the API, nowhere else
                raise PipelineError(f"{self._shown(url)}: next page is not on {origin}")
            seen.add(url)
            data, resp = self._get_json(url, github=True)
            if not isinstance(data, list):
                raise PipelineError(f"{self._shown(url)}: not a list of releases")
            for item in data:
                release = _github_release(item)
                if release is None:
                    raise PipelineError(f"{self._shown(url)}: a release without a tag_name")
                if not (item.get("draft") or item.get("prerelease")):
                    found.append(release)
            url = resp.links.get("next", {}).get("url")
        return found

    def _go(self, module: str) -> list[Release]:
        from pipeline.build.source import go_module_escape

        url = f"{self.go_proxy}/{go_module_escape(module)}/@v/list"
        text = self._get(url).decode("utf-8", errors="replace")
        versions = [line.strip() for line in text.splitlines() if line.strip()]
        # Go versions are v-prefixed semver; `+incompatible` and pseudo-versions are not releases.
        return [Release(v[1:], v) for v in versions if v.startswith("v") and "+" not in v]

    def _crate(self, crate: str) -> list[Release]:
        url = f"{CRATES_API}/{crate}"
        data, _ = self._get_json(url, github=False)
        items = data.get("versions") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise PipelineError(f"{self._shown(mirror_url(url, self.mirror))}: no versions list")
        return [
            Release(str(v["num"]), str(v["num"]))
            for v in items
            if isinstance(v, dict) and isinstance(v.get("num"), str) and not v.get("yanked")
        ]

    # ---- HTTP

    def _get_json(self, url: str, github: bool) -> tuple[Any, requests.Response]:
        shown_url = url if github else mirror_url(url, self.mirror)
        body, resp = self._request(url, github)
        try:
            return json.loads(body), resp
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PipelineError(
                f"{self._shown(shown_url)}: not JSON ({type(err).__name__} at "
                f"byte {getattr(err, 'pos', getattr(err, 'start', 0))})"
            ) from None

    def _get(self, url: str) -> bytes:
        return self._request(url, github=False)[0]

    def _request(self, url: str, github: bool) -> tuple[bytes, requests.Response]:
        """GET `url` (GitHub's API as given, anything else through the mirror)."""
        target = url if github else mirror_url(url, self.mirror)
        shown = self._shown(target)
        headers = {"User-Agent": f"wasm-sysexts/{__version__} (upstream release check)"}
        if github:
            headers |= {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
        delay = 1.0
        for attempt in range(1, RETRIES + 1):
            try:
                # Redirects are followed (a renamed repository); requests drops the
                # Authorization header on a redirect to another host.
                with requests.get(target, headers=headers, timeout=TIMEOUT, stream=True) as resp:
                    if resp.status_code < 500:
                        if resp.status_code != 200:
                            raise PipelineError(f"{shown}: {self._refusal(resp)}")
                        return self._body(resp, shown), resp
            except requests.exceptions.ReadTimeout:
                pass  # retried
            except (requests.exceptions.RequestException, ValueError) as err:
                # The exception's text may quote the URL or headers: name its type only.
                raise PipelineError(
                    f"{shown}: cannot reach server ({type(err).__name__})"
                ) from None
            if attempt == RETRIES:
                raise PipelineError(
                    f"{shown}: server error or no answer (gave up after {RETRIES} attempts)"
                )
            _log.info(f"{shown}: server error or no answer; retrying in {delay:.0f}s")
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _body(self, resp: requests.Response, shown: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(65536):
                size += len(chunk)
                if size > MAX_BYTES:
                    raise PipelineError(f"{shown}: answer larger than {MAX_BYTES} bytes")
                chunks.append(chunk)
        except requests.exceptions.RequestException as err:
            raise PipelineError(f"{shown}: answer incomplete ({type(err).__name__})") from None
        return b"".join(chunks)

    def _refusal(self, resp: requests.Response) -> str:
        """What a non-200 answer means, on one line (GitHub's rate limits spelled out)."""
        status = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
        remaining = resp.headers.get("X-RateLimit-Remaining")
        if resp.status_code in (403, 429) and (remaining == "0" or "Retry-After" in resp.headers):
            when = ""
            reset = resp.headers.get("X-RateLimit-Reset", "")
            if reset.isdigit():
                try:
                    when = " until " + datetime.fromtimestamp(int(reset), UTC).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                except (ValueError, OverflowError, OSError):  # no date a calendar holds
                    when = f" until {reset[:20]} (not a date)"
            elif resp.headers.get("Retry-After", "").isdigit():
                when = f" for {resp.headers['Retry-After']} s"
            hint = "" if self.token else f"; set {TOKEN_ENV} for a higher limit"
            return f"{status}: API rate limit exceeded{when}{hint}"
        message = ""
        try:
            data = json.loads(resp.raw.read(65536, decode_content=True) or b"null")
            if isinstance(data, dict) and isinstance(data.get("message"), str):
                message = ": " + " ".join(data["message"].split())[:200]
        except (ValueError, requests.exceptions.RequestException, OSError):
            pass
        return self._scrub(status + message)

    def _shown(self, url: str) -> str:
        return self._scrub(redact(url))

    def _scrub(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text


def _github_release(item: Any) -> Release | None:
    if not isinstance(item, dict) or not isinstance(item.get("tag_name"), str):
        return None
    assets = item.get("assets")
    if not isinstance(assets, list):
        assets = []
    named = [a for a in assets if isinstance(a, dict) and isinstance(a.get("name"), str)]
    digests = {
        a["name"]: a["digest"][7:]
        for a in named
        if isinstance(a.get("digest"), str) and DIGEST_RE.match(a["digest"])
    }
    return Release("", item["tag_name"], frozenset(a["name"] for a in named), digests)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _go_proxy() -> str:
    """The first proxy of GOPROXY (`https://proxy.golang.org,direct`); `direct` and `off`
    name no proxy to list versions from, so the default one is used."""
    for entry in re.split(r"[,|]", os.environ.get("GOPROXY", "")):
        entry = entry.strip().rstrip("/")
        if entry.startswith(("https://", "http://")):
            return entry
    return GO_PROXY
