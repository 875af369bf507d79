"""Quality filters: boilerplate lines, repetition, symbol/digit/letter ratios, word statistics.

The repetition and word rules and their default thresholds follow Gopher's MassiveText filters
(Rae et al. 2021, appendix A.1: duplicate-line fraction 0.30, duplicate-line characters 0.20,
top 2/3/4-gram characters 0.20/0.18/0.16, duplicated 5..10-gram characters 0.15..0.10, symbol
to word ratio 0.1, bullet lines 0.9, ellipsis lines 0.3, words with a letter 0.8, mean word
length 3..10). Boilerplate line removal follows C4 (Raffel et al. 2020): lines that mention
cookies, JavaScript or terms of use are removed, not whole documents.

"Words" depend on the script: languages written with spaces split at non-word characters;
Japanese, Chinese and Thai have no spaces, so each character of those scripts counts as one
word (a cheap, dictionary-free stand-in for a morphological analyser that keeps the n-gram
repetition rules meaningful). The word-length rule only applies to spaced text.
"""

from __future__ import annotations

import re
from collections import Counter

from glotta.config import CorpusConfig
from glotta.corpus.near_dedup import is_unspaced

QUALITY_DROP_REASONS = (
    "repeated_lines",
    "repeated_ngrams",
    "symbol_ratio",
    "digit_ratio",
    "few_letters",
    "bullet_lines",
    "ellipsis_lines",
    "word_length",
)

_TOKEN_UNSPACED = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f"
    r"\u1780-\u17ff]|\w+",
    re.UNICODE,
)
_EDGE_PUNCTUATION = (
    "".join(chr(c) for c in range(0x2000, 0x2070)) + "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»¿¡"
)
# In unspaced scripts one character stands for a word in the rules below; a Japanese word is
# about two characters long, so n-gram lengths are doubled to cover a similar span of text.
UNSPACED_NGRAM_FACTOR = 2
# Gopher drops documents under 50 words before its repetition rules; we keep short documents
# (sentence corpora are legitimate) but judge n-gram repetition only where it means something,
# and the bullet/ellipsis line rules only on documents with a few lines.
MIN_WORDS_FOR_NGRAM_RULES = 50
MIN_LINES_FOR_LINE_RULES = 3
_SPACE = re.compile(r"\s")
_DIGIT = re.compile(r"\d")
_NO_LETTER = re.compile(r"[\W\d_]*")  # no character that is a letter
_BULLET = re.compile(r"^\s*[-*•‣◦⁃●▪·]")
_ELLIPSIS = re.compile(r"(\.\.\.|…)\s*$")


def split_words(text: str, unspaced: bool | None = None) -> list[str]:
    """Words as Gopher counts them: whitespace-separated, with surrounding punctuation removed;
    for scripts written without spaces, one word per character (and runs of other letters)."""
    if unspaced is None:
        unspaced = is_unspaced(text)
    if unspaced:
        return _TOKEN_UNSPACED.findall(text)
    words = (w.strip(_EDGE_PUNCTUATION) for w in text.split())
    return [w for w in words if w]


def remove_boilerplate_lines(text: str, patterns: list[re.Pattern]) -> tuple[str, int]:
    """Drop lines matching any boilerplate pattern; return the text and how many lines went."""
    if not patterns:
        return text, 0
    kept, removed = [], 0
    for line in text.split("\n"):
        if any(p.search(line) for p in patterns):
            removed += 1
        else:
            kept.append(line)
    return "\n".join(kept), removed


