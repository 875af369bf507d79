"""Exact deduplication and the deterministic train/valid/test split, both by content hash.

Splitting by a hash of the text (not by position or a random draw) keeps every document in the
same split when the corpus is re-read, grows, or is read in another order, and puts exact
duplicates (if dedup is off) into one split, so test text never leaks into train that way.
"""

from __future__ import annotations

import hashlib

from glotta.errors import GlottaError


def text_hash(text: str) -> int:
    """64-bit content hash; collisions become likely only around 2**32 (4 billion) documents."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class ExactDedup:
    """Remembers 64-bit hashes of the texts seen so far.

    Memory is about 70 bytes per unique document (a 32-byte Python int plus its set slot), so
    100 million documents need ~7 GB; beyond that, use an external engine (datatrove).
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def is_duplicate(self, text: str) -> bool:
        """True when ``text`` was seen before; otherwise remember it and return False."""
        key = text_hash(text)
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    def __len__(self) -> int:
        return len(self._seen)


def check_fractions(valid_fraction: float, test_fraction: float) -> None:
    """Raise GlottaError unless both fractions lie in [0, 1) and leave room for train."""
    for key, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise GlottaError(f"corpus.{key} = {value} must be at least 0 and below 1")
    if valid_fraction + test_fraction >= 1.0:
        raise GlottaError(
            f"corpus.valid_fraction + corpus.test_fraction = {valid_fraction + test_fraction} "
            "leaves nothing for train; their sum must be below 1"
        )


def assign_split(text: str, salt: str, valid_fraction: float, test_fraction: float) -> str:
    """'train', 'valid' or 'test' for ``text``, from a salted hash mapped uniformly to [0, 1)."""
    digest = hashlib.blake2b(
        salt.encode("utf-8") + b"\x00" + text.encode("utf-8"), digest_size=8
    ).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"
