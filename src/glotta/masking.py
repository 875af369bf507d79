"""Masked-LM inputs: fixed-size blocks, dynamic masking (BERT's 80/10/10) and whole-word masking.

Used by training (``glotta.train.loop`` with ``objective = "mlm"``) and by evaluation
(``glotta.evaluate.masked``), which is why it lives outside both.

**Blocks.** The pack stage writes every split as one stream of token ids with the separator
([SEP] / </s>) after each document. A masked-LM block of ``block_size`` tokens is
``[CLS] + block_size - 2 consecutive stream tokens + [SEP]``: block ``i`` starts at stream offset
``i * (block_size - 2)``. We cut the packed stream instead of packing whole documents per block
because (1) every block is full, so there is no padding and every step sees the same number of
tokens (RoBERTa's FULL-SENTENCES format, Liu et al. 2019, which crosses document boundaries with
a separator in between and trains as well as one document per sequence); (2) a block is found by
arithmetic, so the data position stays ``(epoch, offset)`` and a resume costs O(1), as for the
causal LM; (3) documents packed per block would need a document index and padding, and long
documents split anyway.

**Masking** (Devlin et al. 2019, section 3.1): each non-special token is chosen with probability
``mlm_probability`` (15%); a chosen token becomes the mask token with probability 0.8, a random
non-special token with 0.1 and stays itself with 0.1; the loss is taken on chosen tokens only.
Masks are drawn per batch ("dynamic masking", Liu et al. 2019), so each epoch sees new masks.

**Determinism.** The masks of a sequence come from a ``torch.Generator`` seeded from
``(seed, phase, stream, step, row)``, where ``row`` is the sequence's position in the *global*
batch of the step. They do not depend on the process or micro-batch that handles the row, so a
resumed run, or the same global batch spread over 2 processes x 2 micro-batches, sees exactly the
masks of one uninterrupted process.

**Whole-word masking** chooses words instead of tokens: all tokens of a word are chosen together
(the 80/10/10 decision is still made per token, as in Google's ``create_pretraining_data.py``).
A token starts a new word when

- it is special, or follows a special token;
- the tokenizer marks it as a word start: WordPiece tokens without "##", byte-level BPE and
  SentencePiece tokens with a leading space marker (Ġ / ▁);
- it or the token before it is punctuation or whitespace;

except that a token beginning with a UTF-8 continuation byte (byte-level BPE cut a character)
never starts a word. Japanese (and other text without spaces) has no word-start markers worth
the name: WordPiece makes every kanji a "word" and SentencePiece marks only the start of a text.
Between CJK tokens (kanji, hiragana, katakana) a word therefore ends where the *script changes*
(or at punctuation, or at an explicit space marker), so a word is a maximal run of tokens in one
script: 東京都 | に | 住 | む | コンピューター | を | 使 | う. We take this over SpanBERT's geometric
spans (Joshi et al. 2020), which cut through these units at random: script runs coincide with
kanji compounds, katakana loanwords and particle runs, the units whose pieces give each other
away, need no morphological analyser, and leave the chosen fraction at ``mlm_probability`` for
every token. The price: a verb or adjective stem (住) and its okurigana (む) are separate words,
where MeCab-based whole-word masking (as in Japanese BERTs) would keep them together. A word has
at most ``MAX_WORD_TOKENS`` (10, SpanBERT's longest span) tokens, so a long run (a Chinese clause,
a URL) is masked in pieces rather than whole. A byte-level token that holds only the first bytes
of a character gets the class that those bytes fix (e4 bd: kanji), or none when they fix none.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from glotta.errors import GlottaError
from glotta.tokenizer.shards import open_shard

IGNORE_INDEX = -100  # label of positions without loss (torch cross_entropy's default)
MASK_FRACTION = 0.8  # of the chosen tokens: become the mask token (Devlin et al. 2019)
RANDOM_FRACTION = 0.1  # ... become a random token; the remaining 0.1 stay unchanged
MAX_WORD_TOKENS = 10

# Streams keep the masks of different uses of the same rows apart.
TRAIN_STREAM, VALID_STREAM, EVAL_STREAM = 0, 1, 2

# Character classes for word boundaries.
OTHER, SPACE, PUNCT, HAN, HIRAGANA, KATAKANA, PARTIAL, UNKNOWN = range(8)
CJK_CLASSES = (HAN, HIRAGANA, KATAKANA)


def char_class(ch: str) -> int:
    """The class of one character: space, punctuation/symbol, kanji, hiragana, katakana, other."""
    if ch.isspace():
        return SPACE
    category = unicodedata.category(ch)
    if category[0] in "PS":  # punctuation and symbols (・ 、 。 「 included)
        return PUNCT
    cp = ord(ch)
    if 0x3040 <= cp <= 0x309F:
        return HIRAGANA
    if 0x30A0 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
        return KATAKANA  # ー (U+30FC) included
    if (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x3FFFF  # planes 2 and 3: extensions B-H, compatibility supplement
        or 0xF900 <= cp <= 0xFAFF
        or cp in (0x3005, 0x3006, 0x3007)  # 々 〆 〇
    ):
        return HAN
    return OTHER


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the byte behind each character of a token."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


# The range of the byte after a lead byte (RFC 3629); later continuation bytes are 80-BF.
_SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}


def _class_of_char_start(data: bytes) -> int:
    """The class of the character that ``data`` (a lead byte, maybe with some of its continuation
    bytes) begins. A byte-level token may hold only the first bytes of a character; they fix a
    range of code points, and when its first and last code points have the same class (e4 bd:
    U+4F40-4F7F, all kanji) that is the class, else UNKNOWN (e3 82: hiragana or katakana)."""
    length = 1 if data[0] < 0x80 else 2 if data[0] < 0xE0 else 3 if data[0] < 0xF0 else 4
    head = data[:length]
    classes = set()
    for end in (0, 1):  # the lowest and the highest completion
        tail = [
            _SECOND_BYTE.get(head[0], (0x80, 0xBF))[end] if i == 1 else (0x80, 0xBF)[end]
            for i in range(len(head), length)
        ]
        try:
            classes.add(char_class((head + bytes(tail)).decode("utf-8")[0]))
        except UnicodeDecodeError:
            return UNKNOWN
    return classes.pop() if len(classes) == 1 else UNKNOWN


def _classes_of_bytes(data: bytes) -> tuple[int, int]:
    """(class of the first character, class of the last) of a piece of UTF-8.

    A piece that starts inside a character (continuation bytes) has lead PARTIAL; one that holds
    no character start at all also has tail PARTIAL (:func:`word_starts` then carries the class
    of the character it continues forward).
    """
    if not data:
        return UNKNOWN, UNKNOWN
    lead = PARTIAL if _is_continuation(data[0]) else _class_of_char_start(data)
    last = len(data) - 1
    while last >= 0 and _is_continuation(data[last]):
        last -= 1
    tail = _class_of_char_start(data[last:]) if last >= 0 else PARTIAL
    return lead, tail


@dataclass(frozen=True)
class MaskingSpec:
    """What masking needs to know about a tokenizer, as lookup tables indexed by token id."""

    mask_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    special: np.ndarray  # bool: never chosen, never a random replacement
    marked: np.ndarray  # bool: the tokenizer marks the token as the start of a word
    lead: np.ndarray  # int8: class of the token's first character
    tail: np.ndarray  # int8: class of its last character
    space_prefix: bool  # markers are leading spaces (BPE/Unigram), not "##" (WordPiece)
    random_ids: np.ndarray  # int64: the non-special ids a chosen token may be replaced by

    @property
    def vocab_size(self) -> int:
        return len(self.special)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> MaskingSpec:
        """From a transformers fast tokenizer (``AutoTokenizer``) that has a mask token."""
        missing = [
            r for r in ("mask", "cls", "sep", "pad") if getattr(tokenizer, f"{r}_token") is None
        ]
        if missing:
            raise GlottaError(
                f"the tokenizer has no {', '.join(missing)} token, which masked-LM training "
                "needs; use tokenizer.kind = 'wordpiece' or 'roberta-bpe', or a BERT/RoBERTa "
                "tokenizer in tokenizer.pretrained"
            )
        backend = tokenizer.backend_tokenizer
        vocab_size = backend.get_vocab_size(with_added_tokens=True)
        special = np.zeros(vocab_size, dtype=bool)
        special[[i for i in tokenizer.all_special_ids if i < vocab_size]] = True
        for index, added in tokenizer.added_tokens_decoder.items():
            if added.special and index < vocab_size:
                special[index] = True
        marked = np.ones(vocab_size, dtype=bool)
        lead = np.full(vocab_size, OTHER, dtype=np.int8)
        tail = np.full(vocab_size, OTHER, dtype=np.int8)
        description = json.loads(backend.to_str())
        model_type = description["model"]["type"]
        byte_level = "ByteLevel" in json.dumps(description.get("decoder") or {})
        continuation = description["model"].get("continuing_subword_prefix") or "##"
        decoder = _byte_decoder()
        for token, index in backend.get_vocab(with_added_tokens=True).items():
            if special[index]:
                continue
            if model_type == "WordPiece":
                is_continuation = token.startswith(continuation)
                text = token[len(continuation) :] if is_continuation else token
                marked[index] = not is_continuation
                data = text.encode("utf-8")
            elif byte_level:
                data = bytes(decoder.get(c, 0x3F) for c in token)  # unknown chars: "?"
                marked[index] = data[:1].isspace()
                data = data.lstrip() or data
            else:  # SentencePiece-style (Unigram, BPE with Metaspace): ▁ marks a word start
                marked[index] = token.startswith("▁")
                if token.startswith("<0x") and token.endswith(">") and len(token) == 6:
                    data = bytes([int(token[3:5], 16)])  # byte-fallback piece
                else:
                    data = (token.lstrip("▁") or " ").encode("utf-8")
            lead[index], tail[index] = _classes_of_bytes(data)
        return cls(
            mask_id=int(tokenizer.mask_token_id),
            cls_id=int(tokenizer.cls_token_id),
            sep_id=int(tokenizer.sep_token_id),
            pad_id=int(tokenizer.pad_token_id),
            special=special,
            marked=marked,
            lead=lead,
            tail=tail,
            space_prefix=model_type != "WordPiece",
            random_ids=np.flatnonzero(~special).astype(np.int64),
        )

    @classmethod
    def from_folder(cls, folder: Path | str) -> MaskingSpec:
        """From a tokenizer folder (tokenizer.json + tokenizer_config.json)."""
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise GlottaError(f"cannot load the tokenizer in {folder}: {exc}") from None
        if not tokenizer.is_fast:
            raise GlottaError(f"the tokenizer in {folder} has no tokenizer.json")
        return cls.from_tokenizer(tokenizer)


def word_starts(ids: np.ndarray, spec: MaskingSpec, whole_word: bool = True) -> np.ndarray:
    """Bool array like ``ids`` (rows of token ids): True where a new word begins.

    Without ``whole_word`` every token is a word of its own. See the module docstring for the
    rules; words are also cut after ``MAX_WORD_TOKENS`` tokens.
    """
    ids = np.asarray(ids)
    starts = np.ones(ids.shape, dtype=bool)
    if not whole_word or ids.shape[-1] < 2:
        return starts
    prev, cur = ids[:, :-1], ids[:, 1:]
    # A token made of continuation bytes only ends the character its predecessor began.
    tails = spec.tail[ids]
    index = np.broadcast_to(np.arange(ids.shape[-1]), ids.shape)
    known = np.maximum.accumulate(np.where(tails != PARTIAL, index, 0), axis=-1)
    tails = np.take_along_axis(tails, known, axis=-1)
    lead, tail = spec.lead[cur], tails[:, :-1]
    marked = spec.marked[cur]
    cjk = np.isin(lead, CJK_CLASSES) | np.isin(tail, CJK_CLASSES)
    script_change = (lead != tail) & (lead != UNKNOWN) & (tail != UNKNOWN)
    # WordPiece's missing "##" before a kanji is the normalizer's doing, not a space.
    begins = np.where(cjk, script_change | (marked & spec.space_prefix), marked)
    begins |= (lead == PUNCT) | (tail == PUNCT) | (lead == SPACE) | (tail == SPACE)
    begins &= lead != PARTIAL
    begins |= spec.special[cur] | spec.special[prev]
    starts[:, 1:] = begins
    # Cap word length: position within the word = index - index of the word's first token.
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=-1)
    starts |= (index - first) % MAX_WORD_TOKENS == 0
    starts[:, 1:] &= lead != PARTIAL  # not even the cap splits a character
    return starts


def mask_seed(seed: int, phase: int, stream: int, step: int, row: int) -> int:
    """A 63-bit generator seed for one sequence, from its coordinates (hashed, so nearby
    coordinates give unrelated streams)."""
    words = np.random.SeedSequence([seed % 2**63, phase, stream, step, row]).generate_state(2)
    return (int(words[0]) << 31) ^ int(words[1])


def mask_tokens(
    ids: torch.Tensor,
    spec: MaskingSpec,
    seeds: list[int],
    probability: float = 0.15,
    whole_word: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with masks and the labels (original ids at chosen positions, IGNORE_INDEX elsewhere).

    ``ids`` is (rows, length) int64; row ``r`` draws its randomness from ``seeds[r]`` only.
    Every row draws the same amount of randomness whatever it holds, so the masks of a row depend
    on its seed and tokens alone.
    """
    rows, length = ids.shape
    if len(seeds) != rows:
        raise ValueError(f"{rows} rows need {rows} seeds, got {len(seeds)}")
    choose = torch.empty(rows, length)
    action = torch.empty(rows, length)
    replacement = torch.empty(rows, length, dtype=torch.long)
    generator = torch.Generator()
    for r, seed in enumerate(seeds):
        generator.manual_seed(seed)
        choose[r] = torch.rand(length, generator=generator)
        action[r] = torch.rand(length, generator=generator)
        replacement[r] = torch.randint(len(spec.random_ids), (length,), generator=generator)
    array = ids.numpy()
    starts = word_starts(array, spec, whole_word)
    # A word is chosen by the draw at its first token, so all its tokens go together and every
    # token is chosen with probability `probability`.
    index = np.broadcast_to(np.arange(length), array.shape)
    first = torch.from_numpy(np.maximum.accumulate(np.where(starts, index, 0), axis=-1))
    chosen = torch.gather(choose, 1, first) < probability
    chosen &= ~torch.from_numpy(spec.special[array])
    labels = torch.where(chosen, ids, IGNORE_INDEX)
    inputs = ids.clone()
    inputs[chosen & (action < MASK_FRACTION)] = spec.mask_id
    randomize = chosen & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
    inputs[randomize] = torch.from_numpy(spec.random_ids)[replacement[randomize]]
    return inputs, labels


