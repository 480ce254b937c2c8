"""OSV test tools: the OSV project's own JSON schema, and a stand-in for osv.dev's API.

The schema ships in the `osv` package on PyPI (the OSV project's library, which vendors
ossf/osv-schema); its wheel is downloaded once into the test cache with pip, checked against
its sha256, and only `validation/schema.json` is read from it (the library's own dependencies
are never installed).

osv.dev cannot be reached here, so `FakeOsvDev` answers the two calls `audit --online` makes,
`POST /v1/querybatch` and `GET /v1/vulns/ID`, on 127.0.0.1 with the verdicts a test sets
(purl or GIT tag -> advisory ids), and records every query it was sent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.cache import CACHE, keep

OSV_WHEEL = "osv-0.0.22-py3-none-any.whl"
OSV_WHEEL_SHA256 = "95ed761d8f742dcf11ba8cd7e83ed6f945d5a6d45830fc6cf2cb4bf00bcc06ec"
SCHEMA_MEMBER = "osv/osv-schema/validation/schema.json"


def _download(target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", work, "osv==0.0.22"],
            check=True,
        )
        shutil.move(Path(work) / OSV_WHEEL, target)


def osv_schema() -> dict[str, Any]:
    wheel = keep(CACHE / "osv-schema" / OSV_WHEEL, _download)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == OSV_WHEEL_SHA256, f"{wheel}: sha256 {digest}, expected {OSV_WHEEL_SHA256}"
    with zipfile.ZipFile(wheel) as archive:
        schema: dict[str, Any] = json.loads(archive.read(SCHEMA_MEMBER))
    return schema


class FakeOsvDev:
    def __init__(self, records: dict[str, dict[str, Any]], verdicts: dict[str, list[str]]) -> None:
        self.records = records  # id -> OSV record
        self.verdicts = verdicts  # purl, or "GIT <repo> <tag>" -> ids
        self.queries: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _key(self, query: dict[str, Any]) -> str:
        package = query.get("package", {})
        if "purl" in package:
            return str(package["purl"])
        return f"{package.get('ecosystem')} {package.get('name')} {query.get('version')}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path != "/v1/querybatch":
                    return self._send(404, {"message": "not found"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.queries += body["queries"]
                results = [
                    {"vulns": [{"id": i, "modified": "2026-12-01T00:00:00Z"} for i in ids]}
                    if (ids := fake.verdicts.get(fake._key(q)))
                    else {}
                    for q in body["queries"]
                ]
                self._send(200, {"results": results})

            def do_GET(self) -> None:
                vid = self.path.removeprefix("/v1/vulns/")
                if vid in fake.records:
                    return self._send(200, fake.records[vid])
                self._send(404, {"code": 5, "message": "Bug not found."})

        return Handler
