"""A local HTTP mirror on 127.0.0.1 serving files in upstream layout (`/HOST/PATH`).

Fault injection for download tests, by path prefix:
  /__truncate/REST   sends REST's Content-Length but only half its bytes, then closes
  /__status/CODE/REST answers CODE (404, 500, ...) without a body
  /__flaky/N/REST    answers 503 to the first N requests for REST, then serves it
  /__huge/REST       announces a Content-Length of 1 TiB, sends REST's bytes and closes
  /__chunked/REST    serves REST without a Content-Length (chunked transfer encoding)
  /__gzipenc/REST    serves REST's bytes as they are, labelled `Content-Encoding: gzip`
  /__drip/S/REST     sends REST one byte every S seconds
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Mirror:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Mirror:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def put(self, url: str, data: bytes) -> Path:
        """Serve `data` at the mirror path of the upstream `url`."""
        path = self.root / url.split("://", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked transfer needs it

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                mirror.hits[path] += 1
                parts = path.lstrip("/").split("/")
                if parts[0] == "__status":
                    self.send_response(int(parts[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parts[0] == "__flaky":
                    if mirror.hits[path] <= int(parts[1]):
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    parts = parts[2:]
                mode, drip = "", 0.0
                if parts[0] in ("__truncate", "__huge", "__chunked", "__gzipenc"):
                    mode, parts = parts[0], parts[1:]
                elif parts[0] == "__drip":
                    mode, drip, parts = "__drip", float(parts[1]), parts[2:]
                file = mirror.root.joinpath(*parts)
                if not file.is_file() or ".." in parts:
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                if mode == "__chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(data), 65536):
                        chunk = data[start : start + 65536]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                length = 1 << 40 if mode == "__huge" else len(data)
                self.send_header("Content-Length", str(length))
                if mode == "__gzipenc":
                    self.send_header("Content-Encoding", "gzip")
                self.end_headers()
                if mode == "__drip":
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(drip)
                    return
                self.wfile.write(data[: len(data) // 2] if mode == "__truncate" else data)
                if mode in ("__truncate", "__huge"):
                    self.close_connection = True

        return Handler
