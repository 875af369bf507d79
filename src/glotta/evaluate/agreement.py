"""How closely a distilled encoder's hidden states track its teacher's, on held-out text.

For every student layer ``m`` and the teacher layer ``g(m)`` it learnt from (the distillation's
layer map; the embedding output is layer 0 of both), over all positions of the held-out blocks
(unmasked, ``[CLS] ... [SEP]`` as in training):

- ``cosine``: the mean over positions of cos(student hidden state, teacher hidden state), which
  needs no projection (widths agree) and does not depend on the scale of the states;
- ``mse``: the mean squared error per hidden unit, the quantity distillation minimised (reported
  only when the widths agree; a projection is part of training, not of the student).

The eval stage of an encoder distillation reports both for the student and for its starting
point (the teacher layers it was cut from, before any training), so the table shows what
distillation added: the starting point is the teacher's bottom layers, whose last hidden state is
far from the teacher's last one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glotta.masking import MaskedBlockDataset


@torch.no_grad()
def hidden_state_agreement(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    data: MaskedBlockDataset,
    layer_map: list[int],
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    max_blocks: int = 0,
) -> dict:
    """Per-layer mean cosine and MSE of ``student`` vs ``teacher`` on the blocks of ``data``."""
    student.eval()
    teacher.eval()
    pairs = [(0, 0)] + [(m + 1, t + 1) for m, t in enumerate(layer_map)]
    same_width = student.config.hidden_size == teacher.config.hidden_size
    cosine = [0.0] * len(pairs)
    squared = [0.0] * len(pairs)
    positions = 0
    blocks = min(data.num_blocks, max_blocks) if max_blocks else data.num_blocks
    for start in range(0, blocks, batch_size):
        inputs = data.blocks(range(start, min(start + batch_size, blocks))).to(device)
        mine = student.base_model(input_ids=inputs, output_hidden_states=True).hidden_states
        theirs = teacher.base_model(input_ids=inputs, output_hidden_states=True).hidden_states
        for i, (s, t) in enumerate(pairs):
            a, b = mine[s].float(), theirs[t].float()
            cosine[i] += float(F.cosine_similarity(a, b, dim=-1).sum())
            if same_width:
                squared[i] += float((a - b).pow(2).mean(dim=-1).sum())
        positions += inputs.numel()
    layers = [
        {
            "student_layer": s,
            "teacher_layer": t,
            "cosine": cosine[i] / max(positions, 1),
            "mse": squared[i] / max(positions, 1) if same_width else None,
        }
        for i, (s, t) in enumerate(pairs)
    ]
    return {
        "blocks": blocks,
        "positions": positions,
        "last_layer_cosine": layers[-1]["cosine"],
        "mean_cosine": sum(row["cosine"] for row in layers) / len(layers),
        "layers": layers,
    }


def format_agreement_table(rows: list[dict]) -> str:
    """Student layer -> teacher layer, then cosine (and MSE) per model, one column pair each."""
    names = [row["name"] for row in rows]
    header = f"{'layer (student->teacher)':<26}" + "".join(
        f" {name[:22]:>22} {'mse':>9}" for name in names
    )
    lines = [header, "-" * len(header)]
    for i, layer in enumerate(rows[0]["layers"]):
        label = (
            "embeddings"
            if layer["student_layer"] == 0
            else (f"{layer['student_layer']} -> {layer['teacher_layer']}")
        )
        cells = ""
        for row in rows:
            entry = row["layers"][i]
            mse = f"{entry['mse']:.4f}" if entry["mse"] is not None else "-"
            cells += f" {'cos ' + format(entry['cosine'], '.4f'):>22} {mse:>9}"
        lines.append(f"{label:<26}{cells}")
    return "\n".join(lines)
