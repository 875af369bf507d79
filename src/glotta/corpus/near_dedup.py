"""Near-duplicate removal: MinHash signatures, LSH banding, and a fixed-size Bloom filter.

Two documents whose shingle sets have Jaccard similarity ``s`` agree on one MinHash value with
probability ``s``. Cutting a signature of ``bands * rows`` values into bands and calling two
documents candidates when any band matches turns that into an S-curve ``1 - (1 - s**rows)**bands``
that is steep around the threshold (Broder 1997; Leskovec et al., *Mining of Massive Datasets*,
ch. 3). We keep the first document of each near-duplicate group in corpus order.

Memory is bounded by design: instead of an index from band values to documents (which grows by
~1.5 KB per document as a Python dict), every band key of a kept document goes into one Bloom
filter of ``memory_mb`` megabytes. A false positive can only drop a document that is not a
near-duplicate; its rate is estimated from the filter's fill and reported, so a user sees when the
filter is too small for the corpus.

Shingles are word n-grams for languages written with spaces and character n-grams for scripts
without them (Japanese, Chinese, Thai), chosen per document from its characters.

Signatures are computed in the cleaning workers (``MinHasher.band_keys``), the filter lives in
the one process that writes the splits (``BloomLSH``).
"""

from __future__ import annotations

import math
import re
import zlib

import numpy as np

from glotta.errors import GlottaError

# Scripts written without spaces between words: CJK ideographs, kana, Hangul is spaced (not here),
# Thai, Lao, Khmer, Myanmar.
_UNSPACED = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]"
)
_WORD = re.compile(r"\w+", re.UNICODE)
_LETTER = re.compile(r"[^\W\d_]")
_MASK32 = np.uint64(0xFFFFFFFF)


def is_unspaced(text: str, sample_chars: int = 2000) -> bool:
    """True when at least a third of the letters in the text's start belong to unspaced scripts."""
    sample = text[:sample_chars]
    unspaced = len(_UNSPACED.findall(sample))
    if not unspaced:
        return False
    letters = len(_LETTER.findall(sample))
    return unspaced * 3 >= letters


def shingles(text: str, ngram: int, unit: str = "auto") -> list[str]:
    """Word n-grams (lower-cased words) or character n-grams (whitespace removed) of ``text``."""
    if unit == "auto":
        unit = "chars" if is_unspaced(text) else "words"
    if unit == "chars":
        chars = "".join(text.lower().split())
        return [chars[i : i + ngram] for i in range(max(1, len(chars) - ngram + 1))]
    words = _WORD.findall(text.lower())
    if len(words) < ngram:
        return [" ".join(words)]
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]


def lsh_parameters(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising false positives + false negatives.

    Integrates the S-curve below the threshold (pairs wrongly made candidates) and above it
    (near-duplicates missed), weighting both equally, over every factorisation.
    """
    grid = np.linspace(0.0, 1.0, 1001)
    best, best_cost = (1, num_perm), math.inf
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        curve = 1.0 - (1.0 - grid**rows) ** bands
        below, above = grid <= threshold, grid >= threshold
        cost = np.trapezoid(curve[below], grid[below]) + np.trapezoid(
            1.0 - curve[above], grid[above]
        )
        if cost < best_cost:
            best, best_cost = (bands, rows), cost
    return best


class MinHasher:
    """Band keys of a document: one 64-bit key per LSH band, from ``num_perm`` MinHash values.

    Permutations are multiply-shift hashes ``(a * x + b) >> 32`` of 32-bit shingle hashes, with
    ``a``, ``b`` drawn from a fixed seed, so every worker and every re-run computes the same keys.
    """

    def __init__(
        self, num_perm: int, threshold: float, ngram: int, unit: str = "auto", seed: int = 1
    ):
        if not 0.0 < threshold < 1.0:
            raise GlottaError(f"corpus.near_dedup_threshold = {threshold} must lie in (0, 1)")
        if num_perm < 2 or ngram < 1:
            raise GlottaError("corpus.near_dedup_permutations must be >= 2 and ngram >= 1")
        self.ngram, self.unit = ngram, unit
        self.bands, self.rows = lsh_parameters(num_perm, threshold)
        rng = np.random.default_rng(seed)
        used = self.bands * self.rows
        self._a = rng.integers(1, 2**63, size=used, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=used, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        """MinHash values (uint64 below 2**32), one per permutation."""
        hashed = np.fromiter(
            (zlib.crc32(s.encode("utf-8")) for s in shingles(text, self.ngram, self.unit)),
            dtype=np.uint64,
        )
        with np.errstate(over="ignore"):  # multiply-shift hashing relies on wrap-around
            values = (self._a[:, None] * hashed[None, :] + self._b[:, None]) >> np.uint64(32)
        return values.min(axis=1)

    def band_keys(self, text: str) -> list[int]:
        """One 64-bit key per band: a hash of the band's index and its MinHash values."""
        signature = self.signature(text).reshape(self.bands, self.rows).astype("<u4")
        keys = []
        for band, values in enumerate(signature):
            digest = zlib.crc32(values.tobytes(), band) << 32 | zlib.adler32(values.tobytes())
            keys.append(digest ^ (band << 56))
        return keys


class BloomLSH:
    """Remembers the band keys of kept documents in a Bloom filter of fixed size.

    ``seen_or_add(keys)``: True when any key was seen before (the document is a near-duplicate);
    otherwise all keys are added and False is returned.
    """

    HASHES = 4  # bits per key; with ~10 bits of filter per key, a false-positive rate near 1%

    def __init__(self, memory_mb: float):
        if memory_mb <= 0:
            raise GlottaError(f"corpus.near_dedup_memory_mb = {memory_mb} must be positive")
        self.bits = int(memory_mb * 8 * 2**20)
        self._array = np.zeros(self.bits // 8 + 1, dtype=np.uint8)
        self.keys_added = 0

    def _positions(self, keys: list[int]) -> np.ndarray:
        # Double hashing (Kirsch & Mitzenmacher 2006): position_i = h1 + i * h2 mod bits.
        k = np.array(keys, dtype=np.uint64)
        h1 = k & _MASK32
        h2 = (k >> np.uint64(32)) | np.uint64(1)
        i = np.arange(self.HASHES, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return (h1[:, None] + i[None, :] * h2[:, None]) % np.uint64(self.bits)

    def seen_or_add(self, keys: list[int]) -> bool:
        positions = self._positions(keys)
        bytes_, bit = positions >> np.uint64(3), (positions & np.uint64(7)).astype(np.uint8)
        present = (self._array[bytes_] >> bit) & 1
        if present.all(axis=1).any():
            return True
        np.bitwise_or.at(self._array, bytes_.ravel(), (np.uint8(1) << bit).ravel())
        self.keys_added += len(keys)
        return False

    def false_positive_rate(self) -> float:
        """Estimated chance that one new key looks present: (fill fraction) ** HASHES."""
        fill = 1.0 - math.exp(-self.HASHES * self.keys_added / self.bits)
        return fill**self.HASHES
