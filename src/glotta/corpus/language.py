"""Language identification with the model that ships inside ``py3langid`` (97 languages).

The model is a naive Bayes classifier over byte n-grams (Lui & Baldwin 2012, langid.py), stored
in the wheel as a compressed NumPy archive, so nothing is downloaded at run time. Probabilities
are normalised (``norm_probs``), so ``corpus.language_threshold`` reads as a confidence.

Two modes:
- ``document``: the whole document is classified once; it is kept when its language is one of
  ``corpus.languages`` with at least the threshold's confidence.
- ``lines``: every line long enough to judge (``MIN_LINE_LETTERS``) is classified and lines in
  other languages are removed, so a Swedish manual with English command examples keeps its
  Swedish; the rest of the pipeline then sees the remaining text (it can become too short).
  Short lines (headings, list items, numbers) inherit nothing and are kept: too little evidence.
"""

from __future__ import annotations

import functools

from glotta.errors import GlottaError

DOCUMENT_SAMPLE_CHARS = 4000  # document mode classifies this much of the text
MIN_LINE_LETTERS = 25  # below this a line carries too few n-grams for a reliable decision


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def supported_languages() -> list[str]:
    return sorted(_identifier().labels)


def check_languages(languages: list[str]) -> None:
    """Raise GlottaError naming the unsupported codes, before any document is read."""
    unknown = sorted(set(languages) - set(supported_languages()))
    if unknown:
        raise GlottaError(
            f"corpus.languages: {', '.join(unknown)} not known to the language identifier "
            f"(ISO 639-1 codes it knows: {', '.join(supported_languages())})"
        )


def identify(text: str) -> tuple[str, float]:
    """(language code, confidence in [0, 1]) of ``text``."""
    language, confidence = _identifier().classify(text)
    return language, float(confidence)


class LanguageFilter:
    """Keeps documents (or lines) in the target languages; counts what it removes."""

    def __init__(self, languages: list[str], threshold: float, mode: str):
        check_languages(languages)
        if not 0.0 <= threshold < 1.0:
            raise GlottaError(f"corpus.language_threshold = {threshold} must lie in [0, 1)")
        self.languages = frozenset(languages)
        self.threshold = threshold
        self.mode = mode

    def accepts(self, text: str) -> bool:
        # The identifier's cost grows with length while its answer settles within a few
        # thousand characters; the start of a long article decides for all of it.
        language, confidence = identify(text[:DOCUMENT_SAMPLE_CHARS])
        return language in self.languages and confidence >= self.threshold

    def apply(self, text: str) -> tuple[str | None, int]:
        """(text to keep or None = drop the document, number of lines removed)."""
        if self.mode == "document":
            return (text if self.accepts(text) else None), 0
        kept, removed = [], 0
        for line in text.split("\n"):
            letters = sum(1 for ch in line if ch.isalpha())
            if letters >= MIN_LINE_LETTERS and not self.accepts(line):
                removed += 1
            else:
                kept.append(line)
        if removed and not any(sum(ch.isalpha() for ch in line) for line in kept):
            return None, removed
        return "\n".join(kept), removed
