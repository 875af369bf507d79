"""``glotta compare``: a teacher, its distilled student and the same student trained from scratch.

    glotta compare --run-dir runs/student --scratch runs/scratch            # teacher from the run
    glotta compare --teacher T --model S --model S0 --text held_out.txt --json

Per model: parameters (as exported), inference speed (tokens per second of batch-1 greedy
generation with the key/value cache, glotta's own generation loop, median of three runs), and
held-out perplexity and bits per byte, scored exactly as `glotta eval` scores (same documents,
same sliding windows: :func:`glotta.evaluate.stage.score_model`). Retention is the teacher's
bits per byte divided by the model's, in percent: 100% = as good as the teacher on this text.
Bits per byte does not depend on the tokenizer, so the comparison stays fair even if the models
tokenize differently.

Models are HF folders or run directories (their export, else their latest checkpoint). With
``--run-dir`` the student is that run, the teacher the one its distillation recorded
(train/distill.json), the text its held-out split, and the table goes to RUN_DIR/eval/compare.json,
which `glotta export` puts on the model card.

Encoders (a distilled BERT-family student, ``train.objective = "mlm"``) are compared on what
they are for: named entities. Per model: parameters, inference speed (tokens per second of a
forward pass over batches of 8 x 128 tokens, median of three) and NER micro and macro F1 (mean
over the [ner] seeds; a run directory's RUN_DIR/eval/ner.json is reused when its settings are the
recipe's, anything else is fine-tuned here); retention is the model's micro F1 divided by the
teacher's, in percent.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from glotta.config import EvalConfig, GenerateConfig, NerConfig
from glotta.device import resolve_device
from glotta.documents import read_documents
from glotta.errors import GlottaError
from glotta.evaluate.stage import read_text_documents, score_model
from glotta.generate import generate_ids
from glotta.models import (
    context_length,
    count_parameters,
    eos_id_of,
    is_masked_lm,
    load_causal_lm,
    load_tokenizer,
)
from glotta.rundir import RunDir, is_complete, latest_checkpoint, write_json_atomic

COMPARE_FILE = "compare.json"  # in RUN_DIR/eval
DISTILL_INFO = "distill.json"  # in RUN_DIR/train, written by the distill stage


@dataclasses.dataclass(frozen=True)
class Candidate:
    role: str  # teacher, distilled, scratch, model
    name: str
    model_dir: str  # folder or hub id
    tokenizer_dir: Path | None  # None: the model folder's own tokenizer.json
    training_tokens: int | None = None


def resolve_model(path: str, role: str, tokenizer: Path | None = None) -> Candidate:
    """An HF folder (or hub id) as is; a run directory: its export, else its latest checkpoint."""
    folder = Path(path)
    run = RunDir(folder)
    tokens = None
    if (folder / "config.json").is_file():
        model_dir = folder
        for summary in (
            folder.parent / "train" / "summary.json",
            folder.parent.parent / "summary.json",
        ):
            if (
                summary.is_file()
            ):  # an export (RUN/export) or a checkpoint (RUN/train/checkpoints/X)
                tokens = json.loads(summary.read_text()).get("tokens_seen")
                break
    elif folder.is_dir():
        model_dir = run.export if is_complete(run.export) else latest_checkpoint(run.checkpoints)
        if model_dir is None:
            raise GlottaError(f"{folder} holds neither a model (config.json) nor a finished run")
        if (run.train / "summary.json").is_file():
            tokens = json.loads((run.train / "summary.json").read_text()).get("tokens_seen")
        if tokenizer is None and (run.tokenizer / "tokenizer.json").is_file():
            tokenizer = run.tokenizer
    else:
        model_dir = folder  # a hub id: from_pretrained finds it
    if (Path(model_dir) / "tokenizer.json").is_file():
        tokenizer = None
    return Candidate(role, path, str(model_dir), tokenizer, tokens)


def generation_speed(model, eos_id: int, new_tokens: int = 64, repeats: int = 3) -> float:
    """Tokens per second of batch-1 greedy generation (median of ``repeats``, after a warm-up)."""
    context = context_length(model)
    cfg = GenerateConfig(
        temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
        max_new_tokens=min(new_tokens, context - 1),
    )  # fmt: skip
    list(generate_ids(model, [eos_id], dataclasses.replace(cfg, max_new_tokens=4), None))
    seconds, produced = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        produced = len(list(generate_ids(model, [eos_id], cfg, None)))  # no eos: all new tokens
        seconds.append(time.perf_counter() - start)
    return produced / statistics.median(seconds)


def compare_models(
    candidates: list[Candidate],
    texts: Callable[[], Iterator[str]],
    cfg: EvalConfig,
    tokenizer_dir: Path | None = None,
    speed_tokens: int = 64,
) -> list[dict]:
    """One row per model; ``texts()`` yields the held-out documents afresh for each model."""
    device = resolve_device()
    rows = []
    for candidate in candidates:
        tokenizer_folder = candidate.tokenizer_dir or tokenizer_dir
        if (
            tokenizer_folder is None
            and not (Path(candidate.model_dir) / "tokenizer.json").is_file()
        ):
            raise GlottaError(
                f"{candidate.name} has no tokenizer.json; pass --tokenizer DIR (the shared one)"
            )
        tokenizer = load_tokenizer(tokenizer_folder or candidate.model_dir)
        model = load_causal_lm(candidate.model_dir, device)
        eos_id = eos_id_of(tokenizer, model)
        score = score_model(model, tokenizer, texts(), cfg, eos_id)
        if score.documents == 0:
            raise GlottaError("the comparison text holds no documents")
        rows.append(
            {
                "role": candidate.role,
                "name": candidate.name,
                "model": candidate.model_dir,
                "parameters": count_parameters(model),
                "training_tokens": candidate.training_tokens,
                "tokens_per_second": generation_speed(model, eos_id, speed_tokens),
                **score.as_dict(),
            }
        )
        del model
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    for row in rows:
        row["retention_percent"] = (
            100.0 * teacher["bits_per_byte"] / row["bits_per_byte"] if teacher else None
        )
        row["speedup"] = (
            row["tokens_per_second"] / teacher["tokens_per_second"] if teacher else None
        )
    return rows


def encoder_speed(model, batch: int = 8, length: int = 128, repeats: int = 3) -> float:
    """Tokens per second of a forward pass over ``batch`` x ``length`` tokens (median of three)."""
    device = next(model.parameters()).device
    length = min(length, context_length(model) - 2)  # room for [CLS] and [SEP]
    ids = torch.randint(5, model.config.vocab_size, (batch, length), device=device)
    seconds = []
    with torch.inference_mode():
        model(input_ids=ids)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids)
            seconds.append(time.perf_counter() - start)
    return batch * length / statistics.median(seconds)


def ner_of(candidate: Candidate, cfg: NerConfig) -> dict:
    """The candidate's NER summary: its run's eval/ner.json if made with ``cfg``, else a fine-tune."""
    from glotta.evaluate.ner import NER_RESULTS, run_ner

    for run in (Path(candidate.name), Path(candidate.name).parent):  # a run, or its export
        saved = run / "eval" / NER_RESULTS
        if saved.is_file():
            result = json.loads(saved.read_text())
            if result.get("config") == dataclasses.asdict(cfg):
                return result["summary"]
    return run_ner(cfg, candidate.model_dir, candidate.tokenizer_dir)["summary"]


def compare_encoders(candidates: list[Candidate], ner_cfg: NerConfig) -> list[dict]:
    """One row per encoder: parameters, forward speed, NER F1; retention against the teacher."""
    from transformers import AutoModel

    if not ner_cfg.train_file:
        raise GlottaError(
            "encoders are compared by NER F1: set ner.train_file (and ner.test_file or "
            "ner.test_sentences) in the recipe or with --set"
        )
    device = resolve_device()
    rows = []
    for candidate in candidates:
        model = AutoModel.from_pretrained(candidate.model_dir).to(device).eval()
        speed = encoder_speed(model)
        parameters = count_parameters(model)
        del model
        ner = ner_of(candidate, ner_cfg)
        rows.append(
            {
                "role": candidate.role,
                "name": candidate.name,
                "model": candidate.model_dir,
                "parameters": parameters,
                "training_tokens": candidate.training_tokens,
                "tokens_per_second": speed,
                "micro_f1": ner["micro_f1"],
                "macro_f1": ner["macro_f1"],
            }
        )
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    for row in rows:
        row["retention_percent"] = (
            f1_retention(row["micro_f1"]["mean"], teacher["micro_f1"]["mean"]) if teacher else None
        )
        row["speedup"] = (
            row["tokens_per_second"] / teacher["tokens_per_second"] if teacher else None
        )
    return rows


def f1_retention(f1: float, teacher_f1: float) -> float | None:
    """The model's F1 as a percentage of the teacher's; None when the teacher scored 0 (a ratio
    to nothing says nothing, and the table shows "-")."""
    return 100.0 * f1 / teacher_f1 if teacher_f1 else None


def format_comparison(rows: list[dict]) -> str:
    encoders = bool(rows) and "micro_f1" in rows[0]
    scores = (
        f"{'NER micro F1':>16} {'macro F1':>9}"
        if encoders
        else (f"{'perplexity':>11} {'bits/byte':>10}")
    )
    header = f"{'model':<30} {'role':<9} {'params':>8} {'tokens/s':>9} {scores} {'retention':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        retention = f"{r['retention_percent']:.1f}%" if r["retention_percent"] is not None else "-"
        if encoders:
            f1 = f"{r['micro_f1']['mean']:.4f} ± {r['micro_f1']['std']:.4f}"
            score = f"{f1:>16} {r['macro_f1']['mean']:>9.4f}"
        else:
            score = f"{r['perplexity']:>11.2f} {r['bits_per_byte']:>10.4f}"
        lines.append(
            f"{r['name'][-30:]:<30} {r['role']:<9} {r['parameters'] / 1e6:>7.2f}M "
            f"{r['tokens_per_second']:>9.1f} {score} {retention:>10}"
        )
    return "\n".join(lines)


def run_compare(
    cfg: EvalConfig,
    run_dir: RunDir | None = None,
    teacher: str | None = None,
    students: list[str] = (),
    scratch: list[str] = (),
    text: Path | None = None,
    tokenizer: Path | None = None,
    speed_tokens: int = 64,
    ner_cfg: NerConfig | None = None,
) -> dict:
    """Compare the teacher, the student(s) and the from-scratch model(s); see the module doc."""
    candidates: list[Candidate] = []
    if run_dir is not None:
        info_path = run_dir.train / DISTILL_INFO
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        teacher = teacher or info.get("teacher", {}).get("source")
        tokenizer = tokenizer or (run_dir.tokenizer if run_dir.tokenizer.is_dir() else None)
        if not students:
            students = [str(run_dir.root)]
    if not teacher:
        raise GlottaError("no teacher: pass --teacher DIR, or --run-dir of a distilled student")
    if not students and not scratch:
        raise GlottaError("nothing to compare with the teacher: pass --model DIR or --scratch DIR")
    candidates.append(resolve_model(teacher, "teacher", tokenizer))
    candidates += [resolve_model(s, "distilled", tokenizer) for s in students]
    candidates += [resolve_model(s, "scratch", tokenizer) for s in scratch]

    def texts() -> Iterator[str]:
        if text is not None:
            return read_text_documents(text)
        if run_dir is None:
            raise GlottaError("pass --text FILE (held-out text) or --run-dir")
        return read_documents(run_dir.corpus / f"{cfg.split}.jsonl")

    hardware = (
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'} "
        f"({torch.get_num_threads()} threads), median of 3"
    )
    if is_masked_lm(candidates[-1].model_dir):  # a student encoder: compare by NER F1
        ner_cfg = ner_cfg or NerConfig()
        result = {
            "text": f"NER test set {ner_cfg.test_file or ner_cfg.train_file}",
            "speed": f"forward passes over 8 x 128 tokens on {hardware}",
            "retention": "model NER micro F1 / teacher NER micro F1, in percent",
            "rows": compare_encoders(candidates, ner_cfg),
        }
    else:
        result = {
            "text": str(text) if text else f"held-out {cfg.split} split",
            "split": None if text else cfg.split,
            "speed": f"batch-1 greedy generation of {speed_tokens} tokens with the key/value "
            f"cache on {hardware}",
            "retention": "teacher bits per byte / model bits per byte, in percent",
            "rows": compare_models(candidates, texts, cfg, tokenizer, speed_tokens),
        }
    if run_dir is not None:
        run_dir.eval.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir.eval / COMPARE_FILE, result)
    return result
