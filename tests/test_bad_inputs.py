"""Every bad input fails with one clear line naming the culprit, exit 1, and leaves no image,
no SHA256SUMS entry and no temporary files behind."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from support.cli import run_cli
from support.hostile import assert_nothing_left, build_fails, member, tar_with
from support.mirror import Mirror
from support.recipes import TINY_BINARY, pinned_tiny, serve, write_recipe


def absurd_size() -> bytes:
    """A tar whose header claims a 3 GiB member (the data is not there: refused before reading)."""
    info = tarfile.TarInfo("tiny/huge")
    info.size = 3 << 30
    header = info.tobuf(tarfile.GNU_FORMAT)
    import gzip

    return gzip.compress(header + b"\0" * 1024)


def zip_with(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("tiny/bin/tiny", TINY_BINARY)
        archive.writestr(name, b"evil")
    return buf.getvalue()


HOSTILE = {
    "absolute": (tar_with(member("/etc/evil")), "'/etc/evil': absolute path"),
    "dotdot": (tar_with(member("tiny/../../evil")), "'tiny/../../evil': path contains '..'"),
    "link-escape": (
        tar_with(member("tiny/bin/esc", tarfile.SYMTYPE, link="../../../etc/shadow")),
        "'tiny/bin/esc': link points outside the archive",
    ),
    "link-absolute": (
        tar_with(member("tiny/bin/abs", tarfile.SYMTYPE, link="/etc/shadow")),
        "'tiny/bin/abs': link to an absolute path",
    ),
    "hardlink-escape": (
        tar_with(member("tiny/hl", tarfile.LNKTYPE, link="../outside")),
        "'tiny/hl':",
    ),
    "device": (
        tar_with(member("tiny/dev/sda", tarfile.BLKTYPE)),
        "'tiny/dev/sda': device node or FIFO",
    ),
    "fifo": (tar_with(member("tiny/pipe", tarfile.FIFOTYPE)), "'tiny/pipe': device node or FIFO"),
    "setuid": (tar_with(member("tiny/bin/su", mode=0o4755)), "'tiny/bin/su': setuid/setgid"),
    "setgid": (tar_with(member("tiny/bin/sg", mode=0o2755)), "'tiny/bin/sg': setuid/setgid"),
    "absurd-size": (absurd_size(), "'tiny/huge': absurd size"),
    "zip-dotdot": (zip_with("../evil"), "'../evil': path contains '..'"),
    "not-an-archive": (b"this is not gzip", "not a valid tar archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_naming_the_member(
    case: str, mirror: Mirror, tmp_path: Path
) -> None:
    data, expected = HOSTILE[case]
    name = f"hostile-{case}"
    suffix = "zip" if case.startswith("zip") else "tar.gz"
    url = f"https://example.org/{name}/{name}.{suffix}"
    pinned_tiny(mirror, tmp_path, name, data, url=url)
    out = tmp_path / "out"
    proc = run_cli(
        "build",
        name,
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
        "--arch",
        "x86-64",
    )
    assert proc.returncode == 1
    assert expected in proc.stderr, proc.stderr
    assert url in proc.stderr
    assert_nothing_left(out)


def test_wrong_sha256_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    pinned_tiny(mirror, tmp_path, "wrongsum", sha256="0" * 64)
    error = build_fails(mirror, tmp_path, "wrongsum", tmp_path)
    assert "/example.org/wrongsum/v1.0/wrongsum.tar.gz: " in error
    assert "sha256 mismatch: expected 0000000000000000" in error
    assert not list((tmp_path / "cache").rglob("*.tar.gz"))


def test_missing_upstream_file_is_a_404(mirror: Mirror, tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "gone",
        f'    x86-64: {{url: "https://example.org/gone.tar.gz", sha256: "{"1" * 64}"}}\n',
    )
    error = build_fails(mirror, tmp_path, "gone", tmp_path)
    assert error.endswith("example.org/gone.tar.gz: HTTP 404 Not Found")


def test_truncated_download_is_retried_then_refused(mirror: Mirror, tmp_path: Path) -> None:
    # The mirror's /__truncate/ route sends half of the file and hangs up, every time.
    digest = serve(mirror, "https://example.org/trunc.tar.gz", b"t" * 100_000)
    write_recipe(
        tmp_path,
        "trunc",
        f'    x86-64: {{url: "https://__truncate/example.org/trunc.tar.gz", sha256: "{digest}"}}\n',
    )
    error = build_fails(mirror, tmp_path, "trunc", tmp_path)
    assert "download incomplete" in error and "gave up after 4 attempts" in error
    assert mirror.hits["/__truncate/example.org/trunc.tar.gz"] == 4


def test_server_errors_are_retried_until_success(mirror: Mirror, tmp_path: Path) -> None:
    from support.recipes import tiny_tarball

    digest = serve(mirror, "https://example.org/flaky/tiny.tar.gz", tiny_tarball())
    write_recipe(
        tmp_path,
        "flaky",
        '    x86-64: {url: "https://__flaky/2/example.org/flaky/'
        f'tiny.tar.gz", sha256: "{digest}"}}\n',
    )
    proc = run_cli(
        "build",
        "flaky",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
        "--arch",
        "x86-64",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("HTTP 503") == 2
    assert (tmp_path / "out" / "flaky-1.0-x86-64.raw").is_file()


def test_unreachable_server_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "offnet",
        f'    x86-64: {{url: "https://example.org/o.tar.gz", sha256: "{"2" * 64}"}}\n',
    )
    proc = run_cli(
        "build",
        "offnet",
        "--recipes",
        tmp_path,
        "--mirror",
        "http://127.0.0.1:9",
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
    )
    assert proc.returncode == 1
    assert "http://127.0.0.1:9/example.org/o.tar.gz: cannot reach server" in proc.stderr
    assert_nothing_left(tmp_path / "out")


def test_unpinned_input_is_refused_before_download(mirror: Mirror, tmp_path: Path) -> None:
    write_recipe(
        tmp_path, "unpinned", '    x86-64: {url: "https://example.org/u.tar.gz", sha256: null}\n'
    )
    hits = sum(mirror.hits.values())
    error = build_fails(mirror, tmp_path, "unpinned", tmp_path)
    assert "unpinned.yaml: versions.1.0.x86-64.sha256: not pinned" in error
    assert "wasm-sysexts lock unpinned --version 1.0" in error
    assert sum(mirror.hits.values()) == hits


def test_install_path_missing_from_archive_lists_its_contents(
    mirror: Mirror, tmp_path: Path
) -> None:
    path = pinned_tiny(mirror, tmp_path, "typo")
    path.write_text(path.read_text().replace("tiny/bin/tiny", "tiny/bin/tyni"))
    error = build_fails(mirror, tmp_path, "typo", tmp_path)
    assert "typo.yaml: install[0].from: 'tiny/bin/tyni' matches nothing" in error
    assert "tiny/bin/tiny" in error


def test_missing_image_tool_is_named(mirror: Mirror, tmp_path: Path) -> None:
    pinned_tiny(mirror, tmp_path, "notool")
    empty = tmp_path / "emptybin"
    empty.mkdir()
    proc = run_cli(
        "build",
        "notool",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out2",
        "--arch",
        "x86-64",
        env={"PATH": str(empty)},
    )
    assert proc.returncode == 1
    assert (
        "mksquashfs: not found on PATH (install the Debian package squashfs-tools)" in proc.stderr
    )
    assert_nothing_left(tmp_path / "out2")


def test_symlink_loop_in_the_image_is_one_line(mirror: Mirror, tmp_path: Path) -> None:
    """Found by the fuzz test: a link loop among installed files was an internal error."""
    data = tar_with(
        member("tiny/lib/a", tarfile.SYMTYPE, link="b"),
        member("tiny/lib/b", tarfile.SYMTYPE, link="a"),
    )
    url = "https://example.org/loop/loop.tar.gz"
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write_recipe(
        recipes,
        "loop",
        f'    x86-64: {{url: "{url}", sha256: "{serve(mirror, url, data)}"}}\n',
        '  - {from: "tiny/lib", to: /usr/lib/loop}\n',
    )
    error = build_fails(mirror, recipes, "loop", tmp_path)
    assert error.endswith("loop.yaml: install: /usr/lib/loop/a -> b is a symlink loop"), error
