"""`outdated` and `bump` against a local fake of the GitHub API and the local mirror."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run_cli
from support.fake_github import FakeGitHub
from support.mirror import Mirror
from support.payloads import tar_bytes

from pipeline.core.errors import PipelineError
from pipeline.core.vocab import Arch
from pipeline.recipe import load
from pipeline.recipe.bump import add_version, entry_for
from pipeline.recipe.load import default_recipes_dir, load_all
from pipeline.recipe.upstream import Kind, Release, derive

TOKEN = "ghp_t0psecretTOKENvalue"  # a fake, checked never to be printed
ARCHES = {"x86-64": "x86_64", "arm64": "aarch64"}


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


def asset_url(repo: str, version: str, name: str) -> str:
    return f"https://github.com/{repo}/releases/download/v{version}/{name}"


def publish(
    mirror: Mirror,
    github: FakeGitHub,
    repo: str,
    version: str,
    *,
    leave_out: str = "",
    wrong_sum: str = "",
    digests: str = "",
) -> dict[str, str]:
    """Release v`version` of `repo`: its tarballs and SHA256SUMS on the mirror, the release in
    the fake API (without asset `leave_out`; SHA256SUMS lying about `wrong_sum`; with GitHub's
    asset digests if `digests` is "right" or "wrong"); returns {asset: sha256}."""
    sums: dict[str, str] = {}
    for uarch in ARCHES.values():
        name = f"tiny-{version}-{uarch}.tar.gz"
        data = tar_bytes(
            {"tiny/bin/tiny": (f"#!/bin/sh\necho {repo} {version} {uarch}\n".encode(), 0o755)}, "gz"
        )
        mirror.put(asset_url(repo, version, name), data)
        sums[name] = hashlib.sha256(data).hexdigest()
    listed = {n: ("0" * 64 if n == wrong_sum else h) for n, h in sums.items()}
    mirror.put(
        asset_url(repo, version, "SHA256SUMS"),
        "".join(f"{h}  {n}\n" for n, h in listed.items()).encode(),
    )
    recorded = {n: ("f" * 64 if digests == "wrong" else h) for n, h in sums.items()}
    github.release(
        repo,
        f"v{version}",
        [n for n in [*sums, "SHA256SUMS"] if n != leave_out],
        digests=recorded if digests else None,
    )
    return sums


def write_tiny(
    recipes: Path, repo: str, version: str, sums: dict[str, str] | None, arm64: str = ""
) -> Path:
    """Recipe `tiny` at `version` of `repo`, pinned to `sums` (or null); `arm64` replaces its
    arm64 entry."""
    lines = []
    for arch, uarch in ARCHES.items():
        name = f"tiny-{version}-{uarch}.tar.gz"
        pin = f'"{sums[name]}"' if sums else "null"
        lines.append(
            f'    {arch}: {{url: "{asset_url(repo, version, name)}", sha256: {pin}}}'
            f"  # {arch} pin\n"
        )
    if arm64:
        lines[1] = f"    arm64: {arm64}\n"
    recipes.mkdir(exist_ok=True)
    path = recipes / "tiny.yaml"
    path.write_text(f"""\
# test recipe tiny: this comment stays
name: tiny
summary: test payload
homepage: https://example.org/tiny
license: MIT
package: "pkg:github/{repo}@v{{version}}"
version: "{version}"  # the default
checksums: "https://github.com/{repo}/releases/download/v{{version}}/SHA256SUMS"
versions:
  # {version}: the first release (this comment stays with it)
  "{version}":
{"".join(lines)}install:
  - {{from: "tiny/bin/tiny", to: /usr/bin/tiny, mode: "0755"}}
smoke:
  - "tiny"
