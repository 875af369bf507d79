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
    word_starts,
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


def test_the_class_of_a_character_start_is_that_of_its_first_and_last_completion():
    """Every prefix of every UTF-8 encoding of planes 0-3 (where the scripts that have classes
    live): its completions run from a first to a last code point, found here by encoding every
    character; the class is theirs when they agree (the documented rule), else UNKNOWN."""
    from glotta.masking import UNKNOWN, _class_of_char_start

    span: dict[bytes, list[int]] = {}
    for cp in range(0x40000):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # surrogates have no UTF-8 form
        data = chr(cp).encode("utf-8")
        for end in range(1, len(data) + 1):
            first_last = span.setdefault(data[:end], [cp, cp])
            first_last[1] = cp  # code points ascend, so the first stays and the last moves
    wrong = []
    for prefix, (first, last) in span.items():
        a, b = char_class(chr(first)), char_class(chr(last))
        if _class_of_char_start(prefix) != (a if a == b else UNKNOWN):
            wrong.append((prefix.hex(), hex(first), hex(last)))
    assert not wrong, wrong[:10]


def test_word_starts_after_spaces_and_punctuation_and_without_whole_words(spec):
    bpe = AutoTokenizer.from_pretrained(
        str(trained_tokenizer("roberta-bpe", 800, tuple(russian_texts())))
    )
    bpe_spec = MaskingSpec.from_tokenizer(bpe)
    vocab = bpe.get_vocab()
    # a bare space marker, then an unmarked piece: the piece begins a word (after a space);
    # an unmarked piece after punctuation begins one too.
    row = [vocab["Ġ"], vocab["a"], vocab["."], vocab["b"]]
    assert not bpe_spec.marked[[vocab["a"], vocab["b"]]].any()
    assert word_starts(np.array([row]), bpe_spec).tolist() == [[True, True, True, True]]
    # WordPiece: "при" "##вет" is one word of two tokens, also in a row of just those two
    wp = AutoTokenizer.from_pretrained(
        str(trained_tokenizer("wordpiece", 800, tuple(russian_texts())))
    )
    ids = wp.convert_tokens_to_ids(["при", "##в"])
    assert word_starts(np.array([ids]), spec).tolist() == [[True, False]]
    assert word_starts(np.array([ids + ids]), spec, whole_word=False).all()


def test_mask_tokens_defaults_and_token_level_choice(spec, stream):
    ids = torch.from_numpy(stream[: 64 * 40].reshape(40, 64).astype(np.int64))
    seeds = list(range(40))
    default = mask_tokens(ids, spec, seeds)
    explicit = mask_tokens(ids, spec, seeds, 0.15, whole_word=False)
    assert all(torch.equal(a, b) for a, b in zip(default, explicit, strict=True))
    # token masking chooses the tokens of a word independently: some word is cut in two
    chosen = (mask_tokens(ids, spec, seeds, 0.5)[1] != -100).numpy()
    starts = word_starts(ids.numpy(), spec)
    inside = ~starts[:, 1:]  # a token that continues the word of the token before it
    assert (chosen[:, 1:] != chosen[:, :-1])[inside].any()
    with pytest.raises(ValueError) as error:
        mask_tokens(ids, spec, seeds[:3])
    assert str(error.value) == "40 rows need 40 seeds, got 3"


def _expected_classes(text: str) -> tuple[int, int]:
    return char_class(text[0]), char_class(text[-1])


def test_spec_tables_of_sentencepiece_and_byte_level_vocabularies_by_hand():
    """Unigram (SentencePiece-style, ▁ markers, <0xNN> byte pieces) with mask/cls/sep added,
    and byte-level BPE: every token's marker and first/last character class, computed from the
    token's text here."""
    from glotta.masking import PARTIAL

    texts = tuple(russian_texts())
    unigram = AutoTokenizer.from_pretrained(str(trained_tokenizer("unigram", 600, texts)))
    unigram.add_special_tokens({"mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"})
    spec = MaskingSpec.from_tokenizer(unigram)
    assert spec.vocab_size == len(unigram) and spec.special[unigram.mask_token_id]
    assert (spec.mask_id, spec.cls_id, spec.sep_id, spec.pad_id) == (
        unigram.mask_token_id, unigram.cls_token_id, unigram.sep_token_id, unigram.pad_token_id
    )  # fmt: skip
    assert spec.space_prefix
    pieces = 0
    for token, index in unigram.get_vocab().items():
        if spec.special[index]:
            continue
        assert spec.marked[index] == token.startswith("▁"), token
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            byte = int(token[3:5], 16)
            expected = (
                _expected_classes(chr(byte))
                if byte < 0x80
                else (PARTIAL, PARTIAL)
                if byte < 0xC0
                else (spec.lead[index], spec.tail[index])  # a lead byte: see the prefix test
            )
            pieces += 1
        else:
            expected = _expected_classes(token.lstrip("▁") or " ")
        assert (spec.lead[index], spec.tail[index]) == expected, token
    assert pieces >= 200  # the byte pieces were checked

    bpe = AutoTokenizer.from_pretrained(str(trained_tokenizer("roberta-bpe", 800, texts)))
    bpe_spec = MaskingSpec.from_tokenizer(bpe)
    checked = 0
    for token, index in bpe.get_vocab().items():
        text = bpe.convert_tokens_to_string([token])
        if bpe_spec.special[index] or "\ufffd" in text:
            continue  # special, or only part of a character
        ascii_space = " \t\n\r\x0b\x0c"  # what a marker byte may be (bytes.isspace)
        assert bpe_spec.marked[index] == (text[:1] != "" and text[0] in ascii_space), token
        expected = _expected_classes(text.lstrip(ascii_space) or text)
        assert (bpe_spec.lead[index], bpe_spec.tail[index]) == expected, token
        checked += 1
    assert checked > 500


def test_a_tokenizer_without_mask_token_is_refused_naming_what_is_missing():
    gpt2_style = AutoTokenizer.from_pretrained(
        str(trained_tokenizer("bpe", 300, tuple(russian_texts()[:300])))
    )
    with pytest.raises(GlottaError) as error:
        MaskingSpec.from_tokenizer(gpt2_style)
    assert str(error.value) == (
        "the tokenizer has no mask, cls, sep token, which masked-LM training needs; use "
        "tokenizer.kind = 'wordpiece' or 'roberta-bpe', or a BERT/RoBERTa tokenizer in "
        "tokenizer.pretrained"
    )
