"""Signing keys made by the real `wasm-sysexts keys generate`, as the tests use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from support.cli import run_cli


@dataclass(frozen=True)
class Keys:
    dir: Path
    output: str  # what `keys generate` printed

    @property
    def gpg(self) -> Path:
        return self.dir / "gpg-signing.key"

    @property
    def pubring(self) -> Path:
        return self.dir / "import-pubring.gpg"

    @property
    def verity_key(self) -> Path:
        return self.dir / "verity.key"

    @property
    def cert(self) -> Path:
        return self.dir / "verity.crt"

    def secrets(self) -> list[str]:
        """Distinctive lines of both private keys: none may ever appear in CLI output."""
        lines = []
        for path in (self.gpg, self.verity_key):
            lines += [
                ln
                for ln in path.read_text().splitlines()
                if len(ln) >= 40 and not ln.startswith("-----")
            ]
        assert len(lines) >= 5
        return lines


def make_keys(directory: Path) -> Keys:
    proc = run_cli("keys", "generate", "--out", directory, check=True)
    return Keys(directory, proc.stdout + proc.stderr)
