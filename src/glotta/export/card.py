"""The model card: README.md with YAML front matter, filled from what the stages wrote.

The template (``model_card.md``) sits next to this code. Every number comes from a file in the
run directory: corpus/stats.json, tokenizer/stats.json, train/train_config.json, train/summary.json,
train/metrics.jsonl, eval/results.json and, after `glotta eval ner`, eval/ner.json.
A distilled student adds train/distill.json and, after `glotta compare`, eval/compare.json.
"""

from __future__ import annotations

import importlib.resources
import json
import platform
import string
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from glotta.config import RecipeInfo
from glotta.export.card_distill import agreement_section, distill_section
from glotta.export.card_tables import table
from glotta.models import card_shape, has_masked_lm_head


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(metrics: list[dict], out_png: Path, title: str) -> bool:
    """Training loss against tokens seen, with validation points; False when nothing was logged."""
    train = [(m["tokens_seen"], m["loss"]) for m in metrics if "loss" in m]
    valid = [(m["tokens_seen"], m["val_loss"]) for m in metrics if m.get("val_loss") is not None]
    if not train:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1.2)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="validation loss", markersize=4)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return True


def _front_matter(
    info: RecipeInfo,
    tags: list[str],
    results: dict,
    widget: str,
    masked: str = "",
    headless: bool = False,
    model_type: str = "gpt2",
) -> str:
    """YAML metadata; ``masked`` is the model type of a masked LM ('bert', 'roberta'), else '';
    ``headless``: an encoder without a masked-LM head (a distilled sentence encoder)."""
    rows = {row["kind"]: row for row in results.get("rows", [])}
    meta: dict[str, Any] = {
        "language": info.language or None,
        "license": info.license,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": [model_type, "causal-lm", *tags],
        "datasets": info.datasets or None,
    }
    if masked:  # the default export tag "text-generation" would mislabel a masked LM
        meta["pipeline_tag"] = "fill-mask"
        meta["tags"] = [masked, "masked-lm", *(t for t in tags if t != "text-generation")]
    if headless:
        meta["pipeline_tag"] = "feature-extraction"
        meta["tags"] = [masked, "encoder", *(t for t in tags if t != "text-generation")]
    if widget:
        meta["widget"] = [{"text": widget}]
    if "model" in rows:
        model = rows["model"]
        if masked:
            task = ("fill-mask", "Masked language modeling")
            metrics = [
                ("loss", "Masked-token loss", round(model["loss"], 4)),
                ("perplexity", "Masked-token perplexity", round(model["perplexity"], 3)),
            ]
        else:
            task = ("text-generation", "Causal language modeling")
            metrics = [
                ("perplexity", "Perplexity", round(model["perplexity"], 3)),
                ("bits_per_byte", "Bits per byte", round(model["bits_per_byte"], 4)),
            ]
        meta["model-index"] = _model_index(info, results, task, metrics)
    meta = {k: v for k, v in meta.items() if v is not None}
    return yaml.safe_dump(meta, allow_unicode=True, sort_keys=False).strip()


def _model_index(info, results: dict, task: tuple[str, str], metrics: list[tuple]) -> list:
    """The Hub's model-index metadata: one task, the held-out split, (type, name, value) metrics."""
    split = results.get("split", "test")
    return [
        {
            "name": info.name,
            "results": [
                {
                    "task": {"type": task[0], "name": task[1]},
                    "dataset": {
                        "type": info.datasets[0] if info.datasets else "text",
                        "name": f"held-out {split} split",
                        "split": split,
                    },
                    "metrics": [{"type": t, "name": n, "value": v} for t, n, v in metrics],
                }
            ],
        }
    ]


def _file_name(path: str) -> str:
    """An input as the card shows it: its file name, not the absolute path on the machine that
    trained the model (which says nothing to a reader and may say too much about its owner)."""
    if "://" in path and not path.startswith("pkg://"):
        return path
    return Path(path).name or path


def baseline_warning(results: dict) -> str | None:
    """A warning when the model's held-out loss is no better than the unigram baseline's."""
    rows = results.get("rows", [])
    model = next((r for r in rows if r.get("kind") == "model"), None)
    baseline = next((r for r in rows if r.get("kind") == "baseline"), None)
    if not model or not baseline or "loss" not in model or "loss" not in baseline:
        return None
    if model["loss"] < baseline["loss"]:
        return None
    return (
        f"this model does not beat the unigram baseline on the held-out {results.get('split', 'test')} "
        f"split (perplexity {model['perplexity']:.2f} vs {baseline['perplexity']:.2f}): it has "
        "learned no more than how often each token occurs; train longer or on more text"
    )


