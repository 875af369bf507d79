"""The per-document steps of the corpus stage, each declaring itself in one place.

A step (datatrove's ``BaseFilter`` is the model) names the ``[corpus]`` keys it reads, whether it
runs for a config, and every reason it drops a document with the advice shown when that reason
empties a corpus; ``apply`` returns the (possibly changed) text and a drop reason or None, and
adds what it changed inside kept documents to ``events`` (lines removed, PII replaced). The
counters in stats.json, the dropped-samples file and the empty-corpus advice all come from these
declarations, so a new filter is its step class plus one line in :data:`STEPS` (and its keys in
:class:`glotta.config.CorpusConfig`).

The order puts cheap, common drops first::

    not text -> markup + cleaning -> boilerplate lines -> length -> language -> quality -> PII
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from glotta.config import CorpusConfig
from glotta.corpus.clean import clean_text, length_drop_reason, not_text_fraction
from glotta.corpus.language import LanguageFilter
from glotta.corpus.markup import convert_markup
from glotta.corpus.pii import scrub_pii
from glotta.corpus.quality import (
    QUALITY_DROP_REASONS,
    compile_patterns,
    quality_drop_reason,
    remove_boilerplate_lines,
)

Events = Counter  # what a step changed inside a kept document, by kind


class CorpusStep:
    """One per-document step; subclasses set the class attributes and ``apply``."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()  # the [corpus] keys it reads
    drops: ClassVar[dict[str, str]] = {}  # drop reason -> what to do when it empties a corpus

    def __init__(self, cfg: CorpusConfig):
        self.cfg = cfg

    @staticmethod
    def enabled(cfg: CorpusConfig) -> bool:
        return True

    def apply(self, text: str, events: Events, markup: str, title: str) -> tuple[str, str | None]:
        raise NotImplementedError


class NotText(CorpusStep):
    """Binary data read as text: too many U+FFFD and control characters. NULs are counted."""

    name = "not_text"
    fields = ("max_not_text_fraction",)
    drops = {
        "not_text": "the inputs hold binary data or text in another encoding (convert it to "
        "UTF-8), or raise corpus.max_not_text_fraction"
    }

    def apply(self, text, events, markup, title):
        if not_text_fraction(text) > self.cfg.max_not_text_fraction:
            return text, "not_text"
        if "\x00" in text:  # removed by cleaning next, but counted: they hint at binary data
            events["nul_characters_removed"] += text.count("\x00")
        return text, None


class Clean(CorpusStep):
    """Markup to plain text (wiki40b, MediaWiki), Unicode normalization, controls, whitespace."""

    name = "clean"
    fields = ("markup", "normalization")

    def apply(self, text, events, markup, title):
        return clean_text(convert_markup(text, markup, title), self.cfg.normalization), None


class Boilerplate(CorpusStep):
    """C4's boilerplate lines (cookies, JavaScript, terms of use) removed, not whole documents."""

    name = "boilerplate"
    fields = ("quality_filter", "boilerplate_patterns")

    def __init__(self, cfg: CorpusConfig):
        super().__init__(cfg)
        self.patterns = compile_patterns(cfg.boilerplate_patterns)

    @staticmethod
    def enabled(cfg):
        return cfg.quality_filter

    def apply(self, text, events, markup, title):
        text, removed = remove_boilerplate_lines(text, self.patterns)
        if removed:
            events["boilerplate_lines_removed"] += removed
            text = clean_text(text, "none")  # close the gaps the removed lines left
        return text, None


_LENGTH_DROPS = {
    "empty": "check corpus.format and corpus.txt_documents",
    "too_short": "lower corpus.min_chars or use corpus.txt_documents = 'paragraphs' or 'file'",
    "too_long": "raise corpus.max_chars (0 = no limit) or split the text into documents",
}


class Length(CorpusStep):
    name = "length"
    fields = ("min_chars", "max_chars")
    drops = _LENGTH_DROPS

    def apply(self, text, events, markup, title):
        return text, length_drop_reason(text, self.cfg.min_chars, self.cfg.max_chars)


class Language(CorpusStep):
    """py3langid on the whole document, or (``lines`` mode) removing other-language lines;
    after the length check, since too short a text misleads the identifier. A document that
    lost lines is measured again."""

    name = "language"
    fields = ("languages", "language_threshold", "language_mode", "min_chars", "max_chars")
    drops = {"language": "check corpus.languages or lower corpus.language_threshold"}

    def __init__(self, cfg: CorpusConfig):
        super().__init__(cfg)
        self.identifier = LanguageFilter(cfg.languages, cfg.language_threshold, cfg.language_mode)

    @staticmethod
    def enabled(cfg):
        return bool(cfg.languages)

    def apply(self, text, events, markup, title):
        kept, removed = self.identifier.apply(text)
        if removed:
            events["language_lines_removed"] += removed
        if kept is None:
            return text, "language"
        if not removed:
            return text, None
        text = clean_text(kept, "none")
        return text, length_drop_reason(text, self.cfg.min_chars, self.cfg.max_chars)


_QUALITY_ADVICE = (
    "relax that corpus.quality_* threshold (0 turns the rule off) or set "
    "corpus.quality_filter = false"
)


class Quality(CorpusStep):
    """Gopher's repetition, symbol, digit, letter, bullet, ellipsis and word-length rules."""

    name = "quality"
    fields = ("quality_filter",)  # and every quality_* threshold
    drops = {reason: _QUALITY_ADVICE for reason in QUALITY_DROP_REASONS}

    @staticmethod
    def enabled(cfg):
        return cfg.quality_filter

    def apply(self, text, events, markup, title):
        return text, quality_drop_reason(text, self.cfg)


class ScrubPII(CorpusStep):
    """E-mail addresses, phone numbers and IP addresses become <email>, <phone>, <ip>."""

    name = "pii"
    fields = ("scrub_pii",)

    @staticmethod
    def enabled(cfg):
        return cfg.scrub_pii

    def apply(self, text, events, markup, title):
        text, found = scrub_pii(text)
        events.update({f"pii_{kind}": n for kind, n in found.items()})
        return text, None


# In order. A new step: its class above (or in a module of its own) and one line here.
STEPS: tuple[type[CorpusStep], ...] = (
    NotText,
    Clean,
    Boilerplate,
    Length,
    Language,
    Quality,
    ScrubPII,
)


def step_drop_reasons() -> dict[str, str]:
    """Every reason a step drops a document, in step order, with its advice."""
    reasons: dict[str, str] = {}
    for step in STEPS:
        reasons.update(step.drops)
    return reasons


def build_steps(cfg: CorpusConfig) -> list[CorpusStep]:
    """The steps that run for ``cfg``, in order."""
    return [step(cfg) for step in STEPS if step.enabled(cfg)]