""")
    return path


def inserted(before: str, after: str) -> str:
    """What `after` inserted right below the top-level `versions:` line of `before`; fails
    unless that is all that differs."""
    at = before.index("\nversions:\n") + len("\nversions:\n")
    assert after.startswith(before[:at]) and after.endswith(before[at:])
    return after[at : len(after) - len(before) + at]


def cli(
    github: FakeGitHub, mirror: Mirror, tmp_path: Path, *args: str | Path
) -> tuple[int, str, str]:
    cache: list[str | Path] = ["--cache", tmp_path / "cache"] if args[0] == "bump" else []
    proc = run_cli(
        *args,
        "--recipes",
        tmp_path / "recipes",
        "--github-api",
        github.url,
        "--mirror",
        mirror.url,
        *cache,
        env={"GITHUB_TOKEN": TOKEN, "GOPROXY": "https://proxy.golang.org,direct"},
    )
    assert TOKEN not in proc.stdout + proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def test_outdated_lists_newer_releases_of_github_go_and_crates_upstreams(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    repo = "example/tiny-outdated"
    for version in ("0.9", "1.0", "1.1"):
        github.release(repo, f"v{version}", [])
    github.release(repo, "v1.2.0-rc.1", [])  # not flagged, still not a release
    github.release(repo, "v1.3", [], prerelease=True)
    github.release(repo, "v2.0", [], draft=True)
    github.release(repo, "docs-1.9", [])  # another tag series
    github.release(repo, "v1.1.1", [])
    github.page_size = 2  # the 8 releases come on 4 pages
    recipes = tmp_path / "recipes"
    write_tiny(recipes, repo, "1.0", None)
    (recipes / "nowhere.yaml").write_text(
        (recipes / "tiny.yaml")
        .read_text()
        .replace("name: tiny", "name: nowhere")
        .replace("https://github.com/", "https://downloads.example.org/")
    )
    (recipes / "gomod.yaml").write_text("""\
name: gomod
summary: a Go module built from source
homepage: https://example.org/gomod
license: MIT
version: "1.0.0"
source:
  kind: go
  module: example.org/Tiny/gomod
  packages: {gomod: ./cmd/gomod}
  versions:
    "1.0.0": {h1: null}
install:
  - {from: "gomod", to: /usr/bin/gomod}
""")
    mirror.put(
        "https://proxy.golang.org/example.org/!tiny/gomod/@v/list",
        b"v1.0.0\nv1.2.0\nv1.1.0\nv1.3.0-rc.1\nv2.0.0+incompatible\n",
    )
    (recipes / "crate.yaml").write_text("""\
name: crate
summary: a crate built from source
homepage: https://example.org/crate
license: MIT
version: "0.4.0"
source:
  kind: cargo
  versions:
    "0.4.0":
      archive: {url: "https://static.crates.io/crates/tinycrate/tinycrate-{version}.crate",
                sha256: null}
      lock_sha256: null
  outputs: {crate: release/crate}
install:
  - {from: "crate", to: /usr/bin/crate}
