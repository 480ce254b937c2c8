"""Joins one guest TCP connection (stdin/stdout, as QEMU's `guestfwd=...-cmd:` hands it over)
to 127.0.0.1:PORT. QEMU starts one relay per guest connection, so the guest may open several
at once (systemd-pull fetches SHA256SUMS and its signature in parallel); a plain
`guestfwd=...-tcp:` target would be one connection shared by all of them.

    python3 relay.py PORT

Test-only: the sysupdate VM test serves its update tree to the guest this way.
"""

import os
import shlex
import socket
import sys
import threading


def relay_command(port: int) -> str:
    """The guestfwd command line for a relay to 127.0.0.1:`port`; the relay dies with QEMU."""
    return shlex.join(["setpriv", "--pdeathsig", "KILL", "--", sys.executable, __file__, str(port)])


def main(port: int) -> None:
    upstream = socket.create_connection(("127.0.0.1", port))

    def guest_to_host() -> None:
        while data := os.read(0, 65536):
            upstream.sendall(data)
        upstream.shutdown(socket.SHUT_WR)

    threading.Thread(target=guest_to_host, daemon=True).start()
    while data := upstream.recv(65536):
        os.write(1, data)


if __name__ == "__main__":
    main(int(sys.argv[1]))
