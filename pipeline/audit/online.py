"""osv.dev's API (https://google.github.io/osv.dev/api/): one batch query for every package, then
each advisory's full record. Used by the release runner, where the whole database is current."""

from __future__ import annotations

import json
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.core import log
from pipeline.core.errors import PipelineError
from pipeline.core.osv import Advisory, Ecosystem, Package, parse

OSV_API = "https://api.osv.dev"
TIMEOUT = (15, 60)  # connect, read
MAX_RESPONSE = 32 << 20
MAX_PAGES = 20
_log = log.get("audit")


def _session() -> requests.Session:
    session = requests.Session()
    # Transient failures (connection resets, 429, 5xx) are retried with backoff, POST included:
    # the batch query reads and changes nothing.
    retry = Retry(
        total=4,
        backoff_factor=1.0,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
        respect_retry_after_header=True,
    )
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


def _query(package: Package) -> dict[str, Any]:
    if package.ecosystem is Ecosystem.GIT:
        return {"package": {"ecosystem": "GIT", "name": package.name}, "version": package.version}
    return {"package": {"purl": package.purl}}


def _call(session: requests.Session, method: str, url: str, body: Any = None) -> Any:
    try:
        with session.request(method, url, json=body, timeout=TIMEOUT, stream=True) as resp:
            data = resp.raw.read(MAX_RESPONSE + 1, decode_content=True)
            if resp.status_code != 200:
                raise PipelineError(f"{url}: HTTP {resp.status_code} {resp.reason}")
    except requests.exceptions.RequestException as err:
        raise PipelineError(f"{url}: {type(err).__name__}: cannot reach osv.dev") from None
    if len(data) > MAX_RESPONSE:
        raise PipelineError(f"{url}: response larger than {MAX_RESPONSE} bytes")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PipelineError(f"{url}: not a JSON response") from None


def query(packages: list[Package], api: str = OSV_API) -> dict[str, list[Advisory]]:
    """purl -> the advisories osv.dev says affect that package at its version."""
    api = api.rstrip("/")
    unique = list({p.purl: p for p in packages}.values())
    ids: dict[str, set[str]] = {p.purl: set() for p in unique}
    with _session() as session:
        pending = [(p, _query(p)) for p in unique]
        for _page in range(MAX_PAGES):
            if not pending:
                break
            url = f"{api}/v1/querybatch"
            answer = _call(session, "POST", url, {"queries": [q for _, q in pending]})
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(pending):
                raise PipelineError(f"{url}: answer does not match the {len(pending)} queries")
            following = []
            for (package, q), result in zip(pending, results, strict=True):
                for vuln in (result or {}).get("vulns", []) or []:
                    ids[package.purl].add(str(vuln["id"]))
                if (result or {}).get("next_page_token"):
                    following.append((package, {**q, "page_token": result["next_page_token"]}))
            pending = following
        records: dict[str, Advisory] = {}
        for vid in sorted(set().union(*ids.values())):
            url = f"{api}/v1/vulns/{vid}"
            records[vid] = parse(_call(session, "GET", url), url)
    _log.info(f"osv.dev: {len(records)} advisories for {len(unique)} packages")
    return {purl: [records[i] for i in sorted(found)] for purl, found in ids.items()}
