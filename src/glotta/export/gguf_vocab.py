"""A glotta tokenizer as llama.cpp's tokenizer metadata, exact where llama.cpp can be exact.

Which llama.cpp tokenizer runs each kind of ``tokenizer.json``:

- byte-level BPE (``bpe``; a ``pretrained`` GPT-2-style tokenizer): ``tokenizer.ggml.model =
  "gpt2"`` with ``tokenizer.ggml.pre = "gpt-2"``. glotta's ``ByteLevel`` pre-tokenizer splits
  with GPT-2's pattern (:data:`glotta.tokenizer.byte_level.GPT2_PATTERN`), and "gpt-2" is the
  llama.cpp pre-tokenizer whose split is that pattern. The vocabulary (byte-mapped strings) and
  the merges go over unchanged, so the BPE is the same.
- SentencePiece Unigram (``unigram``): ``"t5"``, llama.cpp's Unigram (Viterbi over piece
  scores) with the dummy prefix as ``add_space_prefix``. Exact on every text whose characters
  are all in the vocabulary, except text made only of spaces (the dummy "▁" is added by
  ``tokenizers`` but not by llama.cpp, which adds it before the first non-space character).
  llama.cpp's Unigram has no byte fallback: a character the vocabulary lacks becomes one
  ``<unk>`` (a run of them one ``<unk>``) where ``tokenizers`` writes its UTF-8 bytes, which
  the export measures and reports (:func:`unknown_character_share`).
- WordPiece and RoBERTa's BPE are masked-LM tokenizers; llama.cpp's WordPiece lower-cases and
  strips accents unconditionally, which glotta's cased one does not, so they are refused.

Token types: added special tokens are CONTROL (split out of text only with special parsing,
like ``tokenizers`` does for its special added tokens), other added tokens USER_DEFINED, the
Unigram byte pieces BYTE, its unknown piece UNKNOWN. The special ids and ``add_bos`` /
``add_eos`` are written explicitly: glotta's causal tokenizers add no special tokens.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path

from glotta.errors import GlottaError
from glotta.tokenizer.byte_level import GPT2_PATTERN

SPACE = "▁"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf.TokenType
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


@dataclasses.dataclass
class GGUFVocab:
    model: str  # tokenizer.ggml.model
    pre: str | None  # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    special_ids: dict[str, int]  # bos, eos, unk, pad -> id (absent = none)
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool | None
    byte_fallback_lost: bool  # True: unseen characters become <unk> in llama.cpp


def read_vocab(folder: Path, n_vocab: int) -> GGUFVocab:
    """The tokenizer in ``folder`` (tokenizer.json + tokenizer_config.json) for a model with
    ``n_vocab`` embedding rows (rows past the tokenizer's tokens get UNUSED placeholders)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GlottaError(f"GGUF export needs {path}: only fast (tokenizer.json) tokenizers")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model_type = (spec.get("model") or {}).get("type")
    if model_type == "BPE":
        vocab = _byte_level_bpe(spec)
    elif model_type == "Unigram":
        vocab = _unigram(spec)
    else:
        raise GlottaError(
            f"GGUF export: a {model_type} tokenizer ({path}) has no exact llama.cpp "
            "counterpart (llama.cpp's WordPiece always lower-cases and strips accents); "
            "byte-level BPE and Unigram tokenizers are exported"
        )
    vocab.special_ids = _special_ids(folder, spec, vocab.tokens)
    if len(vocab.tokens) > n_vocab:
        raise GlottaError(
            f"GGUF export: the tokenizer has {len(vocab.tokens)} tokens but the model only "
            f"{n_vocab} embeddings"
        )
    for i in range(len(vocab.tokens), n_vocab):  # llama.cpp needs one token per embedding row
        vocab.tokens.append(f"[PAD{i}]")
        vocab.types.append(UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(-1e4)
    return vocab


def _ordered_vocab(spec: dict) -> list[str]:
    """Token strings by id: the model's vocabulary and the added tokens."""
    model = spec["model"]
    by_id: dict[int, str] = {}
    if model["type"] == "Unigram":
        by_id = {i: piece for i, (piece, _score) in enumerate(model["vocab"])}
    else:
        by_id = {i: token for token, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
    if sorted(by_id) != list(range(len(by_id))):
        raise GlottaError("GGUF export: the tokenizer's ids are not contiguous from 0")
    return [by_id[i] for i in range(len(by_id))]


def _added_types(spec: dict) -> dict[int, int]:
    return {
        a["id"]: CONTROL if a.get("special") else USER_DEFINED for a in spec.get("added_tokens", [])
    }


def _byte_level_bpe(spec: dict) -> GGUFVocab:
    pre = spec.get("pre_tokenizer") or {}
    model = spec["model"]
    exact = (
        spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
        and not model.get("dropout")
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
    )
    if not exact:
        raise GlottaError(
            "GGUF export: this BPE tokenizer is not byte-level BPE with GPT-2's split "
            f"({GPT2_PATTERN}), no normalizer and no prefix space, so llama.cpp's gpt2 "
            "tokenizer would not give its ids"
        )
    added_lstrip = [a["content"] for a in spec.get("added_tokens", []) if a.get("lstrip")]
    if added_lstrip:
        # RoBERTa's <mask> swallows the space before it; llama.cpp does this only for models
        # it recognises by name.
        raise GlottaError(
            f"GGUF export: added tokens that strip spaces ({', '.join(added_lstrip)}) have no "
            "llama.cpp counterpart"
        )
    tokens = _ordered_vocab(spec)
    added = _added_types(spec)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return GGUFVocab(
        model="gpt2",
        pre="gpt-2",
        tokens=tokens,
        types=[added.get(i, NORMAL) for i in range(len(tokens))],
        scores=None,
        merges=merges,
        special_ids={},
        add_bos=False,
        add_eos=False,
        add_space_prefix=False,
        byte_fallback_lost=False,
    )


def _unigram(spec: dict) -> GGUFVocab:
    model = spec["model"]
    steps = _normalizer_steps(spec.get("normalizer"))
    prefix = [{"type": "Prepend", "prepend": SPACE}]
    replace = [{"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]
    if steps not in (prefix + replace, replace):
        raise GlottaError(
            "GGUF export: only glotta's Unigram normalization (an optional dummy prefix, spaces "
            f"as {SPACE}) has an exact llama.cpp counterpart; this tokenizer normalizes with "
            f"{[s.get('type') for s in steps]}"
        )
    tokens = _ordered_vocab(spec)
    added = _added_types(spec)
    byte_fallback = bool(model.get("byte_fallback"))
    unk_id = model.get("unk_id")
    types, scores = [], []
    for i, token in enumerate(tokens):
        score = model["vocab"][i][1] if i < len(model["vocab"]) else 0.0
        if i == unk_id:
            kind = UNKNOWN
        elif i in added:
            kind = added[i]
        elif byte_fallback and _BYTE_PIECE.fullmatch(token):
            kind = BYTE  # llama.cpp never matches these in text, as SentencePiece
        else:
            # "\n" is a user-defined symbol in SentencePiece, and a pre-tokenizer split in
            # tokenizers; as a NORMAL piece that no other piece contains, llama.cpp's Viterbi
            # must cut around it too, and the dummy prefix stays once at the start of the text.
            kind = NORMAL
        types.append(kind)
        scores.append(float(score))
    return GGUFVocab(
        model="t5",
        pre=None,
        tokens=tokens,
        types=types,
        scores=scores,
        merges=None,
        special_ids={},
        add_bos=False,
        add_eos=False,
        add_space_prefix=steps[0]["type"] == "Prepend",
        byte_fallback_lost=byte_fallback,
    )


def _normalizer_steps(normalizer: dict | None) -> list[dict]:
    if normalizer is None:
        return []
    if normalizer.get("type") == "Sequence":
        return [step for n in normalizer["normalizers"] for step in _normalizer_steps(n)]
    return [normalizer]


def _special_ids(folder: Path, spec: dict, tokens: list[str]) -> dict[str, int]:
    """bos, eos, unk, pad ids from tokenizer_config.json (glotta's bpe: all four are eos)."""
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    index = {token: i for i, token in enumerate(tokens)}
    found = {}
    for role in ("bos", "eos", "unk", "pad"):
        value = config.get(f"{role}_token")
        if isinstance(value, dict):  # older tokenizer_config files store AddedToken dicts
            value = value.get("content")
        if value in index:
            found[role] = index[value]
    unk_id = spec["model"].get("unk_id")
    if "unk" not in found and isinstance(unk_id, int):
        found["unk"] = unk_id
    return found


def vocabulary_characters(vocab: GGUFVocab) -> set[str]:
    """The characters llama.cpp's Unigram can produce pieces for (its NORMAL and USER_DEFINED
    pieces, "▁" read as a space); any other character becomes <unk>."""
    chars = set()
    for token, kind in zip(vocab.tokens, vocab.types, strict=True):
        if kind in (NORMAL, USER_DEFINED):
            chars.update(token.replace(SPACE, " "))
    return chars


def unknown_character_share(
    vocab: GGUFVocab, texts: Iterable[str], max_chars: int = 20_000_000
) -> tuple[int, int]:
    """(characters llama.cpp turns into <unk>, all characters) over ``texts``, read up to about
    ``max_chars`` characters (a share is all the card needs; a whole split could be GBs)."""
    known = vocabulary_characters(vocab)
    unknown = total = 0
    for text in texts:
        total += len(text)
        unknown += sum(1 for c in text if c not in known)
        if total >= max_chars:
            break
    return unknown, total