def _data_section(stats: dict) -> str:
    if not stats:
        return "No corpus statistics were recorded."
    splits = stats.get("splits", {})
    lines = [
        f"Read {stats.get('documents_in', 0):,} documents ({stats.get('bytes_in', 0):,} bytes of "
        f"UTF-8) from: {', '.join(f'`{_file_name(i)}`' for i in stats.get('inputs', [])) or 'the recipe inputs'}.",
        "",
        table(
            ["split", "documents", "bytes"],
            [
                [name, f"{s.get('documents', 0):,}", f"{s.get('bytes', 0):,}"]
                for name, s in splits.items()
            ],
        ),
        "",
        "Documents removed, by reason: "
        + (
            ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in stats.get("dropped", {}).items())
            or "none"
        )
        + ".",
    ]
    if stats.get("invalid_utf8_replaced"):
        lines.append(
            f"{stats['invalid_utf8_replaced']:,} documents had invalid UTF-8, replaced by U+FFFD."
        )
    cleaning = stats.get("config", {})
    if cleaning:
        lines.append(
            f"Cleaning: Unicode {cleaning.get('normalization')} normalization, control characters "
            f"removed, whitespace normalized, {cleaning.get('min_chars')}–"
            f"{cleaning.get('max_chars') or '∞'} characters per document, exact deduplication "
            f"{'on' if cleaning.get('dedup') else 'off'}; splits assigned by a content hash."
        )
    return "\n".join(lines)


def _tokenizer_section(stats: dict) -> str:
    if not stats:
        return "No tokenizer statistics were recorded."
    config = stats.get("config", {})
    kind = {
        "bpe": "Byte-level BPE (GPT-2 style)",
        "unigram": "SentencePiece Unigram with byte fallback",
        "wordpiece": "WordPiece (BERT style: [CLS] text [SEP], '##' continuations)",
        "roberta-bpe": "Byte-level BPE (RoBERTa style: <s> text </s>)",
    }
    lines = [
        f"{kind.get(stats.get('kind'), stats.get('kind', config.get('kind', '?')))}, vocabulary "
        f"{stats.get('vocab_size', config.get('vocab_size', '?')):,}, trained on "
        f"{stats.get('training_texts', '?'):,} documents of the train split.",
    ]
    if stats.get("pretrained"):
        lines = [
            f"The tokenizer of `{stats['pretrained']}`, vocabulary {stats.get('vocab_size'):,}."
        ]
    fert = stats.get("fertility", {})
    if fert:
        lines.append(
            f"Fertility on the valid split: {fert.get('tokens_per_character', float('nan')):.3f} tokens "
            f"per character, {fert.get('tokens_per_word', float('nan')):.3f} tokens per "
            "whitespace-separated word."
        )
    return " ".join(lines)


def _architecture_section(train_config: dict, summary: dict) -> str:
    mc = train_config.get("model_config", {})
    shape = card_shape(mc)  # each family names its sizes its own way
    extra = {"kv_heads": "key/value heads", "rope_theta": "RoPE base"}
    shown = [key for key in extra if shape.get(key) is not None]
    tied = mc.get("tie_word_embeddings", True)
    return (
        table(
            ["parameters", "layers", "hidden", "heads", *(extra[k] for k in shown), "context",
             "vocabulary"],
            [
                [
                    f"{summary.get('parameters', 0) / 1e6:.2f}M",
                    shape["layers"],
                    shape["width"],
                    shape["heads"],
                    *(f"{shape[k]:g}" for k in shown),
                    shape["context"],
                    mc.get("vocab_size"),
                ]
            ],
        )  # fmt: skip
        + f"\n\n`transformers.{(mc.get('architectures') or ['GPT2LMHeadModel'])[0]}`, "
        + ("weights tied between input and output embeddings." if tied else "separate input "
           "and output embeddings.")
    )  # fmt: skip


