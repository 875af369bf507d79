"""GGUF export: llama.cpp (through xllamacpp) tokenizes like the HF tokenizer and predicts like
the transformers model, for every tokenizer kind and causal family glotta exports."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from glotta.config import ModelConfig, TokenizerConfig
from glotta.export.gguf_export import export_gguf, gguf_name
from glotta.export.gguf_vocab import read_vocab, vocabulary_characters
from glotta.models import family
from glotta.tokenizer.train import train_tokenizer
from tests.tokenizer.conftest import japanese_sentences, russian_sentences, swedish_sentences
from tests.tokenizer.test_byte_level import ODD, random_texts

pytest.importorskip("xllamacpp")
from glotta.export.llamacpp import LlamaCpp  # noqa: E402

REAL = [*swedish_sentences()[:300], *russian_sentences()[:300], *japanese_sentences()[:300]]
EMOJI = ["🙂", "👩🏽‍🚀", "🇸🇪", "🎉🎉"]
WHITESPACE = [" ", "  ", "   ", "\n", "\n\n", "\t", " \n ", "\t\t "]
TYPES = ("f32", "f16", "q8_0")


def mixed_texts(count: int, seed: int, specials: list[str]) -> list[str]:
    """Real Cyrillic, Latin and Japanese words mixed with digits, whitespace runs, emoji,
    punctuation and special tokens."""
    rng = random.Random(seed)
    words = [w for text in REAL for w in text.split()]
    pieces = [
        lambda: rng.choice(words),
        lambda: " " + rng.choice(words),
        lambda: str(rng.randrange(10 ** rng.randint(1, 7))),
        lambda: rng.choice(WHITESPACE),
        lambda: rng.choice(EMOJI),
        lambda: rng.choice([".", ",", "!?", "«", "»", "—", "(", ")", "'s", "'ll", "、", "。"]),
        lambda: rng.choice(specials),
    ]
    weights = [5, 5, 2, 2, 1, 2, 1]
    return [
        "".join(rng.choices(pieces, weights)[0]() for _ in range(rng.randint(1, 12)))
        for _ in range(count)
    ]


def build(kind: str, arch: str, folder):
    """A tokenizer of ``kind`` trained on real text and a tiny random ``arch`` model saved as an
    exported HF folder, plus its GGUF files."""
    train_tokenizer(
        TokenizerConfig(kind=kind, vocab_size=2000, character_coverage=0.995), REAL, folder
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    torch.manual_seed(0)
    # Llama: grouped-query attention (4 query heads share 2 key/value heads), untied head and a
    # non-default RoPE base; GPT-2: its tied head and a non-default feed-forward width.
    if arch == "llama":
        cfg = ModelConfig(arch="llama", preset="tiny", tie_embeddings=False, rope_theta=50000.0)
    else:
        cfg = ModelConfig(arch="gpt2", preset="tiny", n_inner=320)
    model = family(arch).build(cfg, len(tokenizer), 64, {"eos": tokenizer.eos_token_id})
    # Random weights at init scale give near-uniform predictions; larger ones give a spread of
    # log-probabilities in which a wrong transform (a missed transpose or permutation) shows.
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.15)
    model.eval()
    model.save_pretrained(folder)
    # Held-out text with characters the Unigram vocabulary lacks (character_coverage < 1).
    _paths, note = export_gguf(folder, list(TYPES), "test", REAL)
    return tokenizer, model, note


@pytest.fixture(scope="module", params=[("bpe", "gpt2"), ("unigram", "llama")], ids=str)
def exported(request, tmp_path_factory):
    kind, arch = request.param
    folder = tmp_path_factory.mktemp(f"{kind}-{arch}")
    tokenizer, model, note = build(kind, arch, folder)
    return kind, folder, tokenizer, model, note


def representable(kind: str, text: str, known: set[str]) -> bool:
    """Texts on which llama.cpp's tokenizer is documented to be exact (gguf_vocab's docstring):
    byte-level BPE, all; Unigram, texts of vocabulary characters with a non-space in every
    stretch between special tokens (a stretch of only spaces gets no dummy prefix there)."""
    if kind == "bpe":
        return True
    stretches = re.split(r"<\|endoftext\|>|<unk>", text)
    return all(c in known for c in "".join(stretches)) and all(
        part.strip(" ") or not part for part in stretches
    )


def test_llama_cpp_tokenizes_like_the_hf_tokenizer(exported):
    kind, folder, tokenizer, _model, _note = exported
    llama = LlamaCpp(folder / gguf_name("f32"))
    vocab = read_vocab(folder, len(tokenizer))
    known = vocabulary_characters(vocab)
    texts = mixed_texts(400, seed=1, specials=[tokenizer.eos_token])
    # Code points from every plane and characters Unicode tables class unusually: llama.cpp's
    # tables and Oniguruma's (in tokenizers) must agree on letters, numbers and whitespace.
    texts += random_texts(600, seed=2) + ODD
    checked = [t for t in texts if representable(kind, t, known)]
    assert len(checked) >= (len(texts) if kind == "bpe" else 150), len(checked)
    mismatches = [
        (text, hf, ours)
        for text in checked
        if (hf := tokenizer.encode(text, add_special_tokens=False))
        != (ours := llama.tokenize(text))
    ]
    assert not mismatches, mismatches[:3]


def test_unigram_characters_outside_the_vocabulary_become_unk(exported):
    kind, folder, tokenizer, _model, _note = exported
    if kind != "unigram":
        pytest.skip("byte-level BPE has every byte in its vocabulary")
    llama = LlamaCpp(folder / gguf_name("f32"))
    known = vocabulary_characters(read_vocab(folder, len(tokenizer)))
    unseen = next(c for c in "🙂ꙮ𓀀" if c not in known)
    ids = llama.tokenize(f"мир {unseen}{unseen} мир")
    hf = tokenizer.encode(f"мир {unseen}{unseen} мир", add_special_tokens=False)
    assert ids.count(tokenizer.unk_token_id) == 1  # a run of unknown characters: one <unk>
    assert tokenizer.unk_token_id not in hf  # where tokenizers falls back to bytes
    assert ids[:2] == hf[:2]


def test_the_export_measures_what_llama_cpp_cannot_tokenize(exported):
    kind, folder, tokenizer, _model, note = exported
    if kind == "bpe":
        assert note == ""  # exact: nothing to report
        return
    # Independently of the export's own count: the characters the HF tokenizer spells in bytes.
    text = "".join(REAL)
    by_bytes = {
        c
        for c in set(text)
        if any(
            re.fullmatch(r"<0x[0-9A-F]{2}>", t)
            for t in tokenizer.convert_ids_to_tokens(tokenizer.encode(c, add_special_tokens=False))
        )
    }
    expected = sum(c in by_bytes for c in text) / len(text)
    assert expected > 0  # character_coverage 0.995 leaves some characters to byte fallback
    assert f"{100 * expected:.3f}% of the {len(text):,} held-out characters" in note
    assert "<unk>" in note


# Bounds on |llama.cpp - transformers| next-token log-probability over the top 5 of 8 prompts,
# about twice the largest difference measured (in brackets) with these tiny random models. f32
# runs with an f32 KV cache and no flash attention. Llama f32 is exact to float rounding; GPT-2
# f32 is not quite, because ggml's CPU GELU reads an f16 table. f16 and q8_0 use llama.cpp's
# defaults; q8_0's error is large here because the test weights are large and unstructured.
TOLERANCE = {
    ("gpt2", "f32"): 3e-3,  # (1.4e-3)
    ("llama", "f32"): 1e-4,  # (9.0e-6)
    ("gpt2", "f16"): 2e-2,  # (8.3e-3)
    ("llama", "f16"): 2e-2,  # (8.6e-3)
    ("gpt2", "q8_0"): 0.3,  # (0.13)
    ("llama", "q8_0"): 0.45,  # (0.22)
}


@pytest.mark.parametrize("gguf_type", TYPES)
def test_llama_cpp_predicts_like_transformers(exported, gguf_type):
    kind, folder, tokenizer, model, _note = exported
    llama = LlamaCpp(folder / gguf_name(gguf_type), exact=gguf_type == "f32")
    tolerance = TOLERANCE[model.config.model_type, gguf_type]
    worst = 0.0
    for text in REAL[::97][:8]:
        ids = tokenizer.encode(text, add_special_tokens=False)[:40]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        expected = torch.log_softmax(logits.double(), -1).numpy()
        top = llama.next_token_logprobs(ids, 5)
        for token_id, logprob in top:
            worst = max(worst, abs(logprob - expected[token_id]))
        # llama.cpp's top 5 are transformers' top 5, up to swaps of near-ties.
        ranked = np.sort(expected)[::-1]
        for rank, (token_id, _) in enumerate(top):
            assert abs(expected[token_id] - ranked[rank]) <= 2 * tolerance
    print(
        f"{kind} {model.config.model_type} {gguf_type}: largest log-probability difference {worst:.2e}"
    )
    assert worst < tolerance