class MaskedBlockDataset:
    """``[CLS] + (block_size - 2) stream tokens + [SEP]`` blocks of a shard, masked on request.

    The tokens after the last complete block (fewer than ``block_size - 2``) are not used.
    """

    def __init__(
        self,
        shard_path: Path | np.ndarray,
        block_size: int,
        spec: MaskingSpec,
        probability: float = 0.15,
        whole_word: bool = False,
        seed: int = 0,
        phase: int = 0,
        stream: int = TRAIN_STREAM,
    ):
        if block_size < 3:
            raise GlottaError(f"a masked-LM block needs at least 3 tokens, got {block_size}")
        # A shard file, or the token stream itself (standalone evaluation of a text file).
        self.tokens = shard_path if isinstance(shard_path, np.ndarray) else open_shard(shard_path)
        self.block_size = block_size
        self.content = block_size - 2
        self.num_blocks = len(self.tokens) // self.content
        self.spec = spec
        self.probability = probability
        self.whole_word = whole_word
        self.seed, self.phase, self.stream = seed, phase, stream

    def blocks(self, indices) -> torch.Tensor:
        """Unmasked blocks, int64, shape (len(indices), block_size)."""
        size = self.content
        rows = [np.asarray(self.tokens[i * size : (i + 1) * size]) for i in indices]
        body = torch.from_numpy(np.stack(rows).astype(np.int64))
        cls = torch.full((len(rows), 1), self.spec.cls_id, dtype=torch.long)
        sep = torch.full((len(rows), 1), self.spec.sep_id, dtype=torch.long)
        return torch.cat([cls, body, sep], dim=1)

    def batch(self, indices, *, step: int = 0, first_row: int = 0):
        """Masked inputs and labels of the blocks ``indices``, which are rows ``first_row...``
        of the global batch of ``step``."""
        seeds = [
            mask_seed(self.seed, self.phase, self.stream, step, first_row + r)
            for r in range(len(indices))
        ]
        return mask_tokens(
            self.blocks(indices), self.spec, seeds, self.probability, self.whole_word
        )
