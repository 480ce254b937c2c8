"""A Distribution API client: transport, retries, Basic and Bearer auth, blobs, manifests and
referrers (the API, or the `sha256-<hex>` referrers tag schema where a registry lacks it).

Spoken with `requests` rather than the oras SDK: oras-py 0.2 has no referrers-tag fallback,
no HEAD-before-upload for every blob and no retry policy we can bound, and all three are the
point here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from pipeline.core import log
from pipeline.core.errors import PipelineError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
_log = log.get("oci")

RETRIES = 5  # attempts per request (or per blob upload) on 5xx/429/connection errors
BACKOFF = 0.5  # seconds, doubled after each failed attempt
MAX_WAIT = 10.0  # cap on one wait, also for Retry-After
TIMEOUT = (15, 120)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_MANIFEST = 4 << 20  # what registries accept as a manifest (distribution's own limit)


class _Retry(Exception):
    """A failure worth another attempt."""


class TransientError(PipelineError):
    """Retries ran out on a failure that might have passed (5xx, 429, connection errors)."""


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_reference(ref: str) -> tuple[str, str]:
    """`REGISTRY/REPO:TAG` or `REGISTRY/REPO@sha256:...` -> (REGISTRY/REPO, TAG or digest)."""
    if "@" in ref:
        repository, reference = ref.split("@", 1)
        if not DIGEST_RE.match(reference):
            raise PipelineError(f"{ref}: digest is not sha256:<64 hex>")
        return repository, reference
    head, _, last = ref.rpartition("/")
    if ":" in last and head:
        name, tag = last.split(":", 1)
        return f"{head}/{name}", tag
    raise PipelineError(f"{ref}: no tag or digest (REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST)")


def docker_config_auth(registry: str) -> tuple[str, str] | None:
    """(user, password) for `registry` from $DOCKER_CONFIG/config.json or ~/.docker/config.json."""
    directory = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    path = Path(directory) / "config.json"
    if not path.is_file():
        return None
    try:
        auths = json.loads(path.read_text(encoding="utf-8")).get("auths", {})
    except (OSError, ValueError):
        raise PipelineError(f"{path}: not valid JSON") from None
    for key, entry in auths.items():
        host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if host != registry or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                raise PipelineError(f"{path}: auths.{key}.auth: not base64 user:password") from None
            return user, password
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
    return None


@dataclass
class Client:
    """A Distribution API client for the repositories under REGISTRY/NAMESPACE."""

    repository: str
    insecure: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    registry: str = field(init=False)
    namespace: str = field(init=False)
    _base: str | None = field(default=None, init=False)
    _auth: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, init=False)

    def __post_init__(self) -> None:
        self.registry, _, self.namespace = self.repository.strip("/").partition("/")
        if not self.registry or self.repository != self.repository.lower():
            raise PipelineError(
                f"--repository {self.repository!r}: expected lowercase REGISTRY[/NAMESPACE]"
            )
        if self.username and self.password is None:
            raise PipelineError(
                "--username: needs --password FILE|env:VAR (or --password-env "
                "VAR, --password-file FILE)"
            )
        if not self.username:
            found = docker_config_auth(self.registry)
            if found:
                self.username, self.password = found
        if self.insecure:  # asked for explicitly; a warning per request would drown the log
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    @property
    def verify(self) -> bool:
        # Per request: a Session-wide verify=False loses to REQUESTS_CA_BUNDLE in the env.
        return not self.insecure

    def repo(self, name: str = "") -> str:
        """The repository path (after REGISTRY/) of extension `name`."""
        return "/".join(p for p in (self.namespace, name) if p)

    # -- transport -------------------------------------------------------------------------

    def base(self) -> str:
        """https://REGISTRY (or http:// when --insecure and TLS is not spoken there)."""
        if self._base is None:
            schemes = ("https", "http") if self.insecure else ("https",)
            for scheme in schemes:
                try:
                    self._session.get(
                        f"{scheme}://{self.registry}/v2/", timeout=TIMEOUT, verify=self.verify
                    )
                except requests.exceptions.SSLError as err:
                    if scheme == schemes[-1]:
                        raise PipelineError(
                            f"https://{self.registry}/v2/: TLS failed "
                            f"({type(err).__name__}); use --insecure for a test "
                            "registry or trust its CA"
                        ) from None
                    continue
                except requests.exceptions.ConnectionError:
                    if scheme == schemes[-1]:
                        raise PipelineError(
                            f"{scheme}://{self.registry}/v2/: cannot connect"
                        ) from None
                    continue
                self._base = f"{scheme}://{self.registry}"
                break
        assert self._base is not None
        return self._base

    def request(
        self,
        method: str,
        url: str,
        scope: str,
        *,
        ok: tuple[int, ...],
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], IO[bytes]] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> requests.Response:
        """One API call with auth and bounded retries; `url` may be relative to the registry."""
        full = urljoin(self.base() + "/", url)
        shown = full.split("?", 1)[0]
        delay = BACKOFF
        attempts = RETRIES if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                resp = self._send(method, full, scope, headers or {}, body, stream)
                if resp.status_code == 401:
                    raise PipelineError(
                        f"{method} {shown}: 401 Unauthorized: "
                        + (
                            "check --username/--password-env or the Docker config"
                            if self.username
                            else "credentials needed (--username/--password-env)"
                        )
                    )
                if resp.status_code == 403:
                    raise PipelineError(f"{method} {shown}: 403 Forbidden for {self.username!r}")
                if resp.status_code in ok:
                    return resp
                if resp.status_code >= 500 or resp.status_code == 429:
                    wait = resp.headers.get("Retry-After", "")
                    if wait.isdigit():
                        delay = min(float(wait), MAX_WAIT)
                    raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
                raise PipelineError(
                    f"{method} {shown}: HTTP {resp.status_code} {resp.reason}: {_error_text(resp)}"
                )
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as err:
                problem = f"connection failed ({type(err).__name__})"
            except _Retry as err:
                problem = str(err)
            if attempt == attempts:
                raise TransientError(
                    f"{method} {shown}: {problem} (gave up after {attempts} attempt(s))"
                )
            _log.info(f"{method} {shown}: {problem}; retry in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, MAX_WAIT)
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        url: str,
        scope: str,
        headers: dict[str, str],
        body: bytes | Callable[[], IO[bytes]] | None,
        stream: bool,
    ) -> requests.Response:
        resp = self._send_once(method, url, scope, headers, body, stream)
        if resp.status_code != 401:
            return resp
        # Answer the challenge (first contact, or an expired token) once, then resend.
        challenge = resp.headers.get("WWW-Authenticate", "")
        resp.close()
        self._auth[scope] = self._authorize(challenge, scope)
        return self._send_once(method, url, scope, headers, body, stream)

    def _send_once(
        self,
        method: str,
        url: str,
        scope: str,
        headers: dict[str, str],
        body: bytes | Callable[[], IO[bytes]] | None,
        stream: bool,
    ) -> requests.Response:
        data = body() if callable(body) else body
        try:
            return self._session.request(
                method,
                url,
                data=data,
                stream=stream,
                timeout=TIMEOUT,
                verify=self.verify,
                headers={
                    **headers,
                    **({"Authorization": self._auth[scope]} if scope in self._auth else {}),
                },
            )
        finally:
            if data is not None and not isinstance(data, bytes):
                data.close()

    def _authorize(self, challenge: str, scope: str) -> str:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if not self.username:
                raise PipelineError(
                    f"{self.registry}: 401 Unauthorized: credentials needed "
                    "(--username/--password-env or Docker config)"
                )
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return f"Basic {token}"
        if kind.lower() != "bearer":
            raise PipelineError(f"{self.registry}: unsupported auth challenge {kind!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            raise PipelineError(f"{self.registry}: Bearer challenge without realm")
        realm = urlsplit(fields["realm"])
        if realm.scheme != "https" and not self.insecure:
            # Credentials go to the realm: never in the clear, whatever the registry says.
            raise PipelineError(
                f"{self.registry}: token realm {fields['realm']!r} is not "
                "https://; refusing to send credentials to it (--insecure "
                "allows it for a test registry)"
            )
        query = {"service": fields.get("service", ""), "scope": scope}
        auth = (self.username, self.password or "") if self.username else None
        try:
            resp = self._session.get(
                fields["realm"], params=query, auth=auth, timeout=TIMEOUT, verify=self.verify
            )
        except requests.exceptions.RequestException as err:
            raise PipelineError(
                f"{fields['realm']}: token request failed ({type(err).__name__})"
            ) from None
        if resp.status_code != 200:
            raise PipelineError(
                f"{fields['realm']}: token request: HTTP {resp.status_code} "
                f"{resp.reason} (check --username/--password-env)"
            )
        try:
            payload = resp.json()
            token = payload.get("token") or payload["access_token"]
        except (ValueError, KeyError):
            raise PipelineError(f"{fields['realm']}: token response has no token") from None
        return f"Bearer {token}"

    # -- blobs and manifests -----------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request(
            "HEAD", f"/v2/{repo}/blobs/{digest}", _scope(repo, "pull"), ok=(200, 404)
        )
        return resp.status_code == 200

    def push_blob(self, repo: str, digest: str, size: int, opener: Callable[[], IO[bytes]]) -> bool:
        """Upload a blob unless the repository has it; True if uploaded.

        Monolithic POST-then-PUT. A failure mid-way abandons that upload session and starts a
        new one (bounded), since a reset connection leaves the session's state unknown.
        """
        if self.has_blob(repo, digest):
            return False
        scope = _scope(repo, "pull,push")
        delay = BACKOFF
        for attempt in range(1, RETRIES + 1):
            start = self.request(
                "POST",
                f"/v2/{repo}/blobs/uploads/",
                scope,
                ok=(202,),
                headers={"Content-Length": "0"},
            )
            location = start.headers.get("Location")
            if not location:
                raise PipelineError(f"POST /v2/{repo}/blobs/uploads/: no Location header")
            sep = "&" if "?" in location else "?"
            try:
                self.request(
                    "PUT",
                    f"{location}{sep}digest={digest}",
                    scope,
                    ok=(201,),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    body=opener,
                    retry=False,
                )
                return True
            except TransientError:
                if attempt == RETRIES:
                    raise
                _log.info(f"blob {digest[:19]}: upload failed; new session in {delay:.1f}s")
                time.sleep(delay)
                delay = min(delay * 2, MAX_WAIT)
        raise AssertionError("unreachable")

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        resp = self.request(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            _scope(repo, "pull"),
            ok=(200, 404),
            headers={"Accept": f"{MANIFEST}, {INDEX}"},
        )
        return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None

    def put_manifest(
        self, repo: str, reference: str, body: bytes, media_type: str
    ) -> requests.Response:
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            _scope(repo, "pull,push"),
            ok=(201,),
            headers={"Content-Type": media_type},
            body=body,
        )
        returned = resp.headers.get("Docker-Content-Digest")
        if returned and returned != digest_of(body):
            raise PipelineError(
                f"PUT /v2/{repo}/manifests/{reference}: registry stored digest "
                f"{returned}, expected {digest_of(body)}"
            )
        return resp

    def delete_tag(self, repo: str, tag: str) -> None:
        """Remove a tag (OCI distribution 1.1 tag deletion; not every registry has it)."""
        self.request(
            "DELETE",
            f"/v2/{repo}/manifests/{tag}",
            _scope(repo, "pull,push,delete"),
            ok=(202,),
            retry=False,
        )

    def get_manifest(
        self,
        repo: str,
        reference: str,
        accept: str = f"{MANIFEST}, {INDEX}",
        max_bytes: int = MAX_MANIFEST,
    ) -> tuple[bytes, str] | None:
        """(bytes, digest) of a manifest, checked against the digest asked for; None if 404.
        A body over `max_bytes` is refused without reading it whole."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            _scope(repo, "pull"),
            ok=(200, 404),
            headers={"Accept": accept},
            stream=True,
        )
        with resp:
            if resp.status_code == 404:
                return None
            body = resp.raw.read(max_bytes + 1, decode_content=True)
        if len(body) > max_bytes:
            raise PipelineError(
                f"{self.registry}/{repo}@{reference}: manifest larger than {max_bytes} bytes"
            )
        digest = digest_of(body)
        expected = (
            reference
            if DIGEST_RE.match(reference)
            else resp.headers.get("Docker-Content-Digest", digest)
        )
        if digest != expected:
            raise PipelineError(
                f"{self.registry}/{repo}@{reference}: manifest digest {digest} "
                f"does not match {expected}"
            )
        return body, digest

    def get_blob(self, repo: str, digest: str, size: int, out: IO[bytes]) -> None:
        """Stream a blob into `out`, checking its size and digest (restarts on a reset)."""
        for attempt in range(1, RETRIES + 1):
            out.seek(0)
            out.truncate()
            hasher = hashlib.sha256()
            done = 0
            try:
                with self.request(
                    "GET",
                    f"/v2/{repo}/blobs/{digest}",
                    _scope(repo, "pull"),
                    ok=(200,),
                    stream=True,
                ) as resp:
                    for chunk in resp.iter_content(1 << 20):
                        hasher.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if done > size:
                            break
            except requests.exceptions.RequestException:
                if attempt == RETRIES:
                    raise PipelineError(
                        f"{self.registry}/{repo}@{digest}: download failed "
                        f"(gave up after {RETRIES} attempts)"
                    ) from None
                continue
            if done != size or "sha256:" + hasher.hexdigest() != digest:
                raise PipelineError(
                    f"{self.registry}/{repo}@{digest}: blob has sha256:"
                    f"{hasher.hexdigest()} ({done} bytes), expected {digest} "
                    f"({size} bytes)"
                )
            return
        raise AssertionError("unreachable")

    def referrers(self, repo: str, digest: str) -> list[Any]:
        """Referrer descriptors of `digest`: the referrers API, else the sha256-<hex> tag."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/referrers/{digest}",
            _scope(repo, "pull"),
            ok=(200, 404, 400, 405),
            headers={"Accept": INDEX},
            stream=True,
        )
        with resp:
            api = resp.status_code == 200 and resp.headers.get("Content-Type", "").startswith(INDEX)
            body = resp.raw.read(MAX_MANIFEST + 1, decode_content=True) if api else b""
        if not api:
            found = self.get_manifest(repo, referrers_tag(digest), accept=INDEX)
            if found is None:
                return []
            body = found[0]
        try:
            index = json.loads(body) if len(body) <= MAX_MANIFEST else None
        except ValueError:
            index = None
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list):
            raise PipelineError(
                f"{self.registry}/{repo}: referrers of {digest} are not an OCI index"
            )
        return entries


def _scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


def _error_text(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors", [])
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or resp.text[:200]
    except ValueError:
        return resp.text[:200].strip() or "(no body)"


def referrers_tag(digest: str) -> str:
    """The OCI referrers tag schema's tag for `digest` (`sha256-<hex>`)."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}"[:128]
