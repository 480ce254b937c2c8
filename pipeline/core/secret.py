"""Where a secret comes from: `FILE` or `env:VAR`, parsed once and read alike for the OpenPGP
key and its passphrase, the verity key and registry passwords.

A secret's value never appears in a message: errors name the option and the source only.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.fs import os_problem

_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SecretSpec:
    option: str  # the CLI option it came from, for messages
    env: str | None = None
    file: Path | None = None

    @classmethod
    def parse(cls, value: str, option: str) -> SecretSpec:
        if value.startswith("env:"):
            var = value[4:]
            if not _ENV_RE.match(var):
                raise PipelineError(
                    f"{option} {value}: {var!r} is not an environment variable name"
                )
            return cls(option, env=var)
        if not value:
            raise PipelineError(f"{option}: empty (give FILE or env:VAR)")
        return cls(option, file=Path(value))

    @classmethod
    def env_var(cls, var: str, option: str) -> SecretSpec:
        return cls.parse(f"env:{var}", option)

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env else str(self.file)

    def read(self) -> bytes:
        """The secret's bytes (exactly as stored; `line()` strips a trailing newline)."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise PipelineError(
                    f"{self.option} {self}: environment variable {self.env} is empty or unset"
                )
            return value.encode()
        assert self.file is not None
        try:
            return self.file.read_bytes()
        except OSError as err:
            raise PipelineError(f"{self.option} {self}: cannot read: {os_problem(err)}") from None

    def line(self) -> bytes:
        """A one-line secret (passphrase, password) without its trailing newline."""
        return self.read().rstrip(b"\r\n")


def option(name: str) -> type[argparse.Action]:
    """An argparse action that stores a SecretSpec for option `name`."""

    class _Secret(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: object,
            option_string: str | None = None,
        ) -> None:
            try:
                spec = SecretSpec.parse(str(values), name)
            except PipelineError as err:
                parser.error(str(err))
            setattr(namespace, self.dest, spec)

    return _Secret
