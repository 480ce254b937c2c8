"""Guest-script steps whose results come back as frames, and the static web server the guest
reaches at 10.0.2.100 (shared by the VM tests that update over HTTP)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.vm.qemu import BootResult

# `run STEP CMD...` in a guest script: runs CMD and sends a frame with its exit code, output
# (out_b64, decoded as `out`) and how often it ran. QEMU's user-mode network now and then
# drops a guest-forward connection (curl: "Server returned nothing", "Failure when receiving
# data from the peer"; 2 of 7 runs here, and no relay had run for the lost connection): a
# transport failure, and only that, runs again.
RUN_STEP = r"""
run() {
    step=$1; shift; tries=1
    "$@" >/run/out 2>&1; rc=$?
    while [ $rc -ne 0 ] && [ $tries -lt 6 ] && grep -q "Transfer failed: " /run/out; do
        tries=$((tries + 1)); "$@" >/run/out 2>&1; rc=$?
    done
    head="\"step\": \"$step\", \"rc\": $rc, \"tries\": $tries"
    wsx_frame "{$head, \"out_b64\": \"$(wsx_b64 /run/out)\"}"
}
"""


def steps(result: BootResult) -> tuple[dict[str, dict[str, Any]], str]:
    """The step frames by name, and all of them as text for assertion messages."""
    found = {str(f["step"]): f for f in result.frames if "step" in f}
    detail = "\n".join(f"{k}: rc={v['rc']} {v.get('out', '')}" for k, v in found.items())
    return found, detail


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_server(root: Path) -> Iterator[int]:
    """Serve `root` (following symlinks, so a republished tree is seen) on 127.0.0.1; yields
    the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
