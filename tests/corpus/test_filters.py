"""Language identification, quality filters, boilerplate lines and PII scrubbing."""

from __future__ import annotations

import dataclasses

import pytest

from glotta.config import CorpusConfig
from glotta.corpus.language import LanguageFilter, identify
from glotta.corpus.pii import scrub_pii
from glotta.corpus.process import DocumentProcessor
from glotta.corpus.quality import quality_drop_reason, split_words
from glotta.corpus.readers import RawDocument
from glotta.errors import GlottaError
from tests.corpus.real_text import japanese_sentences, russian_contexts, swedish_answers

QUALITY = CorpusConfig(quality_filter=True)


def test_language_identifier_on_real_text():
    samples = {
        "sv": swedish_answers()[:40],
        "ja": japanese_sentences()[:40],
        "ru": [t for t in russian_contexts() if len(t) > 80][:40],
    }
    for language, texts in samples.items():
        right = sum(identify(text)[0] == language for text in texts)
        assert right >= 38, (language, right)


def test_document_mode_keeps_only_target_language():
    keep_sv = LanguageFilter(["sv"], 0.5, "document")
    assert keep_sv.apply(swedish_answers()[0]) == (swedish_answers()[0], 0)
    assert keep_sv.apply(japanese_sentences()[0]) == (None, 0)


def test_line_mode_removes_lines_of_other_languages():
    swedish = swedish_answers()[:2]
    russian = [t for t in russian_contexts() if len(t) > 80][0]
    text = "\n".join([swedish[0], russian, "Kapitel 2", swedish[1]])
    kept, removed = LanguageFilter(["sv"], 0.5, "lines").apply(text)
    assert removed == 1
    assert kept == "\n".join([swedish[0], "Kapitel 2", swedish[1]])  # short heading kept
    only_russian = LanguageFilter(["sv"], 0.5, "lines").apply(russian)
    assert only_russian == (None, 1)


def test_unknown_language_code_is_reported():
    with pytest.raises(GlottaError, match="corpus.languages: xx"):
        DocumentProcessor(CorpusConfig(languages=["sv", "xx"]))


def test_quality_keeps_real_prose():
    # Gopher's rules drop number-heavy texts (price lists, dates) by design; prose passes.
    long_russian = [t for t in russian_contexts() if len(t) > 200]
    for texts, share in (
        (swedish_answers(), 0.9),
        (japanese_sentences(), 0.95),
        (long_russian, 0.98),
    ):
        kept = sum(quality_drop_reason(text, QUALITY) is None for text in texts)
        assert kept >= share * len(texts), (texts[0][:40], kept, len(texts))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Köp nu!\nKöp nu!\nKöp nu!\nBilliga skor här.", "repeated_lines"),
        (" ".join(["billiga skor snabb leverans"] * 20), "repeated_ngrams"),
        ("# # # rubrik # # # mer # # # text # # # här", "symbol_ratio"),
        ("Tabell 2019 2020 2021 2022 2023 4711 0815 1234 5678 9999 rad", "digit_ratio"),
        ("- en\n- två\n- tre\n- fyra", "bullet_lines"),
        (
            "Läs mer om alla våra tjänster för dig som bygger nytt hus i år...\nKlicka här för att se alla våra priser och villkor för nästa säsong...\nSe även våra andra erbjudanden för dig som renoverar kök och badrum...\nTack för besöket.",
            "ellipsis_lines",
        ),
        ("a b c d e f g h i j k l m n o p", "word_length"),
        ("— … — … — …", "few_letters"),
    ],
)
def test_quality_rules(text, reason):
    assert quality_drop_reason(text, QUALITY) == reason


def test_quality_rule_switched_off_by_zero():
    text = "Tabell 2019 2020 2021 2022 2023 4711 0815 1234 5678 9999 rad"
    relaxed = dataclasses.replace(QUALITY, quality_max_digit_fraction=0.0)
    assert quality_drop_reason(text, relaxed) != "digit_ratio"


def test_japanese_words_are_characters():
    assert split_words("東京は日本の首都。Tokyo 2024")[:5] == ["東", "京", "は", "日", "本"]
    assert "Tokyo" in split_words("東京は日本の首都。Tokyo 2024")
    assert split_words("«Stockholm» är stor, 4-6 mil.") == ["Stockholm", "är", "stor", "4-6", "mil"]


def test_pii_scrubbing():
    text = (
        "Mejla anna.svensson@example.se eller ring 070-123 45 67, +46 8 123 45 67. "
        "Servern 192.168.0.12 (inte 999.1.1.1), fe80::1ff:fe23:4567:890a. "
        "Befolkning 1 234 567, datum 2024-01-02, ISBN 978-91-7424-123-4, klockan 12:30:45."
    )
    scrubbed, counts = scrub_pii(text)
    assert scrubbed == (
        "Mejla <email> eller ring <phone>, <phone>. "
        "Servern <ip> (inte 999.1.1.1), <ip>. "
        "Befolkning 1 234 567, datum 2024-01-02, ISBN 978-91-7424-123-4, klockan 12:30:45."
    )
    assert counts == {"email": 1, "phone": 2, "ip": 2}


def test_processor_order_and_events():
    cfg = CorpusConfig(
        languages=["sv"], quality_filter=True, scrub_pii=True, min_chars=20, near_dedup=True
    )
    processor = DocumentProcessor(cfg)
    body = swedish_answers()[0]
    doc = processor(
        RawDocument(
            f"{body}\nVi använder cookies på denna webbplats.\nKontakt: info@zaragoza.se", "x"
        )
    )
    assert doc.drop is None
    assert doc.text == f"{body}\nKontakt: <email>"
    assert doc.events == {"boilerplate_lines_removed": 1, "pii_email": 1}
    assert doc.band_keys is not None and len(doc.band_keys) == processor.minhash.bands
    assert processor(RawDocument(japanese_sentences()[5], "x")).drop == "language"
    assert processor(RawDocument("kort", "x")).drop == "too_short"
    assert processor(RawDocument("", "x", skip="invalid_json")).drop == "invalid_json"
