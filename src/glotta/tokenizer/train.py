"""Train a tokenizer and save it as a Hugging Face folder that ``AutoTokenizer`` loads.

Four kinds (``TokenizerConfig.kind``), or an existing tokenizer (``TokenizerConfig.pretrained``):

- ``bpe``: byte-level BPE as GPT-2 (HF ``tokenizers``): every byte is in the vocabulary, so no
  text is ever unknown. Special tokens: eos first (id 0), then pad (if distinct), then
  ``special_tokens``; bos = unk = eos, as in GPT-2.
- ``unigram``: SentencePiece Unigram with byte fallback, trained by ``sentencepiece`` and converted
  to ``tokenizers`` (see :mod:`glotta.tokenizer.unigram`). Ids: eos 0, unk 1, pad 2 (if a distinct
  ``pad_token`` is set), ``special_tokens``, "\\n", 256 byte pieces, learned pieces.
- ``wordpiece`` (masked LM, BERT): WordPiece with "##" continuations after BERT's normalizer
  (cased, no accent stripping, every CJK ideograph a word of its own as in mBERT) and
  pre-tokenizer (split at whitespace and punctuation). Ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3,
  [MASK] 4, then ``special_tokens``. [SEP] ends documents in the shards.
- ``roberta-bpe`` (masked LM, RoBERTa): byte-level BPE as ``bpe`` with RoBERTa's specials: <s> 0,
  <pad> 1, </s> 2, <unk> 3, <mask> 4 (which, as in RoBERTa, swallows the space before it).
  </s> ends documents.
- ``pretrained``: an existing fast tokenizer is copied (for continued pretraining of
  ``model.init_from``); a BERT tokenizer without an eos token gets eos = [SEP].

``bpe`` and ``unigram`` never add special tokens; the masked-LM kinds wrap an encoded text as
``[CLS] text [SEP]`` / ``<s> text </s>`` (what ``fill-mask`` expects). The pack stage encodes with
``add_special_tokens=False`` and puts eos after every document.

Training uses a uniform reservoir sample of at most ``max_training_texts`` documents, so memory
is bounded by the cap, not by the corpus.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from glotta.config import TokenizerConfig
from glotta.errors import GlottaError
from glotta.rundir import write_json_atomic
from glotta.tokenizer.unigram import NEWLINE, sentencepiece_to_tokenizer, train_sentencepiece

T = TypeVar("T")

SENTENCEPIECE_FILE = "sentencepiece.model"  # the sentencepiece model a unigram tokenizer came from
TRAINING_STATS_FILE = "stats.json"


# HF tokenizers' trainers pre-tokenize a whole text at once and keep every split with its
# offsets: one 50 MB line took 7.4 GB. Pieces of at most this many characters, cut at a space or
# line break where there is one, bound that (word counts change only for words cut by a piece
# border, which in spaced scripts never happens).
TRAINING_PIECE_CHARS = 100_000


def training_pieces(texts: Iterable[str], max_chars: int | None = None) -> Iterator[str]:
    """Texts for the tokenizer trainer, long ones cut into pieces of at most ``max_chars``."""
    limit = max_chars or TRAINING_PIECE_CHARS
    for text in texts:
        start = 0
        while len(text) - start > limit:
            end = start + limit
            cut = max(
                text.rfind(" ", start + limit // 2, end), text.rfind("\n", start + limit // 2, end)
            )
            end = cut + 1 if cut > 0 else end
            yield text[start:end]
            start = end
        yield text[start:] if start else text


def reservoir_sample(items: Iterable[T], k: int, seed: int) -> tuple[list[T], int]:
    """A uniform random sample of ``k`` items (all of them when fewer) and how many were seen.

    Algorithm R: one pass, memory of ``k`` items. ``k <= 0`` keeps everything.
    """
    sample: list[T] = []
    if k <= 0:
        sample = list(items)
        return sample, len(sample)
    rng = random.Random(seed)
    seen = 0
    for seen, item in enumerate(items, start=1):
        if seen <= k:
            sample.append(item)
        else:
            j = rng.randrange(seen)
            if j < k:
                sample[j] = item
    return sample, seen


# The masked-LM kinds use their model family's special tokens, in the family's id order.
MLM_SPECIALS = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "roberta-bpe": {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"},
}


def special_tokens(cfg: TokenizerConfig) -> dict[str, Any]:
    """Roles of the special tokens: eos, pad, unk, bos (cls, sep, mask) and the extra ones."""
    if cfg.kind in MLM_SPECIALS:
        roles: dict[str, Any] = dict(MLM_SPECIALS[cfg.kind])
        # The separator ends documents in the shards; RoBERTa calls <s> and </s> bos and eos.
        roles["eos"] = roles["sep"]
        roles["bos"] = roles["cls"] if cfg.kind == "roberta-bpe" else None
        roles["order"] = list(MLM_SPECIALS[cfg.kind].values())  # id order
        roles["extra"] = [t for t in dict.fromkeys(cfg.special_tokens) if t not in roles["order"]]
        return roles
    eos = cfg.eos_token
    pad = cfg.pad_token or eos
    unk = cfg.unk_token if cfg.kind == "unigram" else eos  # byte-level BPE never needs one
    reserved = {eos, pad, unk}
    extra = [t for t in dict.fromkeys(cfg.special_tokens) if t not in reserved]
    return {"eos": eos, "bos": eos, "pad": pad, "unk": unk, "extra": extra}


def check_config(cfg: TokenizerConfig) -> None:
    """Reject settings that cannot work, naming the key, before any training."""
    if cfg.trim_vocab and not cfg.pretrained:
        raise GlottaError(
            "tokenizer.trim_vocab trims an existing vocabulary: set tokenizer.pretrained (e.g. "
            '"bert-base-multilingual-cased")'
        )
    if cfg.trim_min_count < 1:
        raise GlottaError(f"tokenizer.trim_min_count = {cfg.trim_min_count} must be at least 1")
    if cfg.pretrained:
        return  # nothing is trained; loading says what is wrong with the folder
    if cfg.kind not in ("bpe", "unigram", *MLM_SPECIALS):
        raise GlottaError(
            f"tokenizer.kind = {cfg.kind!r}: use 'bpe', 'unigram', 'wordpiece' or 'roberta-bpe'"
        )
    if cfg.kind in MLM_SPECIALS:
        if any(not t for t in cfg.special_tokens):
            raise GlottaError("tokenizer.special_tokens must not contain an empty string")
        roles = special_tokens(cfg)
        n_special = len(roles["order"]) + len(roles["extra"])
        minimum = n_special + 1 + (256 if cfg.kind == "roberta-bpe" else 0)
        if cfg.vocab_size < minimum:
            raise GlottaError(
                f"tokenizer.vocab_size = {cfg.vocab_size} is too small for kind = {cfg.kind!r}: "
                f"it needs at least {minimum}"
            )
        return
    if not cfg.eos_token:
        raise GlottaError("tokenizer.eos_token must not be empty")
    if any(not t for t in cfg.special_tokens):
        raise GlottaError("tokenizer.special_tokens must not contain an empty string")
    if NEWLINE in (cfg.eos_token, cfg.pad_token, cfg.unk_token, *cfg.special_tokens):
        raise GlottaError('tokenizer: "\\n" cannot be a special token')
    if cfg.min_frequency < 0:
        raise GlottaError(f"tokenizer.min_frequency = {cfg.min_frequency} must not be negative")
    roles = special_tokens(cfg)
    n_special = 1 + (roles["pad"] != roles["eos"]) + len(roles["extra"])
    if cfg.kind == "bpe":
        minimum = 256 + n_special + 1
        if cfg.vocab_size < minimum:
            raise GlottaError(
                f"tokenizer.vocab_size = {cfg.vocab_size} is too small for byte-level BPE: 256 "
                f"byte tokens and {n_special} special tokens need at least {minimum}"
            )
        return
    if not cfg.unk_token:
        raise GlottaError("tokenizer.unk_token must not be empty for kind = 'unigram'")
    if cfg.unk_token in (cfg.eos_token, cfg.pad_token):
        raise GlottaError("tokenizer.unk_token must differ from eos_token and pad_token")
    if not 0 < cfg.character_coverage <= 1:
        raise GlottaError(
            f"tokenizer.character_coverage = {cfg.character_coverage} must be in (0, 1]"
        )
    minimum = 256 * cfg.byte_fallback + n_special + 2 + 1  # bytes, specials, unk, "\n", a piece
    if cfg.vocab_size < minimum:
        raise GlottaError(
            f"tokenizer.vocab_size = {cfg.vocab_size} is too small for a Unigram model with "
            f"byte fallback: it needs at least {minimum} (bytes, special tokens, characters)"
        )


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str], out_dir: Path) -> dict[str, Any]:
    """Train on (a reservoir sample of) ``texts`` and save a Hugging Face folder in ``out_dir``.

    Writes ``tokenizer.json``, ``tokenizer_config.json``, ``stats.json`` and, for unigram,
    ``sentencepiece.model``. Returns the statistics also written to ``stats.json``.
    """
    check_config(cfg)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    if cfg.pretrained:
        stats = copy_pretrained_tokenizer(cfg.pretrained, out_dir, started)
        if cfg.trim_vocab:
            from glotta.distill.trim_vocab import trim_copied_tokenizer

            stats.update(trim_copied_tokenizer(out_dir, texts, cfg.pretrained, cfg.trim_min_count))
            write_json_atomic(out_dir / TRAINING_STATS_FILE, stats)
        return stats
    sample, seen = reservoir_sample(texts, cfg.max_training_texts, cfg.seed)
    if not any(sample):
        raise GlottaError("tokenizer: no training text (the train split is empty)")
    roles = special_tokens(cfg)
    if cfg.kind == "bpe":
        tokenizer, sp_model = _train_bpe(cfg, sample, roles), None
    elif cfg.kind == "wordpiece":
        tokenizer, sp_model = _train_wordpiece(cfg, sample, roles), None
    elif cfg.kind == "roberta-bpe":
        tokenizer, sp_model = _train_roberta_bpe(cfg, sample, roles), None
    else:
        sp_model = train_sentencepiece(
            sample,
            vocab_size=cfg.vocab_size,
            eos_token=roles["eos"],
            unk_token=roles["unk"],
            pad_token=roles["pad"] if roles["pad"] != roles["eos"] else None,
            control_symbols=roles["extra"],
            character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback,
            add_dummy_prefix=cfg.add_dummy_prefix,
        )
        tokenizer = sentencepiece_to_tokenizer(sp_model)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_hf_folder(tokenizer, roles, out_dir)
    sp_path = out_dir / SENTENCEPIECE_FILE
    if sp_model is None:
        sp_path.unlink(missing_ok=True)  # left by an earlier unigram run
    else:
        sp_path.write_bytes(sp_model)

    stats = {
        "kind": cfg.kind,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "requested_vocab_size": cfg.vocab_size,
        "training_texts": len(sample),
        "training_texts_seen": seen,
        "training_characters": sum(len(t) for t in sample),
        "eos_token": roles["eos"],
        "eos_id": tokenizer.token_to_id(roles["eos"]),
        "pad_token": roles["pad"],
        "pad_id": tokenizer.token_to_id(roles["pad"]),
        "unk_token": roles["unk"],
        "unk_id": tokenizer.token_to_id(roles["unk"]),
        "special_tokens": roles["extra"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if "mask" in roles:
        stats["mask_token"] = roles["mask"]
        stats["mask_id"] = tokenizer.token_to_id(roles["mask"])
    write_json_atomic(out_dir / TRAINING_STATS_FILE, stats)
    return stats


def _train_wordpiece(cfg: TokenizerConfig, texts: list[str], roles: dict[str, Any]) -> Tokenizer:
    """BERT's WordPiece: cased, CJK ideographs split apart (as mBERT), '##' continuations."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=roles["unk"], continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[*roles["order"], *roles["extra"]],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_pieces(texts), trainer)
    cls, sep = roles["cls"], roles["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    return tokenizer


def _train_roberta_bpe(cfg: TokenizerConfig, texts: list[str], roles: dict[str, Any]) -> Tokenizer:
    """GPT-2's byte-level BPE with RoBERTa's special tokens and ``<s> ... </s>`` wrapping."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[*roles["order"], *roles["extra"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_pieces(texts), trainer)
    # As RoBERTa: "a <mask>" encodes as "a" + <mask>, so the mask stands for "Ġword".
    tokenizer.add_special_tokens([AddedToken(roles["mask"], lstrip=True, special=True)])
    cls, sep = roles["cls"], roles["sep"]
    tokenizer.post_processor = processors.RobertaProcessing(
        (sep, tokenizer.token_to_id(sep)),
        (cls, tokenizer.token_to_id(cls)),
        trim_offsets=False,
        add_prefix_space=False,
    )
    return tokenizer


def copy_pretrained_tokenizer(spec: str, out_dir: Path, started: float) -> dict[str, Any]:
    """Save an existing fast tokenizer into ``out_dir`` (for continued pretraining)."""
    from transformers import AutoTokenizer  # slow import; only needed here

    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise GlottaError(f"tokenizer.pretrained: cannot load {spec!r}: {exc}") from None
    if not hf.is_fast:
        raise GlottaError(f"tokenizer.pretrained: {spec!r} has no fast tokenizer (tokenizer.json)")
    if hf.eos_token is None:
        if hf.sep_token is None:
            raise GlottaError(
                f"tokenizer.pretrained: {spec!r} has neither an eos nor a sep token to put "
                "between documents"
            )
        hf.eos_token = hf.sep_token  # BERT: [SEP] separates documents
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    (out_dir / SENTENCEPIECE_FILE).unlink(missing_ok=True)
    stats: dict[str, Any] = {
        "kind": "pretrained",
        "pretrained": spec,
        "vocab_size": len(hf),
        "requested_vocab_size": len(hf),
        "training_texts": 0,
        "training_texts_seen": 0,
        "training_characters": 0,
        "special_tokens": [],
    }
    for role in ("eos", "pad", "unk", "mask"):
        token = getattr(hf, f"{role}_token")
        stats[f"{role}_token"] = token
        stats[f"{role}_id"] = hf.convert_tokens_to_ids(token) if token is not None else None
    stats["seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(out_dir / TRAINING_STATS_FILE, stats)
    return stats


def _train_bpe(cfg: TokenizerConfig, texts: list[str], roles: dict[str, Any]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # Offsets only (as GPT-2's tokenizer.json): adds no BOS/EOS.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = list(dict.fromkeys([roles["eos"], roles["pad"], *roles["extra"]]))
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_pieces(texts), trainer)
    return tokenizer


def save_hf_folder(tokenizer: Tokenizer, roles: dict[str, Any], out_dir: Path) -> None:
    """``save_pretrained`` through transformers, so the folder is what ``AutoTokenizer`` expects."""
    from transformers import PreTrainedTokenizerFast  # slow import; only needed here

    mlm = {}
    if "mask" in roles:  # masked-LM kinds; RoBERTa's mask swallows the space before it
        mask = AddedToken(roles["mask"], lstrip=roles["mask"] == "<mask>", special=True)
        mlm = {"cls_token": roles["cls"], "sep_token": roles["sep"], "mask_token": mask}
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=roles["eos"],
        bos_token=roles["bos"],
        unk_token=roles["unk"],
        pad_token=roles["pad"],
        additional_special_tokens=roles["extra"] or None,
        clean_up_tokenization_spaces=False,  # decode must give back the text exactly
        **mlm,
    )
    hf.save_pretrained(str(out_dir))
    # transformers 5 writes the names TokenizersBackend and extra_special_tokens (a list); the
    # older names load in transformers 4.x and 5.x alike, so an exported model works in both.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.pop("extra_special_tokens", None)
    if extra:
        config["additional_special_tokens"] = extra
    write_json_atomic(config_path, config)
