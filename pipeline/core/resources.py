"""The repository's recipes (`sysexts/`), public keys (`keys/`) and advisory feed
(`advisories/`), shipped in the package as `pipeline.sysexts`, `pipeline.keys` and
`pipeline.advisories` (pyproject maps those packages onto the top-level directories), so a
plain `pip install` carries them, as do the Dagger containers."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from pipeline.core.errors import PipelineError


def data_dir(package: str) -> Path:
    """The directory of package data `pipeline.<package>` ("sysexts" or "keys")."""
    try:
        found = importlib.resources.files(f"pipeline.{package}")
    except ModuleNotFoundError:
        # Run from a checkout without installing it (PYTHONPATH=checkout): pyproject's
        # package-dir mapping does not exist then, the top-level directory does.
        checkout = Path(__file__).resolve().parents[2] / package
        if (checkout / "__init__.py").is_file():
            return checkout
        raise PipelineError(f"pipeline.{package}: package data not found") from None
    if not isinstance(found, Path):  # a zipped install: not how this package is shipped
        raise PipelineError(f"pipeline.{package}: package data is not a directory ({found})")
    return found


def recipes_dir() -> Path:
    return data_dir("sysexts")


def advisories_dir() -> Path:
    """The project's OSV advisory feed and waivers (top-level advisories/)."""
    return data_dir("advisories")


def keys_dir() -> Path:
    return data_dir("keys")


def vm_tools_dir() -> Path:
    """Recipes of the sysexts the smoke-test VMs use themselves (pipeline/vm/tools/)."""
    return data_dir("vm") / "tools"
