"""A local fake of the GitHub REST API's release listing, on 127.0.0.1.

Serves `GET /repos/OWNER/REPO/releases?per_page=N&page=P` from releases added with `release()`,
newest first as GitHub lists them, `page_size` per page at most (to force pagination) with a
`Link: <...>; rel="next"` header like GitHub's. Per repository it can also answer as GitHub
does when rate-limited (403, `X-RateLimit-Remaining: 0`, a message quoting the request's
Authorization header, as a hostile or careless server might) or with a body that is not JSON.
Every request is recorded as (path, Authorization header).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit


class FakeGitHub:
    def __init__(self) -> None:
        self.repos: dict[str, list[dict[str, Any]]] = {}
        self.rate_limited: set[str] = set()
        self.rate_limit_reset = "1900000000"  # X-RateLimit-Reset of a rate-limited answer
        # repo -> (status, message): an error answer whose message the test chooses
        self.refusals: dict[str, tuple[int, str]] = {}
        self.bad_json: set[str] = set()
        self.page_size = 100
        self.requests: list[tuple[str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGitHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def release(
        self,
        repo: str,
        tag: str,
        assets: list[str],
        draft: bool = False,
        prerelease: bool = False,
        digests: dict[str, str] | None = None,
    ) -> None:
        """Publish release `tag` of `repo` ("owner/name") with asset files `assets`, and the
        sha256 `digests` GitHub records for some of them; the last one added is listed first."""
        number = sum(len(r) for r in self.repos.values()) + 1
        known: dict[str, str] = digests or {}
        self.repos.setdefault(repo, []).insert(
            0,
            {
                "id": number,
                "tag_name": tag,
                "name": tag,
                "draft": draft,
                "prerelease": prerelease,
                "html_url": f"https://github.com/{repo}/releases/tag/{quote(tag, safe='')}",
                "assets": [
                    {
                        "id": number * 1000 + i,
                        "name": name,
                        "size": 1,
                        "digest": f"sha256:{known[name]}" if name in known else None,
                        "browser_download_url": f"https://github.com/{repo}/releases/download/"
                        f"{quote(tag, safe='')}/{name}",
                    }
                    for i, name in enumerate(assets)
                ],
            },
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                auth = self.headers.get("Authorization")
                fake.requests.append((self.path, auth))
                segments = parts.path.strip("/").split("/")
                if len(segments) != 4 or segments[0] != "repos" or segments[3] != "releases":
                    return self.answer(404, {"message": "Not Found"})
                repo = f"{segments[1]}/{segments[2]}"
                if repo in fake.rate_limited:
                    return self.answer(
                        403,
                        {"message": f"API rate limit exceeded (request had {auth})"},
                        {
                            "X-RateLimit-Limit": "60",
                            "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": fake.rate_limit_reset,
                        },
                    )
                if repo in fake.refusals:
                    status, message = fake.refusals[repo]
                    return self.answer(status, {"message": message})
                if repo in fake.bad_json:
                    return self.answer(200, b"<html>not the API</html>")
                if repo not in fake.repos:
                    return self.answer(404, {"message": "Not Found"})
                query = parse_qs(parts.query)
                size = min(int(query.get("per_page", ["30"])[0]), fake.page_size)
                page = int(query.get("page", ["1"])[0])
                releases = fake.repos[repo]
                headers = {}
                if page * size < len(releases):
                    headers["Link"] = (
                        f"<{fake.url}{parts.path}?per_page={size}&page={page + 1}>;"
                        f' rel="next", <{fake.url}{parts.path}?per_page={size}'
                        f'&page={-(-len(releases) // size)}>; rel="last"'
                    )
                self.answer(200, releases[(page - 1) * size : page * size], headers)

            def answer(
                self, status: int, body: object, headers: dict[str, str] | None = None
            ) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
