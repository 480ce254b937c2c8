"""Step 2: fetch upstream inputs into a content-addressed cache, verified before use.

Files live at `CACHE/sha256/<hex>`; a file only gets there after its hash was checked, so a cache
hit needs no network. Downloads stream to a scratch file beside the cache and are renamed in.

Bounded: a download is refused once it exceeds `max_bytes` (from its Content-Length before it
starts, or as it streams), the bytes stored are exactly the bytes sent (`Accept-Encoding:
identity`, never decoded), and each file has an overall deadline besides the 60 s a read may
stall, so a server dripping a byte at a time cannot keep a build busy.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from posixpath import basename
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import requests
import urllib3

from pipeline.build.extract import MAX_TOTAL_BYTES
from pipeline.core import log
from pipeline.core.errors import NotCached, PipelineError
from pipeline.core.fs import CHUNK, scratch_file, sha256_file, sweep
from pipeline.core.log import human_size, redact

_log = log.get("fetch")
RETRIES = 4  # attempts for connection errors, truncation and 5xx answers
BACKOFF = 1.0  # seconds, doubled after each failed attempt
TIMEOUT = (15, 60)  # connect, read (between bytes)
MAX_DOWNLOAD = 4 << 30  # bytes, per file
DEADLINE = 1800.0  # seconds, per file and attempt


def check_base_url(url: str, option: str) -> str:
    """`url` if it is a plain http(s)://HOST[/PATH] URL; PipelineError naming `option` (and
    the URL without its credentials)."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise PipelineError(f"{option} {shown!r}: not a URL ({err})") from None
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise PipelineError(f"{option} {shown!r}: contains white space or control characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PipelineError(f"{option} {shown!r}: not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018  # raises on a malformed port
    except ValueError:
        raise PipelineError(f"{option} {shown!r}: bad port") from None
    if parts.query or parts.fragment:
        raise PipelineError(f"{option} {shown!r}: must not have a query or fragment")
    return url


def mirror_url(url: str, mirror: str | None) -> str:
    """`https://HOST/PATH` -> `MIRROR/HOST/PATH`: the layout air-gapped mirrors serve."""
    if not mirror:
        return url
    parts = urlsplit(url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{mirror.rstrip('/')}/{parts.netloc}{rest}"


def input_filename(url: str) -> str:
    """The file name an input URL downloads as (decides how it is unpacked)."""
    return unquote(basename(urlsplit(url).path))


class _Retry(Exception):
    """A failure worth another attempt (network, truncation, 5xx)."""


@dataclass
class Fetcher:
    cache_dir: Path
    mirror: str | None = None
    offline: bool = False
    max_bytes: int = MAX_DOWNLOAD
    deadline: float = DEADLINE
    max_unpack: int = MAX_TOTAL_BYTES  # what one input may unpack to (see extract.py)

    def __post_init__(self) -> None:
        if self.mirror:
            check_base_url(self.mirror, "--mirror")

    @property
    def store(self) -> Path:
        return self.cache_dir / "sha256"

    def cached(self, sha256: str) -> Path:
        return self.store / sha256

    def fetch(self, url: str, sha256: str | None) -> Path:
        """Return a cached, verified copy of `url`. With sha256 None (locking), trust the bytes."""
        if sha256:
            path = self.cached(sha256)
            if path.is_file():
                if sha256_file(path) == sha256:
                    return path
                _log.info(f"cache entry {path} is corrupt; fetching again")
                path.unlink()
        source = mirror_url(url, self.mirror)
        if self.offline:
            raise NotCached(f"{redact(source)}: not in cache {self.cache_dir} (--offline)")
        return self._download(source, sha256)

    def _download(self, url: str, sha256: str | None) -> Path:
        self.store.mkdir(parents=True, exist_ok=True)
        sweep(self.store)  # downloads of killed runs
        shown = redact(url)
        delay = BACKOFF
        for attempt in range(1, RETRIES + 1):
            try:
                with scratch_file(self.store) as (tmp, out):
                    actual = self._stream(url, out)
                    if sha256 and actual != sha256:
                        raise PipelineError(
                            f"{shown}: sha256 mismatch: expected {sha256}, got {actual}"
                        )
                    # Complete on disk before its name says so: a concurrent build of the
                    # same bytes (two arches sharing one file) reads it the moment it appears.
                    out.flush()
                    os.fsync(out.fileno())
                    final = self.cached(actual)
                    os.replace(tmp, final)
                    return final
            except _Retry as err:
                if attempt == RETRIES:
                    raise PipelineError(
                        f"{shown}: {err} (gave up after {RETRIES} attempts)"
                    ) from None
                _log.info(f"{shown}: {err}; retrying in {delay:.0f}s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _stream(self, url: str, out: BinaryIO) -> str:
        shown = redact(url)
        digest = hashlib.sha256()
        try:
            with requests.get(
                url, stream=True, timeout=TIMEOUT, headers={"Accept-Encoding": "identity"}
            ) as resp:
                if resp.status_code >= 500 or resp.status_code == 429:
                    raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
                if resp.status_code != 200:
                    raise PipelineError(f"{shown}: HTTP {resp.status_code} {resp.reason}")
                length = resp.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() and int(length) > 0 else None
                if total is not None and total > self.max_bytes:
                    raise PipelineError(
                        f"{shown}: {total} bytes announced, more than the "
                        f"{self.max_bytes} bytes allowed for one download"
                    )
                _log.info(f"downloading {shown}" + (f" ({human_size(total)})" if total else ""))
                done = self._copy(resp, out, digest, total, shown)
                if total is not None and done != total:
                    raise _Retry(f"download incomplete: got {done} of {total} bytes")
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as err:
            raise _network(shown, err) from None
        return digest.hexdigest()

    def _copy(
        self,
        resp: requests.Response,
        out: BinaryIO,
        digest: hashlib._Hash,
        total: int | None,
        shown: str,
    ) -> int:
        started = time.monotonic()
        done = 0
        # read1: whatever has arrived (a read of CHUNK would wait for all of it), so the
        # deadline is checked however slowly the server sends.
        while chunk := resp.raw.read1(CHUNK, decode_content=False):
            done += len(chunk)
            if done > self.max_bytes:
                raise PipelineError(
                    f"{shown}: more than the {self.max_bytes} bytes allowed for one download"
                )
            if time.monotonic() - started > self.deadline:
                raise PipelineError(
                    f"{shown}: not finished after {self.deadline:.0f} s (download deadline)"
                )
            digest.update(chunk)
            out.write(chunk)
            log.progress(done, total, started)
        return done


def _network(shown: str, err: Exception) -> Exception:
    """What a network failure means, without the exception's text (it can quote a URL's
    credentials): retry the transient ones, fail the rest."""
    if isinstance(err, urllib3.exceptions.ReadTimeoutError | requests.exceptions.ReadTimeout):
        return _Retry(f"download stalled: no data for {TIMEOUT[1]} s")
    if isinstance(err, urllib3.exceptions.ProtocolError | requests.exceptions.ChunkedEncodingError):
        return _Retry(f"download incomplete: {type(err).__name__}")
    if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return _Retry(f"cannot reach server: {type(err).__name__}")
    return PipelineError(f"{shown}: {type(err).__name__}")
