"""`publish oci` / `pull oci`: sysext images as OCI 1.1 artifacts, over the Distribution API.

Layout (docs/oci.md): per image one manifest (artifactType ARTIFACT_TYPE, empty config, the raw
image as its only layer, so the layer digest is the image's SHA256SUMS entry); per extension
version one image index with an entry per arch; the directory's SHA256SUMS and SHA256SUMS.gpg
as a signature artifact whose `subject` is each image manifest, found through the referrers
API or, where the registry lacks it, the `sha256-<hex>` referrers tag schema.

Spoken with `requests` rather than the oras SDK: oras-py 0.2 has no referrers-tag fallback,
no HEAD-before-upload for every blob and no retry policy we can bound, and all three are the
point here. Every blob and manifest is pushed by digest; tags move last.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import requests
import urllib3

from pipeline.arch import ARCHES
from pipeline.errors import PipelineError
from pipeline.log import Reporter, human_size
from pipeline.publish.static import load_input, verify_signature
from pipeline.sums import SUMS, read_sums, write_atomic

ARTIFACT_TYPE = "application/vnd.wasm-sysexts.sysext.v1"
LAYER_TYPE = "application/vnd.wasm-sysexts.sysext.layer.v1.raw"
SIGNATURE_TYPE = "application/vnd.wasm-sysexts.signature.v1"
SUMS_TYPE = "application/vnd.wasm-sysexts.sha256sums.v1"
PGP_TYPE = "application/pgp-signature"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
EMPTY_DESCRIPTOR = {"mediaType": EMPTY_TYPE, "size": 2, "data": "e30=",
                    "digest": "sha256:" + hashlib.sha256(EMPTY).hexdigest()}
ANNOTATION = "dev.wasm-sysexts.sysext"  # prefix of our own annotation keys
TITLE = "org.opencontainers.image.title"
SIG_FILE = "SHA256SUMS.gpg"

RETRIES = 5          # attempts per request (or per blob upload) on 5xx/429/connection errors
BACKOFF = 0.5        # seconds, doubled after each failed attempt
MAX_WAIT = 10.0      # cap on one wait, also for Retry-After
TIMEOUT = (15, 120)
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class _Retry(Exception):
    """A failure worth another attempt."""


class TransientError(PipelineError):
    """Retries ran out on a failure that might have passed (5xx, 429, connection errors)."""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


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
    reporter: Reporter = field(default_factory=Reporter)
    registry: str = field(init=False)
    namespace: str = field(init=False)
    _base: str | None = field(default=None, init=False)
    _auth: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, init=False)

    def __post_init__(self) -> None:
        self.registry, _, self.namespace = self.repository.strip("/").partition("/")
        if not self.registry or self.repository != self.repository.lower():
            raise PipelineError(f"--repository {self.repository!r}: expected lowercase "
                                "REGISTRY[/NAMESPACE]")
        if self.username and self.password is None:
            raise PipelineError("--username: needs --password-env VAR or --password-file FILE")
        if not self.username:
            found = docker_config_auth(self.registry)
            if found:
                self.username, self.password = found
        if self.insecure:  # asked for explicitly; a warning per request would drown the log
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def _tls(self) -> dict[str, bool]:
        # Per request: a Session-wide verify=False loses to REQUESTS_CA_BUNDLE in the env.
        return {"verify": False} if self.insecure else {}

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
                    self._session.get(f"{scheme}://{self.registry}/v2/", timeout=TIMEOUT,
                                      **self._tls())
                except requests.exceptions.SSLError as err:
                    if scheme == schemes[-1]:
                        raise PipelineError(f"https://{self.registry}/v2/: TLS failed "
                                            f"({type(err).__name__}); use --insecure for a test "
                                            "registry or trust its CA") from None
                    continue
                except requests.exceptions.ConnectionError:
                    if scheme == schemes[-1]:
                        raise PipelineError(f"{scheme}://{self.registry}/v2/: cannot connect"
                                            ) from None
                    continue
                self._base = f"{scheme}://{self.registry}"
                break
        assert self._base is not None
        return self._base

    def request(self, method: str, url: str, scope: str, *, ok: tuple[int, ...],
                headers: dict[str, str] | None = None,
                body: bytes | Callable[[], IO[bytes]] | None = None,
                stream: bool = False, retry: bool = True) -> requests.Response:
        """One API call with auth and bounded retries; `url` may be relative to the registry."""
        full = urljoin(self.base() + "/", url)
        shown = full.split("?", 1)[0]
        delay = BACKOFF
        attempts = RETRIES if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                resp = self._send(method, full, scope, headers or {}, body, stream)
                if resp.status_code == 401:
                    raise PipelineError(f"{method} {shown}: 401 Unauthorized: "
                                        + ("check --username/--password-env or the Docker "
                                           "config" if self.username else
                                           "credentials needed (--username/--password-env)"))
                if resp.status_code == 403:
                    raise PipelineError(f"{method} {shown}: 403 Forbidden for {self.username!r}")
                if resp.status_code in ok:
                    return resp
                if resp.status_code >= 500 or resp.status_code == 429:
                    wait = resp.headers.get("Retry-After", "")
                    if wait.isdigit():
                        delay = min(float(wait), MAX_WAIT)
                    raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
                raise PipelineError(f"{method} {shown}: HTTP {resp.status_code} {resp.reason}: "
                                    f"{_error_text(resp)}")
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError) as err:
                problem = f"connection failed ({type(err).__name__})"
            except _Retry as err:
                problem = str(err)
            if attempt == attempts:
                raise TransientError(f"{method} {shown}: {problem} "
                                    f"(gave up after {attempts} attempt(s))")
            self.reporter.info("oci", f"{method} {shown}: {problem}; retry in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, MAX_WAIT)
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, scope: str, headers: dict[str, str],
              body: bytes | Callable[[], IO[bytes]] | None, stream: bool) -> requests.Response:
        resp = self._send_once(method, url, scope, headers, body, stream)
        if resp.status_code != 401:
            return resp
        # Answer the challenge (first contact, or an expired token) once, then resend.
        challenge = resp.headers.get("WWW-Authenticate", "")
        resp.close()
        self._auth[scope] = self._authorize(challenge, scope)
        return self._send_once(method, url, scope, headers, body, stream)

    def _send_once(self, method: str, url: str, scope: str, headers: dict[str, str],
                   body: bytes | Callable[[], IO[bytes]] | None,
                   stream: bool) -> requests.Response:
        data = body() if callable(body) else body
        try:
            return self._session.request(
                method, url, data=data, stream=stream, timeout=TIMEOUT, **self._tls(),
                headers={**headers, **({"Authorization": self._auth[scope]}
                                       if scope in self._auth else {})})
        finally:
            if hasattr(data, "close"):
                data.close()  # type: ignore[union-attr]

    def _authorize(self, challenge: str, scope: str) -> str:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if not self.username:
                raise PipelineError(f"{self.registry}: 401 Unauthorized: credentials needed "
                                    "(--username/--password-env or Docker config)")
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return f"Basic {token}"
        if kind.lower() != "bearer":
            raise PipelineError(f"{self.registry}: unsupported auth challenge {kind!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            raise PipelineError(f"{self.registry}: Bearer challenge without realm")
        query = {"service": fields.get("service", ""), "scope": scope}
        auth = (self.username, self.password or "") if self.username else None
        try:
            resp = self._session.get(fields["realm"], params=query, auth=auth, timeout=TIMEOUT,
                                     **self._tls())
        except requests.exceptions.RequestException as err:
            raise PipelineError(f"{fields['realm']}: token request failed "
                                f"({type(err).__name__})") from None
        if resp.status_code != 200:
            raise PipelineError(f"{fields['realm']}: token request: HTTP {resp.status_code} "
                                f"{resp.reason} (check --username/--password-env)")
        try:
            payload = resp.json()
            token = payload.get("token") or payload["access_token"]
        except (ValueError, KeyError):
            raise PipelineError(f"{fields['realm']}: token response has no token") from None
        return f"Bearer {token}"

    # -- blobs and manifests -----------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", _scope(repo, "pull"),
                            ok=(200, 404))
        return resp.status_code == 200

    def push_blob(self, repo: str, digest: str, size: int,
                  opener: Callable[[], IO[bytes]]) -> bool:
        """Upload a blob unless the repository has it; True if uploaded.

        Monolithic POST-then-PUT. A failure mid-way abandons that upload session and starts a
        new one (bounded), since a reset connection leaves the session's state unknown.
        """
        if self.has_blob(repo, digest):
            return False
        scope = _scope(repo, "pull,push")
        delay = BACKOFF
        for attempt in range(1, RETRIES + 1):
            start = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope, ok=(202,),
                                 headers={"Content-Length": "0"})
            location = start.headers.get("Location")
            if not location:
                raise PipelineError(f"POST /v2/{repo}/blobs/uploads/: no Location header")
            sep = "&" if "?" in location else "?"
            try:
                self.request("PUT", f"{location}{sep}digest={digest}", scope, ok=(201,),
                             headers={"Content-Type": "application/octet-stream",
                                      "Content-Length": str(size)},
                             body=opener, retry=False)
                return True
            except TransientError:
                if attempt == RETRIES:
                    raise
                self.reporter.info("oci", f"blob {digest[:19]}: upload failed; new session "
                                          f"in {delay:.1f}s")
                time.sleep(delay)
                delay = min(delay * 2, MAX_WAIT)
        raise AssertionError("unreachable")

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", _scope(repo, "pull"),
                            ok=(200, 404), headers={"Accept": f"{MANIFEST}, {INDEX}"})
        return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None

    def put_manifest(self, repo: str, reference: str, body: bytes,
                     media_type: str) -> requests.Response:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", _scope(repo, "pull,push"),
                            ok=(201,), headers={"Content-Type": media_type}, body=body)
        returned = resp.headers.get("Docker-Content-Digest")
        if returned and returned != _digest(body):
            raise PipelineError(f"PUT /v2/{repo}/manifests/{reference}: registry stored digest "
                                f"{returned}, expected {_digest(body)}")
        return resp

    def get_manifest(self, repo: str, reference: str,
                     accept: str = f"{MANIFEST}, {INDEX}") -> tuple[bytes, str] | None:
        """(bytes, digest) of a manifest, checked against the digest asked for; None if 404."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", _scope(repo, "pull"),
                            ok=(200, 404), headers={"Accept": accept})
        if resp.status_code == 404:
            return None
        body = resp.content
        digest = _digest(body)
        expected = reference if DIGEST_RE.match(reference) else \
            resp.headers.get("Docker-Content-Digest", digest)
        if digest != expected:
            raise PipelineError(f"{self.registry}/{repo}@{reference}: manifest digest {digest} "
                                f"does not match {expected}")
        return body, digest

    def get_blob(self, repo: str, digest: str, size: int, out: IO[bytes]) -> None:
        """Stream a blob into `out`, checking its size and digest (restarts on a reset)."""
        for attempt in range(1, RETRIES + 1):
            out.seek(0)
            out.truncate()
            hasher = hashlib.sha256()
            done = 0
            try:
                with self.request("GET", f"/v2/{repo}/blobs/{digest}", _scope(repo, "pull"),
                                  ok=(200,), stream=True) as resp:
                    for chunk in resp.iter_content(1 << 20):
                        hasher.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if done > size:
                            break
            except requests.exceptions.RequestException:
                if attempt == RETRIES:
                    raise PipelineError(f"{self.registry}/{repo}@{digest}: download failed "
                                        f"(gave up after {RETRIES} attempts)") from None
                continue
            if done != size or "sha256:" + hasher.hexdigest() != digest:
                raise PipelineError(f"{self.registry}/{repo}@{digest}: blob has sha256:"
                                    f"{hasher.hexdigest()} ({done} bytes), expected {digest} "
                                    f"({size} bytes)")
            return
        raise AssertionError("unreachable")

    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]]:
        """Referrer descriptors of `digest`: the referrers API, else the sha256-<hex> tag."""
        resp = self.request("GET", f"/v2/{repo}/referrers/{digest}", _scope(repo, "pull"),
                            ok=(200, 404, 400, 405), headers={"Accept": INDEX})
        if resp.status_code == 200 and resp.headers.get("Content-Type", "").startswith(INDEX):
            return list(resp.json().get("manifests", []))
        found = self.get_manifest(repo, referrers_tag(digest), accept=INDEX)
        return list(json.loads(found[0]).get("manifests", [])) if found else []


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


