"""Cleaning, deduplication and the hash split."""

from __future__ import annotations

import pytest

from glotta.corpus import (
    ExactDedup,
    assign_split,
    check_fractions,
    clean_text,
    length_drop_reason,
)
from glotta.errors import GlottaError


def test_nfc_nfkc_none():
    decomposed = "Cafe\u0301 ﬁne ２０２４"  # e + combining acute, fi ligature, fullwidth digits
    assert clean_text(decomposed, "NFC") == "Café ﬁne ２０２４"
    assert clean_text(decomposed, "NFKC") == "Café fine 2024"
    assert clean_text(decomposed, "none") == decomposed


def test_control_characters_and_line_breaks():
    text = "a\x00b\x1b[0mc\x7f\r\nd\re\x0cf\u2028g\x85h\u200dи"
    # Cc removed (ESC too, its "[0m" is text); \r\n, \r, FF, NEL, U+2028 become \n; ZWJ kept
    assert clean_text(text) == "ab[0mc\nd\ne\nf\ng\nh\u200dи"


def test_whitespace():
    text = "  Hej\u00a0\u00a0du \t där   \n\n\n\n \t \nNästa  stycke.  \n  indrag\n\n"
    assert clean_text(text) == "Hej du där\n\nNästa stycke.\n indrag"
    assert clean_text(" \n\t\u00a0 ") == ""


def test_length_reasons():
    assert length_drop_reason("", 5, 10) == "empty"
    assert length_drop_reason("abcd", 5, 10) == "too_short"
    assert length_drop_reason("abcde", 5, 10) is None
    assert length_drop_reason("a" * 11, 5, 10) == "too_long"
    assert length_drop_reason("a" * 10_000, 5, 0) is None  # 0 = no maximum


def test_dedup_counts():
    dedup = ExactDedup()
    flags = [dedup.is_duplicate(t) for t in ["a", "b", "a", "c", "b", "a"]]
    assert flags == [False, False, True, False, True, True]
    assert len(dedup) == 3


def test_split_is_deterministic_and_respects_fractions():
    docs = [f"document number {i}" for i in range(2000)]
    first = [assign_split(d, "glotta", 0.1, 0.05) for d in docs]
    assert first == [assign_split(d, "glotta", 0.1, 0.05) for d in docs]
    counts = {s: first.count(s) for s in ("train", "valid", "test")}
    assert 140 <= counts["valid"] <= 260  # expected 200
    assert 60 <= counts["test"] <= 140  # expected 100
    other_salt = [assign_split(d, "other", 0.1, 0.05) for d in docs]
    assert other_salt != first
    assert all(assign_split(d, "glotta", 0.0, 0.0) == "train" for d in docs[:100])


@pytest.mark.parametrize(
    ("valid", "test", "key"),
    [(-0.1, 0.0, "valid_fraction"), (0.0, 1.0, "test_fraction"), (0.6, 0.5, "sum")],
)
def test_bad_fractions(valid, test, key):
    with pytest.raises(GlottaError, match=key):
        check_fractions(valid, test)