""")
    mirror.put(
        "https://crates.io/api/v1/crates/tinycrate",
        json.dumps(
            {
                "versions": [
                    {"num": "0.5.0", "yanked": True},
                    {"num": "0.4.1", "yanked": False},
                    {"num": "0.4.0", "yanked": False},
                    {"num": "0.10.0-beta.1", "yanked": False},
                ]
            }
        ).encode(),
    )

    github.requests.clear()
    code, out, err = cli(github, mirror, tmp_path, "outdated", "--json")
    github.page_size = 100
    assert code == 0, err
    status = {s["name"]: s for s in json.loads(out)}
    assert status["tiny"] == {
        "name": "tiny",
        "version": "1.0",
        "newest": "1.1.1",
        "newer": ["1.1.1", "1.1"],
        "outdated": True,
        "fixes": {},
        "problem": None,
        "upstream": {
            "kind": "github",
            "url": f"https://github.com/{repo}/releases",
            "repository": repo,
            "tag": "v{version}",
        },
    }
    pages = [(p, a) for p, a in github.requests if p.startswith(f"/repos/{repo}/releases")]
    assert len(pages) == 4 and all(a == f"Bearer {TOKEN}" for _, a in pages)
    assert status["nowhere"]["upstream"] is None and status["nowhere"]["outdated"] is False
    assert "no input is a GitHub release asset" in status["nowhere"]["problem"]
    assert (status["gomod"]["newer"], status["gomod"]["upstream"]["kind"]) == (
        ["1.2.0", "1.1.0"],
        "go",
    )
    assert (status["crate"]["newest"], status["crate"]["newer"]) == ("0.4.1", ["0.4.1"])

    code, out, err = cli(github, mirror, tmp_path, "outdated", "tiny", "nowhere")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "VERSION", "NEWEST", "NEWER", "FIXES", "UPSTREAM"]
    assert rows[1][:4] == ["tiny", "1.0", "1.1.1", "1.1.1,1.1"]
    assert rows[2][:4] == ["nowhere", "1.0", "-", "-"] and "\nnowhere: " in out


def test_bump_adds_the_release_locks_it_and_makes_it_the_default(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    repo = "example/tiny-bump"
    old = publish(mirror, github, repo, "1.0")
    new = publish(mirror, github, repo, "1.1", digests="right")
    path = write_tiny(tmp_path / "recipes", repo, "1.0", old)
    before = path.read_text()

    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert {
        k: report[k] for k in ("name", "version", "previous", "added", "default", "tag", "changed")
    } == {
        "name": "tiny",
        "version": "1.1",
        "previous": "1.0",
        "added": True,
        "default": True,
        "tag": "v1.1",
        "changed": True,
    }
    assert report["lock"] == [
        f"tiny-1.1-aarch64.tar.gz: {new['tiny-1.1-aarch64.tar.gz']} (matches upstream checksums)",
        f"tiny-1.1-x86_64.tar.gz: {new['tiny-1.1-x86_64.tar.gz']} (matches upstream checksums)",
    ]
    assert report["digests"] == [
        f"{n}: {h} (matches GitHub's asset digest)" for n, h in sorted(new.items())
    ]
    assert report["cross_check"] == (
        f"every download matches https://github.com/{repo}/releases/download/v1.1/SHA256SUMS; "
        "2 of 2 match GitHub's asset digests"
    )
    assert report["release"] == f"https://github.com/{repo}/releases/tag/v1.1"

    text = path.read_text()
    recipe = load(path)
    assert recipe.version == "1.1" and recipe.pinned("1.1") and recipe.pinned("1.0")
    assert [i.sha256 for i in recipe.inputs("1.1", Arch.X86_64)] == [new["tiny-1.1-x86_64.tar.gz"]]
    # Only the default and the new entry changed; comments and layout are kept.
    assert 'version: "1.1"  # the default\n' in text
    assert inserted(before, text.replace('version: "1.1"', 'version: "1.0"')).startswith(
        '  "1.1":\n    x86-64: {url: "https://github.com/'
    )

    # Again: the version is there, so it is only locked again, and nothing changes.
    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny", "--to", "1.1")
    assert code == 0, err
    assert "tiny: already in the recipe, locked again: 1.1" in out
    assert "tiny: 1.1 is the default version already" in out
    assert f"tiny: cross-check: every download matches https://github.com/{repo}" in out
    assert path.read_text() == text


def test_bump_keeps_unavailable_arches_and_an_older_version_is_not_the_default(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    repo = "example/tiny-x86"
    for version in ("0.9", "1.0", "1.1"):
        publish(mirror, github, repo, version)
    path = write_tiny(
        tmp_path / "recipes",
        repo,
        "1.0",
        None,
        arm64='{unavailable: "upstream builds x86-64 only"}',
    )

    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny", "--to", "0.9")
    assert code == 0, err
    assert "tiny: default stays 1.0: 0.9 is older" in out
    recipe = load(path)
    assert recipe.version == "1.0" and recipe.pinned("0.9")
    assert recipe.unavailable("0.9", Arch.ARM64) == "upstream builds x86-64 only"

    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["version"], report["default"]) == ("1.1", True)
    assert [line.split(":")[0] for line in report["lock"]] == ["tiny-1.1-x86_64.tar.gz"]
    assert load(path).version == "1.1"


def test_bump_refuses_a_missing_asset_a_checksum_mismatch_and_a_digest_mismatch(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    missing, lying = "example/tiny-missing", "example/tiny-lying"
    old = publish(mirror, github, missing, "1.0")
    publish(mirror, github, missing, "1.1", leave_out="tiny-1.1-aarch64.tar.gz")
    publish(mirror, github, lying, "1.0")
    publish(mirror, github, lying, "1.1", wrong_sum="tiny-1.1-aarch64.tar.gz")

    path = write_tiny(tmp_path / "recipes", missing, "1.0", old)
    before = path.read_text()
    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"wasm-sysexts: error: {missing} release v1.1: no asset tiny-1.1-aarch64.tar.gz (arm64); "
        f"upstream renamed or dropped it: add 1.1 to {path} by hand, then run: wasm-sysexts "
        "lock tiny --version 1.1"
    ]
    assert path.read_text() == before

    path = write_tiny(tmp_path / "recipes", lying, "1.0", None)
    before = path.read_text()
    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("wasm-sysexts: error:")]
    assert len(errors) == 1 and f"does not match {'0' * 64} in" in errors[0]
    assert f"{lying}/releases/download/v1.1/SHA256SUMS" in errors[0]
    assert path.read_text() == before  # 1.1 was not added, not even unpinned
    assert "wasm-sysexts-bump-" not in err

    # No checksum file, but GitHub recorded other bytes than the mirror serves.
    other = "example/tiny-digest"
    publish(mirror, github, other, "1.0")
    publish(mirror, github, other, "1.1", digests="wrong")
    path = write_tiny(tmp_path / "recipes", other, "1.0", None)
    path.write_text(path.read_text().replace("checksums:", "# checksums:"))
    before = path.read_text()
    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny")
    errors = [line for line in err.splitlines() if line.startswith("wasm-sysexts: error:")]
    assert code == 1 and len(errors) == 1
    assert f"{other}/releases/download/v1.1/tiny-1.1-aarch64.tar.gz: sha256 " in errors[0]
    assert errors[0].endswith(
        f"does not match the digest GitHub records for the release asset, {'f' * 64}"
    )
    assert path.read_text() == before


def test_bad_input_is_one_line_and_leaves_the_recipe_alone(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    repo = "example/tiny-bad"
    sums = publish(mirror, github, repo, "1.0")
    path = write_tiny(tmp_path / "recipes", repo, "1.0", sums)
    before = path.read_text()

    code, _, err = cli(github, mirror, tmp_path, "bump", "nosuch")
    assert code == 1 and len(err.splitlines()) == 1 and "no recipe named 'nosuch'" in err
    code, _, err = cli(github, mirror, tmp_path, "bump", "tiny", "--to", "7.7")
    assert code == 1 and err.splitlines() == [
        f"wasm-sysexts: error: {path}: --to 7.7: {repo} has no release tagged v7.7 (newest: 1.0)"
    ]
    assert path.read_text() == before

    path.write_text(before.replace("versions:", "versions: [", 1))
    code, _, err = cli(github, mirror, tmp_path, "bump", "tiny")
    assert code == 1 and len(err.splitlines()) == 1 and "invalid YAML" in err


def test_api_failures_are_one_line_naming_the_url_and_never_show_the_token(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    limited, broken = "example/tiny-limited", "example/tiny-broken"
    github.rate_limited.add(limited)
    github.bad_json.add(broken)
    path = write_tiny(tmp_path / "recipes", limited, "1.0", None)

    code, out, err = cli(github, mirror, tmp_path, "outdated")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"wasm-sysexts: error: {github.url}/repos/{limited}/releases?per_page=100: HTTP 403 "
        "Forbidden: API rate limit exceeded until 2030-03-17T17:46:40Z"
    ]
    assert github.requests[-1][1] == f"Bearer {TOKEN}"  # sent; the fake echoed it back

    before = path.read_text()
    code, _, err = cli(github, mirror, tmp_path, "bump", "tiny")
    assert code == 1 and "API rate limit exceeded" in err and path.read_text() == before

    write_tiny(tmp_path / "recipes", broken, "1.0", None)
    code, _, err = cli(github, mirror, tmp_path, "outdated", "--json")
    assert code == 1 and err.splitlines() == [
        f"wasm-sysexts: error: {github.url}/repos/{broken}/releases?per_page=100: not JSON "
        "(JSONDecodeError at byte 0)"
    ]

    proc = run_cli(
        "outdated",
        "--recipes",
        tmp_path / "recipes",
        "--github-api",
        "http://127.0.0.1:9",
        env={"GITHUB_TOKEN": TOKEN},
    )
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"wasm-sysexts: error: http://127.0.0.1:9/repos/{broken}/releases?per_page=100: "
        "cannot reach server (ConnectionError)"
    ]
    assert TOKEN not in proc.stderr


def test_every_repository_recipe_has_a_derivable_upstream() -> None:
    recipes = {r.name: r for r in load_all(default_recipes_dir())}
    upstreams = {name: derive(r) for name, r in recipes.items()}
    # Registry sources are followed on their registry; everything else on GitHub releases.
    assert (upstreams["wasmi"].kind, upstreams["wasmi"].crate) == (Kind.CARGO, "wasmi_cli")
    github = {n: u for n, u in upstreams.items() if n != "wasmi"}
    assert all(u.kind is Kind.GITHUB and "{version}" in u.tag for u in github.values())
    shim = upstreams["containerd-shim-wasmtime"]
    assert (shim.owner, shim.repo, shim.tag) == (
        "containerd",
        "runwasi",
        "containerd-shim-wasmtime/v{version}",
    )
    assert upstreams["wamr"].tag == "WAMR-{version}"  # from its source archive (from: source)
    assert upstreams["wasmtime"].tag == "v{version}"
    for name, upstream in github.items():
        assert upstream.version_of(upstream.tag_for(recipes[name].version)) == recipes[name].version


def test_a_new_entry_is_templated_from_the_default_version(tmp_path: Path) -> None:
    """runwasi's %2F-encoded monorepo tags, and wasmCloud's second input from another
    repository, on the repository's own recipes (no network: the entry is only written)."""
    for name, new in (("containerd-shim-wasmtime", "0.99.0"), ("wasmcloud", "9.9.9")):
        recipe = load(default_recipes_dir() / f"{name}.yaml")
        upstream = derive(recipe)
        old_tag, tag = upstream.tag_for(recipe.version), upstream.tag_for(new)
        urls = [
            recipe.expand(i.url, recipe.version, a)
            for a in recipe.versions[recipe.version]
            for i in recipe.inputs(recipe.version, a)
        ]
        ours = [u for u in urls if f"/{upstream.owner}/{upstream.repo}/" in u]
        assets = [u.rsplit("/", 1)[1].replace(recipe.version, new) for u in ours]
        with pytest.raises(PipelineError, match=re.escape(f"release {tag}: no asset {assets[0]}")):
            entry_for(recipe, upstream, Release(new, tag, frozenset(assets[1:])))
        entry = entry_for(recipe, upstream, Release(new, tag, frozenset([*assets, "SHA256SUMS"])))
        text = add_version(recipe.path.read_text(), new, entry, recipe.path)
        copy = tmp_path / recipe.path.name
        copy.write_text(text)
        bumped = load(copy)
        new_urls = [i.url for a in bumped.versions[new] for i in bumped.inputs(new, a)]
        assert [u for u in new_urls if f"/{upstream.owner}/{upstream.repo}/" in u] == [
            u.replace(old_tag.replace("/", "%2F"), tag.replace("/", "%2F")).replace(
                recipe.version, new
            )
            for u in ours
        ]
        others = [u for u in new_urls if f"/{upstream.owner}/{upstream.repo}/" not in u]
        assert others == [u for u in urls if u not in ours]  # nats-server, as it was
        assert all(
            i.sha256 is None
            for i in bumped.inputs(new, Arch.X86_64)
            if f"/{upstream.repo}/" in i.url
        )
        assert inserted(recipe.path.read_text(), text).startswith(f'  "{new}":\n')


