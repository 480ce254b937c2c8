"""Step 6: boot ONE VM with every image of a directory, merge them, run each recipe's `smoke`
commands, and report per image and per command.

`wasm-sysexts smoke-test DIR` finds each `*.raw`'s recipe through the `<image>.json` metadata
that `build` writes (its "name"). The harness (`pipeline.vm`) hands the guest a payload disk:

  images/<file>.raw   the images, linked as <extension dir>/<name>.raw
  hello.wasm          `{hello_wasm}` in smoke commands: a WASI hello world. By default the
                      module below (generated, no compiler needed); `--hello-wasm FILE` replaces
                      it, and `--hello-expect TEXT` the output it must print.
  hello-oci.tar       only with containerd shim images: an OCI image whose entrypoint is
                      hello.wasm, imported with `ctr image import` and run with
                      `ctr run --runtime io.containerd.<runtime>.<vN>`.

In the guest, all images merge at once. Any image that did not merge is then tried alone
(debug log kept as its reason) and held out, and the rest merged again, so one broken image
never hides the results of the others. Commands of merged images run one by one with a
per-command timeout; a command using `{hello_wasm}` (or the shim run) must print the
expected text as well as exit 0.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import vm as vmlib
from pipeline.errors import PipelineError
from pipeline.log import Reporter
from pipeline.recipe import Recipe, default_recipes_dir, find

HELLO_TEXT = "Hello from wasm-sysexts!"
GUEST_HELLO = f"{vmlib.GUEST_MOUNT}/hello.wasm"
GUEST_OCI = f"{vmlib.GUEST_MOUNT}/hello-oci.tar"
OCI_REF = "docker.io/library/wsx-hello:latest"
COMMAND_TIMEOUT = 180  # seconds per smoke command; TCG compiles Wasm slowly
SAFE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")
SHIM_RE = re.compile(r"containerd-shim-([a-z0-9]+)-(v[0-9]+)$")
# The Spin shim runs Spin applications, not a plain WASI module: no generic ctr step for it.
SHIM_GENERIC_EXCLUDED = {"spin"}


# ---------------------------------------------------------------- payloads


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _vec(items: list[bytes]) -> bytes:
    return _leb(len(items)) + b"".join(items)


def _name(text: str) -> bytes:
    return _leb(len(text)) + text.encode()


def _section(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _leb(len(body)) + body


def hello_wasm_module(text: str = HELLO_TEXT) -> bytes:
    """A minimal WASI command printing `text` and a newline: `_start` calls fd_write(1, ...)
    on an iovec the data segment sets up (at 0: pointer 8 and length; the text at 8)."""
    message = text.encode() + b"\n"
    nwritten = (8 + len(message) + 7) // 4 * 4  # 4-aligned, after the text
    i32 = 0x7F
    types = _vec([b"\x60" + _vec([bytes([i32])] * 4) + _vec([bytes([i32])]),  # fd_write
                  b"\x60" + _vec([]) + _vec([])])  # _start
    imports = _vec([_name("wasi_snapshot_preview1") + _name("fd_write") + b"\x00" + _leb(0)])
    funcs = _vec([_leb(1)])
    memory = _vec([b"\x00" + _leb(1)])
    exports = _vec([_name("memory") + b"\x02" + _leb(0), _name("_start") + b"\x00" + _leb(1)])
    code = (b"\x41" + _leb(1) + b"\x41" + _leb(0) + b"\x41" + _leb(1) + b"\x41" + _leb(nwritten)
            + b"\x10" + _leb(0) + b"\x1a" + b"\x0b")  # i32.const x4; call 0; drop; end
    body = _vec([]) + code
    codes = _vec([_leb(len(body)) + body])
    iovec = (8).to_bytes(4, "little") + len(message).to_bytes(4, "little")
    data = _vec([b"\x00" + b"\x41" + _leb(0) + b"\x0b" + _vec([bytes([b]) for b in
                                                               iovec + message])])
    return (b"\x00asm\x01\x00\x00\x00" + _section(1, types) + _section(2, imports)
            + _section(3, funcs) + _section(5, memory) + _section(7, exports)
            + _section(10, codes) + _section(11, data))


def _tar(members: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def hello_oci_tar(wasm: bytes, ref: str = OCI_REF) -> bytes:
    """An OCI image layout tarball (for `ctr image import`) whose one layer holds
    /hello.wasm, the image's entrypoint: runwasi shims run a Wasm entrypoint file."""
    layer = _tar({"hello.wasm": (wasm, 0o755)})
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/hello.wasm"], "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": len(manifest),
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref}}],
    }, sort_keys=True).encode()
    blobs = {f"blobs/sha256/{d.split(':')[1]}": (b, 0o644) for d, b in
             ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))}
    return _tar({"oci-layout": (b'{"imageLayoutVersion": "1.0.0"}', 0o644),
                 "index.json": (index, 0o644), **blobs})


