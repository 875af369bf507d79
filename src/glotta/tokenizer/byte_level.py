"""An exact and faster encoder for byte-level BPE tokenizers (the GPT-2 kind), for packing.

For such a tokenizer, ``tokenizers`` splits a text on the GPT-2 pattern (:data:`GPT2_PATTERN`,
run by Oniguruma), maps each piece's UTF-8 bytes to printable characters and merges each piece
with BPE. On one core that costs ~4 us per piece, most of it in the split and in building
``Encoding`` objects, and it is ~95% of packing. :class:`ByteLevelEncoder` gives the same ids
for ~3x less: the split runs in the ``regex`` module, and each distinct piece is encoded once,
by the tokenizer's own pre-tokenizer and BPE model, then remembered.

Why the ids are the same, and what is left to ``tokenizers`` itself:

- The pattern's result depends only on which of four classes each character is in: letter
  (``\\p{L}``), number (``\\p{N}``), whitespace (``\\s``) or other. Both engines try the
  alternatives in the same order, so they split alike wherever they agree on the classes. The
  two engines' Unicode tables are of different versions and differ at the edges, so every
  distinct character is checked once: its class in ``regex`` against its class in the
  tokenizer's pre-tokenizer (found by what it joins with). A text with any character they
  disagree on is encoded by ``tokenizers``.
- So the pieces are the pre-tokenizer's own. A piece's byte-mapped form is its characters'
  forms end to end (the mapping is byte by byte; each character's form comes from the
  pre-tokenizer itself), and its ids are the BPE model's ``tokenize`` of that form, as in
  the pipeline.
- A text containing an added token's content (``<|endoftext|>``, say) is encoded by
  ``tokenizers``, which splits those out first.
- Only tokenizers with exactly this pipeline get a ``ByteLevelEncoder`` (no normalizer, a
  ``ByteLevel`` pre-tokenizer with its regex and no prefix space, a BPE model without dropout);
  :meth:`ByteLevelEncoder.for_tokenizer` returns None for any other.
"""

from __future__ import annotations

import json

import regex
from tokenizers import Tokenizer

# The split of GPT-2 (Radford et al., 2019) that the tokenizers ByteLevel pre-tokenizer applies.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Distinct pieces remembered (~200 bytes each: ~50 MB at most). Past it, new pieces are
# encoded each time they occur, which is still exact.
PIECE_CACHE = 2**18

_CLASS_TESTS = (("letter", regex.compile(r"\p{L}")), ("number", regex.compile(r"\p{N}")))
_SPACE = regex.compile(r"\s")
# A character c is a letter to the pre-tokenizer iff "a" + c stays one piece, a number iff
# "1" + c does, "other" iff "!" + c does; whitespace joins none of them.
_PROBES = (("letter", "a"), ("number", "1"), ("other", "!"))


class ByteLevelEncoder:
    """``encode(texts)``: the ids ``tokenizer.encode_batch(texts, add_special_tokens=False)``
    gives, each text's as a list. Use :meth:`for_tokenizer` to get one."""

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> ByteLevelEncoder | None:
        """An encoder for ``tokenizer`` if its pipeline is the one this module reproduces."""
        if not isinstance(tokenizer, Tokenizer):
            return None
        spec = json.loads(tokenizer.to_str())
        pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        same_pipeline = (
            spec.get("normalizer") is None
            and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False)
            and model.get("type") == "BPE"
            and not model.get("dropout")
        )
        return cls(tokenizer) if same_pipeline else None

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._pre_tokenize = tokenizer.pre_tokenizer.pre_tokenize_str
        self._split = regex.compile(GPT2_PATTERN).findall
        self._added = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
        self._pieces: dict[str, list[int]] = {}
        self._agrees: dict[str, bool] = {}  # character -> both engines give it the same class
        self._byte_level_form: dict[str, str] = {}  # character -> its mapped UTF-8 bytes
        self.texts_by_tokenizers = 0  # texts handed to tokenizers itself (see the module doc)

    def encode(self, texts: list[str]) -> list[list[int]]:
        encoded: list[list[int] | None] = [self._encode_text(text) for text in texts]
        left = [i for i, ids in enumerate(encoded) if ids is None]
        if left:
            self.texts_by_tokenizers += len(left)
            batch = self._tokenizer.encode_batch_fast(
                [texts[i] for i in left], add_special_tokens=False
            )
            for i, encoding in zip(left, batch, strict=True):
                encoded[i] = encoding.ids
        return encoded  # type: ignore[return-value]  # every None was filled in

    def _encode_text(self, text: str) -> list[int] | None:
        """The text's ids, or None when tokenizers itself must encode it."""
        if any(content in text for content in self._added):
            return None
        ids: list[int] = []
        pieces = self._pieces
        for piece in self._split(text):
            piece_ids = pieces.get(piece)
            if piece_ids is None:
                piece_ids = self._encode_piece(piece)
                if piece_ids is None:
                    return None
            ids += piece_ids
        return ids

    def _encode_piece(self, piece: str) -> list[int] | None:
        if not all(self._agrees_on(c) for c in piece):
            return None
        mapped = "".join(map(self._byte_level_form.__getitem__, piece))
        ids = [token.id for token in self._tokenizer.model.tokenize(mapped)]
        if len(self._pieces) < PIECE_CACHE:
            self._pieces[piece] = ids
        return ids

    def _agrees_on(self, char: str) -> bool:
        """Whether ``regex`` and the pre-tokenizer put ``char`` in the same class (cached, with
        the character's byte-level form, which the pre-tokenizer maps byte by byte)."""
        agrees = self._agrees.get(char)
        if agrees is None:
            alone = self._pre_tokenize(char)
            agrees = len(alone) == 1 and self._class_here(char) == self._class_there(char)
            if agrees:
                self._byte_level_form[char] = alone[0][0]
            self._agrees[char] = agrees
        return agrees

    @staticmethod
    def _class_here(char: str) -> str:
        ours = next((name for name, test in _CLASS_TESTS if test.match(char)), None)
        if ours is None:
            ours = "space" if _SPACE.match(char) else "other"
        return ours

    def _class_there(self, char: str) -> str:
        return next(
            (name for name, lead in _PROBES if len(self._pre_tokenize(lead + char)) == 1),
            "space",
        )
