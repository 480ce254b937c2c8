"""Real gpg in throwaway homes: key generation, detached signing, and verification the way
systemd-sysupdate does it (`gpg --keyring=PUBRING --trust-model=always --verify`).

A home is a fresh 0700 temporary directory; its agent is stopped and the directory removed on
every exit path, so private keys never outlive the command. Secrets reach gpg on stdin only,
never as arguments, and gpg's own messages are not echoed (they can quote user IDs, never keys).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import run
from pipeline.core.errors import PipelineError
from pipeline.core.fs import os_problem, scratch_dir, sweep
from pipeline.core.secret import SecretSpec

# --no-autostart: the home's agent is the one throwaway_home runs, never a detached one.
BASE = [
    "--batch",
    "--no-tty",
    "--no-options",
    "--no-auto-key-locate",
    "--no-permission-warning",
    "--no-autostart",
]


def _gpg_why(stderr: bytes, code: int) -> str:
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    # gpg ends with statistics; the line that says what went wrong comes before them.
    errors = [ln for ln in lines if re.search(r"error|failed|bad|no secret", ln, re.I)]
    return "gpg failed: " + (errors or lines or [f"exit {code}"])[-1]


@dataclass(frozen=True)
class Home:
    path: Path

    def run(self, args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return run.run(["gpg", "--homedir", str(self.path), *BASE, *args], stdin=stdin, check=False)

    def check(self, args: list[str], what: str, stdin: bytes = b"") -> bytes:
        """Run gpg; on failure raise with gpg's last error line (no input is ever quoted)."""
        return run.run(
            ["gpg", "--homedir", str(self.path), *BASE, *args], stdin=stdin, what=what, why=_gpg_why
        ).stdout

    def secret_fingerprints(self) -> list[str]:
        out = self.check(["--with-colons", "--list-secret-keys"], "gpg home")
        return _fingerprints(out, "sec")


def _fingerprints(colons: bytes, kind: str) -> list[str]:
    """Primary-key fingerprints from `--with-colons` output (the fpr line after each `kind`)."""
    found, want = [], False
    for line in colons.decode().splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sec", "sub", "ssb"):
            want = fields[0] == kind
        elif fields[0] == "fpr" and want:
            found.append(fields[9])
            want = False
    return found


# gpg-agent's sockets live in the home; a Unix socket path has at most 107 bytes.
MAX_HOME = 80


_SUPERVISE = """\
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="std")
os.execvp("gpg-agent", ["gpg-agent", "--homedir", sys.argv[2], "--supervised"])
"""


