"""A real OCI registry for tests (Debian's docker-registry, distribution 2.8) on 127.0.0.1,
optionally with TLS from a throwaway CA and htpasswd (bcrypt) auth, and a small
fault-injecting HTTP proxy that counts requests and can fail or reset them."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem): a CA and a server certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wasm-sysexts test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port> with storage under `root`."""

    def __init__(self, root: Path, tls: bool = False, users: dict[str, str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.ca: Path | None = None
        config = [
            "version: 0.1",
            "log: {level: info, accesslog: {disabled: false}}",
            f"storage: {{filesystem: {{rootdirectory: {root / 'storage'}}}, "
            "delete: {enabled: true}}",
            "http:",
            f"  addr: {self.host}",
            "  secret: wasm-sysexts-test",
        ]
        if tls:
            self.ca, cert, key = make_tls(root)
            config += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if users:
            htpasswd = root / "htpasswd"
            lines = [
                subprocess.run(
                    ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
                ).stdout.strip()
                for user, password in users.items()
            ]
            htpasswd.write_text("\n".join(lines) + "\n")
            config += [
                "auth:",
                "  htpasswd:",
                "    realm: wasm-sysexts-test",
                f"    path: {htpasswd}",
            ]
        (root / "config.yml").write_text("\n".join(config) + "\n")
        self.log = root / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Registry:
        tool = shutil.which("docker-registry")
        assert tool, "docker-registry is needed (Debian package docker-registry)"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [tool, "serve", str(self.root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(
                    f"{self.scheme}://{self.host}/v2/",
                    timeout=2,
                    verify=str(self.ca) if self.ca else True,
                )
                return self
            except requests.exceptions.ConnectionError:
                assert self.proc.poll() is None, self.log.read_text()
                time.sleep(0.1)
        self.__exit__()
        raise AssertionError(f"registry did not start:\n{self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# (method, path, nth such request, Content-Length) -> action
Rule = Callable[[str, str, int, int], str | None]


class FaultProxy:
    """A plain-HTTP proxy in front of a registry that counts requests and injects faults.

    `rule(method, path, n, length)` returns None to forward, "500" to answer 500, or "reset"
    to read half the request body and close the connection without an answer.
    """

    def __init__(self, upstream: str, token_user: tuple[str, str] | None = None) -> None:
        self.upstream = upstream
        # With token_user, act as a token-auth registry: 401 + Bearer challenge, tokens from
        # /token for that user's Basic credentials, stripped before forwarding.
        self.token_user = token_user
        self.scopes: list[str] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str, int, str | None]] = []  # method, path, length, action
        self.rule: Rule = lambda method, path, n, length: None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str, pattern: str) -> int:
        return sum(n for (m, p), n in self.counts.items() if m == method and re.search(pattern, p))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                path = self.path.split("?", 1)[0]
                # Group upload sessions (their paths carry a uuid) under one key.
                key = re.sub(r"/uploads/[^/]+$", "/uploads/<id>", path)
                with proxy._lock:
                    proxy.counts[(self.command, key)] += 1
                    n = proxy.counts[(self.command, key)]
                length = int(self.headers.get("Content-Length") or 0)
                action = proxy.rule(self.command, path, n, length)
                with proxy._lock:
                    proxy.log.append((self.command, path, length, action))
                if proxy.token_user and not self._token_ok(path):
                    return
                if action == "reset":
                    self.rfile.read(length // 2)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else None
                if action == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "transfer-encoding")
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header(
                    "Content-Length",
                    resp.getheader("Content-Length", "0")
                    if self.command == "HEAD"
                    else str(len(data)),
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _token_ok(self, path: str) -> bool:
                """Serve /token and challenge requests without a valid token."""
                assert proxy.token_user
                if path == "/token":
                    query = urllib.parse.parse_qs(self.path.partition("?")[2])
                    expected = (
                        "Basic " + base64.b64encode(":".join(proxy.token_user).encode()).decode()
                    )
                    ok = self.headers.get("Authorization") == expected
                    proxy.scopes += query.get("scope", [])
                    body = json.dumps({"token": "t0ken"}).encode() if ok else b""
                    self._reply(200 if ok else 401, body)
                    return False
                if self.headers.get("Authorization") == "Bearer t0ken":
                    del self.headers["Authorization"]
                    return True
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._reply(
                    401,
                    b"",
                    {
                        "WWW-Authenticate": (
                            f'Bearer realm="http://{proxy.host}/token",service="fault-proxy"'
                        )
                    },
                )
                return False

            def _reply(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler
