"""Property test of the input path: random archives (names with `..`, `.`, empty and absolute
components, deep paths, symlinks and hard links aimed inside, outside and at a sentinel
directory, devices, FIFOs, odd modes) and random install maps and files entries, each built
by the real CLI with the real mksquashfs. For every case:

- exit 0, and every entry of the image is under /usr or /opt with every symlink resolving
  inside the image (read back with unsquashfs), or
- exit 1 with exactly one FAILED line that names the member or the recipe field at fault,
- and never a byte outside --out: the sentinel directory stays empty and nothing new appears
  beside the output.

Hypothesis runs a fixed, derandomized set of cases (bounded in count and time for CI).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.mirror import Mirror
from support.recipes import write_recipe
from support.registry_images import NAME, V1

from pipeline.cli import main

EXAMPLES = int(os.environ.get("WASM_SYSEXTS_FUZZ_EXAMPLES", "300"))
SAFE = ["a", "b", "lib", "bin", "f"]
# Sampled with weights (repetition), so that most cases get past unpacking to the install map.
COMPONENTS = SAFE * 8 + ["..", ".", "", "x" * 40]
FAILED_LINE = re.compile(
    r"FAILED: .*(unsafe member '|install\[\d+\]|files\[\d+\]|"
    r"not a valid tar archive|links outside the image|dangles|is a symlink loop)"
)


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # file | dir | symlink | hardlink | fifo | chardev
    mode: int
    target: str  # link target (symlink, hardlink)


def target_strategy(sentinel: bool) -> st.SearchStrategy[str]:
    ups = st.integers(min_value=0, max_value=8).map(lambda n: "../" * n)
    return st.one_of(
        st.builds(
            lambda u, tail: u + tail,
            ups,
            st.sampled_from(["sentinel", "sentinel/x", "a", "a/b", "bin/f", "lib", ""]),
        ),
        st.just("@SENTINEL@") if sentinel else st.just("a"),
        st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4).map("/".join),
        st.just("@MEMBER@"),  # another member of the archive
    )


hostile_member = st.builds(
    Member,
    name=st.builds(
        lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
        st.sampled_from([False] * 6 + [True]),
        st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=70),
    ),
    kind=st.sampled_from(["file", "dir", "symlink", "symlink", "hardlink", "fifo", "chardev"]),
    mode=st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o600]),
    target=target_strategy(sentinel=True),
)
# Plausible members (links aimed within a few levels): most cases get to the install map.
benign_member = st.builds(
    Member,
    name=st.lists(st.sampled_from(SAFE), min_size=1, max_size=4).map("/".join),
    kind=st.sampled_from(["file"] * 4 + ["dir", "symlink", "symlink", "hardlink"]),
    mode=st.sampled_from([0o644, 0o755]),
    target=st.one_of(
        st.just("@MEMBER@"),
        st.builds(
            lambda n, tail: "../" * n + tail,
            st.integers(min_value=0, max_value=5),
            st.sampled_from(["sentinel", "a", "f", "bin/f", "lib"]),
        ),
    ),
)
member_strategy = st.one_of(benign_member, benign_member, benign_member, hostile_member)

install_strategy = st.lists(
    st.tuples(
        st.one_of(
            st.lists(st.sampled_from([*SAFE, "*", "**"]), min_size=1, max_size=4).map("/".join),
            st.just("*"),
        ),
        st.sampled_from(
            [
                "/usr/bin/f",
                "/usr/lib/",
                "/usr/share/a/b",
                "/opt/z/",
                "/usr/link",
                "/usr/link/inner",
                "/usr/bin/",
                "/opt/z/a/b/c",
            ]
        ),
    ),
    min_size=1,
    max_size=3,
)

files_strategy = st.lists(
    st.sampled_from(["/usr/link/evil.conf", "/usr/share/a/b/c", "/opt/z/note", "/usr/lib/x.conf"]),
    max_size=2,
    unique=True,
)


def archive(members: list[Member], sentinel: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name or ".")
            info.mode = m.mode
            target = m.target.replace("@SENTINEL@", str(sentinel)).replace(
                "@MEMBER@", members[0].name
            )
            data = b""
            if m.kind == "file":
                data = hashlib.sha256(m.name.encode()).digest()
            elif m.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif m.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, target
            elif m.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, target
            elif m.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.type = tarfile.CHRTYPE
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def recipe_install(install: list[tuple[str, str]], files: list[str]) -> tuple[str, str]:
    lines = "".join(f'  - {{from: "{src}", to: "{dst}"}}\n' for src, dst in install)
    extra = (
        "files:\n" + "".join(f'  - {{path: "{p}", content: "x"}}\n' for p in files) if files else ""
    )
    return lines, extra


def image_is_contained(image: Path, work: Path) -> None:
    tree = work / "readback"
    subprocess.run(
        ["unsquashfs", "-q", "-n", "-d", str(tree), str(image)], check=True, capture_output=True
    )
    real = tree.resolve()
    for dirpath, dirs, names in os.walk(tree):
        for name in dirs + names:
            path = Path(dirpath) / name
            rel = path.relative_to(tree).parts
            assert rel[0] in ("usr", "opt"), path
            if path.is_symlink():
                assert not os.readlink(path).startswith("/"), path
                assert path.resolve().is_relative_to(real), (path, os.readlink(path))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(
    members=st.lists(member_strategy, min_size=1, max_size=6),
    install=install_strategy,
    files=files_strategy,
)
def test_random_archives_and_install_maps_never_escape(
    members: list[Member], install: list[tuple[str, str]], files: list[str], mirror: Mirror
) -> None:
    with tempfile.TemporaryDirectory(prefix="wsx-fuzz-") as tmp:
        sandbox = Path(tmp)
        sentinel = sandbox / "sentinel"
        sentinel.mkdir()
        (sandbox / "recipes").mkdir()
        data = archive(members, sentinel)
        digest = hashlib.sha256(data).hexdigest()
        url = f"https://fuzz.example/{digest}/fuzz.tar.gz"
        mirror.put(url, data)
        lines, extra = recipe_install(install, files)
        write_recipe(
            sandbox / "recipes",
            "fuzz",
            f'    x86-64: {{url: "{url}", sha256: "{digest}"}}\n',
            lines,
            extra,
        )
        out = sandbox / "out"
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(
                [
                    "build",
                    "fuzz",
                    "--recipes",
                    str(sandbox / "recipes"),
                    "--mirror",
                    mirror.url,
                    "--cache",
                    str(sandbox / "cache"),
                    "--out",
                    str(out),
                    "--arch",
                    "x86-64",
                    "--jobs",
                    "1",
                ]
            )
        err = stderr.getvalue()
        event(
            f"exit {code}: "
            + next((m.group(1) for m in map(FAILED_LINE.search, err.splitlines()) if m), "-")
        )
        assert "Traceback" not in err and "internal error" not in err, err
        assert list(sentinel.iterdir()) == [], f"escaped into the sentinel: {members}"
        assert {p.name for p in sandbox.iterdir()} <= {"cache", "out", "recipes", "sentinel"}
        if code == 0:
            image_is_contained(out / "fuzz-1.0-x86-64.raw", sandbox)
        else:
            assert code == 1, err
            failed = [ln for ln in err.splitlines() if "FAILED: " in ln]
            assert len(failed) == 1 and FAILED_LINE.search(failed[0]), err
            assert not list(out.glob("*.raw"))


# ---------------------------------------------------------------- unsigned metadata

FIELD_TEXT = st.lists(
    st.sampled_from([*"wsx-.:/=\n\r\t\"'#&<>[] ", "true", "--flag", "https://", "\x1b", "[Unit]"]),
    max_size=12,
).map("".join)
BASELINE = "baselinehandler"  # a valid handler the random one is compared with
# Values of each field that pass, so that half the cases reach the written Butane.
VALID = {
    "handler": st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True),
    "homepage": st.from_regex(r"https://[a-z]{1,8}\.example(/[a-z?=&#%-]{0,8})?", fullmatch=True),
    "license": st.sampled_from(["MIT", "Apache-2.0 OR MIT", "(MIT AND BSD-3-Clause)", "GPL-2.0+"]),
}


@st.composite
def field_values(draw: st.DrawFn) -> tuple[str, str]:
    field = draw(st.sampled_from(sorted(VALID)))
    return field, draw(st.one_of(VALID[field], FIELD_TEXT))


def publish_with(
    src: Path, dest: Path, key: tuple[Path, Path], **recipe: object
) -> tuple[int, list[str]]:
    """`publish static` (in-process) of `src` after `recipe` fields are set in the x86-64
    image's unsigned metadata: (exit code, stderr lines)."""
    import json

    from support.registry_images import NAME, V1

    meta_path = src / f"{NAME}-{V1}-x86-64.raw.json"
    meta = json.loads(meta_path.read_text())
    meta["recipe"].update(recipe)
    meta_path.write_text(json.dumps(meta))
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(
            [
                "publish",
                "static",
                "--allow-unsigned",
                str(src),
                "--dest",
                str(dest),
                "--gpg-key",
                str(key[0]),
                "--keyring",
                str(key[1]),
                "--base-url",
                "https://updates.example.org",
                "--quiet",
            ]
        )
    # The one warning --allow-unsigned always gives is not about the metadata.
    return code, [
        line for line in stderr.getvalue().splitlines() if "--allow-unsigned:" not in line
    ]