# ---------------------------------------------------------------- plan


@dataclass
class Step:
    command: str
    expect: str | None = None  # text the output must contain
    status: str = "not run"  # passed | failed | not run
    exit: int | None = None
    seconds: float | None = None
    output: str = ""
    reason: str = ""


@dataclass
class ImageReport:
    image: str
    name: str
    version: str = ""
    arch: str = ""
    merged: bool = False
    status: str = "failed"  # passed | failed
    reason: str = ""
    steps: list[Step] = field(default_factory=list)


def shim_runtime(recipe: Recipe) -> str | None:
    """`io.containerd.<rt>.<vN>` if the recipe installs a containerd shim binary."""
    for entry in recipe.install:
        match = SHIM_RE.search(entry.dst.rstrip("/"))
        if match:
            return f"io.containerd.{match.group(1)}.{match.group(2)}"
    return None


def containerd_steps(runtime: str, name: str, expect: str) -> list[Step]:
    rt = runtime.split(".")[2]
    if rt in SHIM_GENERIC_EXCLUDED:
        return []
    up = ("mkdir -p /var/lib/containerd; touch /var/lib/containerd/.wsx 2>/dev/null || "
          "mount -t tmpfs tmpfs /var/lib/containerd; systemctl restart containerd && "
          "for i in $(seq 60); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.5; done; "
          "ctr version")
    return [Step(up), Step(f"ctr image import {GUEST_OCI}"),
            Step(f"ctr run --rm --runtime {runtime} {OCI_REF} wsx-{name}", expect=expect)]


def plan(images_dir: Path, recipes_dir: Path, expect: str,
         only: Path | None = None) -> list[ImageReport]:
    """One report per `*.raw` in `images_dir` (or just `only`), with the steps to run.
    Images whose metadata or recipe cannot be found fail here, before any boot."""
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: images directory not found")
    paths = [only] if only else sorted(images_dir.glob("*.raw"))
    if not paths:
        raise PipelineError(f"{images_dir}: no *.raw images to test")
    reports = []
    for path in paths:
        if not path.is_file():
            raise PipelineError(f"{path}: image not found")
        meta_path = path.with_name(path.name + ".json")
        report = ImageReport(image=path.name, name="")
        reports.append(report)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            report.name, report.version = str(meta["name"]), str(meta.get("version", ""))
            report.arch = str(meta.get("arch", ""))
        except (OSError, ValueError, KeyError, TypeError) as err:
            report.reason = f"{meta_path}: no usable build metadata ({type(err).__name__})"
            continue
        if not SAFE_RE.match(report.name) or not SAFE_RE.match(path.name):
            report.reason = f"{meta_path}: name: {report.name!r} is not a plain extension name"
            continue
        try:
            recipe = find(recipes_dir, report.name)
        except PipelineError as err:
            report.reason = str(err).splitlines()[0]
            continue
        for template in recipe.smoke:
            command = recipe.expand(template, report.version, report.arch or "x86-64",
                                    hello_wasm=GUEST_HELLO)
            report.steps.append(Step(command, expect if "{hello_wasm}" in template else None))
        runtime = shim_runtime(recipe)
        if runtime:
            report.steps += containerd_steps(runtime, report.name, expect)
        if not report.steps:
            report.reason = f"{recipe.path}: smoke: no commands to prove the image works"
    names = [r.name for r in reports if r.name]
    for report in reports:
        if report.name and names.count(report.name) > 1 and not report.reason:
            report.reason = f"{report.image}: another image in {images_dir} is also " \
                            f"named {report.name!r}; one VM can merge only one of them"
    return reports


