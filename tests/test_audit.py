"""`audit`: images built here, matched through their SBOMs against OSV advisories (the project's
feed as shipped, the wasmtime records in tests/data/osv, osv.dev's API stood in for), waivers,
thresholds, the build-time warning and refusal, and bad input."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
from support.cli import run_build, run_cli
from support.hostile import build_fails
from support.mirror import Mirror
from support.osv import FakeOsvDev, osv_schema
from support.recipes import pinned_tiny

from pipeline.core.resources import advisories_dir

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data" / "osv"
RUNWASI = "GHSA-cc25-vq59-rcjx"
WASMTIME = ("GHSA-5qpp-g3j2-8frx", "GHSA-m9f7-9w4p-gv38", "GHSA-q554-3cjc-rx7p")
OLD_SHIM = "pkg:github/containerd/runwasi@containerd-shim-wasmtime/v0.6.0"


def _build(mirror: Mirror, base: Path, name: str, package: str | None, *extra: str) -> Path:
    """`name` 1.0 built from a recipe naming `package`, into base/<name>; returns that dir."""
    recipes = base / f"{name}-recipes"
    recipes.mkdir(parents=True)
    pinned_tiny(mirror, recipes, name, package=package)
    out = base / name
    run_build(name, recipes, mirror.url, base / "cache", out, *extra, check=True)
    return out


@pytest.fixture(scope="module")
def images(mirror: Mirror, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("audited")
    return {
        # wasmtime 1.0: older than both fixed lines of the wasmtime records
        "wasmtime": _build(mirror, base, "wasmtime", "pkg:cargo/wasmtime@{{version}}"),
        # runwasi's 0.6.0 wasmtime shim tag: the project feed's critical advisory
        "oldshim": _build(mirror, base, "oldshim", OLD_SHIM, "--accept-advisory", RUNWASI),
        "nopurl": _build(mirror, base, "nopurl", None),
    }


def _feed_copy(tmp_path: Path, waivers: str = "") -> Path:
    """The repository's feed as shipped, plus the test's waivers for its test images."""
    feed = tmp_path / "advisories"
    shutil.copytree(advisories_dir(), feed, ignore=shutil.ignore_patterns("__*"))
    (feed / "waivers.yaml").write_text(waivers)
    return feed


def test_audit_flags_what_the_sboms_name_with_the_shipped_feed(images: dict[str, Path]) -> None:
    """The default feed and a --db of real records: each finding is one table row naming the
    image, the advisory and its aliases, package@version, the fixed versions and severity."""
    proc = run_cli("audit", images["wasmtime"], images["oldshim"], "--db", FIXTURES)
    assert proc.returncode == 1, proc.stderr
    rows = {tuple(line.split()[:2]) for line in proc.stdout.splitlines()[1:]}
    for advisory in WASMTIME:
        assert ("wasmtime-1.0-x86-64.raw", advisory) in rows
    line = next(ln for ln in proc.stdout.splitlines() if RUNWASI in ln)
    assert line.split()[:5] == [
        "oldshim-1.0-x86-64.raw",
        RUNWASI,
        "CVE-2026-47218",
        "runwasi@containerd-shim-wasmtime/v0.6.0",
        "commit",
    ]
    assert "critical" in line and line.rstrip().endswith("FAIL")
    wasmtime = next(ln for ln in proc.stdout.splitlines() if WASMTIME[1] in ln)
    assert "36.0.18, 49.0.3" in wasmtime and "unknown" in wasmtime
    assert "2 image(s)" in proc.stdout and "4 at or above medium unwaived, 0 waived" in proc.stdout


def test_audit_waivers_pass_until_they_expire(images: dict[str, Path], tmp_path: Path) -> None:
    waived = (
        f"- id: [{', '.join(WASMTIME)}]\n  images: 'wasmtime-1.0-*'\n"
        "  reason: test image, no fixed upstream yet\n  expires: 2099-01-01\n"
        f"- id: CVE-2026-47218\n  images: 'oldshim-*'\n  reason: matched by alias\n"
        "  expires: 2099-01-01\n"
    )
    feed = _feed_copy(tmp_path, waived)
    ok = run_cli(
        "audit", images["wasmtime"], images["oldshim"], "--db", FIXTURES, "--advisories", feed
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "waived until 2099-01-01: matched by alias" in ok.stdout
    assert "0 at or above medium unwaived, 4 waived" in ok.stdout

    (feed / "waivers.yaml").write_text(waived.replace("2099-01-01", "2026-01-31", 1))
    expired = run_cli("audit", images["wasmtime"], "--db", FIXTURES, "--advisories", feed, "--json")
    assert expired.returncode == 1
    report = json.loads(expired.stdout)
    assert report["passed"] is False
    assert {f["id"] for f in report["findings"] if f["fails"]} == set(WASMTIME)
    assert report["expired_waivers"][0]["expires"] == "2026-01-31"
    assert expired.stderr.strip().endswith("expired on 2026-01-31: fix, or decide again")
    assert f"{feed / 'waivers.yaml'}: [0]: waiver for {WASMTIME[0]}" in expired.stderr

    # An expired waiver fails the audit even where nothing it names is found any more.
    (feed / "waivers.yaml").write_text(
        "- {id: GHSA-0000-0000-0000, images: 'gone-*', reason: old, expires: 2026-01-31}\n"
    )
    stale = run_cli("audit", images["oldshim"], "--advisories", feed, "--fail-on", "critical")
    assert stale.returncode == 1 and "expired on 2026-01-31" in stale.stderr


def test_audit_threshold_and_json(images: dict[str, Path], tmp_path: Path) -> None:
    """--fail-on decides which severities fail; below it a finding is reported, not failed."""
    db = tmp_path / "db"
    db.mkdir()
    (db / "WSX-TEST-LOW.json").write_text(
        json.dumps(
            {
                "id": "WSX-TEST-LOW",
                "modified": "2026-12-08T00:00:00Z",
                "affected": [
                    {
                        "package": {"ecosystem": "crates.io", "name": "wasmtime"},
                        "versions": ["1.0"],
                    }
                ],
                "database_specific": {"severity": "LOW"},
            }
        )
    )
    passed = run_cli("audit", images["wasmtime"], "--db", db, "--json")
    assert passed.returncode == 0, passed.stderr
    report = json.loads(passed.stdout)
    [finding] = report["findings"]
    assert finding["id"] == "WSX-TEST-LOW" and finding["severity"] == "low"
    assert finding["package"] == "pkg:cargo/wasmtime@1.0" and finding["fails"] is False
    assert report["passed"] is True and report["images"] == ["wasmtime-1.0-x86-64.raw"]
    assert run_cli("audit", images["wasmtime"], "--db", db, "--fail-on", "low").returncode == 1


def test_audit_gate_at_build_warns_and_refuses_critical(mirror: Mirror, tmp_path: Path) -> None:
    """`build` names each known advisory of what it builds; a critical one stops the build
    (nothing written) unless accepted by id."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    pinned_tiny(mirror, recipes, "oldshim", package=OLD_SHIM)
    pinned_tiny(mirror, recipes, "wasmtime", package="pkg:cargo/wasmtime@{{version}}")
    error = build_fails(mirror, recipes, "oldshim", tmp_path)  # and nothing left in --out
    assert error == (
        f"{RUNWASI} (CVE-2026-47218) (critical) affects runwasi "
        "containerd-shim-wasmtime/v0.6.0, fixed in commit d28ab73c2c8a: not building it "
        f"(build a fixed version, or pass --accept-advisory {RUNWASI})"
    )
    warned = run_build(
        "wasmtime", recipes, mirror.url, tmp_path / "cache", tmp_path / "w", "--db", FIXTURES
    )
    assert warned.returncode == 0, warned.stderr
    warnings = [ln for ln in warned.stderr.splitlines() if "warning: GHSA-" in ln]
    assert len(warnings) == 3 and all("fixed in 36.0.18, 49.0.3" in ln for ln in warnings)


