"""A local HTTP mirror on 127.0.0.1 serving files in upstream layout (`/HOST/PATH`).

Fault injection for download tests, by path prefix:
  /__truncate/REST   sends REST's Content-Length but only half its bytes, then closes
  /__status/CODE/REST answers CODE (404, 500, ...) without a body
  /__flaky/N/REST    answers 503 to the first N requests for REST, then serves it
"""

from __future__ import annotations

import threading
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
                truncate = parts[0] == "__truncate"
                if truncate:
                    parts = parts[1:]
                file = mirror.root.joinpath(*parts)
                if not file.is_file() or ".." in parts:
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if truncate else data)
                if truncate:
                    self.close_connection = True

        return Handler