# ---------------------------------------------------------------- guest script

GUEST_FUNCTIONS = r"""
O=/run/wsx-out
mkdir -p /run/extensions /run/wsx-hold "$O" /run/wsx-home
export HOME=/run/wsx-home
# Flatcar's Ignition links images into /etc/extensions; elsewhere they go to /run/extensions.
where() {
  if [ -L "/etc/extensions/$1.raw" ]; then echo /etc/extensions; else echo /run/extensions; fi
}
link() { [ -L "/etc/extensions/$1.raw" ] || ln -sf "$WSX_DIR/images/$2" "/run/extensions/$1.raw"; }
hold() {
  d=$(where "$1"); echo "$d" > "/run/wsx-hold/$1.dir"
  mv "$d/$1.raw" "/run/wsx-hold/$1.raw"
}
release() { mv "/run/wsx-hold/$1.raw" "$(cat "/run/wsx-hold/$1.dir")/$1.raw"; }
merged() { [ -e "/usr/lib/extension-release.d/extension-release.$1" ]; }
merge() {
  systemd-sysext refresh >"$O/$1.log" 2>&1; rc=$?
  out=$(wsx_b64 "$O/$1.log")
  wsx_frame "{\"event\": \"merge\", \"phase\": \"$1\", \"exit\": $rc, \"output_b64\": \"$out\"}"
}
why() {
  grep -iE "$1|extension-release|architecture|not |fail|error|refus|skip|mismatch" \
    "$O/solo-$1.log" | grep -viE "^(Found|Successfully)" | tail -n 12 > "$O/why-$1.log"
  [ -s "$O/why-$1.log" ] || tail -n 12 "$O/solo-$1.log" > "$O/why-$1.log"
}
solo() {
  for m in $ALL; do [ "$m" = "$1" ] || hold "$m"; done
  SYSTEMD_LOG_LEVEL=debug systemd-sysext refresh >"$O/solo-$1.log" 2>&1
  if merged "$1"; then touch "$O/ok-$1"; fi
  systemd-sysext unmerge >/dev/null 2>&1
  for m in $ALL; do [ "$m" = "$1" ] || release "$m"; done
  why "$1"
}
report() {
  if merged "$1"; then m=true; else m=false; fi
  r=""; [ -e "$O/why-$1.log" ] && r=$(wsx_b64 "$O/why-$1.log" 2000)
  wsx_frame "{\"event\": \"image\", \"image\": \"$1\", \"merged\": $m, \"reason_b64\": \"$r\"}"
}
step() {
  s=$(wsx_ms); timeout -k 5 "$3" sh -c "$4" >"$O/step.log" 2>&1 </dev/null; rc=$?; e=$(wsx_ms)
  out=$(wsx_b64 "$O/step.log")
  wsx_frame "{\"event\": \"step\", \"image\": \"$1\", \"index\": $2, \"exit\": $rc, \
\"ms\": $((e - s)), \"output_b64\": \"$out\"}"
}
"""

