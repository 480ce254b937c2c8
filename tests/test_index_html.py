"""`publish static`'s index.html, rendered by a real headless browser (Debian's chromium):
a real published tree's page shows every extension, version, arch, size and sha256 of its
index.json, links only to files the tree holds, runs no JavaScript, needs no network and
paints a non-blank page; hostile index values stay inert text."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from support.cli import run_cli
from support.mirror import Mirror
from support.payloads import tar_bytes
from support.registry_images import NAME, V1, V2, sign_into
from support.vm_payloads import TEST_HOST, pin

from pipeline.core.fs import sha256_file
from pipeline.publish import html

BASE = "https://updates.example.org/sysexts"
SHIM, HANDLER = "containerd-shim-wsxhtml", "wsxhtml"
WINDOW = (1000, 800)
VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


# --- a published tree ------------------------------------------------------------------------


def publish(src: Path, dest: Path, key: tuple[Path, Path], *extra: str) -> None:
    run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        src,
        "--dest",
        dest,
        "--gpg-key",
        key[0],
        "--keyring",
        key[1],
        *extra,
        check=True,
    )


@pytest.fixture(scope="module")
def tree(
    tmp_path_factory: pytest.TempPathFactory,
    signed_images: dict[str, Path],
    mirror: Mirror,
    publish_key: tuple[Path, Path],
) -> Path:
    """A tree published by the real CLI: wsxhello V1 + V2 (both arches) and a containerd shim,
    so the page has several versions, arches, a runtime handler and the Kubernetes node."""
    work = tmp_path_factory.mktemp("html-tree")
    binary = f"containerd-shim-{HANDLER}-v1"
    url = f"{TEST_HOST}/{HANDLER}-shim-1.0.tar.gz"
    sha = pin(mirror, url, tar_bytes({binary: (b"#!/bin/sh\n", 0o755)}, compression="gz"))
    recipes = work / "recipes"
    recipes.mkdir()
    (recipes / f"{SHIM}.yaml").write_text(
        f"name: {SHIM}\nsummary: test shim\nhomepage: https://wsx-test.example\n"
        f'license: Apache-2.0\nversion: "1.0"\n'
        f'versions:\n  "1.0":\n    x86-64: {{url: "{url}", sha256: "{sha}"}}\n'
        f'install:\n  - {{from: "{binary}", to: /usr/bin/{binary}}}\n'
        f"containerd: {{handler: {HANDLER}, runtime_type: io.containerd.{HANDLER}.v1}}\n"
    )
    run_cli(
        "build",
        SHIM,
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        work / "dl",
        "--out",
        work / "out",
        "--arch",
        "x86-64",
        "--quiet",
        check=True,
    )
    shim = sign_into(run_cli, work / "out", work / "signed", publish_key[0])
    dest = work / "www" / "sysexts"
    publish(signed_images[V1], dest, publish_key, "--base-url", BASE)
    publish(signed_images[V2], dest, publish_key)
    publish(shim, dest, publish_key)
    return dest


# --- the browser -----------------------------------------------------------------------------


def chromium(page: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Debian's chromium headless on `page` (a file) with no network at all."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail(
            "chromium not found: this test renders index.html in Debian's real "
            "headless chromium; install it (apt-get install chromium, listed in "
            ".ci/apt-packages.txt, which .ci/setup installs)"
        )
    profile = work / f"chromium-profile-{len(list(work.glob('chromium-profile-*')))}"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        # nothing may be fetched: every host is unresolvable and every proxy refused
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        *args,
        page.resolve().as_uri(),
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=180,
            env={"HOME": str(work), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish rendering {page} within 180 s")
    assert proc.returncode == 0, f"chromium exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (
                    cls is None or cls in child.attrs.get("class", "").split()
                ):
                    found.append(child)
                found += child.iter(tag, cls)
        return found

    def one(self, tag: str | None = None, cls: str | None = None) -> Node:
        found = self.iter(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]


class TreeBuilder(HTMLParser):
    """Chromium's serialized DOM as Nodes (it closes every non-void element it opens)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def dom(page: Path, work: Path) -> Node:
    """The DOM chromium built from `page`, after loading it (and running any script)."""
    dumped = chromium(page, work, "--dump-dom").stdout
    assert "<body" in dumped, dumped[:2000]
    builder = TreeBuilder()
    builder.feed(dumped)
    builder.close()
    return builder.root


