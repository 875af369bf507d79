"""Evaluation entry points: the ``eval`` stage of a run, and ``glotta eval --model DIR --text FILE``.

The stage scores the latest checkpoint on the held-out test split (documents exactly as the corpus
stage wrote them) next to a unigram baseline fitted on the train shard, and writes
RUN_DIR/eval/results.json. Standalone evaluation compares any number of HF folders on a text file.
A masked LM (BERT/RoBERTa) is scored on its masked tokens instead (:mod:`glotta.evaluate.masked`):
on the packed test shard, in blocks of the trained length, with fixed masks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer

from glotta.config import EvalConfig
from glotta.device import resolve_device
from glotta.documents import read_documents
from glotta.errors import GlottaError
from glotta.evaluate.perplexity import Score, score_token_documents, unigram_baseline
from glotta.models import (
    context_length,
    eos_id_of,
    has_masked_lm_head,
    is_masked_lm,
    load_causal_lm,
    load_masked_lm,
    load_tokenizer,
)
from glotta.rundir import (
    RunDir,
    begin_stage,
    is_complete,
    latest_checkpoint,
    mark_complete,
    stage_fingerprint,
    write_json_atomic,
)
from glotta.tokenizer.shards import open_shard


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
    context = context_length(model)
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
    """A plain-text table of evaluation rows (name, perplexity, bits per byte, tokens, bytes);
    masked-LM rows get a table of their own (:func:`format_masked_table`)."""
    masked = [row for row in rows if "masked_tokens" in row]
    if masked:
        causal = [row for row in rows if "masked_tokens" not in row]
        return "\n\n".join(
            [*([format_table(causal)] if causal else []), format_masked_table(masked)]
        )
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
    info_path = run_dir.train / "distill.json"  # written by the distill stage
    distill_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if distill_info.get("kind") == "encoder":
        return _run_encoder_distill_eval(cfg, run_dir, checkpoint, distill_info)
    if is_masked_lm(checkpoint):
        return _run_masked_eval(cfg, run_dir, checkpoint)
    split_path = run_dir.corpus / f"{cfg.split}.jsonl"
    tokenizer = load_tokenizer(run_dir.tokenizer)
    model = load_causal_lm(checkpoint, resolve_device())
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
    print(f"\nheld-out evaluation on the {cfg.split} split ({model_score.documents} documents)")
    print(format_table(rows), flush=True)
    return _finish(cfg, run_dir, results, {"rows": rows})


def _finish(cfg: EvalConfig, run_dir: RunDir, results: dict, summary: dict) -> dict:
    """Write RUN_DIR/eval/results.json atomically, then the stage's completion marker."""
    write_json_atomic(run_dir.eval / "results.json", results)
    mark_complete(run_dir.eval, "eval", stage_fingerprint(cfg, run_dir.train), summary)
    return results


def _trained_block_size(run_dir: RunDir, model) -> int:
    """The block size of the last training phase, else all the positions of the model."""
    path = run_dir.train / "train_config.json"
    if path.is_file():
        train = json.loads(path.read_text()).get("train", {})
        sizes = [train.get("block_size")]
        sizes += [p.get("block_size") for p in train.get("phases") or [] if p.get("block_size")]
        if sizes[-1]:
            return int(sizes[-1])
    return context_length(model)


def _run_masked_eval(cfg: EvalConfig, run_dir: RunDir, checkpoint: Path) -> dict:
    """The eval stage for a masked LM: masked-token loss on the packed split, and a baseline."""
    device = resolve_device()
    model = load_masked_lm(checkpoint, device)
    data = _masked_eval_data(cfg, run_dir, model)
    rows = _masked_rows(cfg, run_dir, [(f"glotta ({checkpoint.name})", model)], data, device)
    results = {
        "split": cfg.split,
        "checkpoint": str(checkpoint),
        "objective": "mlm",
        "block_size": data.block_size,
        "mlm_probability": data.probability,
        "rows": rows,
    }
    print(f"\nheld-out masked-token evaluation on the {cfg.split} shard ({data.num_blocks} blocks)")
    print(format_masked_table(rows), flush=True)
    return _finish(cfg, run_dir, results, {"rows": rows})


def _masked_eval_data(cfg: EvalConfig, run_dir: RunDir, model):
    """The held-out split's blocks of the trained length, with the fixed evaluation masks."""
    from transformers import AutoTokenizer

    from glotta.evaluate.masked import eval_blocks
    from glotta.masking import MaskingSpec

    spec = MaskingSpec.from_tokenizer(AutoTokenizer.from_pretrained(str(run_dir.tokenizer)))
    block_size = _trained_block_size(run_dir, model)
    data = eval_blocks(run_dir.shards / f"{cfg.split}.bin", block_size, spec)
    if data.num_blocks == 0:
        raise GlottaError(
            f"the {cfg.split} shard holds less than one block of {block_size} tokens; raise "
            f"corpus.{cfg.split}_fraction or add text"
        )
    return data