# -- publish ---------------------------------------------------------------------------------


@dataclass
class _Pushed:
    tags: list[tuple[str, str, bytes, str]] = field(default_factory=list)  # repo, tag, body, type
    uploaded: int = 0


def _descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _metadata(src: Path, file: str) -> dict[str, Any]:
    path = src / f"{file}.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}
    except (OSError, ValueError):
        raise PipelineError(f"{path}: not valid JSON") from None


def _push_bytes(client: Client, repo: str, data: bytes, state: _Pushed) -> str:
    digest = _digest(data)
    if client.push_blob(repo, digest, len(data), lambda: io.BytesIO(data)):
        state.uploaded += 1
    return digest


def _push_manifest(client: Client, repo: str, manifest: dict[str, Any],
                   media_type: str) -> tuple[bytes, str, requests.Response | None]:
    body = _canonical(manifest)
    digest = _digest(body)
    if client.manifest_digest(repo, digest) == digest:
        return body, digest, None
    return body, digest, client.put_manifest(repo, digest, body, media_type)


def publish_oci(src: Path, client: Client, tag_latest: bool = False,
                keyring: Path | None = None) -> list[dict[str, str]]:
    """Push every image of `src`; returns [{reference, digest}] of the tags it set."""

    ring = None
    if keyring is not None:
        try:
            ring = keyring.read_bytes()
        except OSError as err:
            raise PipelineError(f"--keyring {keyring}: cannot read: {err.strerror}") from None
    images, sums, signature = load_input(src, ring)
    state = _Pushed()
    result: list[dict[str, str]] = []
    for name in sorted({i.name for i in images}):
        repo = client.repo(name)
        for version in sorted({i.version for i in images if i.name == name}):
            if not TAG_RE.match(f"{version}-x86-64"):
                raise PipelineError(f"{name} {version}: not usable in an OCI tag")
            entries = []
            for image in sorted((i for i in images if i.name == name and i.version == version),
                                key=lambda i: i.arch):
                label = f"{name} {version} {image.arch}"
                meta = _metadata(src, image.file)
                client.reporter.info(label, f"pushing {image.file} ({human_size(image.size)}) "
                                            f"to {client.registry}/{repo}")
                _push_bytes(client, repo, EMPTY, state)
                layer = "sha256:" + image.sha256
                opener = image.source.open  # a fresh file per attempt; requests closes it
                if client.push_blob(repo, layer, image.size, lambda o=opener: o("rb")):
                    state.uploaded += 1
                source = (meta.get("recipe", {}).get("homepage")
                          or next((i["url"] for i in meta.get("inputs", [])), ""))
                annotations = {f"{ANNOTATION}.name": name, f"{ANNOTATION}.version": version,
                               f"{ANNOTATION}.arch": image.arch, TITLE: image.file,
                               "org.opencontainers.image.version": version}
                if source:
                    annotations[f"{ANNOTATION}.source"] = source
                    annotations["org.opencontainers.image.source"] = source
                manifest = {
                    "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": ARTIFACT_TYPE,
                    "config": EMPTY_DESCRIPTOR,
                    "layers": [_descriptor(LAYER_TYPE, layer, image.size,
                                           annotations={TITLE: image.file})],
                    "annotations": annotations,
                }
                body, digest, _ = _push_manifest(client, repo, manifest, MANIFEST)
                _attach_signature(client, repo, digest, len(body), sums, signature, state)
                goarch = ARCHES[image.arch]["goarch"]
                entries.append(_descriptor(MANIFEST, digest, len(body), artifactType=ARTIFACT_TYPE,
                                           platform={"os": "linux", "architecture": goarch},
                                           annotations={TITLE: image.file}))
                state.tags.append((repo, f"{version}-{image.arch}", body, MANIFEST))
            index = {"schemaVersion": 2, "mediaType": INDEX, "artifactType": ARTIFACT_TYPE,
                     "manifests": entries,
                     "annotations": {f"{ANNOTATION}.name": name,
                                     f"{ANNOTATION}.version": version,
                                     "org.opencontainers.image.version": version}}
            body, _, _ = _push_manifest(client, repo, index, INDEX)
            state.tags.append((repo, version, body, INDEX))
        if tag_latest:
            newest = _newest(repo, state)
            state.tags.append((repo, "latest", newest[2], newest[3]))
    # Every blob and manifest is in place: only now do tags move.
    for repo, tag, body, media_type in state.tags:
        digest = _digest(body)
        if client.manifest_digest(repo, tag) != digest:
            client.put_manifest(repo, tag, body, media_type)
        result.append({"reference": f"{client.registry}/{repo}:{tag}", "digest": digest})
    client.reporter.info("oci", f"{len(result)} tag(s) set, {state.uploaded} blob(s) uploaded")
    return result