def test_audit_online_asks_osv_dev(images: dict[str, Path]) -> None:
    """--online sends one batch query for every package and fetches each advisory it names;
    osv.dev's verdict counts even where no local record exists."""
    record = json.loads((FIXTURES / f"{WASMTIME[1]}.json").read_text())
    fake = FakeOsvDev({WASMTIME[1]: record}, {"pkg:cargo/wasmtime@1.0": [WASMTIME[1]]})
    try:
        proc = run_cli("audit", images["wasmtime"], "--online", "--osv-api", fake.url, "--json")
    finally:
        fake.close()
    assert proc.returncode == 1, proc.stderr
    assert fake.queries == [{"package": {"purl": "pkg:cargo/wasmtime@1.0"}}]
    [finding] = json.loads(proc.stdout)["findings"]
    assert finding["id"] == WASMTIME[1] and finding["source"].endswith(f"/v1/vulns/{WASMTIME[1]}")

    down = run_cli("audit", images["wasmtime"], "--online", "--osv-api", "http://127.0.0.1:9")
    assert down.returncode == 1
    assert down.stderr.strip().splitlines() == [
        "wasm-sysexts: error: http://127.0.0.1:9/v1/querybatch: ConnectionError: cannot reach "
        "osv.dev"
    ]


def test_audit_feed_and_fixtures_are_valid_osv() -> None:
    """Every record in the project feed and the test data validates against the OSV project's
    JSON schema, and the feed's against audit's stricter reading (a source URL, a known
    ecosystem)."""
    schema = osv_schema()
    records = sorted(advisories_dir().glob("*.json")) + sorted(FIXTURES.glob("*.json"))
    assert len(records) >= 4
    for path in records:
        jsonschema.validate(json.loads(path.read_text()), schema)
    assert run_cli("audit", "--help").returncode == 0


