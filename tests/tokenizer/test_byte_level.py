"""The byte-level fast encoder gives exactly the ids of the tokenizers pipeline it stands in for."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

import glotta.tokenizer.byte_level as byte_level
from glotta.config import TokenizerConfig
from glotta.tokenizer.byte_level import ByteLevelEncoder
from glotta.tokenizer.train import train_tokenizer
from tests.tokenizer.conftest import japanese_sentences, russian_sentences, swedish_sentences

REAL = [*swedish_sentences()[:400], *russian_sentences()[:400], *japanese_sentences()[:400]]
# Characters that the pattern treats specially or that Unicode tables classify unusually.
ODD = [
    " ", "  ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0",
    "\u1680", "\u2000", "\u2028", "\u2029", "\u202f", "\u3000", "\u200b", "\ufeff", "'s", "'S",
    "'ll", "'", "’s", "e\u0301", "\u0928\u093f", "👩🏽‍🚀", "🇸🇪", "٣", "Ⅻ", "²", "½", "ǅ", "ﬁ",
    "\x00", "!", "1", "a",
]  # fmt: skip


@pytest.fixture(scope="module", params=["bpe", "roberta-bpe"])
def bpe(tmp_path_factory, request) -> Tokenizer:
    """glotta's byte-level BPE kinds: GPT-2's special tokens, and RoBERTa's (<mask> lstrips)."""
    folder = tmp_path_factory.mktemp(request.param)
    train_tokenizer(TokenizerConfig(kind=request.param, vocab_size=2000), REAL, folder)
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def reference(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def random_texts(count: int, seed: int) -> list[str]:
    """Texts mixing real words, odd characters and code points from every plane."""
    rng = random.Random(seed)
    words = [w for text in REAL for w in text.split()]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 12)):
            kind = rng.random()
            if kind < 0.4:
                parts.append(rng.choice(words))
            elif kind < 0.7:
                parts.append(rng.choice(ODD))
            else:
                code = rng.choice(
                    [rng.randrange(0x80), rng.randrange(0x3000), rng.randrange(0x30000)]
                )
                parts.append("" if 0xD800 <= code < 0xE000 else chr(code))
        texts.append("".join(parts))
    return texts


def test_real_text_is_encoded_alike_without_tokenizers(bpe):
    encoder = ByteLevelEncoder.for_tokenizer(bpe)
    assert encoder is not None
    texts = REAL + [" ".join(REAL[i : i + 5]) for i in range(0, len(REAL), 5)] + ["", " ", "\n"]
    assert encoder.encode(texts) == reference(bpe, texts)
    assert encoder.texts_by_tokenizers == 0  # the fast path did all of it


def test_arbitrary_text_is_encoded_alike(bpe):
    texts = random_texts(3000, seed=7)
    encoder = ByteLevelEncoder.for_tokenizer(bpe)
    assert encoder.encode(texts) == reference(bpe, texts)
    assert encoder.encode(texts) == reference(bpe, texts)  # again, from the piece cache


def test_a_full_piece_cache_changes_nothing(bpe, monkeypatch):
    monkeypatch.setattr(byte_level, "PIECE_CACHE", 10)
    texts = random_texts(300, seed=8)
    encoder = ByteLevelEncoder.for_tokenizer(bpe)
    assert encoder.encode(texts) == reference(bpe, texts)
    assert len(encoder._pieces) == 10


def test_texts_it_cannot_vouch_for_go_to_tokenizers(bpe):
    encoder = ByteLevelEncoder.for_tokenizer(bpe)
    # Letters newer than one of the two engines' Unicode tables: found, not assumed.
    newer = [c for c in map(chr, range(0x0530, 0x0590)) if not encoder._agrees_on(c)]
    newer += [c for c in map(chr, range(0x10900, 0x10960)) if not encoder._agrees_on(c)]
    assert newer, "the regex and tokenizers Unicode tables agree now: pick other characters"
    special = bpe.id_to_token(0)  # <|endoftext|> or <s>
    texts = [
        f"before {special} after",  # an added token's content: split out by tokenizers
        f"word{newer[0]}word and more",
        "plain text",
        f"{newer[-1]}",
    ]
    assert encoder.encode(texts) == reference(bpe, texts)
    assert encoder.texts_by_tokenizers == 3
    assert reference(bpe, texts[:1])[0].count(0) == 1
    masked = ["a <mask> b", "a<mask>b"]
    assert encoder.encode(masked) == reference(bpe, masked)


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
def test_other_pipelines_get_no_byte_level_encoder(tmp_path, kind):
    train_tokenizer(TokenizerConfig(kind=kind, vocab_size=2000), REAL, tmp_path)
    assert (
        ByteLevelEncoder.for_tokenizer(Tokenizer.from_file(str(tmp_path / "tokenizer.json")))
        is None
    )
