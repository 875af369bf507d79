"""The tokenizer stage: train a tokenizer on the corpus train split.

    glotta run RECIPE            # runs this stage after the corpus stage, into RUN_DIR/tokenizer/
    glotta tokenizer RECIPE --set tokenizer.kind=unigram --set tokenizer.vocab_size=16000

Reads ``RUN_DIR/corpus/train.jsonl`` (streaming; a reservoir sample of at most
``tokenizer.max_training_texts`` documents is held in memory), writes a Hugging Face tokenizer
folder (``tokenizer.json``, ``tokenizer_config.json``, and ``sentencepiece.model`` for unigram),
``stats.json`` (training statistics and fertility on the valid split) and, last, ``COMPLETE.json``.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

from tokenizers import Tokenizer

from glotta.config import TokenizerConfig
from glotta.documents import read_documents
from glotta.errors import GlottaError
from glotta.rundir import (
    RunDir,
    begin_stage,
    is_complete,
    mark_complete,
    stage_fingerprint,
    write_json_atomic,
)
from glotta.tokenizer.fertility import fertility
from glotta.tokenizer.train import (
    SENTENCEPIECE_FILE,
    TRAINING_STATS_FILE,
    check_config,
    train_tokenizer,
)

OUTPUT_FILES = ("tokenizer.json", "tokenizer_config.json", SENTENCEPIECE_FILE, TRAINING_STATS_FILE)
# Fertility falls back to the train split when valid is empty; a sample of it is enough.
FERTILITY_TRAIN_SAMPLE = 10_000


def tokenizer_fingerprint(cfg: TokenizerConfig, run_dir: RunDir) -> str:
    """The tokenizer settings chained with the corpus stage's fingerprint."""
    return stage_fingerprint(cfg, run_dir.corpus)


def run_tokenizer(cfg: TokenizerConfig, run_dir: RunDir) -> dict[str, Any]:
    """Run the tokenizer stage; return the statistics also saved as ``tokenizer/stats.json``."""
    if not is_complete(run_dir.corpus):
        raise GlottaError(f"no finished corpus in {run_dir.corpus}; run `glotta corpus` first")
    train = run_dir.corpus / "train.jsonl"
    if not train.is_file():
        raise GlottaError(f"{train} does not exist; run `glotta corpus` again")
    check_config(cfg)
    fp = tokenizer_fingerprint(cfg, run_dir)
    out_dir = run_dir.tokenizer
    begin_stage(out_dir)
    # Outputs of an earlier run must not survive next to a failed one and look current.
    for name in OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)

    stats = train_tokenizer(cfg, read_documents(train), out_dir)
    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    valid = run_dir.corpus / "valid.jsonl"
    if valid.is_file() and valid.stat().st_size > 0:
        split, texts = "valid", read_documents(valid)
    else:
        split = "train"
        texts = itertools.islice(read_documents(train), FERTILITY_TRAIN_SAMPLE)
    stats["fertility"] = {"split": split, **fertility(tokenizer, texts)}
    write_json_atomic(out_dir / TRAINING_STATS_FILE, stats)
    print(format_summary(stats), file=sys.stderr)
    summary = {
        "kind": stats["kind"],
        "vocab_size": stats["vocab_size"],
        "eos_id": stats["eos_id"],
        "training_texts": stats["training_texts"],
        "tokens_per_character": stats["fertility"]["tokens_per_character"],
    }
    mark_complete(out_dir, "tokenizer", fp, summary)  # last: the stage is done
    return stats


def format_summary(stats: dict[str, Any]) -> str:
    f = stats["fertility"]

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    return "\n".join(
        [
            f"tokenizer: {stats['kind']} with {stats['vocab_size']:,} tokens (asked "
            f"{stats['requested_vocab_size']:,}), trained on {stats['training_texts']:,} of "
            f"{stats['training_texts_seen']:,} documents in {stats['seconds']:.1f} s",
            f"tokenizer: fertility on {f['split']} ({f['documents']:,} documents): "
            f"{num(f['tokens_per_character'])} tokens/character, {num(f['tokens_per_word'])} "
            f"tokens/word, {num(f['tokens_per_byte'])} tokens/byte",
        ]
    )