def _masked_rows(cfg: EvalConfig, run_dir: RunDir, models: list, data, device) -> list[dict]:
    """Masked-token loss of each (name, model), then the unigram baseline on the same masks."""
    from glotta.evaluate.masked import masked_lm_eval, masked_unigram_baseline

    rows = [
        {
            "name": name,
            "kind": "model",
            **masked_lm_eval(model, data, cfg.batch_size, device).as_dict(),
        }
        for name, model in models
    ]
    if cfg.unigram_baseline:
        baseline = masked_unigram_baseline(
            open_shard(run_dir.shards / "train.bin"), models[0][1].config.vocab_size, data
        )
        rows.append({"name": "unigram baseline", "kind": "baseline", **baseline.as_dict()})
    return rows


def _run_encoder_distill_eval(
    cfg: EvalConfig, run_dir: RunDir, checkpoint: Path, info: dict
) -> dict:
    """The eval stage of an encoder distillation: how closely the student's hidden states track
    the teacher's on the held-out split, next to the student's starting point; and, when the
    student has a masked-LM head, masked-token loss of student and teacher."""
    from transformers import AutoModel

    from glotta.distill.encoder import cut_student, load_run_teacher
    from glotta.evaluate.agreement import format_agreement_table, hidden_state_agreement

    device = resolve_device()
    config = info["config"]
    teacher = load_run_teacher(config["teacher"], run_dir.tokenizer).to(device)
    student = AutoModel.from_pretrained(str(checkpoint)).to(device)
    data = _masked_eval_data(cfg, run_dir, student)
    layer_map = info["layer_map"]
    candidates = [(f"student ({checkpoint.name})", student)]
    if config["student_layers"]:
        start = cut_student(teacher, config["student_layers"]).to(device)
        candidates.append((f"start: teacher layers {config['student_layers']}", start))
    agreement = [
        {
            "name": name,
            **hidden_state_agreement(model, teacher, data, layer_map, cfg.batch_size, device),
        }
        for name, model in candidates
    ]
    print(f"\nhidden states vs the teacher's on the {cfg.split} shard ({data.num_blocks} blocks)")
    print(format_agreement_table(agreement), flush=True)
    rows = []
    if has_masked_lm_head(student.config) and has_masked_lm_head(teacher.config):
        masked = [
            (f"student ({checkpoint.name})", load_masked_lm(checkpoint, device)),
            ("teacher", teacher),
        ]
        rows = _masked_rows(cfg, run_dir, masked, data, device)
        print(format_masked_table(rows), flush=True)
    results = {
        "split": cfg.split,
        "checkpoint": str(checkpoint),
        "objective": "distill-encoder",
        "teacher": config["teacher"],
        "block_size": data.block_size,
        "agreement": agreement,
        "rows": rows,
    }
    summary = {"rows": rows, "last_layer_cosine": agreement[0]["last_layer_cosine"]}
    return _finish(cfg, run_dir, results, summary)


def format_masked_table(rows: list[dict]) -> str:
    """A plain-text table of masked-LM rows (name, masked-token loss and perplexity, counts)."""
    header = f"{'model':<28} {'masked loss':>12} {'perplexity':>12} {'masked':>10} {'tokens':>10}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['name'][:28]:<28} {row['loss']:>12.4f} {row['perplexity']:>12.2f} "
            f"{row['masked_tokens']:>10,} {row['tokens']:>10,}"
        )
    return "\n".join(lines)


def _evaluate_masked_folder(
    model_dir: str, text_file: Path, cfg: EvalConfig, tokenizer_dir: str | None, device: str
) -> dict:
    """One masked LM on a text file: documents joined by the separator, blocks of its positions."""
    from transformers import AutoTokenizer

    from glotta.evaluate.masked import encode_stream, eval_blocks, masked_lm_eval
    from glotta.masking import MaskingSpec

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
    model = load_masked_lm(model_dir, device)
    spec = MaskingSpec.from_tokenizer(tokenizer)
    stream = encode_stream(tokenizer, read_text_documents(text_file), spec.sep_id)
    block_size = min(512, context_length(model))
    data = eval_blocks(stream, min(block_size, max(3, len(stream) + 2)), spec)
    score = masked_lm_eval(model, data, cfg.batch_size, device)
    if score.blocks == 0:
        raise GlottaError(f"{text_file} holds no text to evaluate")
    return {"name": str(model_dir), "kind": "model", "objective": "mlm", **score.as_dict()}


def evaluate_folders(
    model_dirs: list[str], text_file: Path, cfg: EvalConfig, tokenizer_dir: str | None = None
) -> list[dict]:
    """``glotta eval --model A --model B --text FILE``: one row per model on the same documents.

    A masked LM gets masked-token loss and perplexity (no bits per byte).
    """
    rows = []
    device = resolve_device()
    for model_dir in model_dirs:
        if is_masked_lm(model_dir):
            rows.append(_evaluate_masked_folder(model_dir, text_file, cfg, tokenizer_dir, device))
            continue
        tokenizer = load_tokenizer(tokenizer_dir or model_dir)
        model = load_causal_lm(model_dir, device)
        score = score_model(
            model, tokenizer, read_text_documents(text_file), cfg, eos_id_of(tokenizer, model)
        )
        if score.documents == 0:
            raise GlottaError(f"{text_file} holds no text to evaluate")
        rows.append({"name": str(model_dir), "kind": "model", **score.as_dict()})
    return rows