GUEST_MAIN = r"""
merge first
BAD=""
for n in $ALL; do merged "$n" || BAD="$BAD $n"; done
if [ -n "$BAD" ]; then
  for n in $BAD; do solo "$n"; done
  for n in $BAD; do [ -e "$O/ok-$n" ] || hold "$n"; done
  merge retry
fi
for n in $ALL; do report "$n"; done
systemd-sysext status >"$O/status.log" 2>&1
wsx_frame "{\"event\": \"status\", \"output_b64\": \"$(wsx_b64 "$O/status.log" 8000)\"}"
"""


def guest_script(reports: list[ImageReport]) -> str:
    """The smoke test's guest script (POSIX sh, run by the pipeline.vm prelude)."""
    bootable = [r for r in reports if not r.reason]
    lines = [GUEST_FUNCTIONS.strip("\n"),
             "ALL=" + shlex.quote(" ".join(r.name for r in bootable))]
    lines += [f"link {shlex.quote(r.name)} {shlex.quote(r.image)}" for r in bootable]
    lines.append(GUEST_MAIN.strip("\n"))
    for r in bootable:
        lines.append(f"if merged {shlex.quote(r.name)}; then")
        lines += [f"  step {shlex.quote(r.name)} {i} {COMMAND_TIMEOUT} {shlex.quote(s.command)}"
                  for i, s in enumerate(r.steps)]
        lines.append("fi")
    lines.append('wsx_frame \'{"event": "done"}\'')
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- run


@dataclass
class SmokeReport:
    os: str
    accel: str
    seconds: float
    timed_out: bool
    stopped_at: str
    passed: bool
    images: list[ImageReport]
    merge_output: str = ""
    sysext_status: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# Lines of systemd-sysext's debug log that say why it refused an image, most telling first.
REFUSAL_LINES = ("is for architecture", "is for OS", "carries no extension-release",
                 "does not match image policy", "signature", "Failed to read metadata for image")


def refusal_reason(log: str, name: str) -> str:
    """': <why>' from systemd's debug log of a refused image, or '' when it said nothing."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for needle in REFUSAL_LINES:
        line = next((ln for ln in lines if needle in ln), None)
        if line is None:
            continue
        if needle == "Failed to read metadata for image":
            # systemd's words when the image lacks an extension-release file for its name.
            return (f": no usr/lib/extension-release.d/extension-release.{name} in the image "
                    f"(systemd: {line})")
        return f": {line}"
    return ": " + " | ".join(lines[-6:]) if lines else ""


def apply_frames(reports: list[ImageReport], frames: list[dict[str, object]]) -> tuple[str, str]:
    """Fill `reports` from the guest's frames; returns (merge output, sysext status)."""
    by_name = {r.name: r for r in reports if not r.reason}
    merge_output, status = "", ""
    for frame in frames:
        event = frame.get("event")
        report = by_name.get(str(frame.get("image", "")))
        if event == "merge":
            merge_output += f"[{frame.get('phase')}: exit {frame.get('exit')}]\n" \
                            f"{frame.get('output', '')}"
        elif event == "status":
            status = str(frame.get("output", ""))
        elif event == "image" and report is not None:
            report.merged = frame.get("merged") is True
            if not report.merged:
                report.reason = "not merged by systemd-sysext" + refusal_reason(
                    str(frame.get("reason", "")), report.name)
        elif event == "step" and report is not None:
            index = frame.get("index")
            if not isinstance(index, int) or not 0 <= index < len(report.steps):
                continue
            step = report.steps[index]
            step.exit = frame.get("exit") if isinstance(frame.get("exit"), int) else None
            ms = frame.get("ms")
            step.seconds = round(ms / 1000, 2) if isinstance(ms, int) else None
            step.output = str(frame.get("output", ""))
            if step.exit != 0:
                step.status = "failed"
                step.reason = ("timed out" if step.exit in (124, 137) else f"exit {step.exit}")
                last = [ln for ln in step.output.splitlines() if ln.strip()]
                if last:
                    step.reason += f": {last[-1].strip()[:200]}"
            elif step.expect and step.expect not in step.output:
                step.status, step.reason = "failed", f"output lacks {step.expect!r}"
            else:
                step.status = "passed"
    return merge_output, status