def check_source(source: str) -> None:
    """Well-formed HTML5 as written: the doctype first, a UTF-8 charset, every element
    closed in order, no duplicate ids, nothing that runs or fetches."""
    assert source.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert '<meta charset="utf-8">' in source
    stack: list[str] = []
    ids: list[str] = []

    class Checker(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            assert tag not in ("script", "iframe", "object", "embed", "img", "link", "base")
            for key, value in attrs:
                assert not key.startswith("on"), (tag, key)
                assert key not in ("src", "style"), (tag, key)
                if key == "id":
                    ids.append(value or "")
            if tag not in VOID:
                stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            assert stack and stack[-1] == tag, f"</{tag}> closes {stack[-1:]}"
            stack.pop()

    checker = Checker()
    checker.feed(source)
    checker.close()
    assert stack == [], f"unclosed: {stack}"
    assert len(ids) == len(set(ids)), ids
    style = source.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "url(" not in style and "@import" not in style  # the stylesheet fetches nothing


def check_inert(root: Node) -> None:
    """No script, nothing loaded from anywhere, no event handler, no scheme in any link."""
    assert root.iter("script") == []
    for node in root.iter():
        assert node.tag not in ("iframe", "object", "embed", "img", "link", "base"), node.tag
        assert not [k for k in node.attrs if k.startswith("on") or k in ("src", "srcset")]
        href = node.attrs.get("href")
        if href is not None:
            assert ":" not in href and not href.startswith("/"), href


def resolve(href: str, root: Path) -> Path:
    """The file a relative link of a page at `root`/index.html points to; must be in the tree."""
    target = (root / unquote(href)).resolve()
    assert target.is_relative_to(root.resolve()), href
    assert target.is_file(), f"{href}: links to nothing in the tree"
    return target


# --- PNG, with the standard library ----------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG; checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    assert len(raw) == height * (stride + 1)
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind_byte = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind_byte == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind_byte == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind_byte == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind_byte == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        else:
            assert kind_byte == 0, f"PNG filter {kind_byte}"
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % bpp < 3) for r in rows]


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.browser
def test_published_page_renders_every_image_of_index_json(tree: Path, tmp_path: Path) -> None:
    index: dict[str, Any] = json.loads((tree / "index.json").read_text())
    page = tree / "index.html"
    source = page.read_text(encoding="utf-8")
    check_source(source)
    # A pure function of index.json (and the tree's Butane texts, if shown inline).
    texts = {
        p: (tree / p).read_text()
        for p in [e["butane"] for e in index["extensions"].values()]
        + [index["kubernetes_node_butane"]]
    }
    assert source in (html.render(index), html.render(index, texts))

    root = dom(page, tmp_path)
    check_inert(root)
    assert root.one("title").text() == html.TITLE
    assert root.one("code", "base-url").text() == BASE

    ids = {n.attrs["id"] for n in root.iter() if "id" in n.attrs}
    linked: set[str] = set()
    for a in root.iter("a"):
        href = a.attrs["href"]
        if href.startswith("#"):
            assert href[1:] in ids, href
        else:
            linked.add(str(resolve(href, tree).relative_to(tree.resolve())))
    assert {"index.json", "import-pubring.gpg", index["kubernetes_node_butane"]} <= linked

    sections = {s.one("h2").text(): s for s in root.iter("section", "extension")}
    assert sorted(sections) == sorted(index["extensions"]) == sorted([NAME, SHIM])
    summary = {
        tr.iter("td")[0].text(): [td.text() for td in tr.iter("td")]
        for tr in root.one("table", "summary").one("tbody").iter("tr")
    }
    for name, entry in index["extensions"].items():
        section = sections[name]
        assert summary[name][1] == entry["latest"]
        for key in ("sha256sums", "signature", "transfer", "conf", "butane"):
            assert entry[key] in linked, key
            assert entry[key] in {a.text() for a in section.iter("a")}, key
        expected = {
            (v["version"], arch): image
            for v in entry["versions"]
            for arch, image in v["arches"].items()
        }
        rows = section.one("table", "images").iter("tr", "image")
        assert len(rows) == len(expected)
        for row in rows:
            version = row.one("td", "version").text().removesuffix(" latest")
            arch = row.one("td", "arch").text()
            image = expected.pop((version, arch))
            link = row.one("td", "file").one("a")
            assert link.text() == image["file"]
            target = resolve(link.attrs["href"], tree)
            assert target == (tree / name / image["file"]).resolve()
            assert sha256_file(target) == image["sha256"] and target.stat().st_size == image["size"]
            size = row.one("td", "size")
            assert size.one("data").attrs["value"] == str(image["size"])
            assert f"({image['size']:,} bytes)" in size.text()
            assert html.human_size(image["size"]) in size.text()
            assert row.one("td", "sha256").text() == image["sha256"]
            assert ("latest" in row.one("td", "version").text()) == (version == entry["latest"])
            for kind in ("sbom", "provenance"):  # linked exactly when index.json has them
                links = row.one("td", kind).iter("a")
                assert len(links) == (1 if kind in image else 0)
                if kind in image:
                    assert (
                        sha256_file(resolve(links[0].attrs["href"], tree)) == image[kind]["sha256"]
                    )
        assert expected == {}
        butane = section.iter("pre", "butane")
        if butane:  # shown inline: exactly the tree's file
            assert butane[0].text() == (tree / entry["butane"]).read_text()

    assert {
        (v["version"], a) for v in index["extensions"][NAME]["versions"] for a in v["arches"]
    } == {(V, a) for V in (V1, V2) for a in ("x86-64", "arm64")}
    shim = sections[SHIM]
    assert shim.one("code", "handler").text() == HANDLER
    assert shim.one("code", "runtime-type").text() == f"io.containerd.{HANDLER}.v1"
    assert index["kubernetes_node_butane"] in {a.text() for a in shim.iter("a")}
    assert sections[NAME].iter("code", "handler") == []
    kubernetes = [s for s in root.iter("section") if s.attrs.get("id") == "kubernetes"]
    assert len(kubernetes) == 1 and SHIM in kubernetes[0].text()
    assert index["kubernetes_node_butane"] in {a.text() for a in kubernetes[0].iter("a")}