def butanes(dest: Path) -> dict[str, object]:
    """Every Butane publish wrote, parsed as YAML."""
    import yaml

    site = dest.resolve()
    return {str(p.relative_to(site)): yaml.safe_load(p.read_text()) for p in site.rglob("*.bu")}


@settings(
    max_examples=int(os.environ.get("WASM_SYSEXTS_FUZZ_META_EXAMPLES", "40")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=field_values())
def test_unsigned_metadata_is_refused_or_stays_data(
    case: tuple[str, str], signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    """Random text in <image>.json (unsigned) for a field publish copies out: publish refuses
    it in one line naming the file and writes nothing, or every Butane it writes is the one
    of a plain value with only that value changed (no unit, file or flag added)."""
    import json
    import shutil

    field, text = case
    plain = {"homepage": "https://example.org", "license": "MIT", "handler": BASELINE}
    chosen = {**plain, field: text}
    with tempfile.TemporaryDirectory(prefix="wsx-fuzz-meta-") as tmp:
        work = Path(tmp)
        sites = {}
        for label, values in (("plain", plain), ("random", chosen)):
            shutil.copytree(signed_images[V1], work / label)
            code, lines = publish_with(
                work / label,
                work / f"{label}-site",
                publish_key,
                homepage=values["homepage"],
                license=values["license"],
                containerd={
                    "handler": values["handler"],
                    "runtime_type": "io.containerd.wasmtime.v1",
                },
            )
            sites[label] = (code, lines)
        assert sites["plain"] == (0, []), sites["plain"]
        code, lines = sites["random"]
        event(f"{field}: exit {code}")
        if code != 0:
            assert code == 1 and len(lines) == 1, lines
            assert lines[0].startswith(
                f"wasm-sysexts: error: {work / 'random'}/{NAME}-{V1}-x86-64.raw.json: recipe: "
            ), lines
            assert not (work / "random-site").exists()
            return
        expected = json.dumps(butanes(work / "plain-site"))
        if field == "handler":
            expected = expected.replace(BASELINE, text)
        assert json.dumps(butanes(work / "random-site")) == expected