def _newest(repo: str, state: _Pushed) -> tuple[str, str, bytes, str]:
    from pipeline.versions import version_key

    indexes = [t for t in state.tags if t[0] == repo and t[3] == INDEX]
    return max(indexes, key=lambda t: version_key(t[1]))


def _attach_signature(client: Client, repo: str, subject: str, subject_size: int, sums: bytes,
                      signature: bytes, state: _Pushed) -> None:
    """Attach SHA256SUMS + SHA256SUMS.gpg as a referrer of the image manifest `subject`."""
    _push_bytes(client, repo, EMPTY, state)
    sums_digest = _push_bytes(client, repo, sums, state)
    sig_digest = _push_bytes(client, repo, signature, state)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": SIGNATURE_TYPE,
        "config": EMPTY_DESCRIPTOR,
        "layers": [_descriptor(SUMS_TYPE, sums_digest, len(sums), annotations={TITLE: SUMS}),
                   _descriptor(PGP_TYPE, sig_digest, len(signature),
                               annotations={TITLE: SIG_FILE})],
        "subject": _descriptor(MANIFEST, subject, subject_size),
    }
    body, digest, resp = _push_manifest(client, repo, manifest, MANIFEST)
    if resp is not None and resp.headers.get("OCI-Subject") == subject:
        return  # the registry indexes referrers itself
    # Referrers tag schema: keep an index of referrers at tag sha256-<hex of subject>.
    tag = referrers_tag(subject)
    found = client.get_manifest(repo, tag, accept=INDEX)
    index = json.loads(found[0]) if found else {"schemaVersion": 2, "mediaType": INDEX,
                                                "manifests": []}
    if any(m.get("digest") == digest for m in index.get("manifests", [])):
        return
    index["manifests"].append(_descriptor(MANIFEST, digest, len(body),
                                          artifactType=SIGNATURE_TYPE))
    client.put_manifest(repo, tag, _canonical(index), INDEX)


