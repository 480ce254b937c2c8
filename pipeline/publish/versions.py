"""Version ordering exactly as systemd-sysupdate orders the `@v` part of file names.

sysupdate picks "newest" with systemd's `strverscmp_improved()` (src/fundamental/
string-util-fundamental.c), not with PEP 440 or semver, so pruning old versions on the server
must use the same order or we could delete what hosts consider newest. Summary of the rules:
segments are runs of digits or letters; `~` marks a pre-release (oldest), `-` the
version/release separator, `^` a patched release, `.` a point release; any other character only
separates segments; numbers compare by value, letters as strings, and more segments is newer.
"""

from __future__ import annotations

import functools
import re
from typing import TypeVar

# systemd's version_is_valid() (src/sysupdate/sysupdate-util.c): what @v may match.
VALID_VERSION_RE = re.compile(r"^[A-Za-z0-9.,_+-]+$")


def version_is_valid(version: str) -> bool:
    return bool(VALID_VERSION_RE.match(version)) and version not in (".", "..")


def _is_version_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "~-^.")


_Ordered = TypeVar("_Ordered", str, int)  # bool is an int


def _cmp(a: _Ordered, b: _Ordered) -> int:
    return (a > b) - (a < b)


def strverscmp_improved(a: str, b: str) -> int:
    """<0, 0, >0 as `a` is older than, equal to or newer than `b` (a port of systemd's C)."""
    i = j = 0
    la, lb = len(a), len(b)

    def at(s: str, k: int) -> str:
        return s[k] if k < len(s) else ""

    while True:
        while i < la and not _is_version_char(a[i]):
            i += 1
        while j < lb and not _is_version_char(b[j]):
            j += 1
        # '~' first: a pre-release is older than anything, even the end of the string.
        if at(a, i) == "~" or at(b, j) == "~":
            r = _cmp(at(a, i) != "~", at(b, j) != "~")
            if r:
                return r
            i, j = i + 1, j + 1
        if i >= la or j >= lb:
            return _cmp(i < la, j < lb)
        for sep in "-^.":
            if at(a, i) == sep or at(b, j) == sep:
                # '-' (release) < '^' (patched) < '.' (point release) < no prefix.
                r = _cmp(at(a, i) != sep, at(b, j) != sep)
                if r:
                    return r
                i, j = i + 1, j + 1
        ca, cb = at(a, i), at(b, j)
        if (ca.isascii() and ca.isdigit()) or (cb.isascii() and cb.isdigit()):
            ea, eb = i, j
            while ea < la and a[ea].isascii() and a[ea].isdigit():
                ea += 1
            while eb < lb and b[eb].isascii() and b[eb].isdigit():
                eb += 1
            # A numeric segment is newer than an alphabetic (or empty) one.
            r = _cmp(ea != i, eb != j)
            if r:
                return r
            while i < ea and a[i] == "0":
                i += 1
            while j < eb and b[j] == "0":
                j += 1
            r = _cmp(ea - i, eb - j) or _cmp(a[i:ea], b[j:eb])
            if r:
                return r
        else:
            ea, eb = i, j
            while ea < la and a[ea].isascii() and a[ea].isalpha():
                ea += 1
            while eb < lb and b[eb].isascii() and b[eb].isalpha():
                eb += 1
            n = min(ea - i, eb - j)
            r = _cmp(a[i : i + n], b[j : j + n]) or _cmp(ea - i, eb - j)
            if r:
                return r
        i, j = ea, eb


version_key = functools.cmp_to_key(strverscmp_improved)


def newest_first(versions: list[str]) -> list[str]:
    return sorted(versions, key=version_key, reverse=True)
