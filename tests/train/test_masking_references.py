"""Masking details against independent references: character classes against the Unicode
character names, the masked-block dataset against mask_tokens on the blocks it cuts, its
defaults and limits, and the properties of the per-row mask seeds."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from glotta.errors import GlottaError
from glotta.masking import (
    EVAL_STREAM,
    HAN,
    HIRAGANA,
    KATAKANA,
    OTHER,
    PUNCT,
    SPACE,
    TRAIN_STREAM,
    MaskedBlockDataset,
    MaskingSpec,
    char_class,
    mask_seed,
    mask_tokens,
)
from glotta.tokenizer.shards import ShardWriter
from tests.train.conftest import trained_tokenizer
from tests.train.test_mlm import russian_texts


def _class_by_name(ch: str) -> int:
    """From the character's Unicode name: the scripts by name, iteration marks by hand."""
    if ch.isspace():
        return SPACE
    if unicodedata.category(ch)[0] in "PS":
        return PUNCT
    name = unicodedata.name(ch, "")  # control characters have none
    if name.startswith(("HIRAGANA", "COMBINING KATAKANA-HIRAGANA")):  # ゙ ゚ sit in Hiragana
        return HIRAGANA
    if name.startswith(("KATAKANA", "HALFWIDTH KATAKANA")):  # ー, ｰ: prolonged sound marks
        return KATAKANA
    if name.startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")) or ch in "々〆〇":
        return HAN
    return OTHER


def test_character_classes_match_the_unicode_names():
    """Every assigned character of the BMP and of planes 2-3 (the ideographic planes). Plane 1's
    historic kana (Kana Supplement and Extended, 26 letters in Unicode 14) are not classed."""
    wrong = []
    for cp in [*range(0x10000), *range(0x20000, 0x40000)]:
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cn", "Cs", "Co"):
            continue  # unassigned, surrogates, private use: no name to compare with
        if char_class(ch) != _class_by_name(ch):
            wrong.append((hex(cp), unicodedata.name(ch, "?"), char_class(ch), _class_by_name(ch)))
    assert not wrong, wrong[:20]


@pytest.fixture(scope="module")
def spec() -> MaskingSpec:
    texts = russian_texts()
    return MaskingSpec.from_folder(trained_tokenizer("wordpiece", 800, tuple(texts)))


@pytest.fixture(scope="module")
def stream(spec) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(
        str(trained_tokenizer("wordpiece", 800, tuple(russian_texts())))
    )
    return np.asarray(sum((tokenizer(t)["input_ids"] for t in russian_texts()[:200]), []))


def test_a_batch_is_mask_tokens_on_the_blocks_with_the_seeds_of_its_global_rows(spec, stream):
    data = MaskedBlockDataset(stream, 32, spec, 0.3, whole_word=True, seed=5, phase=2, stream=1)
    rows = [4, 9, 1]
    inputs, labels = data.batch(rows, step=6, first_row=3)
    seeds = [mask_seed(5, 2, 1, 6, 3 + r) for r in range(3)]
    expected = mask_tokens(data.blocks(rows), spec, seeds, 0.3, whole_word=True)
    assert torch.equal(inputs, expected[0]) and torch.equal(labels, expected[1])
    assert not torch.equal(labels, mask_tokens(data.blocks(rows), spec, seeds, 0.3, False)[1])
    # The defaults: BERT's 15%, token (not word) masking, seed 0, phase 0, the training stream,
    # step 0, first row 0.
    default = MaskedBlockDataset(stream, 32, spec).batch(rows)
    explicit = MaskedBlockDataset(stream, 32, spec, 0.15, False, 0, 0, TRAIN_STREAM).batch(
        rows, step=0, first_row=0
    )
    assert all(torch.equal(a, b) for a, b in zip(default, explicit, strict=True))
    other = MaskedBlockDataset(stream, 32, spec, 0.15, False, 0, 0, EVAL_STREAM).batch(rows)
    assert not torch.equal(default[1], other[1])


def test_blocks_of_a_shard_file_and_the_smallest_block(spec, stream, tmp_path):
    path = tmp_path / "valid.bin"
    with ShardWriter(path, vocab_size=spec.vocab_size) as writer:
        writer.write_document(stream[:100])
    data = MaskedBlockDataset(path, 32, spec)
    assert (data.block_size, data.content, data.num_blocks) == (32, 30, 3)  # 10 tokens unused
    assert torch.equal(data.blocks([2])[0, 1:-1], torch.from_numpy(stream[60:90]))
    smallest = MaskedBlockDataset(stream[:5], 3, spec)  # [CLS] one token [SEP]
    assert smallest.num_blocks == 5
    assert smallest.blocks([4]).tolist() == [[spec.cls_id, int(stream[4]), spec.sep_id]]
    with pytest.raises(GlottaError) as error:
        MaskedBlockDataset(stream, 2, spec)
    assert str(error.value) == "a masked-LM block needs at least 3 tokens, got 2"


def test_mask_seeds_are_63_bit_and_distinct():
    seeds = {
        mask_seed(seed, phase, stream, step, row)
        for seed in (0, 1, 2, 3, 7, 9, -1, 2**40)
        for phase in (0, 1)
        for stream in (TRAIN_STREAM, EVAL_STREAM)
        for step in (0, 1, 1000)
        for row in (0, 1, 31)
    }
    assert len(seeds) == 8 * 2 * 2 * 3 * 3  # nearby coordinates never share a seed
    assert all(0 <= s < 2**63 for s in seeds)
    assert max(seeds) > 2**62  # the whole 63-bit range is used
    assert sum(s < 2**32 for s in seeds) == 0


def test_a_folder_without_a_tokenizer_is_named(tmp_path):
    with pytest.raises(GlottaError, match=f"^cannot load the tokenizer in {tmp_path}: "):
        MaskingSpec.from_folder(tmp_path)
