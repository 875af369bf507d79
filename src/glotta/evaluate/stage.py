"""Evaluation entry points: the ``eval`` stage of a run, and ``glotta eval --model DIR --text FILE``.

The stage scores the latest checkpoint on the held-out test split (documents exactly as the corpus
stage wrote them) next to a unigram baseline fitted on the train shard, and writes
RUN_DIR/eval/results.json. Standalone evaluation compares any number of HF folders on a text file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from glotta.tokenizer.shards import open_shard
from tokenizers import Tokenizer

from glotta.config import EvalConfig
from glotta.documents import read_documents
from glotta.errors import GlottaError
from glotta.evaluate.perplexity import Score, score_token_documents, unigram_baseline
from glotta.models import eos_id_of, load_causal_lm, load_tokenizer
from glotta.rundir import (
    RunDir,
    begin_stage,
    is_complete,
    latest_checkpoint,
    mark_complete,
    stage_fingerprint,
)


def encode_documents(
    tokenizer: Tokenizer, texts: Iterator[str], batch: int = 256
) -> Iterator[tuple[list[int], int]]:
    """(token ids, UTF-8 bytes) per document, encoding in batches (Rust threads)."""
    chunk: list[str] = []

    def emit(chunk: list[str]):
        for text, encoding in zip(
            chunk, tokenizer.encode_batch(chunk, add_special_tokens=False), strict=True
        ):
            yield encoding.ids, len(text.encode("utf-8"))

    for text in texts:
        chunk.append(text)
        if len(chunk) == batch:
            yield from emit(chunk)
            chunk = []
    yield from emit(chunk)


def read_text_documents(path: Path) -> Iterator[str]:
    """Documents of an evaluation file: JSONL from the corpus stage, else blank-line paragraphs."""
    if not path.is_file():
        raise GlottaError(f"evaluation text {path} does not exist")
    if path.suffix == ".jsonl":
        yield from read_documents(path)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GlottaError(f"{path} is not UTF-8 ({exc}); convert it first") from None
    for paragraph in text.replace("\r\n", "\n").split("\n\n"):
        if paragraph.strip():
            yield paragraph.strip("\n")


def score_model(
    model, tokenizer: Tokenizer, texts: Iterator[str], cfg: EvalConfig, eos_id: int
) -> Score:
    context = model.config.n_positions if hasattr(model.config, "n_positions") else 1024
    stride = cfg.stride or max(1, context // 2)
    return score_token_documents(
        model,
        encode_documents(tokenizer, texts),
        eos_id,
        context,
        min(stride, context),
        cfg.batch_size,
        next(model.parameters()).device,
    )


def format_table(rows: list[dict]) -> str:
    """A plain-text table of evaluation rows (name, perplexity, bits per byte, tokens, bytes)."""
    header = f"{'model':<28} {'perplexity':>12} {'bits/byte':>10} {'tokens':>10} {'bytes':>11}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['name'][:28]:<28} {row['perplexity']:>12.2f} {row['bits_per_byte']:>10.4f} "
            f"{row['tokens']:>10,} {row['bytes']:>11,}"
        )
    return "\n".join(lines)


def run_eval(cfg: EvalConfig, run_dir: RunDir) -> dict:
    """Stage entry: score the latest checkpoint and the unigram baseline on a held-out split."""
    if not is_complete(run_dir.train):
        raise GlottaError(f"no finished training in {run_dir.train}; run `glotta train` first")
    checkpoint = latest_checkpoint(run_dir.checkpoints)
    if checkpoint is None:
        raise GlottaError(f"no checkpoint in {run_dir.checkpoints}")
    begin_stage(run_dir.eval)
    split_path = run_dir.corpus / f"{cfg.split}.jsonl"
    tokenizer = load_tokenizer(run_dir.tokenizer)
    model = load_causal_lm(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    eos_id = eos_id_of(tokenizer, model)
    rows = []
    model_score = score_model(model, tokenizer, read_documents(split_path), cfg, eos_id)
    if model_score.documents == 0:
        raise GlottaError(f"{split_path} is empty; raise corpus.{cfg.split}_fraction or add text")
    rows.append({"name": f"glotta ({checkpoint.name})", "kind": "model", **model_score.as_dict()})
    if cfg.unigram_baseline:
        train_tokens = open_shard(run_dir.shards / "train.bin")
        baseline = unigram_baseline(
            train_tokens,
            model.config.vocab_size,
            encode_documents(tokenizer, read_documents(split_path)),
        )
        rows.append({"name": "unigram baseline", "kind": "baseline", **baseline.as_dict()})
    results = {"split": cfg.split, "checkpoint": str(checkpoint), "rows": rows}
    (run_dir.eval / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nheld-out evaluation on the {cfg.split} split ({model_score.documents} documents)")
    print(format_table(rows), flush=True)
    mark_complete(run_dir.eval, "eval", stage_fingerprint(cfg, run_dir.train), {"rows": rows})
    return results


def evaluate_folders(
    model_dirs: list[str], text_file: Path, cfg: EvalConfig, tokenizer_dir: str | None = None
) -> list[dict]:
    """``glotta eval --model A --model B --text FILE``: one row per model on the same documents."""
    rows = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for model_dir in model_dirs:
        tokenizer = load_tokenizer(tokenizer_dir or model_dir)
        model = load_causal_lm(model_dir, device)
        score = score_model(
            model, tokenizer, read_text_documents(text_file), cfg, eos_id_of(tokenizer, model)
        )
        if score.documents == 0:
            raise GlottaError(f"{text_file} holds no text to evaluate")
        rows.append({"name": str(model_dir), "kind": "model", **score.as_dict()})
    return rows
