"""Export stage: a Hugging Face folder that plain ``transformers`` loads, with its model card.

    RUN_DIR/export/
      config.json  model.safetensors  generation_config.json
      tokenizer.json  tokenizer_config.json  ...
      README.md  loss_curve.png
      model-f16.gguf ...   ([export] gguf: llama.cpp files, see glotta.export.gguf_export)

The folder is assembled under a temporary name and renamed into place, so a failed export never
leaves a folder that looks publishable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    GenerationConfig,
)

from glotta.config import ExportConfig, GenerateConfig, RecipeInfo
from glotta.diskwrite import writing
from glotta.errors import GlottaError
from glotta.export.card import baseline_warning, plot_loss_curve, read_metrics, render_card
from glotta.models import has_masked_lm_head, is_masked_lm
from glotta.rundir import (
    MARKER,
    RunDir,
    begin_stage,
    is_complete,
    latest_checkpoint,
    mark_complete,
    stage_fingerprint,
)

# Files of the tokenizer stage that are bookkeeping, not part of the tokenizer.
_NOT_TOKENIZER_FILES = {MARKER, "stats.json", "vocab_trim.json"}


@dataclasses.dataclass(frozen=True)
class ExportStage:
    """What the export stage's fingerprint covers: the card and generation defaults depend on all three."""

    export: ExportConfig
    info: RecipeInfo
    generate: GenerateConfig


def generation_config(gen: GenerateConfig, eos_id: int) -> GenerationConfig:
    """Sampling defaults for ``model.generate`` / ``pipeline`` (the recipe's generate section)."""
    return GenerationConfig(
        do_sample=gen.temperature > 0,
        temperature=gen.temperature if gen.temperature > 0 else None,
        top_k=gen.top_k if gen.top_k > 0 else None,
        top_p=gen.top_p if gen.top_p < 1.0 else None,
        repetition_penalty=gen.repetition_penalty,
        max_new_tokens=gen.max_new_tokens,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def _read_results(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def export_upstream(run_dir: RunDir) -> list[Path]:
    """The stages the card reads: train and eval, and the NER stage when it ran."""
    return [run_dir.train, run_dir.eval, *([run_dir.ner] if is_complete(run_dir.ner) else [])]


def run_export(cfg: ExportConfig, info: RecipeInfo, gen: GenerateConfig, run_dir: RunDir) -> Path:
    """Stage entry: write the HF folder and model card; returns its path."""
    checkpoint = latest_checkpoint(run_dir.checkpoints)
    if checkpoint is None or not is_complete(run_dir.train):
        raise GlottaError(f"no finished training in {run_dir.train}; run `glotta train` first")
    out = Path(cfg.out) if cfg.out else run_dir.export
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    begin_stage(out, published=True)  # the marker beside the folder goes first
    partial.mkdir()

    if is_masked_lm(checkpoint):  # BERT/RoBERTa: a fill-mask model, no generation defaults
        # An encoder without a head (distilled from a sentence encoder) stays one: loading it as
        # a masked LM would add a random head.
        headless = not has_masked_lm_head(AutoConfig.from_pretrained(str(checkpoint)))
        loader = AutoModel if headless else AutoModelForMaskedLM
        model = loader.from_pretrained(str(checkpoint), dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
        model.generation_config = generation_config(gen, model.config.eos_token_id)
    with writing(partial / "model.safetensors"):
        model.save_pretrained(partial, safe_serialization=True)
    for path in run_dir.tokenizer.iterdir():
        if path.is_file() and path.name not in _NOT_TOKENIZER_FILES:
            with writing(partial / path.name):
                shutil.copy2(path, partial / path.name)

    gguf_files, gguf_note = [], ""
    if cfg.gguf:
        from glotta.documents import read_documents
        from glotta.export.gguf_export import card_paragraph, export_gguf

        # Held-out text measures what llama.cpp's tokenizer cannot represent (Unigram).
        valid = run_dir.corpus / "valid.jsonl"
        heldout = read_documents(valid) if valid.is_file() else ()
        paths, gguf_note = export_gguf(partial, cfg.gguf, info.name, heldout)
        gguf_files = [path.name for path in paths]
    has_curve = plot_loss_curve(
        read_metrics(run_dir.train / "metrics.jsonl"),
        partial / "loss_curve.png",
        f"{info.name}: loss",
    )
    card = render_card(
        {
            "corpus_stats": run_dir.corpus / "stats.json",
            "tokenizer_stats": run_dir.tokenizer / "stats.json",
            "train_config": run_dir.train / "train_config.json",
            "train_summary": run_dir.train / "summary.json",
            "train_history": run_dir.train / "history.jsonl",
            "eval_results": run_dir.eval / "results.json",
            "ner_results": run_dir.eval / "ner.json",
        },
        info,
        [*cfg.tags, "gguf"] if gguf_files else cfg.tags,
        gen.prompt or info.widget_text,
        "loss_curve.png" if has_curve else "",
        card_paragraph(gguf_files, gguf_note, gen.prompt or info.widget_text) if gguf_files else "",
    )
    with writing(partial / "README.md"):
        (partial / "README.md").write_text(card, encoding="utf-8")
    warning = baseline_warning(_read_results(run_dir.eval / "results.json"))
    if warning:
        print(f"glotta: warning: {warning}", file=sys.stderr, flush=True)
    # Ordinary modes (safetensors writes 0600): the folder is meant to be shared and uploaded.
    umask = os.umask(0)
    os.umask(umask)
    for path in partial.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    mark_complete(
        out,
        "export",
        stage_fingerprint(ExportStage(cfg, info, gen), *export_upstream(run_dir)),
        {"checkpoint": str(checkpoint)},
        published=True,
    )
    return out
