"""Near-dedup arithmetic against independent computations: the LSH (bands, rows) choice against
exact rational integrals of the S-curve, MinHash band keys against plain Python integers, the
Bloom filter's bit positions and false-positive estimate against their formulas, and the exact
boundaries of the settings and of the script test."""

from __future__ import annotations

import math
import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest

from glotta.corpus.near_dedup import BloomLSH, MinHasher, is_unspaced, lsh_parameters, shingles
from glotta.errors import GlottaError
from tests.corpus.real_text import japanese_sentences, swedish_answers


def _integral_of_miss(x: Fraction, bands: int, rows: int) -> Fraction:
    """Exact integral from 0 to x of (1 - s**rows) ** bands, by the binomial expansion."""
    return sum(
        Fraction(math.comb(bands, k) * (-1) ** k) * x ** (rows * k + 1) / (rows * k + 1)
        for k in range(bands + 1)
    )


def _exact_costs(num_perm: int, threshold: Fraction) -> dict[tuple[int, int], Fraction]:
    """False-positive area below the threshold + false-negative area above it, exactly:
    (t - F(t)) + (F(1) - F(t)) with F the integral of the miss probability."""
    costs = {}
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        f_t, f_1 = (_integral_of_miss(x, bands, rows) for x in (threshold, Fraction(1)))
        costs[(bands, rows)] = threshold + f_1 - 2 * f_t
    return costs


@pytest.mark.parametrize("num_perm", [2, 3, 5, 8, 16, 32, 128])
def test_lsh_parameters_are_the_exact_optimum(num_perm):
    for threshold in ("0.05", "0.3", "0.5", "0.7", "0.8", "0.9", "0.99"):
        costs = _exact_costs(num_perm, Fraction(threshold))
        ranked = sorted(costs, key=costs.get)
        if costs[ranked[0]] == costs[ranked[1]]:
            continue  # an exact tie (2 permutations at 0.5): either factorisation is optimal
        assert lsh_parameters(num_perm, float(threshold)) == ranked[0], (num_perm, threshold)


def test_shingles_exactly():
    assert shingles("東京 は日本", 2) == ["東京", "京は", "は日", "日本"]  # spaces removed
    assert shingles("AB cd", 2, unit="chars") == ["ab", "bc", "cd"]  # lower-cased
    assert shingles("東", 3) == ["東"]  # shorter than n: the whole text, once
    assert shingles("東京は日本の首都", 3) == [
        "東京は",
        "京は日",
        "は日本",
        "日本の",
        "本の首",
        "の首都",
    ]
    assert shingles("Ett två", 5) == ["ett två"]  # fewer words than n
    assert shingles("Ett, två; TRE", 3) == ["ett två tre"]  # exactly n words
    assert shingles("東京は日本", 2, unit="words") == ["東京は日本"]  # one \w+ run


def test_the_unspaced_share_is_one_third_of_the_letters_in_the_first_2000_characters():
    assert is_unspaced("東ab") and not is_unspaced("東abc")  # 1 of 3 letters, 1 of 4
    assert not is_unspaced("abc 123")
    # 666 of the first 2000 letters are kanji (just under a third); the 2001st would tip it.
    assert not is_unspaced("東" * 666 + "a" * 1334 + "東")
    assert is_unspaced("東" * 666 + "a" * 1334 + "東", sample_chars=2001)


def _reference_band_keys(hasher: MinHasher, text: str, unit: str) -> list[int]:
    """MinHash with Python integers: h_j(x) = ((a_j * x + b_j) mod 2**64) >> 32 for the crc32 x
    of every shingle; band key = crc32(band values as little-endian uint32, seed = band) << 32
    | adler32(same bytes), xor band << 56."""
    hashes = [zlib.crc32(s.encode()) for s in shingles(text, hasher.ngram, unit)]
    signature = [
        min(((int(a) * x + int(b)) % 2**64) >> 32 for x in hashes)
        for a, b in zip(hasher._a, hasher._b, strict=True)
    ]
    keys = []
    for band in range(hasher.bands):
        values = signature[band * hasher.rows : (band + 1) * hasher.rows]
        data = struct.pack(f"<{hasher.rows}I", *values)
        keys.append((zlib.crc32(data, band) << 32 | zlib.adler32(data)) ^ (band << 56))
    return keys


def test_band_keys_match_plain_integer_minhash():
    hasher = MinHasher(128, 0.8, 5)
    # The permutations are the documented draws of a fixed seed (1): a odd, both below 2**63.
    rng = np.random.default_rng(1)
    used = hasher.bands * hasher.rows
    a = rng.integers(1, 2**63, size=used, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=used, dtype=np.uint64)
    assert np.array_equal(hasher._a, a) and np.array_equal(hasher._b, b)
    for text in swedish_answers()[:3]:
        assert hasher.band_keys(text) == _reference_band_keys(hasher, text, "words")
    japanese = japanese_sentences()[0]
    assert hasher.band_keys(japanese) == _reference_band_keys(hasher, japanese, "chars")
    chars = MinHasher(16, 0.5, 3, unit="chars", seed=7)
    text = swedish_answers()[3]
    assert chars.band_keys(text) == _reference_band_keys(chars, text, "chars")


@pytest.mark.parametrize(
    "args, message",
    [
        ((128, 0.0, 5), "near_dedup_threshold = 0.0 must lie in (0, 1)"),
        ((128, 1.0, 5), "near_dedup_threshold = 1.0 must lie in (0, 1)"),
        ((128, 1.5, 5), "near_dedup_threshold = 1.5 must lie in (0, 1)"),
        ((1, 0.8, 5), "near_dedup_permutations must be >= 2 and ngram >= 1"),
        ((128, 0.8, 0), "near_dedup_permutations must be >= 2 and ngram >= 1"),
    ],
)
def test_settings_outside_their_range_are_refused(args, message):
    with pytest.raises(GlottaError) as error:
        MinHasher(*args)
    assert str(error.value) == f"corpus.{message}"


def test_smallest_allowed_settings_work():
    assert MinHasher(2, 0.5, 1).band_keys("ett två") == MinHasher(2, 0.5, 1).band_keys("ett två")
    assert BloomLSH(1e-6).bits == 8  # one byte's worth of bits


def test_bloom_filter_sets_the_double_hashing_bits_and_estimates_its_false_positives():
    with pytest.raises(GlottaError) as error:
        BloomLSH(0)
    assert str(error.value) == "corpus.near_dedup_memory_mb = 0 must be positive"
    index = BloomLSH(0.001)
    assert index.bits == 8 * 2**20 // 1000 and index._array.nbytes == index.bits // 8 + 1
    assert index.false_positive_rate() == 0.0  # nothing added yet
    keys = [0x0123456789ABCDEF, 0xFEDCBA9876543210, 5 << 32 | 7]
    assert not index.seen_or_add(keys)
    # position_i = (low 32 bits + i * (high 32 bits | 1)) mod bits, i = 0..3
    expected = {
        ((k & 0xFFFFFFFF) + i * ((k >> 32) | 1)) % index.bits for k in keys for i in range(4)
    }
    set_bits = np.flatnonzero(np.unpackbits(index._array, bitorder="little"))
    assert set(set_bits.tolist()) == expected
    assert index.keys_added == 3
    assert index.seen_or_add([keys[1]]) and index.keys_added == 3  # seen: nothing added
    assert not index.seen_or_add([1 << 40 | 99]) and index.keys_added == 4
    fill = 1 - math.exp(-4 * 4 / index.bits)
    assert math.isclose(index.false_positive_rate(), fill**4, rel_tol=1e-12)  # no absolute slack