def compile_patterns(patterns: list[str]) -> list[re.Pattern]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def quality_drop_reason(text: str, cfg: CorpusConfig) -> str | None:
    """The first quality rule ``text`` fails, or None when it passes them all."""
    lines = [line for line in text.split("\n") if line.strip()]
    if _repeated_lines(lines, cfg):
        return "repeated_lines"
    unspaced = is_unspaced(text)
    words = split_words(text, unspaced)
    if not words:
        return "few_letters"
    scale = UNSPACED_NGRAM_FACTOR if unspaced else 1
    if len(words) >= MIN_WORDS_FOR_NGRAM_RULES * scale and _repeated_ngrams(words, cfg, scale):
        return "repeated_ngrams"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if (
        cfg.quality_max_symbol_word_ratio
        and symbols / len(words) > cfg.quality_max_symbol_word_ratio
    ):
        return "symbol_ratio"
    # Counting with regular expressions runs in C; a Python loop per character costs ~10x.
    non_space = len(text) - len(_SPACE.findall(text))
    digits = len(_DIGIT.findall(text))
    if (
        cfg.quality_max_digit_fraction
        and non_space
        and digits / non_space > cfg.quality_max_digit_fraction
    ):
        return "digit_ratio"
    with_letter = sum(1 for w in words if not _NO_LETTER.fullmatch(w))
    if (
        cfg.quality_min_letter_word_fraction
        and with_letter / len(words) < cfg.quality_min_letter_word_fraction
    ):
        return "few_letters"
    few_lines = len(lines) < MIN_LINES_FOR_LINE_RULES
    if cfg.quality_max_bullet_line_fraction and not few_lines:
        bullets = sum(1 for line in lines if _BULLET.match(line))
        if bullets / len(lines) > cfg.quality_max_bullet_line_fraction:
            return "bullet_lines"
    if cfg.quality_max_ellipsis_line_fraction and not few_lines:
        ellipses = sum(1 for line in lines if _ELLIPSIS.search(line))
        if ellipses / len(lines) > cfg.quality_max_ellipsis_line_fraction:
            return "ellipsis_lines"
    if not unspaced and (cfg.quality_min_mean_word_length or cfg.quality_max_mean_word_length):
        mean = sum(len(w) for w in words) / len(words)
        too_short = cfg.quality_min_mean_word_length and mean < cfg.quality_min_mean_word_length
        too_long = cfg.quality_max_mean_word_length and mean > cfg.quality_max_mean_word_length
        if too_short or too_long:
            return "word_length"
    return None


def _repeated_lines(lines: list[str], cfg: CorpusConfig) -> bool:
    if len(lines) < 2:
        return False
    counts = Counter(lines)
    duplicate_lines = sum(n for n in counts.values() if n > 1)
    duplicate_chars = sum(len(line) * n for line, n in counts.items() if n > 1)
    total_chars = sum(len(line) for line in lines)
    if cfg.quality_max_duplicate_line_fraction and duplicate_lines / len(lines) > (
        cfg.quality_max_duplicate_line_fraction
    ):
        return True
    return bool(cfg.quality_max_duplicate_line_char_fraction) and (
        duplicate_chars / max(1, total_chars) > cfg.quality_max_duplicate_line_char_fraction
    )


def _repeated_ngrams(words: list[str], cfg: CorpusConfig, scale: int = 1) -> bool:
    total = sum(len(w) for w in words)
    if total == 0:
        return False
    if cfg.quality_max_top_ngram_char_fraction:
        for n, limit in ((2, 0.0), (3, 0.02), (4, 0.04)):
            n *= scale
            if len(words) < n + 1:
                break
            grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
            top, count = grams.most_common(1)[0]
            if count > 1 and count * sum(map(len, top)) / total > (
                cfg.quality_max_top_ngram_char_fraction - limit
            ):
                return True
    if cfg.quality_max_duplicate_ngram_char_fraction:
        for n in range(5, 11):
            if len(words) < n * scale + 1:
                break
            limit = cfg.quality_max_duplicate_ngram_char_fraction - (n - 5) * 0.01
            if _duplicated_ngram_chars(words, n * scale) / total > limit:
                return True
    return False


def _duplicated_ngram_chars(words: list[str], n: int) -> int:
    """Characters of words covered by an n-gram that occurs more than once (each word once)."""
    first_seen: dict[tuple[str, ...], int] = {}
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        j = first_seen.setdefault(gram, i)
        if j != i:
            for k in range(n):
                covered[i + k] = covered[j + k] = True
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c)