def test_audit_refuses_bad_input(images: dict[str, Path], tmp_path: Path) -> None:
    """Each bad input: exit 1 and one error line naming the file and field."""

    def error(*args: str | Path) -> str:
        proc = run_cli("audit", *args)
        assert proc.returncode == 1, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "GHSA-bad.json").write_text('{"id": "GHSA-bad", "affected": [{"package": "wasmtime"')
    assert error(images["wasmtime"], "--db", broken).startswith(
        f"wasm-sysexts: error: {broken / 'GHSA-bad.json'}: not valid OSV JSON:"
    )

    feed = _feed_copy(tmp_path)
    record = json.loads((feed / f"{RUNWASI}.json").read_text())
    record["affected"][0]["package"]["ecosystem"] = "Gitlab"
    (feed / f"{RUNWASI}.json").write_text(json.dumps(record))
    assert error(images["wasmtime"], "--advisories", feed) == (
        f"wasm-sysexts: error: {feed / (RUNWASI + '.json')}: affected[0].package.ecosystem: "
        "unknown ecosystem 'Gitlab' (audit matches GIT, Go, crates.io)"
    )

    sbom = images["nopurl"] / "nopurl-1.0-x86-64.spdx.json"
    assert error(images["nopurl"]) == (
        f"wasm-sysexts: error: {sbom}: the image package has no purl, so advisories cannot be "
        "matched (rebuild the image; its recipe needs a package: field)"
    )
    assert error(images["wasmtime"], "--db", tmp_path / "nowhere") == (
        f"wasm-sysexts: error: {tmp_path / 'nowhere'}: no such advisory database"
    )
    assert error(tmp_path / "nowhere") == (
        f"wasm-sysexts: error: {tmp_path / 'nowhere'}: no such directory of images"
    )
    bad_waivers = _feed_copy(tmp_path / "w", "- {id: X, images: '*', reason: r, expires: soon}\n")
    assert error(images["wasmtime"], "--advisories", bad_waivers) == (
        f"wasm-sysexts: error: {bad_waivers / 'waivers.yaml'}: [0].expires: must be a date "
        "(YYYY-MM-DD)"
    )


def test_audit_reads_a_database_of_100000_records_in_bounded_time(
    images: dict[str, Path], tmp_path: Path
) -> None:
    """An osv.dev-sized export: records about other packages are searched, not parsed."""
    export = tmp_path / "all.zip"
    with zipfile.ZipFile(export, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(100_000):
            archive.writestr(
                f"RUSTSEC-{i}.json",
                json.dumps(
                    {
                        "id": f"RUSTSEC-{i}",
                        "modified": "2026-12-08T00:00:00Z",
                        "affected": [
                            {
                                "package": {"ecosystem": "crates.io", "name": f"crate-{i}"},
                                "versions": ["1.0"],
                            }
                        ],
                    }
                ),
            )
        archive.writestr(f"{WASMTIME[0]}.json", (FIXTURES / f"{WASMTIME[0]}.json").read_text())
    started = time.monotonic()
    proc = run_cli("audit", images["wasmtime"], "--db", export, "--json", timeout=600)
    seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert [f["id"] for f in json.loads(proc.stdout)["findings"]] == [WASMTIME[0]]
    print(f"100 001-record export audited in {seconds:.1f} s")