def _training_section(train_config: dict) -> str:
    t, plan = train_config.get("train", {}), train_config.get("plan", {})
    rows = [
        ["objective", t.get("objective")],
        *(
            [
                [
                    "masking",
                    f"{t.get('mlm_probability')} of the tokens chosen "
                    f"{'by whole words' if t.get('whole_word_masking') else 'one by one'}, "
                    "80% masked / 10% random / 10% unchanged, new masks every step",
                ]
            ]
            if t.get("objective") == "mlm"
            else []
        ),
        ["block size (tokens)", t.get("block_size")],
        [
            "global batch (sequences)",
            f"{plan.get('micro_batch_size', 0) * plan.get('accumulation', 0) * plan.get('world_size', 0)}"
            f" = {plan.get('micro_batch_size')} × {plan.get('accumulation')} accumulation × "
            f"{plan.get('world_size')} processes",
        ],
        ["optimizer steps", plan.get("total_steps")],
        [
            "optimizer",
            f"AdamW (β1 {t.get('adam_beta1')}, β2 {t.get('adam_beta2')}, ε "
            f"{t.get('adam_eps')}, weight decay {t.get('weight_decay')} on matrices only)",
        ],
        [
            "learning rate",
            f"{t.get('learning_rate')}, {t.get('warmup_steps')} warmup steps, "
            f"{t.get('decay')} decay to {t.get('min_lr_ratio')} × peak",
        ],
        ["gradient clipping", t.get("grad_clip")],
        # What ran, not the setting: 'auto' became bf16 autocast or fp32 on the hardware used.
        ["precision", train_config.get("precision_used") or t.get("precision")],
        ["seed", t.get("seed")],
    ]
    # Later phases (e.g. a longer context): one row each, from the plans the trainer wrote.
    for number, (phase, phase_plan) in enumerate(
        zip(t.get("phases") or [], train_config.get("phases", [])[1:], strict=False), start=2
    ):
        rows.append(
            [
                f"phase {number}",
                f"block size {phase.get('block_size') or t.get('block_size')}, "
                f"{phase_plan.get('total_steps')} steps, peak learning rate "
                f"{phase.get('learning_rate') or t.get('learning_rate')}",
            ]
        )
    return table(["setting", "value"], rows)


def _sessions_note(history_path: Path | None) -> str:
    """Resumed sessions and the settings changed at each (RUN_DIR/train/history.jsonl)."""
    if history_path is None or not Path(history_path).is_file():
        return ""
    notes = []
    for line in Path(history_path).read_text(encoding="utf-8").splitlines():
        try:
            session = json.loads(line)
        except ValueError:
            continue
        if not session.get("resumed_from"):
            notes = []  # a fresh start: earlier sessions trained other weights
            continue
        changes = ", ".join(
            f"{key.split('.', 1)[-1]} {old} → {new}"
            for key, (old, new) in session.get("changed", {}).items()
        )
        notes.append(
            f"resumed at step {session.get('step')}" + (f" ({changes})" if changes else "")
        )
    if not notes:
        return ""
    return "\n\nTraining was interrupted and resumed: " + "; ".join(notes) + "."


def _compute_section(train_config: dict, summary: dict) -> str:
    hours = summary.get("elapsed_seconds", 0) / 3600
    device = train_config.get("device", "cpu")
    hardware = device if device != "cpu" else f"CPU ({platform.processor() or platform.machine()})"
    return table(
        ["hardware", "processes", "wall time", "tokens seen"],
        [
            [
                hardware,
                summary.get("world_size", 1),
                f"{hours:.2f} h ({summary.get('elapsed_seconds', 0):.0f} s)",
                f"{summary.get('tokens_seen', 0):,}",
            ]
        ],
    )


def _results_section(results: dict) -> str:
    warning = baseline_warning(results)
    if warning:
        return f"> **Warning:** {warning}.\n\n" + _results_table(results)
    return _results_table(results)


def _results_table(results: dict) -> str:
    rows = results.get("rows", [])
    if not rows and not results.get("agreement"):
        return "The model was not evaluated."
    if results.get("objective") == "distill-encoder":
        return agreement_section(results) + (
            "\n\n" + _masked_results_section(results) if rows else ""
        )
    if results.get("objective") == "mlm":
        return _masked_results_section(results)
    return (
        f"On the held-out {results.get('split', 'test')} split:\n\n"
        + table(
            ["model", "perplexity", "bits per byte", "tokens", "bytes"],
            [
                [
                    r["name"],
                    f"{r['perplexity']:.2f}",
                    f"{r['bits_per_byte']:.4f}",
                    f"{r['tokens']:,}",
                    f"{r['bytes']:,}",
                ]
                for r in rows
            ],
        )
        + "\n\nPerplexity is exp(total negative log-likelihood / predicted tokens); bits per byte "
        "divides the total negative log-likelihood in bits by the UTF-8 bytes of the original "
        "text, so it compares models with different tokenizers. Documents longer than the context "
        "are scored with a sliding window. The unigram baseline predicts each token from its "
        "frequency in the train split alone."
    )


