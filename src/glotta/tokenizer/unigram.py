"""SentencePiece Unigram: training with the ``sentencepiece`` library, exact conversion to ``tokenizers``.

The trained model is converted into a ``tokenizers`` Unigram ``tokenizer.json`` that gives the same
ids as ``sentencepiece.SentencePieceProcessor`` on ordinary text, so that ``AutoTokenizer``, the pack
stage and evaluation (which all use the ``tokenizers`` one, the source of truth) agree with the
``sentencepiece.model`` written next to it.

How SentencePiece behaviour maps onto ``tokenizers``:

- whitespace: SentencePiece (identity normalization, ``remove_extra_whitespaces=False``) replaces
  every U+0020 by "▁" and, with ``add_dummy_prefix``, puts one "▁" in front of the text. Here this is
  the normalizer ``Prepend("▁") + Replace(" ", "▁")``. (The ``Metaspace`` pre-tokenizer is not used:
  it skips the prefix when the text already starts with a space, so "  x" would lose a space.)
- no pre-splitting: a SentencePiece Unigram model runs Viterbi over the whole text; its pieces
  never cross a word boundary only because training forbade it. So there is no ``Metaspace``
  split, and ``allow_whitespace_only_pieces`` pieces such as "▁▁▁" are used as SentencePiece uses
  them.
- newlines: training reads documents line by line, and "\\n" is a user-defined symbol, i.e. always
  a piece of its own. So splitting at "\\n" (``Split("\\n", "isolated")``) is exact, and keeps the
  Viterbi lattice of a long document bounded by its longest line.
- unseen characters: with ``byte_fallback`` both emit the UTF-8 bytes as ``<0xNN>`` pieces.

Known difference: text that contains the literal string of a special token ("<|endoftext|>",
"<unk>") is encoded by ``tokenizers`` as that special token (as GPT-2 tokenizers do), while
SentencePiece spells it out; the text after it then also gets a dummy-prefix "▁" of its own.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator

from sentencepiece import SentencePieceTrainer
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from glotta.errors import GlottaError

SPACE = "▁"  # U+2581, SentencePiece's whitespace symbol
NEWLINE = "\n"
# Training lines longer than this are cut; sentencepiece drops lines over max_sentence_length.
MAX_LINE_CHARS = 16_384

_Piece = sp_pb2.ModelProto.SentencePiece


def training_lines(texts: Iterable[str]) -> Iterator[str]:
    """Documents as SentencePiece training sentences: one per line, long lines cut in chunks."""
    for text in texts:
        for line in text.split(NEWLINE):
            for start in range(0, len(line), MAX_LINE_CHARS):
                yield line[start : start + MAX_LINE_CHARS]


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    eos_token: str,
    unk_token: str,
    pad_token: str | None,
    control_symbols: list[str],
    character_coverage: float,
    byte_fallback: bool,
    add_dummy_prefix: bool,
    num_threads: int | None = None,
) -> bytes:
    """Train a Unigram model on ``texts`` (documents); return the serialized model proto.

    Ids: eos 0, unk 1, pad 2 (when ``pad_token`` is given), then the control symbols, "\\n",
    the 256 byte pieces (with ``byte_fallback``) and the learned pieces. No BOS piece.
    ``vocab_size`` counts all of them; a corpus too small for it yields a smaller vocabulary
    (``hard_vocab_limit=False``).
    """
    model = io.BytesIO()
    options = dict(
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        add_dummy_prefix=add_dummy_prefix,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,  # numbers as digits (as Llama/Gemma do): no arbitrary number pieces
        max_sentence_length=4 * MAX_LINE_CHARS,  # bytes; training_lines cuts longer lines
        # The caller's reservoir already caps the documents; take every line of them.
        input_sentence_size=0,
        hard_vocab_limit=False,
        eos_id=0,
        eos_piece=eos_token,
        unk_id=1,
        unk_piece=unk_token,
        pad_id=2 if pad_token else -1,
        pad_piece=pad_token or "<pad>",
        bos_id=-1,
        user_defined_symbols=[NEWLINE],
        num_threads=num_threads or os.cpu_count() or 1,
        minloglevel=1,  # warnings and errors only
    )
    if control_symbols:
        options["control_symbols"] = control_symbols
    try:
        SentencePieceTrainer.train(
            sentence_iterator=(line for line in training_lines(texts) if line),
            model_writer=model,
            **options,
        )
    except RuntimeError as exc:
        raise GlottaError(
            f"tokenizer: sentencepiece could not train a Unigram model ({exc}); raise "
            "tokenizer.vocab_size or lower tokenizer.character_coverage"
        ) from None
    return model.getvalue()


def sentencepiece_to_tokenizer(model_proto: bytes) -> Tokenizer:
    """A ``tokenizers`` Unigram tokenizer with the ids of the SentencePiece model ``model_proto``.

    Supports models with identity normalization and ``remove_extra_whitespaces=False`` (what
    :func:`train_sentencepiece` writes); raises ``ValueError`` for others.
    """
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    if proto.trainer_spec.model_type != sp_pb2.TrainerSpec.UNIGRAM:
        raise ValueError("only SentencePiece Unigram models can be converted")
    norm = proto.normalizer_spec
    if norm.precompiled_charsmap or norm.remove_extra_whitespaces or not norm.escape_whitespaces:
        raise ValueError(
            "only SentencePiece models with identity normalization, remove_extra_whitespaces=false "
            "and escaped whitespace can be converted exactly"
        )
    if proto.trainer_spec.treat_whitespace_as_suffix:
        raise ValueError("treat_whitespace_as_suffix models are not supported")

    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    unk_id = proto.trainer_spec.unk_id
    tokenizer = Tokenizer(
        models.Unigram(vocab, unk_id=unk_id, byte_fallback=proto.trainer_spec.byte_fallback)
    )
    steps = [normalizers.Replace(" ", SPACE)]
    if norm.add_dummy_prefix:
        steps.insert(0, normalizers.Prepend(SPACE))
    tokenizer.normalizer = normalizers.Sequence(steps)
    user_defined = [p.piece for p in proto.pieces if p.type == _Piece.USER_DEFINED]
    if NEWLINE in user_defined:
        tokenizer.pre_tokenizer = pre_tokenizers.Split(NEWLINE, behavior="isolated")
    decode_steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if norm.add_dummy_prefix:
        decode_steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode_steps)

    special = [p.piece for p in proto.pieces if p.type in (_Piece.CONTROL, _Piece.UNKNOWN)]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    # Other user-defined symbols are matched in the raw text as SentencePiece does (the dummy
    # prefix then also lands after them; glotta itself only defines "\n").
    other = [t for t in user_defined if t != NEWLINE]
    if other:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in other])
    return tokenizer
