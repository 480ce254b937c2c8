"""Session-wide fixtures: the local upstream mirror, pinned test recipes, real payloads."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import prefetch
from support.cli import run_cli
from support.mirror import Mirror
from support.payloads import (
    WASMTIME_VERSION,
    compile_hello,
    elf_header,
    tar_bytes,
    wasmtime_tarball,
)
from support.recipes import WASMTIME_BASE, wasmtime_recipe

# The slow tiers, one marker each (pyproject.toml describes them). Plain `pytest` leaves them
# out; naming them (`-m vm`), naming a test file or test, `-k`, or `--all-tiers` runs them.
TIERS = ("vm", "arm64_vm", "dagger", "source", "debroot", "browser", "gotool")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-tiers",
        action="store_true",
        help="run every tier: VMs, the Dagger engine, source builds, Debian roots, "
        "the browser and Go tools (what .ci/run does)",
    )


def _chosen(config: pytest.Config) -> bool:
    """Whether the command line chose tests itself (then every tier it chose runs)."""
    return bool(
        config.getoption("all_tiers")
        or config.option.markexpr
        or config.option.keyword
        or any(not Path(arg.split("::")[0]).is_dir() for arg in config.args)
    )


def _slow(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(tier) for tier in TIERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _chosen(config):
        slow = [i for i in items if _slow(i)]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [i for i in items if not _slow(i)]
    # The arm64 reference VM's root takes longest to make: its test goes last, and the first
    # slow test starts making the root in the background (below).
    items.sort(key=lambda item: bool(item.get_closest_marker(prefetch.MARKER)))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (pyproject.toml): the fast tier spreads over a worker per core, a module per
    worker at a time; a run that chose tests itself runs in one process, in order, because
    a TCG VM or a compiler wants the whole machine and the slow tests share fixtures."""
    return 0 if _chosen(config) else None


@pytest.fixture(autouse=True)
def _arm64_root_early(request: pytest.FixtureRequest) -> None:
    if _slow(request.node) and any(
        i.get_closest_marker(prefetch.MARKER) for i in request.session.items
    ):
        prefetch.start()


def pytest_report_header(config: pytest.Config) -> str:
    if _chosen(config):
        return "tiers: as chosen on the command line"
    return (
        f"tiers: fast only; the slow tiers ({', '.join(TIERS)}) run with "
        "`pytest --all-tiers`, one of them with `pytest -m vm`"
    )


@pytest.fixture(scope="session", autouse=True)
def stop_test_gpg_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that run gpg themselves start agents in their homes; stop those when done (the
    pipeline's own gpg homes stop theirs)."""
    yield
    for socket in tmp_path_factory.getbasetemp().rglob("S.gpg-agent"):
        subprocess.run(
            ["gpgconf", "--homedir", str(socket.parent), "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )


@pytest.fixture(scope="session")
def hello_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_hello(tmp_path_factory.mktemp("wasm") / "hello.wasm")


@pytest.fixture(scope="session")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    with Mirror(tmp_path_factory.mktemp("mirror")) as m:
        m.put(
            f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz", wasmtime_tarball()
        )
        # No aarch64 wasmtime is obtainable here; an archive in the same layout holding an
        # aarch64 ELF header stands in.
        m.put(
            f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-aarch64-linux.tar.xz",
            tar_bytes(
                {f"wasmtime-v{WASMTIME_VERSION}-aarch64-linux/wasmtime": (elf_header(), 0o755)}
            ),
        )
        yield m


@pytest.fixture(scope="session")
def recipes(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror) -> Path:
    """A recipes directory holding test recipes pinned to the mirror's archives."""
    directory = tmp_path_factory.mktemp("recipes")
    (directory / "wasmtime.yaml").write_text(wasmtime_recipe(mirror))
    return directory


@pytest.fixture(scope="session")
def publish_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(armored secret key, binary public keyring) signing the publishing tests' images."""
    from support.registry_images import make_key

    return make_key(tmp_path_factory.mktemp("publish-key"))


@pytest.fixture(scope="session")
def signed_images(
    tmp_path_factory: pytest.TempPathFactory, mirror: Mirror, publish_key: tuple[Path, Path]
) -> dict[str, Path]:
    """{version: signed directory} of the `wsxhello` test extension, both arches; read-only
    for tests (copy before changing anything)."""
    from support.registry_images import build_signed

    return build_signed(run_cli, mirror, tmp_path_factory.mktemp("signed"), publish_key[0])
