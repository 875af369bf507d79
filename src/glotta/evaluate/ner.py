"""NER fine-tuning and evaluation: ``glotta eval ner``.

Any encoder folder that ``AutoModelForTokenClassification`` loads is fine-tuned on the training
sentences of a CoNLL column file (a new classification head; a checkpoint without head, such as a
plain ``BertModel``, works) and scored on the test sentences with entity-level strict F1 (see
:mod:`glotta.evaluate.ner_data`). Once per seed: results are the mean ± standard deviation.

Words are handed to the fast tokenizer as words (``is_split_into_words=True``); the first subword
of a word carries its label, the other subwords are ignored by the loss (label -100), and the
prediction for a word is the one at its first subword. Sentences longer than ``max_length``
subwords are truncated; how many were, and how many test words thereby got no prediction (they
count as 'O'), is reported, never silent.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glotta.config import NerConfig, TrainConfig
from glotta.device import resolve_device
from glotta.errors import GlottaError
from glotta.evaluate.ner_data import Sentence, entity_spans, load_ner_data, ner_scores
from glotta.models import context_length
from glotta.rundir import (
    RunDir,
    begin_stage,
    is_complete,
    latest_checkpoint,
    mark_complete,
    stage_fingerprint,
    write_json_atomic,
)
from glotta.train.optim import build_optimizer, build_scheduler

IGNORE = -100  # label of special tokens, padding and non-first subwords: no loss


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Subword alignment


def align_labels(
    word_ids: Sequence[int | None], word_labels: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Per-subword labels (the first subword of each word gets the word's label, every other
    position -100) and, per word, the position of its first subword (-1 if it has none)."""
    labels = [IGNORE] * len(word_ids)
    first = [-1] * len(word_labels)
    for position, word in enumerate(word_ids):
        if word is not None and first[word] < 0:
            first[word] = position
            labels[position] = word_labels[word]
    return labels, first


@dataclass
class Encoded:
    """Sentences as subword ids, with labels aligned to the first subword of each word."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    first_subword: list[list[int]]  # per sentence and word: position, or -1 (no prediction)
    truncated_sentences: int = 0
    words_cut: int = 0  # words of truncated sentences that lost every subword
    words_without_subwords: int = 0  # words the tokenizer turned into nothing at all


def encode_sentences(
    tokenizer, sentences: Sequence[Sentence], label2id: dict[str, int], max_length: int
) -> Encoded:
    words = [s.words for s in sentences]
    full = tokenizer(words, is_split_into_words=True, truncation=False)
    cut = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    out = Encoded([], [], [])
    for i, sentence in enumerate(sentences):
        ids = cut["input_ids"][i]
        labels, first = align_labels(cut.word_ids(i), [label2id[t] for t in sentence.tags])
        out.input_ids.append(ids)
        out.labels.append(labels)
        out.first_subword.append(first)
        present = {w for w in full.word_ids(i) if w is not None}
        if len(full["input_ids"][i]) > len(ids):
            out.truncated_sentences += 1
            out.words_cut += sum(1 for w, p in enumerate(first) if p < 0 and w in present)
        out.words_without_subwords += len(sentence.words) - len(present)
    return out


def _batches(data: Encoded, order: Sequence[int], size: int, pad_id: int, device):
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        width = max(len(data.input_ids[r]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            n = len(data.input_ids[r])
            ids[k, :n] = torch.tensor(data.input_ids[r])
            labels[k, :n] = torch.tensor(data.labels[r])
            mask[k, :n] = 1
        yield rows, ids.to(device), mask.to(device), labels.to(device)


# ---------------------------------------------------------------------------------------------
# Models


def load_fast_tokenizer(folder: Path | str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise GlottaError(f"cannot load a tokenizer from {folder}: {exc}") from None
    if not tokenizer.is_fast:
        raise GlottaError(
            f"the tokenizer in {folder} is not a fast (Rust) tokenizer, which word-to-subword "
            "alignment needs; give a folder with tokenizer.json (ner.tokenizer)"
        )
    if getattr(tokenizer, "add_prefix_space", None) is False:  # GPT-2/RoBERTa classes refuse
        tokenizer = AutoTokenizer.from_pretrained(str(folder), add_prefix_space=True)  # words
    return tokenizer


def load_token_classifier(model_dir: Path | str, labels: list[str]):
    """The encoder with a new token-classification head for ``labels``."""
    from transformers import AutoModelForTokenClassification

    try:
        return AutoModelForTokenClassification.from_pretrained(
            str(model_dir),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a checkpoint with another head gets a new one
            dtype=torch.float32,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise GlottaError(
            f"cannot load {model_dir} for token classification: {exc}".splitlines()[0]
        ) from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fine_tune(
    model, data: Encoded, cfg: NerConfig, seed: int, pad_id: int, log: Callable = _log
) -> float:
    """Train ``model`` in place (AdamW, linear warmup and decay); returns the last epoch's loss."""
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(data.input_ids) / cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    schedule = TrainConfig(
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        adam_beta2=0.999,  # the usual fine-tuning setting (pretraining uses 0.95)
        warmup_steps=round(cfg.warmup_fraction * total),
        decay="linear",
        min_lr_ratio=0.0,
    )
    optimizer = build_optimizer(model, schedule)
    scheduler = build_scheduler(optimizer, total, schedule)
    order_rng = torch.Generator().manual_seed(seed)
    model.train()
    epoch_loss = float("nan")
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(data.input_ids), generator=order_rng).tolist()
        losses = []
        for _, ids, mask, labels in _batches(data, order, cfg.batch_size, pad_id, device):
            if not (labels != IGNORE).any():
                continue
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        epoch_loss = sum(losses) / max(1, len(losses))
        log(f"  seed {seed} epoch {epoch + 1}/{cfg.epochs}: loss {epoch_loss:.4f}")
    return epoch_loss