@contextmanager
def throwaway_home() -> Iterator[Home]:
    """A private gpg home with its own agent. gpg starts its agent as a forked daemon, where
    no death signal reaches it (a CLI killed while signing left agents running for good).
    Here the agent runs supervised, in the foreground, as the CLI's child on a socket the CLI
    made, so it dies with the CLI; the next run sweeps the home."""
    parent = Path(tempfile.gettempdir())
    if len(str(parent)) > MAX_HOME - 30:
        parent = Path("/tmp")
    sweep(parent)  # homes of CLIs killed while signing
    with scratch_dir(parent, "gpg") as path:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path / "S.gpg-agent"))
            listener.listen(16)
            # systemd's socket-activation protocol, which `gpg-agent --supervised` speaks: the
            # socket as fd 3, LISTEN_PID the agent's own pid (a Python exec wrapper sets both).
            agent = run.spawn(
                [sys.executable, "-c", _SUPERVISE, str(listener.fileno()), str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(listener.fileno(),),
            )
        # Only the agent holds the socket now: if it dies, gpg is refused at once, not left
        # waiting on a connection nobody accepts.
        try:
            yield Home(path)
        finally:
            # Stop the agent first: it holds sockets (and unlocked keys) in the home.
            agent.kill()
            agent.wait()


def generate(uid: str) -> tuple[str, bytes, bytes]:
    """A new Ed25519 signing key without passphrase: (fingerprint, armored secret, binary pubring).

    Without a passphrase because the secret half lives in a CI secret store, which protects it;
    `sign` accepts protected keys too."""
    with throwaway_home() as home:
        home.check(
            [
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                "ed25519",
                "sign",
                "never",
            ],
            "gpg key generation",
        )
        [fpr] = home.secret_fingerprints()
        secret = home.check(
            [
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--armor",
                "--export-secret-keys",
                fpr,
            ],
            "gpg export",
        )
        public = home.check(["--export", fpr], "gpg export")
    return fpr, secret, public


def detach_sign(
    data: bytes, secret_key: bytes, passphrase: bytes | None, what: str
) -> tuple[str, bytes]:
    """(signer fingerprint, binary detached signature of `data`) made with `secret_key`."""
    phrase = (passphrase or b"") + b"\n"
    with throwaway_home() as home:
        # A protected key needs its passphrase already on import; it comes on stdin, the key
        # from a file inside the (0700, throwaway) home.
        key_file = home.path / "secret-key"
        key_file.write_bytes(secret_key)
        home.check(
            ["--pinentry-mode", "loopback", "--passphrase-fd", "0", "--import", str(key_file)],
            f"{what}: importing the key (wrong or missing passphrase?)",
            stdin=phrase,
        )
        key_file.unlink()
        fprs = home.secret_fingerprints()
        if len(fprs) != 1:
            raise PipelineError(f"{what}: expected one secret OpenPGP key, found {len(fprs)}")
        (home.path / "data").write_bytes(data)
        args = [
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--digest-algo",
            "SHA256",
            "--local-user",
            f"{fprs[0]}!",
            "--output",
            str(home.path / "data.sig"),
            "--detach-sign",
            str(home.path / "data"),
        ]
        home.check(args, f"{what}: signing (wrong or missing passphrase?)", stdin=phrase)
        return fprs[0], (home.path / "data.sig").read_bytes()


def read_keyring(path: Path, option: str = "--keyring") -> bytes:
    """An OpenPGP public keyring file's bytes (binary or armored)."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise PipelineError(f"{option} {path}: cannot read: {os_problem(err)}") from None


def verify_detached(
    data: bytes, signature: bytes, keyring: bytes, keyring_name: str = "the keyring"
) -> str:
    """The primary fingerprint of the key in `keyring` that made `signature` over `data`;
    raises naming the reason otherwise. Same gpg options as systemd-sysupdate."""
    with throwaway_home() as home:
        ring, sig, signed = home.path / "pubring.gpg", home.path / "data.sig", home.path / "data"
        ring.write_bytes(keyring)  # a copy: gpg writes lock files beside a --keyring
        sig.write_bytes(signature)
        signed.write_bytes(data)
        proc = home.run(
            [
                "--no-default-keyring",
                "--keyring",
                str(ring),
                "--trust-model=always",
                "--status-fd",
                "1",
                "--verify",
                str(sig),
                str(signed),
            ]
        )
    status = proc.stdout.decode(errors="replace").splitlines()
    valid = [ln.split() for ln in status if ln.startswith("[GNUPG:] VALIDSIG ")]
    if proc.returncode == 0 and valid:
        fields = valid[0]
        return fields[-1] if len(fields) >= 12 else fields[2]
    reason = f"gpg could not verify it (exit {proc.returncode})"
    for line in status:
        if line.startswith(("[GNUPG:] NO_PUBKEY ", "[GNUPG:] ERRSIG ")):
            reason = f"not made by a key in {keyring_name} (signer key {line.split()[2]})"
            break
        if line.startswith("[GNUPG:] BADSIG "):
            reason = "BAD signature (the signed file differs)"
            break
        if line.startswith("[GNUPG:] NODATA "):
            reason = "not an OpenPGP signature"
            break
    raise PipelineError(reason)


@dataclass(frozen=True)
class Signer:
    """The OpenPGP secret key (and passphrase) that signs SHA256SUMS files."""

    key: SecretSpec
    passphrase: SecretSpec | None = None

    def sign(self, data: bytes, what: str) -> tuple[str, bytes]:
        """(signer fingerprint, detached signature over `data`)."""
        phrase = self.passphrase.line() if self.passphrase else None
        return detach_sign(data, self.key.read(), phrase, what)

    def public_key(self) -> bytes:
        """The binary public keyring of the key (what hosts import)."""
        with throwaway_home() as home:
            home.check(["--import"], self.key.option, stdin=self.key.read())
            return home.check(["--export"], f"{self.key.option}: exporting its public key")
