"""The one way the pipeline runs an external tool.

- `find(tool)` looks the tool up on PATH; a missing tool is a one-line error naming the Debian
  package that provides it.
- `run(...)` runs it and raises `PipelineError` with the tool's meaningful stderr line when it
  fails (`what` names the step, e.g. "mksquashfs wasmtime-1.0-x86-64.raw").
- `spawn(...)` starts one that the caller streams from or waits on (QEMU, decompressors).

Every tool runs in the CLI's process group (Ctrl-C reaches it, `kill -- -PGID` kills all) and
dies with the CLI: it starts under `setpriv --pdeathsig KILL`, so even a `kill -9` of the CLI
leaves no mksquashfs, gpg or qemu behind. Secrets reach tools on stdin or in 0600 files, never
as arguments, and a failure message quotes only the tool's own stderr.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from pipeline.core import log
from pipeline.core.errors import PipelineError

HEARTBEAT = 30.0  # seconds between "still running" lines of a long tool
_log = log.get("run")

# Executable -> the Debian package that ships it.
PACKAGES: dict[str, str] = {
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "mkfs.erofs": "erofs-utils",
    "fsck.erofs": "erofs-utils",
    "dump.erofs": "erofs-utils",
    "zstd": "zstd",
    "xz": "xz-utils",
    "gpg": "gnupg",
    "gpgconf": "gnupg",
    "openssl": "openssl",
    "systemd-repart": "systemd-repart",
    "veritysetup": "cryptsetup-bin",
    "mmdebstrap": "mmdebstrap",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-img": "qemu-utils",
    "go": "golang-go",
    "cargo": "cargo",
    "rustc": "rustc",
    "cmake": "cmake",
    "make": "make",
    "gcc": "gcc",
    "g++": "g++",
    "cc": "gcc",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
    "git": "git",
    "patch": "patch",
    "protoc": "protobuf-compiler",
}

# stderr lines that say what went wrong, preferred over a tool's closing chatter.
_PROBLEM_RE = re.compile(
    r"\b(error|fatal|failed|failure|cannot|can't|unable|invalid|denied|"
    r"no such|not found|bad)\b|^E: ",
    re.IGNORECASE,
)


def find(tool: str) -> str:
    """The path of `tool`; PipelineError naming its Debian package when it is missing."""
    found = shutil.which(tool)
    if found is None:
        package = PACKAGES.get(tool)
        hint = f" (install the Debian package {package})" if package else ""
        raise PipelineError(f"{tool}: not found on PATH{hint}")
    return found


def reason(output: bytes | str, returncode: int) -> str:
    """The line of a tool's output that says why it failed: the last problem line, else the
    last line, else its exit status."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    problems = [ln for ln in lines if _PROBLEM_RE.search(ln)]
    return (problems or lines or [f"exit status {returncode}"])[-1][:400]


def _argv(args: Sequence[str | os.PathLike[str]]) -> tuple[list[str], str]:
    """(the command line to execute, the tool's name)."""
    argv = [os.fspath(a) for a in args]
    if not argv:
        raise ValueError("empty command")
    tool = argv[0] if os.sep in argv[0] else find(argv[0])
    # PR_SET_PDEATHSIG through setpriv: no preexec_fn (unsafe with threads), same effect.
    return [find("setpriv"), "--pdeathsig", "KILL", "--", tool, *argv[1:]], Path(tool).name


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    what: str | None = None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    timeout: float | None = None,
    check: bool = True,
    why: Callable[[bytes, int], str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool to completion. `env` replaces the environment when given. With `check`, a
    non-zero exit raises `PipelineError("<what>: <reason>")`; `why(stderr, code)` may pick the
    reason where the generic choice would not."""
    argv, tool = _argv(args)
    name = what or tool
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )
    except subprocess.TimeoutExpired:
        raise PipelineError(f"{name}: did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        detail = (why or _default_why)(proc.stderr or proc.stdout or b"", proc.returncode)
        raise PipelineError(f"{name}: {detail}")
    return proc


def logged(
    args: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    every: float = HEARTBEAT,
) -> None:
    """Run a long tool (a compile) with its output appended to `log_file` and a progress line
    every `every` seconds, so a ten-minute build is seen working. A failure raises with the
    tool's meaningful line and the log's path; the tool is killed if we are interrupted."""
    argv, _ = _argv(args)
    started = time.monotonic()
    with open(log_file, "ab") as out:
        out.write(f"+ {shlex.join(os.fspath(a) for a in args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        try:
            while True:
                try:
                    code = proc.wait(timeout=every)
                    break
                except subprocess.TimeoutExpired:
                    _log.info(f"{what}: still running, {time.monotonic() - started:.0f} s")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if code != 0:
        with open(log_file, "rb") as log:
            log.seek(max(0, log_file.stat().st_size - (64 << 10)))
            tail = log.read()
        raise PipelineError(f"{what}: {reason(tail, code)} (full log: {log_file})")


def _default_why(output: bytes, code: int) -> str:
    return reason(output, code)


def spawn(
    args: Sequence[str | os.PathLike[str]],
    *,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a tool the caller waits on (and kills on every exit path)."""
    return subprocess.Popen(
        _argv(args)[0],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        pass_fds=tuple(pass_fds),
    )


def version(tool: str, *flags: str, pattern: str = r"\d+(\.\d+)+\S*") -> str:
    """`tool`'s version line (part of build keys and metadata), e.g. 'mksquashfs 4.5.1'."""
    proc = run([tool, *(flags or ("--version",))], check=False)
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    match = re.search(pattern, text)
    return f"{tool} {match.group(0)}" if match else f"{tool} (unknown version)"
