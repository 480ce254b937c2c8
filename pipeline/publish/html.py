"""`index.html`: the update-server tree's `index.json`, for people.

One static HTML5 page, no JavaScript and nothing fetched: a small inline stylesheet, a section
per extension listing every published version and arch with its size (readable and exact
bytes), full sha256 and links to the image, its SBOM and provenance when published, the signed
`SHA256SUMS`, the sysupdate transfer files and the Butane snippet that enables it (inline when
its text is given), plus its containerd runtime handler and the Kubernetes node Butane config.

Every link is relative to the tree's root, so the page works under whatever base URL the tree
is served at (or from a file:// copy). Every value is HTML-escaped and every link
percent-encoded: index values come from recipes and build metadata and are treated as hostile.
The same index gives the same bytes (no timestamps; extensions and arches sorted, versions in
the index's newest-first order).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from pipeline.core.vocab import KEYRING

TITLE = "wasm-sysexts update server"

_CSS = """\
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 76rem;
       padding: 1rem 1.5rem 3rem; color: #1b1f24; background: #fff; }
h1 { font-size: 1.6rem; border-bottom: 3px solid #2f5fb3; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #c9d1d9; }
h3 { font-size: 1.05rem; margin-bottom: .3rem; }
a { color: #2f5fb3; }
code, pre, .sha256 { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border: 1px solid #c9d1d9; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
tbody tr:nth-child(even) { background: #f7f9fb; }
td.size, td.arch, td.version { white-space: nowrap; }
td.size .bytes { color: #57606a; }
.sha256 { overflow-wrap: anywhere; word-break: break-all; }
.latest { background: #2f7d32; color: #fff; border-radius: .3rem; padding: 0 .35rem;
          font-size: .75rem; margin-left: .3rem; }
pre { background: #f6f8fa; border: 1px solid #c9d1d9; padding: .6rem; overflow-x: auto; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
"""


def _e(value: object) -> str:
    """`value` as escaped HTML text (also safe inside a quoted attribute)."""
    return escape(str(value), quote=True)


def _href(path: object) -> str | None:
    """A tree-relative path as an escaped, percent-encoded relative link; None for anything
    that is not a plain relative path inside the tree (absolute, `..`, schemes are encoded)."""
    if not isinstance(path, str) or not path:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or any(
        ord(c) < 0x20 or c in "\\\x7f" for c in path
    ):
        return None
    return _e(quote(path, safe="/"))  # ':' becomes %3A: no "javascript:" can survive


def _link(path: object, text: object | None = None, title: object | None = None) -> str:
    """`<a>` to tree-relative `path` (its text: `text`, else the path); plain text if the
    path is not one a page in the tree may link to."""
    label = _e(path if text is None else text)
    attr = f' title="{_e(title)}"' if title else ""
    href = _href(path)
    if href is None:
        return f"<span{attr}>{label}</span>"
    return f'<a{attr} href="{href}">{label}</a>'


def _anchor(name: str, taken: set[str]) -> str:
    """A unique, readable element id for extension `name`."""
    base = "ext-" + "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    anchor, n = base, 1
    while anchor in taken:
        n += 1
        anchor = f"{base}-{n}"
    taken.add(anchor)
    return anchor


def human_size(size: int) -> str:
    """`size` bytes in IEC units: 512 B, 4.0 KiB, 15.8 MiB."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _size(size: object) -> str:
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return (
            f'<data value="{size}">{human_size(size)}</data> '
            f'<span class="bytes">({size:,} bytes)</span>'
        )
    return _e(size)


def _relative(url: object, base: str) -> str | None:
    """`url` as a tree-relative path if it lies under the tree's base URL."""
    if isinstance(url, str) and base and url.startswith(base + "/"):
        return url[len(base) + 1 :]
    return None


def _artifact(name: str, base: str, entry: object, label: str) -> str:
    """A link to an image's image, SBOM or provenance file (with its sha256 as a tooltip)."""
    if not isinstance(entry, Mapping):
        return ""
    path = _relative(entry.get("url"), base) or f"{name}/{entry.get('file', '')}"
    digest = entry.get("sha256")
    return _link(path, label, f"sha256 {digest}" if digest else None)


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _pre(text: str, cls: str) -> str:
    return f'<pre class="{cls}"><code>{_e(text)}</code></pre>'


def _butane_block(path: object, butane: Mapping[str, str], what: str) -> list[str]:
    out = [f"<p>{what}: {_link(path)}</p>"]
    if isinstance(path, str) and path in butane:
        out.append(_pre(butane[path], "butane"))
    return out


def _extension(
    name: str,
    ext: Mapping[str, Any],
    base: str,
    anchor: str,
    butane: Mapping[str, str],
    node_butane: object,
) -> list[str]:
    latest = ext.get("latest")
    out = [
        f'<section class="extension" id="{_e(anchor)}">',
        f'<h2><a href="#{_e(anchor)}">{_e(name)}</a></h2>',
        '<dl class="facts">',
        f"<dt>Latest version</dt><dd>{_e(latest if latest is not None else '')}</dd>",
    ]
    containerd = _dict(ext.get("containerd"))
    if containerd:
        out += [
            f'<dt>containerd handler</dt><dd><code class="handler">'
            f"{_e(containerd.get('handler', ''))}</code></dd>",
            f'<dt>containerd runtime_type</dt><dd><code class="runtime-type">'
            f"{_e(containerd.get('runtime_type', ''))}</code></dd>",
        ]
        if node_butane:
            out.append(
                f"<dt>Kubernetes node</dt><dd>{_link(node_butane)} "
                '(<a href="#kubernetes">every shim</a>)</dd>'
            )
    files = [_link(ext.get(k)) for k in ("sha256sums", "signature") if ext.get(k)]
    out += [
        f"<dt>Signed manifest</dt><dd>{', '.join(files)}</dd>",
        f"<dt>sysupdate</dt><dd>{_link(ext.get('transfer'))} (systemd &ge; 257), "
        f"{_link(ext.get('conf'))} (older)</dd>",
        "</dl>",
        '<table class="images">',
        "<thead><tr><th>Version</th><th>Arch</th><th>Image</th><th>Size</th>"
        "<th>SHA-256</th><th>SBOM</th><th>Provenance</th></tr></thead>",
        "<tbody>",
    ]
    for item in _list(ext.get("versions")):
        version = _dict(item)
        number = version.get("version", "")
        badge = ' <span class="latest">latest</span>' if number == latest else ""
        arches = _dict(version.get("arches"))
        for arch in sorted(arches, key=str):
            image = _dict(arches[arch])
            out.append(
                f'<tr class="image"><td class="version">{_e(number)}{badge}</td>'
                f'<td class="arch">{_e(arch)}</td>'
                f'<td class="file">{_artifact(name, base, image, str(image.get("file", "")))}</td>'
                f'<td class="size">{_size(image.get("size"))}</td>'
                f'<td class="sha256">{_e(image.get("sha256", ""))}</td>'
                f'<td class="sbom">{_artifact(name, base, image.get("sbom"), "SBOM")}</td>'
                f'<td class="provenance">'
                f"{_artifact(name, base, image.get('provenance'), 'provenance')}</td></tr>"
            )
    out += ["</tbody>", "</table>", f"<h3>Enable {_e(name)} on Flatcar</h3>"]
    out += _butane_block(
        ext.get("butane"),
        butane,
        "Butane snippet (installs the latest version, then keeps it updated)",
    )
    out.append("</section>")
    return out


def render(index: Mapping[str, Any], butane: Mapping[str, str] | None = None) -> str:
    """The `index.html` page for `index` (index.json's content). `butane` maps tree-relative
    `.bu` paths to their text, shown inline; without it the page only links to them."""
    snippets = butane or {}
    base = str(index.get("base_url") or "").rstrip("/")
    extensions = _dict(index.get("extensions"))
    names = sorted(extensions, key=str)
    node_butane = index.get("kubernetes_node_butane")
    taken: set[str] = {"kubernetes", "extensions"}
    anchors = {name: _anchor(str(name), taken) for name in names}

    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{TITLE}</title>",
        f"<style>\n{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{TITLE}</h1>",
        f"<p>systemd-sysext images for Flatcar Container Linux, served at "
        f'<code class="base-url">{_e(base)}</code> for systemd-sysupdate. Every '
        f"<code>SHA256SUMS</code> is signed with {_link(KEYRING)}; the same listing for "
        f"programs: {_link('index.json')}.</p>",
        '<section id="extensions">',
        "<h2>Extensions</h2>",
        '<table class="summary">',
        "<thead><tr><th>Extension</th><th>Latest</th><th>Arches</th><th>Versions</th>"
        "<th>containerd handler</th></tr></thead>",
        "<tbody>",
    ]
    for name in names:
        ext = _dict(extensions[name])
        versions = [_dict(v) for v in _list(ext.get("versions"))]
        arches = sorted({str(a) for v in versions for a in _dict(v.get("arches"))})
        handler = _dict(ext.get("containerd")).get("handler", "")
        out.append(
            f'<tr><td><a href="#{_e(anchors[name])}">{_e(name)}</a></td>'
            f"<td>{_e(ext.get('latest', ''))}</td><td>{_e(', '.join(arches))}</td>"
            f"<td>{len(versions)}</td><td>{_e(handler)}</td></tr>"
        )
    out += ["</tbody>", "</table>", "</section>"]
    if node_butane:
        shims = [n for n in names if _dict(_dict(extensions[n]).get("containerd"))]
        out += [
            '<section id="kubernetes">',
            "<h2>Kubernetes node</h2>",
            "<p>One Butane config installing every containerd shim published here ("
            + ", ".join(f'<a href="#{_e(anchors[n])}">{_e(n)}</a>' for n in shims)
            + ") and registering their runtime handlers.</p>",
        ]
        out += _butane_block(node_butane, snippets, "Butane config")
        out.append("</section>")
    for name in names:
        out += _extension(
            str(name), _dict(extensions[name]), base, anchors[name], snippets, node_butane
        )
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def butane_texts(files: Mapping[str, bytes]) -> dict[str, str]:
    """The `.bu` files among a tree's `files` (path -> bytes), as `render`'s `butane`."""
    return {p: d.decode() for p, d in sorted(files.items()) if p.endswith(".bu")}
