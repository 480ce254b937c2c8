"""Regression tests for the input path: what a hostile recipe, archive, server or metadata
file tried, with the real tools. Each bad input ends in one line naming it, exit 1, nothing
half-written, and never a byte outside the output (a sentinel directory is watched)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.cli import run_build, run_cli
from support.hostile import assert_nothing_left, build_fails, member, tar_with
from support.mirror import Mirror
from support.payloads import tar_bytes
from support.recipes import pinned_tiny, serve, tiny_tarball, write_recipe
from support.registry_images import NAME, V1, copy_input

from pipeline.core.errors import PipelineError
from pipeline.core.secret import SecretSpec
from pipeline.core.vocab import NAME_MAX, NAME_PATTERN
from pipeline.publish.oci.client import Client
from pipeline.sign.openpgp import Signer

TINY = '  - {from: "tiny/bin/tiny", to: /usr/bin/tiny, mode: "0755"}\n'


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    """A directory whose `sentinel/` must stay empty: hostile links aim at it."""
    (tmp_path / "sentinel").mkdir()
    yield tmp_path
    assert list((tmp_path / "sentinel").iterdir()) == [], "a write escaped the output"


def hostile_recipe(
    mirror: Mirror, recipes: Path, name: str, data: bytes, install: str, extra: str = ""
) -> Path:
    url = f"https://example.org/{name}/{name}.tar.gz"
    digest = serve(mirror, url, data)
    return write_recipe(
        recipes, name, f'    x86-64: {{url: "{url}", sha256: "{digest}"}}\n', install, extra
    )


# --- high: writing through a link the archive planted -------------------------------------


def test_install_cannot_write_through_a_link_it_placed(mirror: Mirror, sandbox: Path) -> None:
    # Valid inside the archive (a/b/c/d/../../../../sentinel is ./sentinel), but installed at
    # /usr/link it points from the image root up into the sandbox.
    data = tar_with(member("a/b/c/d/link", tarfile.SYMTYPE, link="../../../../sentinel"))
    hostile_recipe(
        mirror,
        sandbox,
        "planted",
        data,
        '  - {from: "a/b/c/d/link", to: /usr/link}\n'
        '  - {from: "tiny/bin/tiny", to: /usr/link/evil}\n',
    )
    error = build_fails(mirror, sandbox, "planted", sandbox)
    assert "install[1]: /usr/link/evil: goes through a link (usr/link)" in error, error


def test_files_entry_cannot_write_through_a_placed_link(mirror: Mirror, sandbox: Path) -> None:
    data = tar_with(member("a/b/c/d/link", tarfile.SYMTYPE, link="../../../../sentinel"))
    hostile_recipe(
        mirror,
        sandbox,
        "plantedfile",
        data,
        '  - {from: "a/b/c/d/link", to: /usr/share/x}\n',
        'files:\n  - {path: /usr/share/x/evil.conf, content: "pwned"}\n',
    )
    error = build_fails(mirror, sandbox, "plantedfile", sandbox)
    assert "files[0]: /usr/share/x/evil.conf: goes through a link (usr/share/x)" in error


def cve_2025_4517_archive(target: str) -> bytes:
    """The path-length trick that made `tarfile`'s data filter miss an escape (CVE-2025-4517):
    nested 247-character directories reached through one-letter symlinks, so realpath stops
    resolving; then a link through them up to `target`, and a file written through it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:

        def add(name: str, kind: bytes, link: str = "", data: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.size = kind, link, 0o755, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        comp, steps, path = "d" * 247, "abcdefghijklmnop", ""
        for step in steps:
            add(os.path.join(path, comp), tarfile.DIRTYPE)
            add(os.path.join(path, step), tarfile.SYMTYPE, comp)
            path = os.path.join(path, comp)
        deep = os.path.join(*steps, "l" * 254)
        add(deep, tarfile.SYMTYPE, "../" * len(steps))
        add("escape", tarfile.SYMTYPE, f"{deep}/{target}")
        add("escape/pwned", tarfile.REGTYPE, data=b"pwned\n")
    return buf.getvalue()


def test_cve_2025_4517_archive_is_refused(mirror: Mirror, sandbox: Path) -> None:
    # However deep the work directory sits, this many ../ leave it and reach /.
    target = "../" * 40 + str(sandbox / "sentinel").lstrip("/")
    hostile_recipe(mirror, sandbox, "cve", cve_2025_4517_archive(target), TINY)
    error = build_fails(mirror, sandbox, "cve", sandbox)
    assert "unsafe member" in error and "cve.tar.gz" in error, error


def test_symlinked_image_is_refused_by_sign_and_publish(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("not an image\n")
    d = copy_input(signed_images[V1], tmp_path / "images")
    link = d / f"{NAME}-9.0.0-x86-64.raw"
    link.symlink_to(host_file)
    proc = run_cli("sign", d, "--out", tmp_path / "signed", "--gpg-key", publish_key[0])
    assert proc.returncode == 1 and f"{link}: not a regular file" in proc.stderr, proc.stderr
    assert not (tmp_path / "signed").exists()
    # Even listed in a validly signed SHA256SUMS, the link is not published.
    sums = (d / "SHA256SUMS").read_text() + f"{hashlib.sha256(b'x').hexdigest()}  {link.name}\n"
    (d / "SHA256SUMS").write_text(sums)
    signer = Signer(SecretSpec("--gpg-key", file=publish_key[0]))
    (d / "SHA256SUMS.gpg").write_bytes(signer.sign(sums.encode(), "test")[1])
    proc = run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        d,
        "--dest",
        tmp_path / "site",
        "--base-url",
        "https://u.example",
        "--keyring",
        publish_key[1],
    )
    assert proc.returncode == 1 and "not a regular file" in proc.stderr
    assert not (tmp_path / "site").exists()


# --- medium -------------------------------------------------------------------------------


def zstd_bomb(tmp_path: Path, size: int, kind: bytes) -> bytes:
    """A .tar.zst of one `kind` member of `size` zero bytes (a few KiB compressed)."""
    raw = tmp_path / "bomb.tar"
    with open(raw, "wb") as f:
        info = tarfile.TarInfo("tiny/zeros")
        info.size, info.type = size, kind
        f.write(info.tobuf(tarfile.GNU_FORMAT))
        f.truncate(512 + size)
    subprocess.run(
        ["zstd", "-q", "-3", "--rm", "-o", str(tmp_path / "bomb.tar.zst"), str(raw)], check=True
    )
    return (tmp_path / "bomb.tar.zst").read_bytes()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (tarfile.REGTYPE, "'tiny/zeros': absurd size (209715200 bytes"),
        # tarfile reads a pax header into memory whole: the stream count stops it first.
        (tarfile.XHDTYPE, "unpacks to more than 83886080 bytes (refused before writing them)"),
    ],
    ids=["member", "pax-header"],
)
def test_zstd_bomb_stops_at_the_unpack_limit(
    kind: bytes, expected: str, mirror: Mirror, sandbox: Path
) -> None:
    data = zstd_bomb(sandbox, 200 << 20, kind)
    assert len(data) < 64 << 10
    url = "https://example.org/bomb/bomb.tar.zst"
    digest = serve(mirror, url, data)
    write_recipe(sandbox, "bomb", f'    x86-64: {{url: "{url}", sha256: "{digest}"}}\n', TINY)
    error = build_fails(mirror, sandbox, "bomb", sandbox, "--max-unpack", "16M")
    assert expected in error, error
    cache = sandbox / "cache"
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) < 1 << 20
    assert not list((cache / "unpacked").iterdir())