def test_a_servers_words_reach_the_terminal_as_text(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    """Terminal escapes and a carriage return in GitHub's message are shown, not obeyed; a
    rate-limit reset no calendar holds is named, not a traceback."""
    shouty, limited = "example/tiny-shouty", "example/tiny-limited"
    github.refusals[shouty] = (404, "Not Found\x1b]0;pwned\x07\x1b[2J\rok")
    write_tiny(tmp_path / "recipes", shouty, "1.0", None)
    code, out, err = cli(github, mirror, tmp_path, "outdated")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"wasm-sysexts: error: {github.url}/repos/{shouty}/releases?per_page=100: HTTP 404 "
        "Not Found: Not Found\\x1b]0;pwned\\x07\\x1b[2J ok"  # white space folds to one
    ], err

    github.rate_limited.add(limited)
    github.rate_limit_reset = "1" + "0" * 20
    write_tiny(tmp_path / "recipes", limited, "1.0", None)
    code, _, err = cli(github, mirror, tmp_path, "outdated")
    assert code == 1 and err.splitlines() == [
        f"wasm-sysexts: error: {github.url}/repos/{limited}/releases?per_page=100: HTTP 403 "
        f"Forbidden: API rate limit exceeded until 1{'0' * 19} (not a date)"
    ], err