# -- pull -----------------------------------------------------------------------------------


def pull_oci(client: Client, reference: str, out: Path, arch: str, keyring: Path) -> Path:
    """Fetch one image, check every digest and its signature; returns the image's path."""
    repo = client.repo()
    shown = f"{client.repository}:{reference}"
    try:
        ring = keyring.read_bytes()
    except OSError as err:
        raise PipelineError(f"--keyring {keyring}: cannot read: {err.strerror}") from None
    found = client.get_manifest(repo, reference)
    if found is None:
        raise PipelineError(f"{shown}: not found")
    body, digest = found
    doc = json.loads(body)
    if doc.get("mediaType") == INDEX or "manifests" in doc:
        goarch = ARCHES[arch]["goarch"]
        entry = next((m for m in doc.get("manifests", [])
                      if m.get("platform", {}).get("architecture") == goarch), None)
        if entry is None:
            raise PipelineError(f"{shown}: index has no {arch} ({goarch}) image")
        found = client.get_manifest(repo, entry["digest"], accept=MANIFEST)
        if found is None:
            raise PipelineError(f"{shown}: index entry {entry['digest']} not found")
        body, digest = found
        doc = json.loads(body)
    kind = doc.get("artifactType") or doc.get("config", {}).get("mediaType")
    layers = doc.get("layers", [])
    if kind != ARTIFACT_TYPE or len(layers) != 1:
        raise PipelineError(f"{shown}: not a wasm-sysexts image (artifactType {kind!r})")
    layer = layers[0]
    file = str(layer.get("annotations", {}).get(TITLE, ""))
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.raw$", file):
        raise PipelineError(f"{shown}: layer title {file!r} is not an image file name")
    if not DIGEST_RE.match(str(layer.get("digest"))):
        raise PipelineError(f"{shown}: layer digest {layer.get('digest')!r} is not sha256")
    out.mkdir(parents=True, exist_ok=True)
    sums, signature = _verified_signature(client, repo, digest, file, layer["digest"], ring,
                                          shown)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file}.", dir=out)
    try:
        with os.fdopen(fd, "wb") as tmp:
            client.get_blob(repo, layer["digest"], int(layer["size"]), tmp)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out / file)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    write_atomic(out / SUMS, sums)
    write_atomic(out / SIG_FILE, signature)
    client.reporter.info("oci", f"{shown}: {file} verified (sha256 {layer['digest'][7:23]}…)")
    return out / file


