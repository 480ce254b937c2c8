"""`advisories/waivers.yaml`: an advisory accepted for some images, for a reason, until a date.

    - id: GHSA-m9f7-9w4p-gv38          # or a list of ids; aliases match too
      images: "wasmtime-49.0.2-*"      # a glob over image file names
      reason: why shipping it is acceptable for now
      expires: 2027-01-31              # after this day the waiver fails the audit

A waiver that has expired fails `audit` whether or not it still matches: it is a decision that
was due to be made again.
"""

from __future__ import annotations

import datetime
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import PipelineError

KEYS = {"id", "images", "reason", "expires"}


@dataclass(frozen=True)
class Waiver:
    ids: tuple[str, ...]
    images: str
    reason: str
    expires: datetime.date
    where: str

    def covers(self, image: str, ids: tuple[str, ...]) -> bool:
        return bool(set(self.ids) & set(ids)) and fnmatch.fnmatchcase(image, self.images)

    def expired(self, today: datetime.date) -> bool:
        return today > self.expires


def load(path: Path) -> list[Waiver]:
    """Every waiver in `path` (none if it does not exist); PipelineError `FILE: [i].field: ...`."""
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise PipelineError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise PipelineError(f"{path}: must be a list of waivers")
    return [_waiver(entry, f"{path}: [{i}]") for i, entry in enumerate(data)]


def _waiver(entry: Any, where: str) -> Waiver:
    if not isinstance(entry, dict):
        raise PipelineError(f"{where}: must be a mapping with {', '.join(sorted(KEYS))}")
    for key in sorted(set(entry) - KEYS, key=str):
        raise PipelineError(f"{where}.{key}: unknown field (known: {', '.join(sorted(KEYS))})")
    for key in sorted(KEYS - set(entry)):
        raise PipelineError(f"{where}.{key}: missing")
    ids = entry["id"] if isinstance(entry["id"], list) else [entry["id"]]
    if not ids or not all(isinstance(i, str) and i.strip() for i in ids):
        raise PipelineError(f"{where}.id: an advisory id or a list of them")
    for key in ("images", "reason"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise PipelineError(f"{where}.{key}: must be a non-empty string")
    expires = entry["expires"]
    if not isinstance(expires, datetime.date) or isinstance(expires, datetime.datetime):
        raise PipelineError(f"{where}.expires: must be a date (YYYY-MM-DD)")
    return Waiver(tuple(ids), entry["images"], entry["reason"].strip(), expires, where)