def finish(reports: list[ImageReport], result: vmlib.BootResult) -> None:
    """Final per-image status; steps that never reported say why."""
    done = any(f.get("event") == "done" for f in result.frames)
    for report in reports:
        for step in report.steps:
            if step.status == "not run" and report.merged and not step.reason:
                step.reason = ("VM killed at the timeout" if result.timed_out else
                               "no result from the guest") + f" ({result.stopped_at})"
        if report.reason:
            report.status = "failed"
        elif not report.merged:
            report.status = "failed"
            report.reason = "no merge result from the guest" + (
                "" if done else f" ({result.stopped_at or 'VM stopped'})")
        else:
            failed = [s for s in report.steps if s.status != "passed"]
            report.status = "failed" if failed else "passed"
            if failed:
                report.reason = f"{len(failed)} of {len(report.steps)} smoke steps failed"


def run(images_dir: Path, vm: vmlib.VMImage | None, os_name: str, recipes_dir: Path,
        timeout: float, reporter: Reporter, hello: bytes, expect: str,
        only: Path | None = None, cache_dir: Path | None = None,
        flatcar_opts: dict[str, object] | None = None) -> SmokeReport:
    """Plan, boot once, and report. `vm` None: build the VM for `os_name`."""
    reports = plan(images_dir, recipes_dir, expect, only)
    bootable = [r for r in reports if not r.reason]
    for r in reports:
        if r.reason:
            reporter.info("smoke", f"{r.image}: {r.reason}")
    if not bootable:
        finish(reports, vmlib.BootResult([], "", False, "nothing to boot", "-", 0.0))
        return SmokeReport(os_name, "-", 0.0, False, "", False, reports)
    with tempfile.TemporaryDirectory(prefix="wsx-smoke-") as tmp:
        payload = Path(tmp)
        (payload / "images").mkdir()
        for r in bootable:
            _place(images_dir / r.image, payload / "images" / r.image)
        (payload / "hello.wasm").write_bytes(hello)
        if any(s.command.startswith("ctr image import") for r in bootable for s in r.steps):
            (payload / "hello-oci.tar").write_bytes(hello_oci_tar(hello))
        if vm is None:
            vm = _make_vm(os_name, bootable, payload, cache_dir, reporter, flatcar_opts or {})

        def on_frame(frame: dict[str, object]) -> None:
            if frame.get("event") == "image":
                reporter.info("smoke", f"{frame.get('image')}: merged "
                                       f"{'yes' if frame.get('merged') else 'no'}")
            elif frame.get("event") == "step":
                reporter.info("smoke", f"{frame.get('image')} step {frame.get('index')}: "
                                       f"exit {frame.get('exit')} in {frame.get('ms')} ms")

        result = vmlib.boot(vm, payload, guest_script(reports), timeout, reporter=reporter,
                            on_frame=on_frame)
    merge_output, status = apply_frames(reports, result.frames)
    finish(reports, result)
    passed = all(r.status == "passed" for r in reports)
    return SmokeReport(os_name, result.accel, result.seconds, result.timed_out,
                       result.stopped_at, passed, reports, merge_output, status)


