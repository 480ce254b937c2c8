"""Joins one guest TCP connection (stdin/stdout, as QEMU's `guestfwd=...-cmd:` hands it over)
to 127.0.0.1:PORT. QEMU starts one relay per guest connection, so the guest may open several
at once (systemd-pull fetches SHA256SUMS and its signature in parallel); a plain
`guestfwd=...-tcp:` target would be one connection shared by all of them.

    python3 relay.py PORT
"""

import os
import socket
import sys
import threading


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
