"""Version order must be systemd-sysupdate's (strverscmp_improved), or pruning could delete
what hosts consider newest."""

from __future__ import annotations

import random

import pytest

from pipeline.publish.versions import newest_first, strverscmp_improved, version_is_valid

# The ordering documented in systemd's string-util-fundamental.c, oldest first.
SYSTEMD_ORDER = [
    "122.1",
    "123~rc1-1",
    "123",
    "123-a",
    "123-a.1",
    "123-1",
    "123-1.1",
    "123^post1",
    "123.a-1",
    "123.1-1",
    "123a-1",
    "124-1",
]


def test_systemd_documented_order() -> None:
    shuffled = SYSTEMD_ORDER[:]
    random.Random(6).shuffle(shuffled)
    assert newest_first(shuffled) == SYSTEMD_ORDER[::-1]


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("49.0.10", "49.0.4", 1),  # numeric, not lexicographic
        ("1.0", "1.0", 0),
        ("00123", "123", 0),  # leading zeros are ignored
        ("1.0~rc1", "1.0", -1),  # pre-release is older
        ("1.0~rc1", "1.0~rc2", -1),
        ("v1.2", "v1.10", -1),
        ("1.2.3", "1.2", 1),  # more segments is newer
        ("1_2", "12", -1),  # '_' only separates
        ("abc", "abcde", -1),
        ("1.a", "1.1", -1),  # numbers are newer than letters
    ],
)
def test_pairs(a: str, b: str, sign: int) -> None:
    assert (strverscmp_improved(a, b) > 0) - (strverscmp_improved(a, b) < 0) == sign
    assert (strverscmp_improved(b, a) > 0) - (strverscmp_improved(b, a) < 0) == -sign


def test_valid_versions_match_sysupdate() -> None:
    assert version_is_valid("49.0.4")
    assert version_is_valid("1.0+git20260101")
    assert not version_is_valid("1.0~rc1")  # sysupdate's @v refuses '~'
    assert not version_is_valid("1/0")
    assert not version_is_valid("")
