"""Property-based tests (Hypothesis) of the tokenizers glotta trains and of the token shards.

Each tokenizer kind is trained once per module on real Swedish, Russian and Japanese text, then
fed arbitrary Unicode: every script, combining marks, emoji, control characters, odd whitespace.

- ``bpe``, ``roberta-bpe`` (byte-level) and ``unigram`` (byte fallback, identity normalization)
  are lossless: ``decode(encode(text)) == text`` for every text.
- The byte-level kinds' fast encoder (``glotta.tokenizer.byte_level``) gives the tokenizers ids.
- ``wordpiece`` is lossy by design (BERT's normalizer drops control characters and turns
  whitespace into spaces; the pre-tokenizer splits at whitespace and punctuation; a word with a
  character outside the vocabulary becomes one [UNK]). What holds exactly: the text is wrapped in
  [CLS] ... [SEP], and every pre-tokenized word of the normalized text is either spelled out by its
  pieces ("##" continuations joined) or is a single [UNK].
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from glotta.config import TokenizerConfig
from glotta.tokenizer.shards import ShardWriter, open_shard, shard_header
from glotta.tokenizer.train import train_tokenizer
from tests.tokenizer.conftest import japanese_sentences, russian_sentences, swedish_sentences

# Any code point but surrogates (not encodable in UTF-8): letters of every script, combining marks
# (Mn/Me), emoji (So), control and format characters (Cc/Cf), private use, unassigned.
ANY_CHAR = st.characters(codec="utf-8")
WHITESPACE = st.sampled_from([" ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u3000", "\u2028"])
TRICKY = st.sampled_from(
    [
        "e\u0301",
        "\u0928\u093f",
        "👩🏽‍🚀",
        "🇸🇪",
        "\ufeff",
        "\u200d",
        "\x00",
        "\x1b[0m",
        "ǅ",
        "ﬁ",
        "Å",
    ]
)


@st.composite
def texts(draw) -> str:
    """Arbitrary text, mixed with pieces of real sentences so that learned merges are used too."""
    real = draw(st.sampled_from(REAL))
    start = draw(st.integers(0, max(0, len(real) - 1)))
    parts = draw(
        st.lists(
            st.one_of(
                st.text(ANY_CHAR, max_size=12),
                WHITESPACE,
                TRICKY,
                st.just(real[start : start + draw(st.integers(1, 40))]),
            ),
            max_size=8,
        )
    )
    return "".join(parts)


REAL = [*swedish_sentences()[:300], *russian_sentences()[:300], *japanese_sentences()[:300]]
KINDS = ("bpe", "unigram", "roberta-bpe", "wordpiece")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Tokenizer]:
    """One tokenizer of each kind, 2000 pieces, trained on the real sentences."""
    out = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp(f"prop-{kind}")
        train_tokenizer(TokenizerConfig(kind=kind, vocab_size=2000), REAL, folder)
        out[kind] = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return out


@pytest.mark.parametrize("kind", ["bpe", "unigram", "roberta-bpe"])
@given(text=texts())
def test_lossless_kinds_round_trip_any_text(trained, kind, text):
    tokenizer = trained[kind]
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


@pytest.mark.parametrize("kind", ["bpe", "roberta-bpe"])
@given(text=texts())
def test_byte_level_fast_encoder_gives_the_tokenizers_ids(trained, kind, text):
    from glotta.tokenizer.byte_level import ByteLevelEncoder

    tokenizer = trained[kind]
    encoder = ByteLevelEncoder.for_tokenizer(tokenizer)
    assert encoder is not None
    assert encoder.encode([text]) == [tokenizer.encode(text, add_special_tokens=False).ids]


@given(text=texts())
def test_wordpiece_spells_out_every_word_or_marks_it_unknown(trained, text):
    tokenizer = trained["wordpiece"]
    encoding = tokenizer.encode(text)
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    normalized = tokenizer.normalizer.normalize_str(text)
    words = [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]
    pieces: dict[int, list[str]] = {}
    for token, word_id in zip(encoding.tokens, encoding.word_ids, strict=True):
        if word_id is not None:
            pieces.setdefault(word_id, []).append(token)
    assert sorted(pieces) == list(range(len(words)))
    for index, word in enumerate(words):
        tokens = pieces[index]
        if tokens != ["[UNK]"]:
            assert tokens[0] == word[: len(tokens[0])] and not tokens[0].startswith("##")
            assert all(t.startswith("##") for t in tokens[1:])
            assert tokens[0] + "".join(t[2:] for t in tokens[1:]) == word


# ---------------------------------------------------------------------------------------------
# Token shards: any documents, vocabularies on both sides of the uint16/uint32 boundary.

VOCAB_SIZES = st.sampled_from([1, 2, 255, 65535, 65536, 65537, 70000, 2**32])


@st.composite
def shard_contents(draw):
    vocab = draw(VOCAB_SIZES)
    ids = st.integers(0, vocab - 1)
    # the largest ids are drawn often: the ones a too-narrow dtype would wrap around
    ids = st.one_of(ids, st.sampled_from(sorted({0, vocab - 1, min(vocab - 1, 65535)})))
    documents = draw(st.lists(st.lists(ids, max_size=50), max_size=6))
    eos = draw(st.one_of(st.none(), st.integers(0, vocab - 1)))
    return vocab, documents, eos


@given(content=shard_contents(), batched=st.booleans())
@example(content=(2, [[1]], None), batched=False)  # a shard of one token
@example(content=(65536, [[65535], []], 0), batched=True)  # eos id 0, the largest uint16 id
@example(content=(65537, [[65536, 0]], 65536), batched=False)  # the smallest uint32 vocabulary
def test_shards_read_back_what_was_written(tmp_path_factory, content, batched):
    vocab, documents, eos = content
    path = tmp_path_factory.mktemp("shard") / "s.bin"
    with ShardWriter(path, vocab, eos) as writer:
        if batched:
            writer.write_documents(documents)
        else:
            for document in documents:
                writer.write_document(document)
    expected = [i for doc in documents for i in [*doc, *([] if eos is None else [eos])]]
    tokens = open_shard(path)
    assert tokens.dtype == (np.uint16 if vocab <= 65536 else np.uint32)
    assert tokens.tolist() == expected
    assert not (expected and tokens.flags.writeable)  # training can never write into its data
    header = shard_header(path)
    assert (header["tokens"], header["documents"]) == (len(expected), len(documents))
    assert (header["vocab_size"], header["eos_id"]) == (vocab, eos)


@given(vocab=VOCAB_SIZES, offset=st.integers(0, 3))
def test_shards_refuse_ids_outside_the_vocabulary(tmp_path_factory, vocab, offset):
    path = tmp_path_factory.mktemp("shard") / "s.bin"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        with ShardWriter(path, vocab) as writer:
            writer.write_document([0, vocab + offset])
    assert not path.exists()  # nothing that looks finished


def test_shard_writer_refuses_bad_vocabularies_and_eos_and_names_the_bad_id(tmp_path):
    with pytest.raises(ValueError, match="must be positive, got 0"):
        ShardWriter(tmp_path / "a.bin", 0)
    with pytest.raises(ValueError, match="does not fit 32-bit"):
        ShardWriter(tmp_path / "b.bin", 2**32 + 1)
    assert ShardWriter(tmp_path / "c.bin", 2**32).dtype == np.uint32
    with pytest.raises(ValueError, match="eos_id 5 is outside the vocabulary of 5"):
        ShardWriter(tmp_path / "d.bin", 5, eos_id=5)
    with ShardWriter(tmp_path / "e.bin", 5, eos_id=4) as writer:
        with pytest.raises(ValueError, match="token id 7 is outside"):
            writer.write_document([0, 3, 7, -1])
        with pytest.raises(ValueError, match="token id -1 is outside"):
            writer.write_document([0, -1, 9])