def _verified_signature(client: Client, repo: str, subject: str, file: str, layer: str,
                        ring: bytes, shown: str) -> tuple[bytes, bytes]:
    """(SHA256SUMS, signature) of a referrer that verifies and lists `file` with `layer`."""
    problems = []
    for ref in client.referrers(repo, subject):
        if ref.get("artifactType") != SIGNATURE_TYPE:
            continue
        found = client.get_manifest(repo, ref["digest"], accept=MANIFEST)
        if found is None:
            continue
        doc = json.loads(found[0])
        if doc.get("subject", {}).get("digest") != subject:
            continue
        blobs = {}
        for item in doc.get("layers", []):
            with tempfile.TemporaryFile() as tmp:
                client.get_blob(repo, item["digest"], int(item["size"]), tmp)
                tmp.seek(0)
                blobs[item.get("annotations", {}).get(TITLE)] = tmp.read()
        if SUMS not in blobs or SIG_FILE not in blobs:
            continue
        with tempfile.TemporaryDirectory() as work:
            sums_path, sig_path = Path(work) / SUMS, Path(work) / SIG_FILE
            sums_path.write_bytes(blobs[SUMS])
            sig_path.write_bytes(blobs[SIG_FILE])
            try:
                verify_signature(sums_path, sig_path, ring)
                listed = read_sums(sums_path).get(file)
            except PipelineError as err:
                problems.append(str(err).replace(str(sig_path), f"referrer {ref['digest']}"))
                continue
        if listed is None or "sha256:" + listed != layer:
            problems.append(f"referrer {ref['digest']}: SHA256SUMS does not list {file} with "
                            f"{layer}")
            continue
        return blobs[SUMS], blobs[SIG_FILE]
    raise PipelineError(f"{shown}: no valid signature: "
                        + ("; ".join(problems) if problems else "no signature referrer found"))