def test_download_larger_than_allowed_is_refused(mirror: Mirror, sandbox: Path) -> None:
    digest = serve(mirror, "https://example.org/big/big.tar.gz", os.urandom(3 << 20))
    for route, name in (("__chunked/", "chunked"), ("__huge/", "announced")):
        write_recipe(
            sandbox,
            name,
            f'    x86-64: {{url: "https://{route}example.org/big/'
            f'big.tar.gz", sha256: "{digest}"}}\n',
            TINY,
        )
        error = build_fails(mirror, sandbox, name, sandbox, "--max-download", "1M")
        assert "big.tar.gz: " in error and "1048576 bytes allowed for one download" in error
        assert not [
            p for p in (sandbox / "cache").rglob("*") if p.is_file() and p.name != ".lock"
        ], "no partial download is kept"


def test_content_encoding_gzip_is_stored_as_sent(mirror: Mirror, tmp_path: Path) -> None:
    data = tiny_tarball()  # a real .tar.gz, served the way misconfigured servers do
    digest = serve(mirror, "https://example.org/enc/tiny.tar.gz", data)
    write_recipe(
        tmp_path,
        "enc",
        '    x86-64: {url: "https://__gzipenc/example.org/enc/'
        f'tiny.tar.gz", sha256: "{digest}"}}\n',
    )
    proc = run_cli(
        "build",
        "enc",
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
    assert (tmp_path / "cache" / "sha256" / digest).read_bytes() == data
    assert gzip.decompress(data)  # it really is gzip: decoding it would have broken the pin


def test_sign_hashes_its_own_copy_while_the_source_changes(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    src = copy_input(signed_images[V1], tmp_path / "images")
    big = src / f"{NAME}-3.0.0-x86-64.raw"
    with open(big, "wb") as f:
        f.write(b"hsqs")
        f.truncate(1 << 30)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "sign",
            str(src),
            "--out",
            str(tmp_path / "signed"),
            "--gpg-key",
            str(publish_key[0]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # rebuild it meanwhile
        with open(big, "r+b") as f:
            f.seek((1 + os.urandom(1)[0]) << 20)  # past the magic: still an image
            f.write(os.urandom(4096))
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert run_cli("verify", tmp_path / "signed", "--keyring", publish_key[1]).returncode == 0


class _Realm(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_credentials_never_go_to_a_plain_http_token_realm() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Realm)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client("registry.example", username="u", password="s3cret-value")
        realm = f"http://127.0.0.1:{server.server_address[1]}/token"
        with pytest.raises(PipelineError, match="is not https://; refusing to send") as info:
            client._authorize(f'Bearer realm="{realm}",service="x"', "repository:x:pull")
        assert "s3cret-value" not in str(info.value)
        assert _Realm.hits == 0, "not even a request reached the realm"
    finally:
        server.shutdown()
        server.server_close()


def test_edited_metadata_cannot_relabel_a_signed_image(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    d = copy_input(signed_images[V1], tmp_path / "images")
    meta_path = d / f"{NAME}-{V1}-x86-64.raw.json"
    meta = json.loads(meta_path.read_text())
    meta["name"], meta["version"] = "coreutils", "99.0"
    meta["image"]["file"] = "coreutils-99.0-x86-64.raw"
    meta_path.write_text(json.dumps(meta))
    proc = run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        d,
        "--dest",
        tmp_path / "site",
        "--base-url",
        "https://u.example",
        "--keyring",
        publish_key[1],
    )
    assert proc.returncode == 1
    assert (
        f"{meta_path}: describes coreutils-99.0-x86-64.raw, not {NAME}-{V1}-x86-64.raw"
        in proc.stderr
    )
    assert not (tmp_path / "site").exists()
    # An arch the pipeline does not know, in a signed list: one line, no traceback.
    e = copy_input(signed_images[V1], tmp_path / "odd")
    odd = e / f"{NAME}-{V1}-riscv64.raw"
    shutil.copyfile(e / f"{NAME}-{V1}-x86-64.raw", odd)
    e.joinpath("SHA256SUMS").write_text(
        e.joinpath("SHA256SUMS").read_text() + f"{sha256_of_file(odd)}  {odd.name}\n"
    )
    proc = run_cli("publish", "oci", e, "--repository", "127.0.0.1:9/x", "--insecure")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{odd.name}: not named <name>-<version>-<arch>.raw" in proc.stderr


def sha256_of_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- low ----------------------------------------------------------------------------------


def test_base_url_cannot_inject_lines(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    for url in (
        "https://u.example/x\nVerify=no",
        "https://u.example/x\r\n[Source]",
        "https://u.example/ x",
        "ftp://u.example/x",
        "https://",
    ):
        proc = run_cli(
            "publish",
            "static",
            "--allow-unsigned",
            signed_images[V1],
            "--dest",
            tmp_path / "site",
            "--base-url",
            url,
            "--keyring",
            publish_key[1],
        )
        assert proc.returncode == 1, url
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("wasm-sysexts: error: --base-url ")
        assert not (tmp_path / "site").exists()


def test_mirror_credentials_never_printed(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "creds",
        f'    x86-64: {{url: "https://example.org/c.tar.gz", sha256: "{"3" * 64}"}}\n',
    )
    for mirror_url in ("http://user:hunter2-secret@127.0.0.1:9", "http://[::1"):
        proc = run_cli(
            "build",
            "creds",
            "--recipes",
            tmp_path,
            "--mirror",
            mirror_url,
            "--cache",
            tmp_path / "cache",
            "--out",
            tmp_path / "out",
        )
        assert proc.returncode == 1
        assert "hunter2-secret" not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    assert "--mirror 'http://[::1': not a URL" in proc.stderr


def test_killed_build_leaves_nothing_running_and_the_next_run_cleans_up(
    recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [
        sys.executable,
        "-m",
        "pipeline",
        "build",
        "wasmtime",
        "--recipes",
        str(recipes),
        "--mirror",
        mirror.url,
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--arch",
        "x86-64",
        "--quiet",
    ]
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not tools_writing(out):
        time.sleep(0.1)
    assert tools_writing(out), "mksquashfs never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    assert tools_writing(out) == [], "the image tool outlived the CLI"
    assert list(out.glob(".~wsx-*")), "the killed build left its work directory"
    time.sleep(2.5)  # older than a sweep's minimum age
    rerun = run_build("wasmtime", recipes, mirror.url, cache, out, check=True)
    assert "built" in rerun.stdout
    assert not list(out.glob(".~wsx-*")) and not list(cache.rglob(".~wsx-*"))


def tools_writing(out: Path) -> list[int]:
    """PIDs of processes whose command line names `out` other than python (the tools)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and b"python" not in cmdline[0] and any(str(out).encode() in a for a in cmdline):
            found.append(int(entry.name))
    return found


def test_same_recipe_twice_builds_once(recipes: Path, mirror: Mirror, tmp_path: Path) -> None:
    proc = run_cli(
        "build",
        "wasmtime",
        "wasmtime",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
        "--arch",
        "x86-64",
        "--arch",
        "x86-64",
        "--json",
        check=True,
    )
    assert len(json.loads(proc.stdout)) == 1


def test_lock_pins_the_right_key_and_refuses_a_login_page(mirror: Mirror, tmp_path: Path) -> None:
    url = "https://example.org/odd/sha256:abc/tiny.tar.gz"  # a URL with "sha256:" in it
    serve(mirror, url, tiny_tarball())
    path = write_recipe(tmp_path, "odd", f'    x86-64: {{url: "{url}", sha256: null}}\n')
    run_cli(
        "lock",
        "odd",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        check=True,
    )
    assert (
        f'{{url: "{url}", sha256: "{hashlib.sha256(tiny_tarball()).hexdigest()}"}}'
        in path.read_text()
    )
    login = "https://example.org/login/tiny.tar.gz"
    serve(mirror, login, b"<html><body>Please sign in</body></html>\n")
    path = write_recipe(tmp_path, "login", f'    x86-64: {{url: "{login}", sha256: null}}\n')
    before = path.read_text()
    proc = run_cli(
        "lock",
        "login",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
    )
    assert proc.returncode == 1
    assert "login/tiny.tar.gz: not a valid tar archive" in proc.stderr
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: t.replace("/v1.0/", "/v{version:d}/"),
            "versions.1.0.x86-64.url: placeholders take no format spec",
        ),
        (
            lambda t: t.replace("tiny/bin/tiny", "tiny/bin/{version:999999999}"),
            "install[0].from: placeholders take no format spec",
        ),
        (
            lambda t: t.replace("tiny/bin/tiny", "tiny/bin/{version!r}"),
            "install[0].from: placeholders take no format spec",
        ),
        (
            lambda t: t + '  - {from: "tiny/README", to: /usr/bin/./tiny}\n',
            "install[1].to: must not contain '..', '.' or empty components",
        ),
        (
            lambda t: t.replace("summary: test payload", "summary: test payload\nsummary: again"),
            "key 'summary' appears twice",
        ),
        (lambda t: t.encode("utf-8") + b"# \xff\xfe\n", "file: not UTF-8 text"),
    ],
    ids=["spec-in-to", "huge-width", "conversion", "dot-component", "duplicate-key", "not-utf8"],
)
def test_recipe_problems_are_one_line_each(
    change: Callable[[str], str | bytes],
    expected: str,
    mirror: Mirror,
    tmp_path: Path,
) -> None:
    path = pinned_tiny(mirror, tmp_path, "odd")
    changed = change(path.read_text())
    path.write_bytes(changed if isinstance(changed, bytes) else changed.encode())
    proc = run_cli("list", "--recipes", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert expected in proc.stderr, proc.stderr


def test_default_target_os_is_accepted(mirror: Mirror, tmp_path: Path) -> None:
    pinned_tiny(mirror, tmp_path, "anyos")
    (tmp_path / "anyos.yaml").write_text((tmp_path / "anyos.yaml").read_text() + "os: {id: _any}\n")
    assert run_cli("list", "--recipes", tmp_path).returncode == 0


@pytest.mark.parametrize("value", ["١٢", "99999999999", "-1", "1e9"])
def test_odd_source_date_epoch_is_one_line(value: str, mirror: Mirror, tmp_path: Path) -> None:
    pinned_tiny(mirror, tmp_path, "epoch")
    proc = run_cli(
        "build",
        "epoch",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
        env={"SOURCE_DATE_EPOCH": value},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"wasm-sysexts: error: SOURCE_DATE_EPOCH: {value!r} is not "
        "a whole number of seconds from 0 to 4294967295"
    )


def test_unusable_out_is_one_line(mirror: Mirror, recipes: Path, tmp_path: Path) -> None:
    pinned_tiny(mirror, tmp_path, "outs")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = run_cli(
        "build",
        "outs",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        blocker / "out",
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"--out {blocker / 'out'}: cannot create" in proc.stderr
    # A full disk: a 1 MiB tmpfs cannot hold the wasmtime image.
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    try:
        proc = run_cli(
            "build",
            "wasmtime",
            "--recipes",
            recipes,
            "--mirror",
            mirror.url,
            "--cache",
            tmp_path / "cache",
            "--out",
            full,
            "--arch",
            "x86-64",
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        [failed] = [ln for ln in proc.stderr.splitlines() if "FAILED" in ln]
        assert "No space left on device" in failed, proc.stderr
        assert_nothing_left(full)
    finally:
        subprocess.run(["umount", str(full)], check=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/".join(["d"] * 70) + "/f", "more than 64 directory levels"),
        ("tiny/" + "n" * 300, "a name longer than 255 bytes"),
    ],
    ids=["deep", "long-name"],
)
def test_deep_or_long_members_are_one_line(
    name: str, expected: str, mirror: Mirror, tmp_path: Path
) -> None:
    hostile_recipe(mirror, tmp_path, "deep", tar_with(member(name)), TINY)
    error = build_fails(mirror, tmp_path, "deep", tmp_path)
    assert expected in error


def test_dripping_server_hits_the_download_deadline(mirror: Mirror, tmp_path: Path) -> None:
    digest = serve(mirror, "https://example.org/drip/tiny.tar.gz", tiny_tarball())
    write_recipe(
        tmp_path,
        "drip",
        '    x86-64: {url: "https://__drip/0.5/example.org/drip/'
        f'tiny.tar.gz", sha256: "{digest}"}}\n',
    )
    started = time.monotonic()
    error = build_fails(mirror, tmp_path, "drip", tmp_path, "--download-timeout", "3")
    assert time.monotonic() - started < 60
    assert "not finished after 3 s (download deadline)" in error


def test_cleanup_never_descends_into_a_mount_a_killed_tool_left(tmp_path: Path) -> None:
    """mmdebstrap or a chroot killed mid-run can leave the host's /dev or /proc mounted in a
    scratch directory; removing that directory must not delete through the mount."""
    scratch = tmp_path / ".~wsx-root-dead"
    (scratch / "root" / "dev").mkdir(parents=True)
    script = (
        f'mount -t tmpfs wsx "{scratch}/root/dev" && echo keep > "{scratch}/root/dev/node"'
        f' && {sys.executable} -c "from pathlib import Path; from pipeline.core.fs import '
        f"remove_tree; remove_tree(Path('{scratch}'))\"; "
        f'echo "exit $?"; cat "{scratch}/root/dev/node"'
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"{scratch}: not removed, {scratch}/root/dev is still mounted inside it" in proc.stderr
    assert proc.stdout.splitlines() == ["exit 1", "keep"], proc.stdout + proc.stderr


# ---------------------------------------------------------------- archives, ELF, recipes


def test_archive_listing_its_own_top_directory_builds(mirror: Mirror, tmp_path: Path) -> None:
    """`tar -C dir -czf a.tgz .` writes `./` first: nothing to create, not an unsafe member."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("./", "./tiny/", "./tiny/bin/"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("./tiny/bin/tiny")
        info.size, info.mode = 5, 0o755
        tar.addfile(info, io.BytesIO(b"#!/bin/sh\n"[:5]))
    pinned_tiny(mirror, tmp_path, "dotted", buf.getvalue())
    proc = run_cli(
        "build",
        "dotted",
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
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in json.loads(proc.stdout)] == ["built"]


def test_non_utf8_member_name_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    """An undecodable byte would reach the SBOM as a lone surrogate (invalid Unicode)."""
    data = tar_with(member("tiny/bin/caf\udce9"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "tiny/bin/caf\udce9" in tar.getnames()  # the byte 0xe9 is really in the archive
    pinned_tiny(mirror, tmp_path, "latin1", data)
    error = build_fails(mirror, tmp_path, "latin1", tmp_path)
    assert error.endswith(
        "unsafe member 'tiny/bin/caf\\udce9': name is not UTF-8 (the SBOM and the image's "
        "users need text)"
    ), error


def test_elf_offset_past_any_file_is_one_line(mirror: Mirror, tmp_path: Path) -> None:
    """An x86-64 ELF header whose program headers sit at 2^63 + 5."""
    import struct

    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    offset = (1 << 63) + 5
    elf = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, offset, 0, 0, 64, 56, 1, 64, 0, 0)
    url = "https://example.org/badelf/badelf.tar.gz"
    tarball = tar_with(member("tiny/bin/badelf", mode=0o755, data=elf))
    write_recipe(
        tmp_path,
        "badelf",
        f'    x86-64: {{url: "{url}", sha256: "{serve(mirror, url, tarball)}"}}\n',
        '  - {from: "tiny/bin/badelf", to: /usr/bin/badelf, mode: "0755"}\n',
    )
    error = build_fails(mirror, tmp_path, "badelf", tmp_path)
    assert error.endswith(f"badelf.yaml: /usr/bin/badelf: offset {offset} outside any file"), error


def test_recipe_name_is_never_a_path(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("name: evil\n")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    proc = run_cli("build", "../evil", "--recipes", recipes, "--out", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: recipe name '../evil' must match {NAME_PATTERN} (at most "
        f"{NAME_MAX} characters)"
    ], proc.stderr
    assert not (tmp_path / "out").exists()


def test_oversized_recipe_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\n" + "# padding\n" * 40_000)
    proc = run_cli("list", "--recipes", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {path}: file: larger than 262144 bytes"
    ], proc.stderr


@pytest.mark.parametrize(
    ("directory", "problem"),
    [
        ("/etc", "must be a relative path inside the source tree"),
        ("src/../../elsewhere", "must be a relative path inside the source tree"),
    ],
)
def test_source_directory_stays_inside_the_pinned_tree(
    tmp_path: Path, directory: str, problem: str
) -> None:
    (tmp_path / "outside.yaml").write_text(f"""\
name: outside
summary: builds elsewhere
homepage: https://example.org/outside
license: MIT
version: "1.0"
source:
  kind: make
  directory: "{directory}"
  outputs: {{outside: outside}}
  versions:
    "1.0":
      archive: {{url: "https://example.org/outside-1.0.tar.gz", sha256: "{"0" * 64}"}}
install:
  - {{from: "outside", to: /usr/bin/outside, mode: "0755"}}
""")
    proc = run_cli("list", "--recipes", tmp_path)
    assert proc.returncode == 1
    assert f"outside.yaml: source.directory: {problem}" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- Go modules


def go_module_zip(files: dict[str, bytes], module: str = "example.org/gomod") -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{module}@v1.0.0/{name}", data)
    return buf.getvalue()


def go_recipe(mirror: Mirror, recipes: Path, zipped: bytes, h1: str) -> None:
    recipes.mkdir(exist_ok=True)
    mirror.put("https://proxy.golang.org/example.org/gomod/@v/v1.0.0.zip", zipped)
    (recipes / "gomod.yaml").write_text(f"""\
name: gomod
summary: a Go module
homepage: https://example.org/gomod
license: MIT
version: "1.0.0"
source:
  kind: go
  module: example.org/gomod
  packages: {{gomod: .}}
  versions:
    "1.0.0": {{h1: "{h1}"}}
install:
  - {{from: "gomod", to: /usr/bin/gomod, mode: "0755"}}
""")


def test_module_zip_declaring_a_huge_member_is_refused_before_hashing(
    mirror: Mirror, tmp_path: Path
) -> None:
    """A few hundred bytes of zip that declare a 3 GiB member: refused from the declared
    sizes, before anything is read (it used to be read whole into memory)."""
    zipped = bytearray(go_module_zip({"go.mod": b"module example.org/gomod\n", "big": b"x" * 64}))
    central = zipped.index(b"PK\x01\x02")  # the central directory's entry of "big"
    while not zipped[central + 46 :].startswith(b"example.org/gomod@v1.0.0/big"):
        central = zipped.index(b"PK\x01\x02", central + 4)
    zipped[central + 24 : central + 28] = (3 << 30).to_bytes(4, "little")
    go_recipe(mirror, tmp_path / "recipes", bytes(zipped), "h1:" + "A" * 43 + "=")
    error = build_fails(mirror, tmp_path / "recipes", "gomod", tmp_path, version="1.0.0")
    assert error == (
        "https://proxy.golang.org/example.org/gomod/@v/v1.0.0.zip: member "
        "'example.org/gomod@v1.0.0/big' of 3221225472 bytes is past the unpack limits "
        f"({2 << 30} per member, {4 << 30} in all)"
    ), error


def test_pinned_module_replacing_a_dependency_with_a_directory_is_refused(
    mirror: Mirror, tmp_path: Path
) -> None:
    from pipeline.build.source import go_h1

    zipped = go_module_zip(
        {
            "go.mod": b"module example.org/gomod\n\ngo 1.21\n\n"
            b"require example.org/dep v1.0.0\n\nreplace example.org/dep => ../dep\n",
            "main.go": b"package main\n\nfunc main() {}\n",
        }
    )
    (tmp_path / "m.zip").write_bytes(zipped)
    go_recipe(mirror, tmp_path / "recipes", zipped, go_h1(tmp_path / "m.zip"))
    error = build_fails(mirror, tmp_path / "recipes", "gomod", tmp_path, version="1.0.0")
    assert error.endswith(
        "gomod.yaml: source: go.mod replaces example.org/dep with the directory '../dep'; a "
        "pinned module must not build code from outside itself"
    ), error
    # go's telemetry child used to write $HOME/.config/go/telemetry into the work directory
    # after go, the CLI and the removal of the directory were all done.
    time.sleep(2)
    assert_nothing_left(tmp_path / "out")


# ---------------------------------------------------------------- pull oci from a hostile registry


class HostileRegistry:
    """A registry on 127.0.0.1 that serves whatever documents a test sets: manifests by
    reference, referrers indexes by subject digest, blobs by digest (whose declared size may
    lie). Every request path is recorded."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.referrers: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                registry.requests.append(self.path)
                kind, _, ref = self.path.partition("/wsx/img/")[2].partition("/")
                table = {
                    "manifests": registry.manifests,
                    "referrers": registry.referrers,
                    "blobs": registry.blobs,
                }.get(kind, {})
                body = table.get(ref)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                ctype = (
                    "application/vnd.oci.image.index.v1+json"
                    if kind == "referrers"
                    else ("application/vnd.oci.image.manifest.v1+json")
                )
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile_registry() -> Iterator[HostileRegistry]:
    registry = HostileRegistry()
    yield registry
    registry.close()


def oci_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_manifest() -> bytes:
    layer = b"not really an image"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.wasm-sysexts.sysext.v1",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": oci_digest(b"{}"),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": oci_digest(layer),
                    "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "x-1-x86-64.raw"},
                }
            ],
        }
    ).encode()


def pull(
    registry: HostileRegistry, tmp_path: Path, keyring: Path
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "pull",
        "oci",
        f"{registry.host}/wsx/img:1",
        "--out",
        tmp_path / "out",
        "--keyring",
        keyring,
        "--insecure",
        "--arch",
        "x86-64",
    )


def test_pull_refuses_a_manifest_that_is_not_json(
    hostile_registry: HostileRegistry, tmp_path: Path, publish_key: tuple[Path, Path]
) -> None:
    hostile_registry.manifests["1"] = b"<html>a captive portal</html>"
    proc = pull(hostile_registry, tmp_path, publish_key[1])
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {hostile_registry.host}/wsx/img:1: manifest is not JSON"
    ], proc.stderr
    assert not (tmp_path / "out").exists()


def test_pull_skips_referrers_that_are_not_descriptors(
    hostile_registry: HostileRegistry, tmp_path: Path, publish_key: tuple[Path, Path]
) -> None:
    manifest = image_manifest()
    hostile_registry.manifests["1"] = manifest
    hostile_registry.referrers[oci_digest(manifest)] = json.dumps(
        {"schemaVersion": 2, "manifests": ["a string", 7, None, []]}
    ).encode()
    proc = pull(hostile_registry, tmp_path, publish_key[1])
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {hostile_registry.host}/wsx/img:1: no valid signature: no "
        "signature referrer found"
    ], proc.stderr
    assert not list((tmp_path / "out").glob("*.raw"))


def test_pull_refuses_a_huge_signature_blob_before_downloading_it(
    hostile_registry: HostileRegistry, tmp_path: Path, publish_key: tuple[Path, Path]
) -> None:
    manifest = image_manifest()
    subject = oci_digest(manifest)
    huge = "sha256:" + "ab" * 32
    signature = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.wasm-sysexts.signature.v1",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": oci_digest(b"{}"),
                "size": 2,
            },
            "subject": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": subject,
                "size": len(manifest),
            },
            "layers": [
                {
                    "mediaType": "text/plain",
                    "digest": huge,
                    "size": 2 << 30,
                    "annotations": {"org.opencontainers.image.title": "SHA256SUMS"},
                }
            ],
        }
    ).encode()
    hostile_registry.manifests["1"] = manifest
    hostile_registry.manifests[oci_digest(signature)] = signature
    hostile_registry.referrers[subject] = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": "application/vnd.wasm-sysexts.signature.v1",
                    "digest": oci_digest(signature),
                    "size": len(signature),
                }
            ],
        }
    ).encode()
    proc = pull(hostile_registry, tmp_path, publish_key[1])
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {hostile_registry.host}/wsx/img:1: referrer "
        f"{oci_digest(signature)} layer {huge} declares {2 << 30} bytes; a signature or "
        f"SHA256SUMS is at most {1 << 20}"
    ], proc.stderr
    assert not any("/blobs/" in r for r in hostile_registry.requests)  # nothing downloaded


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://user:hunter2@[::1/", "not a URL (Invalid IPv6 URL)"),
        ("ftp://user:hunter2@mirror.example/", "not an http:// or https:// URL with a host"),
    ],
)
def test_a_refused_mirror_url_never_shows_its_password(
    recipes: Path, tmp_path: Path, url: str, why: str
) -> None:
    proc = run_cli(
        "build", "wasmtime", "--recipes", recipes, "--mirror", url, "--out", tmp_path / "out"
    )
    assert proc.returncode == 1 and "hunter2" not in proc.stdout + proc.stderr
    shown = url.replace("user:hunter2@", "***@")
    assert proc.stderr.splitlines() == [f"wasm-sysexts: error: --mirror {shown!r}: {why}"]


def test_homepage_and_license_are_checked_before_they_reach_an_sbom(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path, "html", '    x86-64: {url: "https://example.org/a.tar.gz", sha256: null}\n', TINY
    )
    path.write_text(
        path.read_text()
        .replace("homepage: https://example.org/html", 'homepage: "javascript:alert(1)"')
        .replace("license: MIT", "license: <b onclick=x>MIT</b>")
    )
    proc = run_cli("list", "--recipes", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {path}: homepage: 'javascript:alert(1)' must be an https:// URL "
        "(no spaces or control characters)",
        f"wasm-sysexts: error: {path}: license: '<b onclick=x>MIT</b>' is not an SPDX license "
        "expression (e.g. Apache-2.0 WITH LLVM-exception)",
    ], proc.stderr


def test_cli_killed_while_signing_leaves_no_gpg_agent_and_the_next_run_cleans_up(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    """gpg starts its agent detached, out of reach of a death signal; the CLI runs the agent
    as its own child instead, so a kill -9 of the CLI takes the agent with it."""
    import tempfile

    src = copy_input(signed_images[V1], tmp_path / "images")
    temp = Path(tempfile.mkdtemp(prefix="t5-"))  # short: the agent's sockets live there
    env = {**os.environ, "TMPDIR": str(temp)}
    try:
        for attempt in range(30):  # until the kill lands while the agent runs
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "sign",
                    str(src),
                    "--out",
                    str(tmp_path / f"out{attempt}"),
                    "--gpg-key",
                    str(publish_key[0]),
                    "--quiet",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while proc.poll() is None and not agents_in(temp):
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
        else:
            pytest.fail("30 signing runs ended before their agent was seen")
        time.sleep(1)
        assert agents_in(temp) == [], "gpg-agent outlived the CLI"
        assert tools_writing(temp) == [], "a tool outlived the CLI"
        assert list(temp.glob(".~wsx-gpg-*")), "the killed CLI's gpg home is still there"
        time.sleep(2.5)  # older than a sweep's minimum age
        run_cli(
            "sign",
            src,
            "--out",
            tmp_path / "again",
            "--gpg-key",
            publish_key[0],
            env={"TMPDIR": str(temp)},
            check=True,
        )
        assert list(temp.iterdir()) == [], "the next run swept the home"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def agents_in(temp: Path) -> list[int]:
    """PIDs of gpg-agents with a home under `temp`."""
    found = []
    for pid in tools_writing(temp):
        with suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "gpg-agent":
                found.append(pid)
    return found


def test_lock_refuses_a_module_whose_hash_only_an_unsigned_record_vouches_for(
    mirror: Mirror, tmp_path: Path
) -> None:
    """Whoever serves the module zip can serve a lookup answer to match; lock asks `go` to
    check the hash against the signed checksum database instead (here: through the Go module
    proxy, which serves sum.golang.org)."""
    from pipeline.build.source import go_h1

    module, version = "github.com/tetratelabs/wazero", "1.9.0"
    forged = go_module_zip(
        {"go.mod": f"module {module}\n".encode(), "main.go": b"package main\n"}, module=module
    ).replace(b"v1.0.0", f"v{version}".encode())
    (tmp_path / "forged.zip").write_bytes(forged)
    h1 = go_h1(tmp_path / "forged.zip")
    mirror.put(f"https://proxy.golang.org/{module}/@v/v{version}.zip", forged)
    mirror.put(
        f"https://proxy.golang.org/sumdb/sum.golang.org/lookup/{module}@v{version}",
        f"1\n{module} v{version} {h1}\n\n".encode(),
    )  # a matching, unsigned record
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "wazero.yaml").write_text(f"""\
name: wazero
summary: wazero from its Go module
homepage: https://wazero.io
license: Apache-2.0
version: "{version}"
source:
  kind: go
  module: {module}
  packages: {{wazero: ./cmd/wazero}}
  versions:
    "{version}": {{h1: null}}
install:
  - {{from: "wazero", to: /usr/bin/wazero, mode: "0755"}}
""")
    before = (recipes / "wazero.yaml").read_text()
    proc = run_cli(
        "lock",
        "wazero",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--from",
        "source",
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"wasm-sysexts: error: https://proxy.golang.org/{module}/@v/v{version}.zip: module hash "
        f"{h1} is not what the checksum database records "
        "(h1:IcZ56OuxrtaEz8UYNRHBrUa9bYeX9oVY93KspZZBf/I=)"
    ), proc.stderr
    assert (recipes / "wazero.yaml").read_text() == before


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (
            "containerd",
            {
                "handler": "wsx\n[Unit]\nDescription=pwned",
                "runtime_type": "io.containerd.wasmtime.v1",
            },
            "containerd.handler 'wsx\\n[Unit]\\nDescription=pwned' is not a DNS label",
        ),
        (
            "containerd",
            {"handler": "wsx=true --anonymous-auth", "runtime_type": "io.containerd.wasmtime.v1"},
            "containerd.handler 'wsx=true --anonymous-auth' is not a DNS label",
        ),
        (
            "homepage",
            "javascript:alert(1)",
            "'javascript:alert(1)' must be an https:// URL (no spaces or control characters)",
        ),
    ],
)
def test_unsigned_metadata_never_reaches_what_publish_writes(
    tmp_path: Path,
    signed_images: dict[str, Path],
    publish_key: tuple[Path, Path],
    field: str,
    value: object,
    problem: str,
) -> None:
    """<image>.json is not signed (SHA256SUMS does not list it), yet publish copies its
    containerd handler into every node's Butane and its homepage into OCI annotations."""
    src = copy_input(signed_images[V1], tmp_path / "images")
    meta_path = src / f"{NAME}-{V1}-x86-64.raw.json"
    meta = json.loads(meta_path.read_text())
    meta["recipe"][field] = value
    meta_path.write_text(json.dumps(meta))
    dest = tmp_path / "site"
    proc = run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        src,
        "--dest",
        dest,
        "--gpg-key",
        publish_key[0],
        "--keyring",
        publish_key[1],
        "--base-url",
        "https://updates.example.org",
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"wasm-sysexts: error: {meta_path}: recipe: {problem}"], (
        proc.stderr
    )
    assert not dest.exists() or list(dest.iterdir()) == []


def test_an_image_replaced_without_its_sums_is_hashed_again_by_the_next_build(
    mirror: Mirror, tmp_path: Path
) -> None:
    """A rebuild killed between replacing its image and rewriting SHA256SUMS: the next,
    unrelated build into the same directory lists the image's real hash, not the stale one."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name in ("first", "second"):
        pinned_tiny(mirror, recipes, name)
    out = tmp_path / "out"

    def build(name: str) -> None:
        run_cli(
            "build",
            name,
            "--recipes",
            recipes,
            "--mirror",
            mirror.url,
            "--cache",
            tmp_path / "cache",
            "--out",
            out,
            "--arch",
            "x86-64",
            "--quiet",
            check=True,
        )

    build("first")
    build("second")
    image = out / "first-1.0-x86-64.raw"
    replacement = out / ".replacement"
    replacement.write_bytes(image.read_bytes() + b"\0" * 4096)  # what a new build wrote
    os.replace(replacement, image)
    (out / "second-1.0-x86-64.raw").unlink()  # the next build has work to do
    build("second")
    sums = dict(line.split()[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    assert sums[image.name] == hashlib.sha256(image.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the compile step's reach


def test_source_build_scripts_get_no_network(mirror: Mirror, tmp_path: Path) -> None:
    """A Makefile (like a crate's build.rs) is third-party code run by the build: it runs in
    private network and mount namespaces, so a connection to a listener on the host fails and
    the listener sees nothing, while the build itself completes."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    probe = (
        f"{sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\""
    )
    makefile = (
        "all:\n"
        f"\t{probe} && echo reached > verdict || echo unreachable > verdict\n"
        "\tprintf '#!/bin/sh\\necho %s\\n' \"$$(cat verdict)\" > netcheck\n"
        "\tchmod 0755 netcheck\n"
    ).encode()
    url = "https://example.org/netcheck-1.0.tar.gz"
    digest = serve(mirror, url, tar_bytes({"netcheck-1.0/Makefile": makefile}, "gz"))
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "netcheck.yaml").write_text(f"""\
name: netcheck
summary: a build that tries the network
homepage: https://example.org/netcheck
license: MIT
version: "1.0"
source:
  kind: make
  outputs: {{netcheck: netcheck}}
  versions:
    "1.0":
      archive: {{url: "{url}", sha256: "{digest}"}}
install:
  - {{from: "netcheck", to: /usr/bin/netcheck, mode: "0755"}}
""")
    proc = run_cli(
        "build",
        "netcheck",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
        "--arch",
        "x86-64",
        "--quiet",
    )
    reached = []
    with suppress(TimeoutError):
        while True:
            reached.append(listener.accept())
    listener.close()
    assert proc.returncode == 0, proc.stderr
    assert reached == [], "the build script reached the host's network"
    unpacked = tmp_path / "unpacked"
    subprocess.run(
        ["unsquashfs", "-q", "-d", str(unpacked), str(tmp_path / "out/netcheck-1.0-x86-64.raw")],
        check=True,
    )
    assert (unpacked / "usr/bin/netcheck").read_text() == "#!/bin/sh\necho unreachable\n"