@pytest.mark.browser
def test_published_page_paints_a_real_page(tree: Path, tmp_path: Path) -> None:
    shot = tmp_path / "index.png"
    chromium(tree / "index.html", tmp_path, f"--screenshot={shot}")
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == WINDOW
    counts = Counter(row[i : i + 3] for row in rows for i in range(0, len(row), 3))
    colours = set(counts)
    ((background, plain),) = counts.most_common(1)
    inked = width * height - plain
    assert len(colours) > 8, f"{len(colours)} colour(s): a blank page"
    assert inked > 0.01 * width * height, f"only {inked} pixels differ from {background.hex()}"
    # The inline stylesheet applied: its heading rule's blue (#2f5fb3) is painted.
    assert any(abs(p[0] - 0x2F) + abs(p[1] - 0x5F) + abs(p[2] - 0xB3) < 24 for p in colours)


@pytest.mark.browser
def test_butane_snippets_shown_inline(tree: Path, tmp_path: Path) -> None:
    index: dict[str, Any] = json.loads((tree / "index.json").read_text())
    files = {str(p.relative_to(tree)): p.read_bytes() for p in (tree / "sysupdate.d").iterdir()}
    texts = html.butane_texts(files)
    assert sorted(texts) == sorted(
        [*(e["butane"] for e in index["extensions"].values()), index["kubernetes_node_butane"]]
    )
    page = tmp_path / "index.html"
    page.write_text(html.render(index, texts), encoding="utf-8")
    root = dom(page, tmp_path)
    check_inert(root)
    for section in root.iter("section", "extension"):
        entry = index["extensions"][section.one("h2").text()]
        assert section.one("pre", "butane").text() == (tree / entry["butane"]).read_text()
    kubernetes = [s for s in root.iter("section") if s.attrs.get("id") == "kubernetes"]
    assert (
        kubernetes[0].one("pre", "butane").text()
        == (tree / index["kubernetes_node_butane"]).read_text()
    )


HOSTILE = '<script>document.body.setAttribute("data-pwned","1")</script>"\'&amp;<img src=x>'


