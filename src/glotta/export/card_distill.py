"""Model-card sections of a distilled student: how it learned (RUN_DIR/train/distill.json), how
its hidden states track the teacher's (an encoder's eval/results.json) and, after
`glotta compare`, how it compares with its teacher and a student trained from scratch
(RUN_DIR/eval/compare.json)."""

from __future__ import annotations

from glotta.export.card_tables import table


def agreement_section(results: dict) -> str:
    """How closely the distilled encoder's hidden states track the teacher's (eval/results.json)."""
    models = results["agreement"]
    header = ["student layer → teacher layer"]
    for m in models:
        header += [f"cosine: {m['name']}", "MSE"]
    lines = []
    for i, layer in enumerate(models[0]["layers"]):
        s, t = layer["student_layer"], layer["teacher_layer"]
        row = ["embeddings" if s == 0 else f"{s} → {t}"]
        for m in models:
            entry = m["layers"][i]
            row += [
                f"{entry['cosine']:.4f}",
                f"{entry['mse']:.4f}" if entry["mse"] is not None else "",
            ]
        lines.append(row)
    return (
        f"Hidden states of the student next to the teacher's, on the held-out "
        f"{results.get('split', 'test')} split ({models[0]['positions']:,} positions in blocks of "
        f"{results.get('block_size')} tokens, unmasked): mean cosine similarity and mean squared "
        f"error per hidden unit, per layer pair (layers counted from 1; 0 = embeddings)"
        + (", and for the student's starting point before distillation" if len(models) > 1 else "")
        + ":\n\n"
        + table(header, lines)
    )


def _encoder_distill_text(distill: dict) -> str:
    """The losses and the start of an encoder student (LightMBERT / TinyBERT)."""
    cfg, projection = distill.get("config", {}), distill.get("projection")
    layer_map = distill.get("layer_map", [])
    pairs = ", ".join(f"{m + 1}→{t + 1}" for m, t in enumerate(layer_map))
    start = (
        f"the teacher's layers {cfg.get('student_layers')} (numbered from 0) with its embeddings"
        + (" and masked-LM head (frozen)" if distill.get("teacher_has_mlm_head") else "")
        if cfg.get("student_layers")
        else "random weights"
    )
    return (
        f"Loss per position (TinyBERT's layer-wise losses, as LightMBERT uses them): "
        f"{cfg.get('alpha_hidden')} × mean squared error of hidden states (the embedding output "
        f"and student layer → teacher layer {pairs})"
        + (
            f" through a learned {projection[0]}→{projection[1]} projection (not exported)"
            if projection
            else ""
        )
        + f" + {cfg.get('alpha_attention')} × mean squared error of the attention scores of the "
        f"same layer pairs. The student ({distill.get('student_layers')} layers) started from "
        f"{start}"
        + ("; its word embeddings stayed frozen." if cfg.get("freeze_embeddings") else ".")
    )


def distill_section(distill: dict, comparison: dict) -> str:
    """How a distilled student learned (train/distill.json) and, after `glotta compare`, how it
    compares with its teacher and with the same student trained from scratch (eval/compare.json)."""
    if not distill:
        return ""
    cfg, teacher = distill.get("config", {}), distill.get("teacher", {}).get("source", "?")
    projection = distill.get("projection")
    init = (
        f"blocks {cfg.get('student_layers')} of the teacher with its embeddings and final norm"
        if cfg.get("student_layers")
        else "random weights"
    )
    text = f"## Distillation\n\nDistilled from `{teacher}` ({distill.get('teacher_parameters', 0) / 1e6:.2f}M "
    text += (
        f"parameters, {distill.get('teacher_layers')} layers, width {distill.get('teacher_width')}; "
        f"frozen, run in {distill.get('teacher_runs_in')}). "
    )
    if distill.get("kind") == "encoder":
        text += _encoder_distill_text(distill)
    else:
        text += (
            f"Loss per predicted token: "
            f"{cfg.get('alpha_ce')} × KL(teacher/T ‖ student/T) × T² + {cfg.get('alpha_clm')} × "
            f"cross-entropy + {cfg.get('alpha_cos')} × (1 − cosine) of the last hidden states"
            + (
                f" (through a learned {projection[0]}→{projection[1]} projection, not exported)"
                if projection
                else ""
            )
            + f", T = {cfg.get('temperature')}. The student started from {init}"
            + (
                "; its position embeddings stayed frozen."
                if cfg.get("freeze_position_embeddings")
                else "."
            )
        )
    rows = comparison.get("rows", [])
    if rows:
        encoders = "micro_f1" in rows[0]
        scores = ["NER micro F1", "NER macro F1"] if encoders else ["perplexity", "bits per byte"]
        text += (
            f"\n\nOn the {comparison.get('text')}, next to the teacher and the same student trained "
            f"from scratch (speed: {comparison.get('speed')}; retention = "
            f"{comparison.get('retention')}):\n\n"
            + table(
                [
                    "model",
                    "role",
                    "parameters",
                    "training tokens",
                    "tokens/s",
                    *scores,
                    "retention",
                ],
                [
                    [
                        f"`{r['name']}`",
                        r["role"],
                        f"{r['parameters'] / 1e6:.2f}M",
                        f"{r['training_tokens']:,}" if r.get("training_tokens") else "",
                        f"{r['tokens_per_second']:.0f}",
                        *(
                            [
                                f"{r['micro_f1']['mean']:.4f} ± {r['micro_f1']['std']:.4f}",
                                f"{r['macro_f1']['mean']:.4f}",
                            ]
                            if encoders
                            else [f"{r['perplexity']:.2f}", f"{r['bits_per_byte']:.4f}"]
                        ),
                        f"{r['retention_percent']:.1f}%" if r.get("retention_percent") else "",
                    ]
                    for r in rows
                ],
            )
        )
    return text