def _place(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _make_vm(os_name: str, bootable: list[ImageReport], payload: Path, cache_dir: Path | None,
             reporter: Reporter, flatcar_opts: dict[str, object]) -> vmlib.VMImage:
    from pipeline.fetch import default_cache_dir

    cache = cache_dir or default_cache_dir()
    if os_name == "reference":
        return vmlib.reference_vm(cache, reporter)
    from pipeline import flatcar, ignition

    base = flatcar.flatcar_vm(cache, reporter=reporter, **flatcar_opts)  # type: ignore[arg-type]
    config = payload.parent / f"{payload.name}-ignition.json"
    config.write_text(json.dumps(ignition.smoke_config([(r.name, r.image) for r in bootable]),
                                 indent=2))
    return vmlib.VMImage(**{**asdict(base), "config": config})


# ---------------------------------------------------------------- output


def _excerpt(text: str, limit: int = 60) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render(report: SmokeReport) -> str:
    out = [f"smoke test on {report.os} ({report.accel}, {report.seconds:.1f}s)"
           + (f": TIMED OUT {report.stopped_at}" if report.timed_out else "")]
    for r in report.images:
        out.append(f"{'PASS' if r.status == 'passed' else 'FAIL'}  {r.image}  "
                   f"merged: {'yes' if r.merged else 'no'}"
                   + (f"  ({r.reason})" if r.reason else ""))
        for s in r.steps:
            took = f"{s.seconds:.1f}s" if s.seconds is not None else "-"
            code = "-" if s.exit is None else str(s.exit)
            detail = s.reason if s.status != "passed" else _excerpt(s.output)
            out.append(f"      {s.status:<7} exit {code:<3} {took:>7}  {s.command}"
                       + (f"  → {detail}" if detail else ""))
    passed = sum(r.status == "passed" for r in report.images)
    out.append(f"{passed}/{len(report.images)} images passed")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- CLI


def cmd_smoke_test(args: argparse.Namespace) -> int:
    from pipeline.fetch import MIRROR_ENV

    reporter = Reporter(quiet=args.quiet)
    hello = args.hello_wasm.read_bytes() if args.hello_wasm else hello_wasm_module()
    flatcar_opts: dict[str, object] = {
        "channel": args.channel, "version": args.flatcar_version,
        "mirror": args.mirror or os.environ.get(MIRROR_ENV) or None,
    }
    if args.flatcar_keyring:
        flatcar_opts["keyring"] = args.flatcar_keyring
    report = run(args.dir, None, args.os, args.recipes, args.timeout, reporter, hello,
                 args.hello_expect, only=args.image, cache_dir=args.cache,
                 flatcar_opts=flatcar_opts)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render(report), end="")
    return 0 if report.passed else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from pipeline.fetch import default_cache_dir

    p = subparsers.add_parser(
        "smoke-test", help="boot one VM with every image of DIR and run each recipe's smoke "
                           "commands")
    p.add_argument("dir", type=Path, metavar="DIR", help="directory of built images")
    p.add_argument("--os", choices=("flatcar", "reference"), default="flatcar",
                   help="VM to boot: official Flatcar QEMU image, or the Debian trixie "
                        "reference VM (default: %(default)s)")
    p.add_argument("--channel", choices=("stable", "beta", "alpha", "lts"), default="stable")
    p.add_argument("--flatcar-version", default="current",
                   help="Flatcar release, e.g. 4593.2.5 (default: the channel's current)")
    p.add_argument("--flatcar-keyring", type=Path,
                   help="OpenPGP key that signs Flatcar releases (default: the repository's "
                        "keys/flatcar-image-signing.asc)")
    p.add_argument("--mirror", help="fetch https://HOST/PATH from MIRROR/HOST/PATH")
    p.add_argument("--image", type=Path, help="test only this image of DIR")
    p.add_argument("--timeout", type=float, default=900, help="seconds before the VM is "
                   "killed (default: %(default)s)")
    p.add_argument("--recipes", type=Path, default=default_recipes_dir(),
                   help="directory of recipes (default: the repository's sysexts/)")
    p.add_argument("--cache", type=Path, default=default_cache_dir(),
                   help="cache for VM images (default: %(default)s)")
    p.add_argument("--hello-wasm", type=Path, help="WASI module used as {hello_wasm} "
                   "(default: a built-in hello world)")
    p.add_argument("--hello-expect", default=HELLO_TEXT,
                   help="text {hello_wasm} must print (default: %(default)r)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_smoke_test)