@torch.no_grad()
def predict_tags(
    model, data: Encoded, id2label: dict[int, str], batch_size: int, pad_id: int
) -> list[list[str]]:
    """One tag per word: the argmax at its first subword, 'O' where it has none."""
    device = next(model.parameters()).device
    model.eval()
    tags: list[list[str]] = [[] for _ in data.input_ids]
    order = list(range(len(data.input_ids)))
    for rows, ids, mask, _ in _batches(data, order, batch_size, pad_id, device):
        best = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu().tolist()
        for k, r in enumerate(rows):
            tags[r] = [id2label[best[k][p]] if p >= 0 else "O" for p in data.first_subword[r]]
    return tags


# ---------------------------------------------------------------------------------------------
# The whole evaluation


def mean_std(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values themselves."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": list(values),
    }


def summarize(runs: list[dict]) -> dict:
    """Mean ± std over seeds of the micro/macro scores, and per-type means."""
    scores = [r["scores"] for r in runs]
    summary: dict = {
        f"{avg}_{m}": mean_std([s[avg][m] for s in scores])
        for avg in ("micro", "macro")
        for m in ("precision", "recall", "f1")
    }
    types = sorted({t for s in scores for t in s["per_type"]})
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    per_type = {}
    for kind in types:
        rows = [s["per_type"].get(kind, empty) for s in scores]
        per_type[kind] = {
            "precision": statistics.fmean(r["precision"] for r in rows),
            "recall": statistics.fmean(r["recall"] for r in rows),
            "f1": statistics.fmean(r["f1"] for r in rows),
            "f1_std": mean_std([r["f1"] for r in rows])["std"],
            "support": max(r["support"] for r in rows),
        }
    summary["per_type"] = per_type
    return summary


