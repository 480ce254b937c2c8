"""The arm64 reference VM, started early: on a fresh machine its Debian root takes about 15
minutes (every maintainer script runs under qemu-user, mostly on one core), so the process
that will boot it starts making it with its first slow test (tests/conftest.py), overlapping
the tests before it; the test that boots it waits here, and sees the build's error if it
failed."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from pipeline.core.vocab import Arch
from pipeline.vm.reference import reference_vm
from support.cache import VM_CACHE

MARKER = "arm64_vm"
_started: dict[str, Future[object]] = {}


def start() -> None:
    if "arm64" in _started:
        return
    future: Future[object] = Future()
    _started["arm64"] = future

    def make() -> None:
        try:
            future.set_result(reference_vm(VM_CACHE, Arch.ARM64))
        except BaseException as err:  # handed to the waiting test
            future.set_exception(err)

    threading.Thread(target=make, name="arm64-reference-vm", daemon=True).start()


def wait() -> None:
    """Block until the arm64 reference VM exists (starting it if nobody did)."""
    start()
    _started["arm64"].result(timeout=3600)