def _masked_results_section(results: dict) -> str:
    """Masked-token loss and perplexity (eval/results.json of a masked LM)."""
    return (
        f"On the held-out {results.get('split', 'test')} split, in blocks of "
        f"{results.get('block_size')} tokens with fixed masks:\n\n"
        + table(
            ["model", "masked-token loss", "masked-token perplexity", "masked tokens"],
            [
                [r["name"], f"{r['loss']:.4f}", f"{r['perplexity']:.2f}", f"{r['masked_tokens']:,}"]
                for r in results.get("rows", [])
            ],
        )
        + f"\n\n{results.get('mlm_probability', 0.15):.0%} of the tokens are chosen one by one "
        "(80% masked, 10% random, 10% unchanged) with a fixed seed, so every evaluation predicts "
        "the same positions; the loss is the mean negative log-likelihood of the chosen tokens and "
        "the perplexity its exponential. It is not comparable with a causal LM's perplexity (the "
        "model sees both sides of each token) nor across tokenizers. The unigram baseline predicts "
        "each chosen token from its frequency in the train split alone."
    )


def _usage(masked: str, widget: str, mask_token: str, headless: bool = False) -> str:
    """The 'How to use' snippet: fill-mask for a masked LM, hidden states for an encoder without
    a head, text generation otherwise."""
    if headless:
        return (
            "from transformers import AutoModel, AutoTokenizer\n\n"
            'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_HUB_ID")\n'
            'model = AutoModel.from_pretrained("PATH_OR_HUB_ID")\n'
            f"inputs = tokenizer({json.dumps(widget or 'Hello', ensure_ascii=False)}, "
            'return_tensors="pt")\n'
            "hidden_states = model(**inputs).last_hidden_state  # (1, tokens, width)"
        )
    if masked:
        text = widget if mask_token and mask_token in widget else f"{widget} {mask_token}".strip()
        return (
            "from transformers import pipeline\n\n"
            'fill = pipeline("fill-mask", model="PATH_OR_HUB_ID")\n'
            f"print(fill({json.dumps(text, ensure_ascii=False)}))"
        )
    return (
        "from transformers import pipeline\n\n"
        'generator = pipeline("text-generation", model="PATH_OR_HUB_ID")\n'
        f"print(generator({json.dumps(widget or '', ensure_ascii=False)}, max_new_tokens=40, "
        'do_sample=True)[0]["generated_text"])'
    )


def _ner_section(ner: dict) -> str:
    """Named-entity results of `glotta eval ner` (RUN_DIR/eval/ner.json), if it was run."""
    summary = ner.get("summary")
    if not summary:
        return ""
    cfg, seeds = ner.get("config", {}), len(ner.get("seeds", []))

    def f1(values: dict) -> str:
        return (
            f"{values['mean']:.3f} ± {values['std']:.3f}" if seeds > 1 else f"{values['mean']:.3f}"
        )

    rows = [
        [
            kind,
            f"{s['precision']:.3f}",
            f"{s['recall']:.3f}",
            f1({"mean": s["f1"], "std": s["f1_std"]}),
            s["support"],
        ]
        for kind, s in summary["per_type"].items()
    ]
    for avg in ("micro", "macro"):
        rows.append(
            [
                f"**{avg}**",
                f"{summary[f'{avg}_precision']['mean']:.3f}",
                f"{summary[f'{avg}_recall']['mean']:.3f}",
                f1(summary[f"{avg}_f1"]),
                ner.get("test_entities", ""),
            ]
        )
    return (
        "### Named-entity recognition\n\n"
        f"Fine-tuned with a new token-classification head on `{ner.get('train_file')}` "
        f"({ner.get('train_sentences')} sentences) for {cfg.get('epochs')} epochs (learning rate "
        f"{cfg.get('learning_rate')}, batch {cfg.get('batch_size')}) and tested on "
        f"`{ner.get('test_file')}` ({ner.get('test_sentences')} sentences, "
        f"{ner.get('test_entities')} entities, {ner.get('scheme')} tags). Entity-level strict "
        f"scores (as seqeval's strict mode), mean over {seeds} seed(s)"
        + (" ± sample standard deviation of F1" if seeds > 1 else "")
        + ":\n\n"
        + table(["type", "precision", "recall", "F1", "support"], rows)
    )