def run_model_folders(run_dir: RunDir) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) of a run: its export, else its latest checkpoint."""
    if is_complete(run_dir.export):
        return run_dir.export, run_dir.export
    checkpoint = latest_checkpoint(run_dir.checkpoints)
    if checkpoint is None:
        raise GlottaError(
            f"no exported model or checkpoint in {run_dir.root}; train one (`glotta run`) or "
            "give --model DIR"
        )
    return checkpoint, run_dir.tokenizer


def run_ner(
    cfg: NerConfig, model_dir: Path | str, tokenizer_dir: Path | str | None = None, log=_log
) -> dict:
    """Fine-tune ``model_dir`` once per seed on the training sentences, score the test sentences."""
    started = time.perf_counter()
    if not cfg.seeds:
        raise GlottaError("ner.seeds is empty; give at least one seed, e.g. [0, 1, 2]")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise GlottaError("ner.epochs and ner.batch_size must be at least 1")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise GlottaError(f"{model_dir} is no Hugging Face model folder (no config.json)")
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else model_dir
    train, test, scheme = load_ner_data(cfg)
    if not any(entity_spans(s.tags, scheme) for s in test):
        raise GlottaError(f"the NER test set ({len(test)} sentences) holds no {scheme} entity")
    labels = ["O"] + sorted({t for s in train + test for t in s.tags} - {"O"})
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = load_fast_tokenizer(tokenizer_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = resolve_device(cfg.device, "ner.device")

    runs = []
    length_note = ""
    for seed in cfg.seeds:
        seed_started = time.perf_counter()
        seed_everything(seed)  # the new head's initialisation depends on it
        model = load_token_classifier(model_dir, labels).to(device)
        max_length = min(cfg.max_length, context_length(model))
        if not runs:  # the same for every seed
            if max_length < cfg.max_length:
                length_note = f"max_length lowered to the model's {max_length} positions"
                log(f"ner: {length_note}")
            train_data = encode_sentences(tokenizer, train, label2id, max_length)
            test_data = encode_sentences(tokenizer, test, label2id, max_length)
            truncation = {
                "max_length": max_length,
                "train_sentences_truncated": train_data.truncated_sentences,
                "test_sentences_truncated": test_data.truncated_sentences,
                "test_words_cut": test_data.words_cut,
                "test_words_without_subwords": test_data.words_without_subwords,
            }
            for name, data, total in (("train", train_data, train), ("test", test_data, test)):
                if data.truncated_sentences:
                    log(
                        f"ner: warning: {data.truncated_sentences} of {len(total)} {name} "
                        f"sentences are longer than max_length={max_length} subwords and were "
                        f"truncated ({data.words_cut} words cut"
                        + (", predicted as 'O')" if name == "test" else ", not trained on)")
                    )
            log(
                f"ner: {len(train)} train / {len(test)} test sentences, scheme {scheme}, "
                f"{len(labels)} labels, model {model_dir}, device {device}"
            )
        loss = fine_tune(model, train_data, cfg, seed, pad_id, log)
        predicted = predict_tags(model, test_data, dict(enumerate(labels)), cfg.batch_size, pad_id)
        scores = ner_scores([s.tags for s in test], predicted, scheme)
        seconds = time.perf_counter() - seed_started
        log(
            f"ner: seed {seed}: micro F1 {scores['micro']['f1']:.4f}, macro F1 "
            f"{scores['macro']['f1']:.4f} ({seconds:.1f} s)"
        )
        runs.append({"seed": seed, "final_train_loss": loss, "seconds": seconds, "scores": scores})
        del model

    gold_entities = runs[0]["scores"]["micro"]["support"]
    return {
        "task": "ner",
        "model": str(model_dir),
        "tokenizer": str(tokenizer_dir),
        "train_file": cfg.train_file,
        "test_file": cfg.test_file or f"{cfg.train_file} (last {cfg.test_sentences} sentences)",
        "scheme": scheme,
        "train_sentences": len(train),
        "test_sentences": len(test),
        "test_entities": gold_entities,
        "labels": labels,
        "device": str(device),
        "truncation": truncation,
        "notes": [length_note] if length_note else [],
        "config": dataclasses.asdict(cfg),
        "summary": summarize(runs),
        "seeds": runs,
        "seconds": time.perf_counter() - started,
    }


NER_RESULTS = "ner.json"  # in RUN_DIR/eval, where `glotta export` reads it


def run_ner_stage(cfg: NerConfig, run_dir: RunDir) -> dict:
    """Stage entry (`glotta run` with ner.train_file set): fine-tune the run's latest checkpoint
    (or ner.model) for named entities; results to RUN_DIR/eval/ner.json, marker in RUN_DIR/ner."""
    if cfg.model:
        model_dir, tokenizer_dir = Path(cfg.model), cfg.tokenizer or None
    else:
        checkpoint = latest_checkpoint(run_dir.checkpoints)
        if checkpoint is None:
            raise GlottaError(f"no checkpoint in {run_dir.checkpoints}; train a model first")
        model_dir, tokenizer_dir = checkpoint, cfg.tokenizer or run_dir.tokenizer
    begin_stage(run_dir.ner)
    result = run_ner(cfg, model_dir, tokenizer_dir)
    run_dir.eval.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir.eval / NER_RESULTS, result)
    print(format_ner_table(result), flush=True)
    summary = {"micro_f1": result["summary"]["micro_f1"]}
    mark_complete(run_dir.ner, "ner", stage_fingerprint(cfg, run_dir.train), summary)
    return result


def format_ner_table(result: dict) -> str:
    """Per-type precision/recall/F1/support and micro/macro, as mean (± std of F1) over seeds."""
    summary, seeds = result["summary"], len(result["seeds"])
    lines = [
        f"NER on {result['test_file']}: {result['test_sentences']} sentences, "
        f"{result['test_entities']} entities, scheme {result['scheme']} (strict)",
        f"model {result['model']}; {seeds} seed(s), mean"
        + (" ± sample std of F1" if seeds > 1 else ""),
        "",
    ]
    header = f"{'type':<12} {'precision':>9} {'recall':>9} {'F1':>17} {'support':>8}"
    lines += [header, "-" * len(header)]

    def row(name, p, r, f, f_std, support):
        f1 = f"{f:.4f} ± {f_std:.4f}" if seeds > 1 else f"{f:.4f}"
        return f"{name[:12]:<12} {p:>9.4f} {r:>9.4f} {f1:>17} {support:>8}"

    for kind, s in summary["per_type"].items():
        lines.append(row(kind, s["precision"], s["recall"], s["f1"], s["f1_std"], s["support"]))
    lines.append("-" * len(header))
    for avg in ("micro", "macro"):
        lines.append(
            row(
                avg,
                summary[f"{avg}_precision"]["mean"],
                summary[f"{avg}_recall"]["mean"],
                summary[f"{avg}_f1"]["mean"],
                summary[f"{avg}_f1"]["std"],
                result["test_entities"],
            )
        )
    truncation = result["truncation"]
    if truncation["test_sentences_truncated"] or truncation["train_sentences_truncated"]:
        lines.append(
            f"\ntruncated at {truncation['max_length']} subwords: "
            f"{truncation['train_sentences_truncated']} train and "
            f"{truncation['test_sentences_truncated']} test sentences "
            f"({truncation['test_words_cut']} test words predicted as 'O')"
        )
    lines.append(f"\n{result['seconds']:.0f} s in all on {result['device']}")
    return "\n".join(lines)