@pytest.mark.browser
def test_hostile_index_values_stay_text(tmp_path: Path) -> None:
    name = f"evil{HOSTILE}"
    image: dict[str, Any] = {
        "file": f"{name}-1.raw",
        "url": f"javascript:alert(1)//{HOSTILE}",
        "size": 4096,
        "sha256": f"{HOSTILE}" + "0" * 64,
        "sbom": {"file": "x.spdx.json", "url": f"{BASE}/{name}/x.spdx.json", "sha256": HOSTILE},
        "provenance": {"file": "../../../etc/passwd", "url": "/etc/passwd", "sha256": "1" * 64},
    }
    index = {
        "schema": 1,
        "base_url": BASE,
        "kubernetes_node_butane": f"javascript:{HOSTILE}",
        "extensions": {
            name: {
                "latest": HOSTILE,
                "versions": [{"version": HOSTILE, "arches": {HOSTILE: image}}],
                "sha256sums": f"{name}/SHA256SUMS",
                "signature": "/etc/shadow",
                "transfer": "../x.transfer",
                "conf": f"{HOSTILE}.conf",
                "butane": "a.bu",
                "containerd": {"handler": HOSTILE, "runtime_type": HOSTILE},
            }
        },
    }
    page = tmp_path / "index.html"
    page.write_text(html.render(index, {"a.bu": f"</pre></code>{HOSTILE}"}), encoding="utf-8")
    check_source(page.read_text(encoding="utf-8"))
    root = dom(page, tmp_path)
    check_inert(root)
    assert "data-pwned" not in root.one("body").attrs
    row = root.one("tr", "image")
    assert row.one("td", "version").text() == f"{HOSTILE} latest"
    assert row.one("td", "arch").text() == HOSTILE
    assert row.one("td", "sha256").text() == HOSTILE + "0" * 64
    assert root.one("code", "handler").text() == HOSTILE
    assert root.one("pre", "butane").text() == f"</pre></code>{HOSTILE}"
    assert root.one("section", "extension").one("h2").text() == name
    # Links: a URL outside the base falls back to <name>/<file>, percent-encoded; a path
    # leaving the tree is shown, not linked.
    hrefs = {a.text(): a.attrs["href"] for a in root.iter("a") if a.attrs["href"][0] != "#"}
    assert unquote(hrefs[image["file"]]) == f"{name}/{image['file']}"
    assert unquote(hrefs["SBOM"]) == f"{name}/x.spdx.json"
    assert "provenance" not in hrefs and "/etc/shadow" not in hrefs
    assert "../x.transfer" not in hrefs
    assert unquote(hrefs[f"javascript:{HOSTILE}"]) == f"javascript:{HOSTILE}"
    assert root.one("td", "provenance").text() == "provenance"


def test_same_index_same_bytes() -> None:
    def image(arch: str) -> dict[str, Any]:
        return {
            "file": f"a-1-{arch}.raw",
            "url": f"{BASE}/a/a-1-{arch}.raw",
            "size": 5 << 20,
            "sha256": "ab" * 32,
        }

    def entry(arches: list[str]) -> dict[str, Any]:
        return {
            "latest": "1",
            "versions": [{"version": "1", "arches": {a: image(a) for a in arches}}],
            "sha256sums": "a/SHA256SUMS",
            "signature": "a/SHA256SUMS.gpg",
            "transfer": "sysupdate.d/a.transfer",
            "conf": "sysupdate.d/a.conf",
            "butane": "sysupdate.d/a.bu",
        }

    one = {
        "schema": 1,
        "base_url": BASE,
        "extensions": {"a": entry(["arm64", "x86-64"]), "b": entry(["x86-64"])},
    }
    other = {
        "extensions": {"b": entry(["x86-64"]), "a": entry(["x86-64", "arm64"])},
        "base_url": BASE,
        "schema": 1,
    }
    assert html.render(one) == html.render(one) == html.render(other)
    assert html.render(one, {"sysupdate.d/a.bu": "x"}) != html.render(one)
    assert "5.0 MiB" in html.render(one) and "5,242,880 bytes" in html.render(one)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (16515072, "15.8 MiB"), (3 << 30, "3.0 GiB")],
)
def test_human_size(size: int, text: str) -> None:
    assert html.human_size(size) == text
