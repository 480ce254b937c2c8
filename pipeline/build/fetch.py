"""Step 2: fetch upstream inputs into a content-addressed cache, verified before use.

Files live at `CACHE/sha256/<hex>`; a file only gets there after its hash was checked, so a cache
hit needs no network. Downloads stream to a scratch file beside the cache and are renamed in.
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

from pipeline.core import log
from pipeline.core.errors import PipelineError
from pipeline.core.fs import CHUNK, scratch_file, sha256_file, sweep
from pipeline.core.log import human_size, redact

_log = log.get("fetch")
RETRIES = 4          # attempts for connection errors, truncation and 5xx answers
BACKOFF = 1.0        # seconds, doubled after each failed attempt
TIMEOUT = (15, 60)   # connect, read (between bytes)
MIRROR_ENV = "WASM_SYSEXTS_MIRROR"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("WASM_SYSEXTS_CACHE", Path(base) / "wasm-sysexts"))


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
            raise PipelineError(f"{redact(source)}: not in cache {self.cache_dir} (--offline)")
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
                            f"{shown}: sha256 mismatch: expected {sha256}, got {actual}")
                    final = self.cached(actual)
                    os.replace(tmp, final)
                    return final
            except _Retry as err:
                if attempt == RETRIES:
                    raise PipelineError(
                        f"{shown}: {err} (gave up after {RETRIES} attempts)") from None
                _log.info(f"{shown}: {err}; retrying in {delay:.0f}s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _stream(self, url: str, out: BinaryIO) -> str:
        shown = redact(url)
        digest = hashlib.sha256()
        try:
            with requests.get(url, stream=True, timeout=TIMEOUT) as resp:
                if resp.status_code >= 500 or resp.status_code == 429:
                    raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
                if resp.status_code != 200:
                    raise PipelineError(f"{shown}: HTTP {resp.status_code} {resp.reason}")
                total = int(resp.headers.get("Content-Length", 0)) or None
                _log.info(f"downloading {shown}" + (f" ({human_size(total)})" if total else ""))
                started = time.monotonic()
                done = 0
                for chunk in resp.iter_content(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    log.progress(done, total, started)
                if total is not None and done != total:
                    raise _Retry(f"download incomplete: got {done} of {total} bytes")
        except requests.exceptions.ChunkedEncodingError as err:
            raise _Retry(f"download incomplete: {type(err).__name__}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            raise _Retry(f"cannot reach server: {type(err).__name__}") from None
        except requests.exceptions.RequestException as err:
            raise PipelineError(f"{shown}: {err}") from None
        return digest.hexdigest()