def test_the_token_never_travels_in_clear_text(mirror: Mirror, tmp_path: Path) -> None:
    write_tiny(tmp_path / "recipes", "example/tiny", "1.0", None)
    proc = run_cli(
        "outdated",
        "--recipes",
        tmp_path / "recipes",
        "--github-api",
        "http://192.0.2.1/api",
        env={"GITHUB_TOKEN": TOKEN},
    )
    assert proc.returncode == 1 and TOKEN not in proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        "wasm-sysexts: error: --github-api http://192.0.2.1/api: plain http, which would carry "
        "GITHUB_TOKEN in clear text; use https:// (or unset the token)"
    ], proc.stderr


def test_outdated_and_bump_name_the_advisories_a_release_fixes(
    mirror: Mirror, github: FakeGitHub, tmp_path: Path
) -> None:
    """An advisory against the default (a GIT record listing its tags) that a newer release is
    not listed for: `outdated` marks that release, `bump` says so in its report (and so in the
    pull request's body, .github/workflows/bump.yml)."""
    repo = "example/tiny-advised"
    old = publish(mirror, github, repo, "1.0")
    publish(mirror, github, repo, "1.1", digests="right")
    write_tiny(tmp_path / "recipes", repo, "1.0", old)
    db = tmp_path / "db"
    db.mkdir()
    (db / "WSX-TEST-TINY.json").write_text(
        json.dumps(
            {
                "id": "WSX-TEST-TINY",
                "modified": "2026-12-08T00:00:00Z",
                "affected": [
                    {
                        "ranges": [
                            {
                                "type": "GIT",
                                "repo": f"https://github.com/{repo}",
                                "events": [{"introduced": "0"}],
                            }
                        ],
                        "versions": ["v1.0"],
                    }
                ],
                "database_specific": {"severity": "HIGH"},
            }
        )
    )
    code, out, err = cli(github, mirror, tmp_path, "outdated", "--json", "--db", db)
    assert code == 0, err
    [status] = json.loads(out)
    assert status["newer"] == ["1.1"] and status["fixes"] == {"1.1": ["WSX-TEST-TINY"]}
    code, out, err = cli(github, mirror, tmp_path, "outdated", "--db", db)
    assert out.splitlines()[1].split()[:5] == ["tiny", "1.0", "1.1", "1.1", "WSX-TEST-TINY"]

    code, out, err = cli(github, mirror, tmp_path, "bump", "tiny", "--json", "--db", db)
    assert code == 0, err
    assert json.loads(out)["fixes"] == ["WSX-TEST-TINY"]