def render_card(
    run_dir_files: dict[str, Path],
    info: RecipeInfo,
    tags: list[str],
    widget: str,
    loss_curve: str,
    llama_cpp_section: str = "",
) -> str:
    """The model card; ``llama_cpp_section``: how to run the folder's GGUF files, if any."""
    corpus_stats = _read_json(run_dir_files["corpus_stats"])
    tokenizer_stats = _read_json(run_dir_files["tokenizer_stats"])
    train_config = _read_json(run_dir_files["train_config"])
    summary = _read_json(run_dir_files["train_summary"])
    results = _read_json(run_dir_files["eval_results"])
    ner = _read_json(run_dir_files["ner_results"]) if "ner_results" in run_dir_files else {}
    # Written by the distill stage and by `glotta compare`, next to the files above.
    distill = _read_json(Path(run_dir_files["train_summary"]).with_name("distill.json"))
    comparison = _read_json(Path(run_dir_files["eval_results"]).with_name("compare.json"))
    if distill:
        tags = [*tags, "distillation"]
    model_config = train_config.get("model_config", {})
    masked = (
        model_config.get("model_type", "")
        if train_config.get("train", {}).get("objective") == "mlm"
        else ""
    )
    headless = bool(masked) and not has_masked_lm_head(
        SimpleNamespace(architectures=model_config.get("architectures"))
    )
    init_from = train_config.get("model", {}).get("init_from")
    template = string.Template(
        importlib.resources.files("glotta.export").joinpath("model_card.md").read_text("utf-8")
    )
    limitations = (
        f"A {summary.get('parameters', 0) / 1e6:.1f}M-parameter model trained on "
        f"{summary.get('tokens_seen', 0):,} tokens: it produces fluent-looking but often wrong or "
        "incoherent text, reflects the biases of its training corpus, and is not suitable for "
        "factual or safety-relevant use without further evaluation."
    )
    if masked:
        limitations = (
            f"A {summary.get('parameters', 0) / 1e6:.1f}M-parameter masked language model trained "
            f"on {summary.get('tokens_seen', 0):,} tokens: its guesses for masked words are often "
            "wrong, it reflects the biases of its training corpus, and it is meant to be "
            "fine-tuned (classification, named entities) and evaluated before any use."
        )
    if headless:
        limitations = (
            f"A {summary.get('parameters', 0) / 1e6:.1f}M-parameter encoder without a masked-LM "
            f"head, distilled on {summary.get('tokens_seen', 0):,} tokens: its hidden states "
            "approximate its teacher's (see Evaluation); fine-tune it (classification, named "
            "entities) and evaluate before any use."
        )
    return template.substitute(
        front_matter=_front_matter(
            info, tags, results, widget, masked, headless, model_config.get("model_type", "gpt2")
        ),
        title=info.name,
        description=info.description
        or (
            "An encoder distilled with glotta."
            if headless
            else f"A {'masked' if masked else 'causal'} language model trained with glotta."
        ),
        usage=_usage(masked, widget, tokenizer_stats.get("mask_token") or "[MASK]", headless),
        llama_cpp_section=llama_cpp_section,
        recipe_name=info.name,
        how_trained=(
            f"distilled from `{distill.get('teacher', {}).get('source')}`"
            if distill
            else f"further pretrained from `{init_from}`"
            if init_from
            else "trained from scratch"
        ),
        widget_literal=json.dumps(widget or "", ensure_ascii=False),
        data_section=_data_section(corpus_stats),
        tokenizer_section=_tokenizer_section(tokenizer_stats),
        architecture_section=_architecture_section(train_config, summary),
        training_section=_training_section(train_config)
        + _sessions_note(run_dir_files.get("train_history")),
        distill_section=distill_section(distill, comparison),
        loss_curve=loss_curve,
        compute_section=_compute_section(train_config, summary),
        results_section=_results_section(results),
        ner_section=_ner_section(ner),
        limitations=limitations,
        citation_section=f"## Provenance\n\n{info.citation}" if info.citation else "",
    )
