"""The tokenizer stage: train a tokenizer on the corpus train split.

    glotta run RECIPE            # runs this stage after the corpus stage, into RUN_DIR/tokenizer/
    glotta tokenizer RECIPE --set tokenizer.kind=unigram --set tokenizer.vocab_size=16000

Reads ``RUN_DIR/corpus/train.jsonl`` (streaming; a reservoir sample of at most
``tokenizer.max_training_texts`` documents is held in memory), writes a Hugging Face tokenizer
folder (``tokenizer.json``, ``tokenizer_config.json``, and ``sentencepiece.model`` for unigram),
``stats.json`` (training statistics and fertility on the valid split) and, last, ``COMPLETE.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from glotta.config import CorpusConfig, TokenizerConfig
from glotta.corpus.dedup import assign_split
from glotta.corpus.process import process_stream
from glotta.corpus.readers import iter_documents
from glotta.corpus.stage import check_config as corpus_check_config
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
from glotta.tokenizer.files import read_tokenizer_file
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

    def fertility_text() -> tuple[str, Iterable[str]]:
        valid = run_dir.corpus / "valid.jsonl"
        if valid.is_file() and valid.stat().st_size > 0:
            return "valid", read_documents(valid)
        return "train", itertools.islice(read_documents(train), FERTILITY_TRAIN_SAMPLE)

    stats = _train_and_measure(cfg, read_documents(train), fertility_text, out_dir)
    mark_complete(out_dir, "tokenizer", fp, _summary(stats))  # last: the stage is done
    return stats


def train_tokenizer_on_files(
    cfg: TokenizerConfig, corpus_cfg: CorpusConfig, paths: list[Path], out_dir: Path
) -> dict[str, Any]:
    """Standalone: ``glotta tokenizer --input FILE... --out DIR``, without a run directory.

    The files are read by the corpus readers (text, JSONL, Parquet, TSV, compressed; the
    recipe's ``[corpus]`` section says how) and cleaned and filtered as the corpus stage does
    (markup, normalization, length, language and quality filters; no dedup). Documents that the corpus split would put in
    "valid" are held out to measure fertility, as in a run. The folder is written under a
    temporary name and renamed when complete, so a failure leaves nothing that looks finished.
    """
    check_config(cfg)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "tokenizer.json").is_file():
            raise GlottaError(
                f"{out_dir} exists and is not a tokenizer folder; choose another --out"
            )
    source_cfg = dataclasses.replace(
        corpus_cfg, inputs=[str(p) for p in paths], dedup=False, near_dedup=False
    )
    corpus_check_config(source_cfg)
    held_out: list[str] = []
    first_train: list[str] = []  # fertility falls back to these when nothing was held out
    skipped: Counter[str] = Counter()

    def training_texts():
        for doc in process_stream(source_cfg, iter_documents(source_cfg)):
            if doc.drop:
                skipped[doc.drop] += 1
                continue
            text = doc.text
            split = assign_split(
                text, source_cfg.split_salt, source_cfg.valid_fraction, source_cfg.test_fraction
            )
            if split == "train":
                if len(first_train) < FERTILITY_TRAIN_SAMPLE // 10:
                    first_train.append(text)
                yield text
            elif split == "valid" and len(held_out) < FERTILITY_TRAIN_SAMPLE:
                held_out.append(text)

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # training_texts() fills held_out and first_train as training consumes it.
    stats = _train_and_measure(
        cfg,
        training_texts(),
        lambda: ("valid", held_out) if held_out else ("train", first_train),
        partial,
    )
    stats["skipped_documents"] = dict(skipped)
    write_json_atomic(partial / TRAINING_STATS_FILE, stats)
    if skipped:
        reasons = ", ".join(f"{k} {v:,}" for k, v in skipped.most_common())
        print(f"tokenizer: skipped {sum(skipped.values()):,} documents: {reasons}", file=sys.stderr)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    print(f"tokenizer: wrote {out_dir}", file=sys.stderr)
    return stats


def _train_and_measure(
    cfg: TokenizerConfig,
    texts: Iterable[str],
    fertility_text: Callable[[], tuple[str, Iterable[str]]],
    out_dir: Path,
) -> dict[str, Any]:
    """Train, save the folder, add fertility to stats.json and print it.

    ``fertility_text()`` is called after training and names the split it returns (held-out
    text where there is some).
    """
    stats = train_tokenizer(cfg, texts, out_dir)
    # Fertility counts every token (a pretrained file may truncate).
    tokenizer = read_tokenizer_file(out_dir / "tokenizer.json", "run `glotta tokenizer` first")
    fertility_split, fertility_texts = fertility_text()
    stats["fertility"] = {"split": fertility_split, **fertility(tokenizer, fertility_texts)}
    write_json_atomic(out_dir / TRAINING_STATS_FILE, stats)
    print(format_summary(stats), file=sys.stderr)
    return stats


def _summary(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": stats["kind"],
        "vocab_size": stats["vocab_size"],
        "eos_id": stats["eos_id"],
        "training_texts": stats["training_texts"],
        "tokens_per_character": stats["fertility"]["tokens_per_character"],
    }


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
