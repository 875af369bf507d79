"""Tokenizers trained on real Swedish, Russian and Japanese text: round trips, ids, vocab, sample."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from glotta.config import TokenizerConfig
from glotta.errors import GlottaError
from glotta.tokenizer.fertility import fertility
from glotta.tokenizer.train import reservoir_sample, train_tokenizer

VOCAB = 2000
LANGS = ("sv", "ru", "ja")
KINDS = ("bpe", "unigram")


def _train(kind: str, tmp_path_factory, documents: list[str]):
    out = tmp_path_factory.mktemp(f"tok_{kind}")
    cfg = TokenizerConfig(kind=kind, vocab_size=VOCAB, special_tokens=["<mask>"], pad_token="<pad>")
    return kind, out, train_tokenizer(cfg, documents, out)


@pytest.fixture(scope="session")
def bpe_trained(tmp_path_factory, training_documents):
    return _train("bpe", tmp_path_factory, training_documents)


@pytest.fixture(scope="session")
def unigram_trained(tmp_path_factory, training_documents):
    return _train("unigram", tmp_path_factory, training_documents)


@pytest.fixture(params=KINDS)
def trained(request):
    """A tokenizer of each kind trained once on the three languages: (kind, folder, stats)."""
    return request.getfixturevalue(f"{request.param}_trained")


def texts_for(corpus, lang: str, unseen: list[str]) -> list[str]:
    """Held-out sentences, a multi-line text with odd whitespace, and unseen characters."""
    held_out = corpus[lang]["held_out"]
    return [
        *held_out,
        "\n".join(held_out[:3]),
        f"  {held_out[0]}\n\n\t{held_out[1]}  \n",
        f"{held_out[2][:20]} {' '.join(unseen)}{held_out[3][:20]}",
    ]


@pytest.mark.parametrize("lang", LANGS)
def test_round_trip_and_identical_ids(trained, corpus, unseen, lang):
    kind, folder, stats = trained
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(folder)
    texts = texts_for(corpus, lang, unseen)
    hf_ids = hf(texts)["input_ids"]
    for text, ids in zip(texts, hf_ids, strict=True):
        assert ids == raw.encode(text).ids == hf.encode(text)
        assert hf.decode(ids) == text
        assert raw.decode(ids) == text
        if kind == "unigram":
            assert stats["unk_id"] not in ids  # byte fallback: nothing is unknown
        assert stats["eos_id"] not in ids  # encode adds no special tokens


@pytest.mark.parametrize("lang", LANGS)
def test_unigram_ids_match_sentencepiece(unigram_trained, corpus, unseen, lang):
    _, folder, _ = unigram_trained
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.model"))
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    texts = texts_for(corpus, lang, unseen)
    assert [raw.encode(t).ids for t in texts] == sp.encode(texts)
    assert [sp.decode(ids) for ids in sp.encode(texts)] == texts


def test_unseen_characters_become_bytes(trained, unseen):
    kind, folder, stats = trained
    hf = AutoTokenizer.from_pretrained(folder)
    for char in unseen:
        ids = hf.encode(char)
        assert hf.decode(ids) == char
        if kind == "unigram":
            tokens = hf.convert_ids_to_tokens(ids)
            byte_tokens = [f"<0x{b:02X}>" for b in char.encode("utf-8")]
            assert tokens[-len(byte_tokens) :] == byte_tokens  # after the dummy-prefix "▁"
            assert stats["unk_id"] not in ids


def test_vocab_size_and_special_tokens(trained):
    kind, folder, stats = trained
    assert stats["vocab_size"] == VOCAB
    hf = AutoTokenizer.from_pretrained(folder)
    assert len(hf) == VOCAB
    assert max(hf.get_vocab().values()) == VOCAB - 1
    assert hf.eos_token == "<|endoftext|>" and hf.eos_token_id == stats["eos_id"] == 0
    assert hf.bos_token_id == 0
    assert hf.pad_token == "<pad>" and hf.pad_token_id == stats["pad_id"]
    assert "<mask>" in hf.all_special_tokens
    assert hf.unk_token == ("<unk>" if kind == "unigram" else "<|endoftext|>")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["clean_up_tokenization_spaces"] is False
    assert (folder / "sentencepiece.model").exists() == (kind == "unigram")


def test_fertility_on_held_out_text(trained, corpus):
    _, folder, _ = trained
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for lang in LANGS:
        result = fertility(raw, corpus[lang]["held_out"])
        assert result["documents"] == len(corpus[lang]["held_out"])
        assert result["characters"] == sum(len(t) for t in corpus[lang]["held_out"])
        # Trained on the language: clearly fewer tokens than bytes (with 2,000 tokens for
        # three scripts, Japanese still needs about one token per character).
        assert 0 < result["tokens_per_byte"] < 0.6
        if lang != "ja":
            assert result["tokens_per_character"] < 0.7
            assert 1 < result["tokens_per_word"] < 5
    hf = AutoTokenizer.from_pretrained(folder)
    assert fertility(hf, corpus["sv"]["held_out"]) == fertility(raw, corpus["sv"]["held_out"])


def test_reservoir_sample_is_uniform_and_bounded():
    sample, seen = reservoir_sample(iter(range(1000)), 10, seed=1)
    assert len(sample) == 10 and seen == 1000 and len(set(sample)) == 10
    assert sample == reservoir_sample(range(1000), 10, seed=1)[0]
    assert sample != reservoir_sample(range(1000), 10, seed=2)[0]
    assert reservoir_sample(range(5), 10, seed=0) == ([0, 1, 2, 3, 4], 5)
    assert reservoir_sample(range(5), 0, seed=0) == ([0, 1, 2, 3, 4], 5)  # 0 = no cap
    # Every item is equally likely: first-tenth and last-tenth of the stream are both sampled.
    counts = Counter()
    for seed in range(300):
        counts.update(x // 100 for x in reservoir_sample(range(1000), 10, seed)[0])
    assert min(counts.values()) > 200 and max(counts.values()) < 400  # expected 300 each


def test_training_sample_cap(tmp_path, corpus):
    texts = corpus["sv"]["train"]
    cfg = TokenizerConfig(kind="bpe", vocab_size=400, max_training_texts=50, seed=3)
    stats = train_tokenizer(cfg, iter(texts), tmp_path)
    assert stats["training_texts"] == 50
    assert stats["training_texts_seen"] == len(texts)
    assert json.loads((tmp_path / "stats.json").read_text())["training_texts"] == 50


def test_unigram_without_dummy_prefix_round_trips(tmp_path, corpus):
    cfg = TokenizerConfig(kind="unigram", vocab_size=600, add_dummy_prefix=False)
    train_tokenizer(cfg, corpus["sv"]["train"] + corpus["ru"]["train"][:100], tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sentencepiece.model"))
    texts = [*corpus["sv"]["held_out"], " inleds med mellanslag\noch 🦜", *corpus["ru"]["held_out"]]
    assert [raw.encode(t).ids for t in texts] == sp.encode(texts)
    assert [raw.decode(raw.encode(t).ids) for t in texts] == texts


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"kind": "bpe", "vocab_size": 200}, "too small for byte-level BPE"),
        ({"kind": "unigram", "vocab_size": 100}, "too small for a Unigram"),
        ({"kind": "unigram", "unk_token": "<|endoftext|>"}, "unk_token must differ"),
        ({"eos_token": ""}, "eos_token must not be empty"),
        ({"special_tokens": ["\n"]}, "cannot be a special token"),
    ],
)
def test_bad_settings_are_glotta_errors(tmp_path, settings, message):
    with pytest.raises(GlottaError, match=message):
        train_tokenizer(TokenizerConfig(**settings), ["hej"], tmp_path)


def test_unigram_vocab_below_required_characters_is_a_glotta_error(tmp_path, corpus):
    cfg = TokenizerConfig(kind="unigram", vocab_size=400, character_coverage=1.0)
    with pytest.raises(GlottaError, match="character_coverage"):
        train_tokenizer(cfg, corpus["ja"]["train"], tmp_path)


def test_empty_training_text_is_a_glotta_error(tmp_path):
    with pytest.raises(GlottaError, match="no training text"):
        train_tokenizer(TokenizerConfig(), iter([]), tmp_path)
